"""The official file formats: IDX (MNIST, KMNIST, Fashion-MNIST) and CIFAR-10's python pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dagwire.errors import DataError

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_META = "batches.meta"


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip or raw) of unsigned bytes; check its magic, dims and length."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip file ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes)")
    (got_magic,) = struct.unpack(">I", raw[:4])
    if magic is not None and got_magic != magic:
        raise DataError(f"{path}: bad IDX magic number {got_magic} (expected {magic})")
    if got_magic >> 8 != 0x08:  # type code 0x08 = unsigned byte, the only one these datasets use
        raise DataError(f"{path}: bad IDX magic number {got_magic} (not an unsigned-byte IDX file)")
    ndim = got_magic & 0xFF
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{path}: IDX file has {len(raw)} bytes, its header {dims} implies {expected} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images_path, 2051)
    y = read_idx(labels_path, 2049)
    if x.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {x.shape[1:]}, expected 28×28")
    if len(x) != len(y):
        raise DataError(f"{images_path}: {len(x)} images but {labels_path.name} has {len(y)} labels")
    if len(y) and int(y.max()) > 9:
        raise DataError(f"{labels_path}: label {int(y.max())} out of range 0..9")
    return x, y.astype(np.int64)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise DataError(f"{path}: cannot read CIFAR pickle ({type(e).__name__}: {e})") from None


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch into uint8 N×3×32×32 images and int64 labels."""
    path = Path(path)
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 batch (needs keys b'data' and b'labels')")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: CIFAR data is {data.dtype} {data.shape}, expected uint8 N×3072")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels out of range 0..9")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels.astype(np.int64)


def _read_cifar_meta(path: Path) -> list[str]:
    d = _unpickle(path)
    if not isinstance(d, dict) or b"label_names" not in d:
        raise DataError(f"{path}: not CIFAR-10's batches.meta (no b'label_names')")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in d[b"label_names"]]
