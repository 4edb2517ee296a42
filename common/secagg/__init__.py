"""Secure-aggregation primitives: pure functions over bytes and arrays, no I/O."""
