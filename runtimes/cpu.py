"""What this machine's CPU can do, read from /proc/cpuinfo: shared by both runtimes and the
benchmarks (which print it on their page, so a number is tied to the CPU family it came from).

No torch import: the runtimes' CLIs decide with it before they load anything heavy.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

# The flags that decide which matrix-product kernels run (oneDNN picks among these).
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return None


def _field(cpuinfo: str, key: str) -> str | None:
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
        if cpuinfo is None:  # no way to tell cheaply, so the safe choice
            return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def model_name(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name, e.g. "Intel(R) Xeon(R) Processor" or "AMD EPYC 9V74 ..."."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return (cpuinfo and _field(cpuinfo, "model name")) or platform.processor() or "unknown"


def isa_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of ISA_FLAGS this CPU reports, in that order."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = set(((cpuinfo and _field(cpuinfo, "flags")) or "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]
