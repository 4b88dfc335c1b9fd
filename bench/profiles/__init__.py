"""Profiling helpers: `python -m bench.profiles.hold`, `python -m bench.profiles.serve_ab`."""
