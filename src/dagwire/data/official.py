"""The full official splits, coloured and T8'd as the registry says, memoised in the process and cached on
disk keyed by the checksums of their source files (computed once per machine, never per run or epoch)."""

from __future__ import annotations

import collections
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from dagwire.files import atomic_write

from .fetch import cache_dir
from .formats import _CIFAR_FILES, _IDX_FILES, _read_idx_pair, read_cifar_batch
from .registry import REGISTRY, _Spec
from .transforms import colourize, t8_transform

#: Bump when a recipe (colouring, T8, array layout) changes, so that old disk caches are not reused.
RECIPE_VERSION = 1

_MEMO: "collections.OrderedDict[str, tuple[np.ndarray, np.ndarray, str | None]]" = collections.OrderedDict()
_MEMO_SIZE = 4  # a few full splits in memory; a sweep over datasets must not keep them all


def clear_memory_cache() -> None:
    """Forget the arrays memoised in this process (the disk cache stays)."""
    _MEMO.clear()


def _memo_put(key: str, value: tuple[np.ndarray, np.ndarray, str | None]) -> None:
    _MEMO[key] = value
    _MEMO.move_to_end(key)
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)


def _cache_key(spec: _Spec, split: str, files: list[dict]) -> str:
    payload = json.dumps([RECIPE_VERSION, spec.name, split, sorted(f["md5"] for f in files)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _cache_path(spec: _Spec, split: str, key: str) -> Path:
    return cache_dir() / "arrays" / f"{spec.name}-{split}-{key}.npz"


def _load_cached(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),):
        return None
    return x, y


def _save_cached(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    try:
        atomic_write(path, lambda f: np.savez(f, x=x, y=y))
    except OSError as e:
        warnings.warn(f"dagwire: could not write the dataset cache {path}: {e}", stacklevel=3)


def _raw_split(spec: _Spec, split: str, files: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    if spec.kind == "idx":
        images, labels = _IDX_FILES[split]
        x, y = _read_idx_pair(Path(files[images]["path"]), Path(files[labels]["path"]))
        return colourize(x, split), y
    xs, ys = zip(*(read_cifar_batch(files[n]["path"]) for n in _CIFAR_FILES[split]))
    return np.concatenate(xs), np.concatenate(ys)


def _split_files(spec: _Spec, split: str, files: dict[str, dict]) -> list[dict]:
    names = _IDX_FILES[split] if spec.kind == "idx" else _CIFAR_FILES[split]
    return [files[n] for n in names]


def _official_split(spec: _Spec, split: str, files: dict[str, dict]) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Full official split, coloured/T8'd as the spec says; (x, y, disk cache path or None)."""
    key = _cache_key(spec, split, _split_files(spec, split, files))
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    derived = spec.coloured or spec.t8
    path = _cache_path(spec, split, key) if derived else None
    got = _load_cached(path) if path is not None and path.is_file() else None
    if got is None:
        if spec.t8:
            bx, by, _ = _official_split(REGISTRY[spec.base], split, files)
            got = (t8_transform(bx), by)
        else:
            got = _raw_split(spec, split, files)
        if path is not None:
            _save_cached(path, *got)
    for a in got:
        a.flags.writeable = False  # shared through the memo: callers get copies
    result = (got[0], got[1], str(path) if path is not None else None)
    _memo_put(key, result)
    return result
