"""Measurement scripts: each times or sizes one part of the project beside its peer and reports wall time,
throughput and peak memory (docs/ARCHITECTURE.md). Run one as `python benchmarks/bench_<x>.py` or
`python -m benchmarks.bench_<x>`; what they share is benchmarks/common.py. Tests cover their bookkeeping,
never their numbers."""
