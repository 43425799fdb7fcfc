"""Benchmarks of the slam code paths on this machine: ``python -m benchmarks.run``."""
