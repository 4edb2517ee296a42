"""Benchmarks of fedcdr that write bench/results/ and sections of docs/benchmarks.md."""
