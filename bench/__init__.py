"""Benchmarks of fedcdr: the recommendation-quality study and training speed."""
