"""What machine a measurement ran on: benchmarks and the eval service record it with every timing."""

from __future__ import annotations

import platform
from pathlib import Path

#: The CPU flags that move this project's timings: two hosts both named "AMD EPYC", one with AVX-512 and one
#: without, ran the same pipeline 1.5-2.8x apart; bf16 matmuls are fast only with AVX-512 BF16 or AMX.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module knows."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_speed_flags() -> list[str]:
    """Which of ``SPEED_FLAGS`` the CPU reports (Linux /proc/cpuinfo; empty where it cannot be read)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SPEED_FLAGS if flag in present]
    return []


def cpu_description() -> str:
    """Model name plus the speed-relevant flags, e.g. ``AMD EPYC (avx2, fma)``."""
    flags = cpu_speed_flags()
    return f"{cpu_model()} ({', '.join(flags)})" if flags else cpu_model()
