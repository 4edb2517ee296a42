"""Benchmarks of fedcdr: secure aggregation, recommendation quality and training
speed. Each writes bench/results/ and its section of docs/benchmarks.md."""
