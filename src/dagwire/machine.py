"""The machine a run trains on, named the way a reader can look it up: CPU model and the ISA torch dispatches to."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

# Between the CPUs of a run that trained on several (it resumed on another machine), in the runs
# table's and networks.csv's `cpu` column.
CPU_SEPARATOR = "; "


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_label() -> str:
    """`<model name> (<ISA>)`, e.g. "AMD EPYC 7B13 (AVX2)": the ISA is the one torch's CPU kernels use."""
    import torch

    return f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()})"
