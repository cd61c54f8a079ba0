"""Facts about the machine a measurement ran on, and the memory it used: torch-free, so a benchmark's timing
child can report its own peak without importing more than the runtime it times."""
from __future__ import annotations

import platform
import resource
from pathlib import Path

MB = 1024 * 1024
# The instruction sets that decide how fast reduced precision runs: AVX2/AVX-512 (vector), VNNI (int8 dot
# products), BF16 and AMX (matrix tiles for bf16/int8); named as /proc/cpuinfo's flags.
MATRIX_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                       "asimd", "sve", "i8mm", "bf16")


def proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (e.g. 'VmHWM', 'VmRSS') in MB; None off Linux."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return None


def _cpuinfo_field(*names: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in names:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model as lscpu names it (read from /proc/cpuinfo: no subprocess); every timing quotes it."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    """Which of MATRIX_VECTOR_FLAGS this CPU has (x86 'flags', ARM 'Features'), in that order."""
    present = set((_cpuinfo_field("flags", "Features") or "").split())
    return [f for f in MATRIX_VECTOR_FLAGS if f in present]


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM restarts at exec; ru_maxrss may carry a parent's)."""
    peak = proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def current_rss_mb() -> float:
    rss = proc_status_mb("VmRSS")
    return peak_rss_mb() if rss is None else rss
