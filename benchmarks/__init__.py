"""Benchmarks: timed comparisons, run by hand (not timed tests)."""
