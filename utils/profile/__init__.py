"""The FLOPS profiler: per-layer FLOPs, bytes, latency and achieved FLOPS, and its charts."""
