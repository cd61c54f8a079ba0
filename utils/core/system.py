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


def proc_status_mb(key: str, pid: int | str = "self") -> float | None:
    """A memory line of /proc/<pid>/status (e.g. 'VmHWM', 'VmRSS') in MB; None off Linux or once pid is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{key}:")), None)


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


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process in MB: the kernel's high-water mark VmHWM (this process by default).

    The one way the benchmarks measure peak memory: the work runs in a process started for it, and that
    process reads this at its end (benchmarks.common.run_measured does both for any script). VmHWM belongs to
    the address space, which exec replaces, so a fresh interpreter counts its own pages only. Not getrusage's
    ru_maxrss, in the child or from the parent's wait4: Linux keeps it across exec, so a child of a 600 MB
    parent reports at least 600 MB. Not RSS sampled from outside either: that misses what rises and falls
    between two samples. Processes the work starts (dataloader workers) have marks of their own, readable
    while they run (`pid`; 0 once it has exited). Off Linux: ru_maxrss of this process, carry-over and all.
    """
    peak = proc_status_mb("VmHWM", pid)
    if peak is None and pid == "self":  # not Linux
        scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB
    return peak or 0.0  # 0: that process has exited


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux /proc/self/clear_refs), so the next peak_rss_mb() is what runs
    from here on; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    rss = proc_status_mb("VmRSS")
    return peak_rss_mb() if rss is None else rss
