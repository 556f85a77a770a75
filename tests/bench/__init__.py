"""Benchmarks: run as modules (``python -m tests.bench.<name>``); not collected by pytest."""
