"""The committed capacity study's report (goal: written in under 20 s on 2 idle CPU cores).

    python benchmarks/bench_report.py

Copies docs/capacity/sweep-c8 and sweep-c4 (without their weights) into a temporary directory and
times `dagwire report sweep-c8 --capacity sweep-c4` there, in this process (imports included, as
the command pays them). Prints one JSON object: wall seconds, CPU seconds of this process and of
its children (the embedding of Fig. 8 runs in a process of its own), and the pages written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sweep-c8", "sweep-c4"):
            shutil.copytree(ROOT / "docs" / "capacity" / name, Path(tmp) / name,
                            ignore=shutil.ignore_patterns("weights.pt", "checkpoint.pt"))
        started, cpu = time.perf_counter(), os.times()
        from dagwire.report import write_report

        pages = write_report(Path(tmp) / "sweep-c8", capacity_dir=Path(tmp) / "sweep-c4")
        wall, end = time.perf_counter() - started, os.times()
        print(json.dumps({"seconds": round(wall, 1),
                          "cpu_seconds": round(end.user + end.system - cpu.user - cpu.system, 1),
                          "children_cpu_seconds": round(end.children_user + end.children_system
                                                        - cpu.children_user - cpu.children_system, 1),
                          "pages": [p.name for p in pages]}))


if __name__ == "__main__":
    main()
