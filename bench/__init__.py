"""Benchmarks of fedcdr: secure aggregation, recommendation quality, training
speed and recommendation serving. Each writes bench/results/ and its section of
docs/benchmarks.md."""
