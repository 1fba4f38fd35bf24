"""Benchmark commands: they print figures and save them as JSON, never assert timings."""
