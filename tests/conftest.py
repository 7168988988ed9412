"""Shared fixtures: a tiny synthetic npz dataset (for mechanics only, never a result), process helpers."""

import os
from pathlib import Path

import numpy as np
import pytest

# Ray starts its workers at nice 15; on a machine busy with other work at nice 0 (a study's trainings)
# the sweep tests' workers then get almost no CPU and run into the per-test timeout. The suite's own
# workers run at the suite's priority.
os.environ.setdefault("RAY_worker_niceness", "0")


def write_npz(path: Path, seed: int = 0, classes: int = 4, images: int = 96) -> str:
    """A small npz dataset with some signal, so the loss moves; its `npz:` dataset name."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    y = np.arange(images) % classes
    x[y == 1, :16] //= 4
    train = images * 2 // 3
    np.savez(path, x_train=x[:train], y_train=y[:train], x_test=x[train:], y_test=y[train:])
    return f"npz:{path}"


def ordering_output(*args) -> str:
    """What `dagwire ordering ARGS` prints (it must succeed), as the docs' ```text blocks hold it."""
    from click.testing import CliRunner

    from dagwire.cli import cli

    result = CliRunner().invoke(cli, ["ordering", *(str(a) for a in args)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def snapshot(root: Path) -> dict:
    """Every file under root with its modification time and bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def tiny_npz(tmp_path):
    """96 images (64 train, 32 test), 4 classes."""
    return write_npz(tmp_path / "tiny.npz")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny finished run on a synthetic npz (mechanics only): 9 nodes in 3 stages, C = 2, 3 classes."""
    from dagwire.cli import main

    root = tmp_path_factory.mktemp("prune")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 3, 32, 32), dtype=np.uint8)
    y = np.arange(96) % 3
    np.savez(root / "tiny.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    run = root / "run"
    code = main(["train", "--dataset", f"npz:{root / 'tiny.npz'}", "--nodes", "9", "--stages", "3", "--channels", "2",
                 "--batch-size", "16", "--epochs", "2", "--lam", "0.5", "--quiet", "--out", str(run)])
    assert code == 0
    return run


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid` (Linux /proc): what a test that started a session must stop."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry))
    return pids
