"""The `local` provisioner: this machine is the only node.

What it has is read without torch (the notebook side never imports it): NVIDIA GPUs from
`nvidia-smi` (or, without it, the driver's /proc entries, whose memory is unknown), CPUs and
memory from the OS. `ensure` reports the node ready at once; there is nothing to create or
release.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kaito_jupyter.controller.status import NodeReport
from kaito_jupyter.provisioners.base import NodeRequest


@dataclass(frozen=True)
class GPU:
    model: str
    memory_gib: float | None  # None when only /proc was readable


@dataclass(frozen=True)
class Machine:
    name: str
    cpus: int
    memory_gib: float | None
    gpus: tuple[GPU, ...] = ()

    @property
    def gpu_memory_gib(self) -> float:
        return sum(g.memory_gib or 0.0 for g in self.gpus)


def _nvidia_smi() -> tuple[GPU, ...] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append(GPU(name.strip(), round(float(mib) / 1024, 1)))
        except ValueError:
            continue
    return tuple(gpus)


def _proc_gpus(root: Path = Path("/proc/driver/nvidia/gpus")) -> tuple[GPU, ...]:
    gpus = []
    for info in sorted(root.glob("*/information")):
        model = "NVIDIA GPU"
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                model = line.split(":", 1)[1].strip()
        gpus.append(GPU(model, None))
    return tuple(gpus)


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError):
        pass
    return None


@cache
def machine() -> Machine:
    """This machine, detected once per process."""
    gpus = _nvidia_smi()
    if gpus is None:
        gpus = _proc_gpus()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Machine(socket.gethostname() or "localhost", cpus or 1, _memory_gib(), gpus)


class LocalProvisioner:
    name = "local"

    def __init__(self, detected: Machine | None = None):
        self.machine = detected or machine()

    def ensure(self, request: NodeRequest) -> NodeReport:
        return NodeReport(required=1, ready=(self.machine.name,), reason="ResourcesReady")

    def release(self, request: NodeRequest) -> bool:
        return True

    def collect(self, live: set[tuple[str, str]]) -> list[str]:
        return []
