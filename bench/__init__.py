"""Benchmarks (see README.md); run each from the repository root."""
