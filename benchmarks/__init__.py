"""Benchmarks for aiotasks: see benchmarks/README.md."""
