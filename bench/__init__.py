"""Benchmarks of the anytime service and model; each module is a script (``python -m bench.NAME``)."""
