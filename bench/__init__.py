"""Benchmarks: each prints a table and one JSON line, with a baseline measured in the same run."""
