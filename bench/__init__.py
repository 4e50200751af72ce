"""Benchmarks: Parley's instrumentation against the bare app and the best-known peers."""
