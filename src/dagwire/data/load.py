"""The entry point: `load_dataset` picks a registered or user dataset, carves, holds out and subsamples it,
and returns a `Dataset` of uint8 N×3×H×W arrays with its normalisation statistics and provenance."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dagwire.errors import DataError

from .fetch import _locate
from .formats import _CIFAR_META, _read_cifar_meta
from .official import RECIPE_VERSION, _official_split
from .registry import REGISTRY, available_datasets, split_dataset_name
from .transforms import T8_PERMUTATION, T8_ROTATIONS
from .user import _load_folder, _load_npz

# ----------------------------------------------------------------------------------------------
# The dataset object


@dataclass
class Dataset:
    """Train and test images (uint8, N×3×H×W) with labels, class names and normalisation stats."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict = field(default_factory=dict)
    # Training images held out (`holdout`): never trained on; for choosing τ without the test set.
    holdout_x: np.ndarray | None = None
    holdout_y: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.train_x.shape[-1])


# ----------------------------------------------------------------------------------------------
# Subsets and statistics


def _check_count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{what} must be a positive whole number, not {value!r}")
    return int(value)


def _subset(y: np.ndarray, size: int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rest) sorted indices: `size` items stratified by y, seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        a, b = train_test_split(idx, train_size=size, stratify=y, random_state=seed)
    except ValueError:
        # Too few items per class to stratify (tiny user sets, tiny limits): a plain seeded draw.
        try:
            a, b = train_test_split(idx, train_size=size, random_state=seed)
        except ValueError as e:
            raise DataError(f"{what}: cannot split {len(y)} images ({e})") from None
    return np.sort(a), np.sort(b)


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Integer sums are exact; chunks keep the temporaries small (a float copy of a split is 1.5 GB).
    c = x.shape[1]
    s1 = np.zeros(c, dtype=np.int64)
    s2 = np.zeros(c, dtype=np.int64)
    for a in range(0, len(x), 2048):
        part = x[a:a + 2048].reshape(-1, c, x.shape[2] * x.shape[3])
        s1 += part.sum(axis=(0, 2), dtype=np.int64)
        part = part.astype(np.uint16)  # 255² fits in 16 bits
        s2 += (part * part).sum(axis=(0, 2), dtype=np.int64)
    n = len(x) * x.shape[2] * x.shape[3]
    means = tuple(int(t) / (255.0 * n) for t in s1)
    stds = tuple(float(np.sqrt((n * int(q) - int(t) ** 2) / (n * n))) / 255.0 for t, q in zip(s1, s2))
    return means, stds


# ----------------------------------------------------------------------------------------------
# Entry point


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, limit_train: int | None = None,
                 limit_test: int | None = None, carve_test: float | None = None, data_seed: int = 0,
                 download: bool = True, image_size: int = 32, holdout: int | None = None) -> Dataset:
    """Load a registered dataset or `folder:DIR` / `npz:FILE`, optionally carved and subsampled.

    `holdout` images are set aside from the training split first (stratified, fixed by data_seed),
    then `limit_train` draws from the rest.
    """
    limit_train = _check_count(limit_train, "limit_train")
    holdout = _check_count(holdout, "holdout")
    limit_test = _check_count(limit_test, "limit_test")
    if carve_test is not None:
        if isinstance(carve_test, bool) or not isinstance(carve_test, (int, float, np.floating)) \
                or not 0.0 < float(carve_test) < 1.0:
            raise DataError(f"carve_test must be a fraction strictly between 0 and 1, not {carve_test!r}")
        carve_test = float(carve_test)
    if isinstance(data_seed, bool) or not isinstance(data_seed, (int, np.integer)) or not 0 <= data_seed < 2**32:
        raise DataError(f"data_seed must be a whole number in 0..2**32-1, not {data_seed!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive whole number, not {image_size!r}")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"dataset name must be a non-empty string, not {name!r}")
    name = name.strip()
    carve = carve_test is not None
    kind, value = split_dataset_name(name)
    source: dict[str, Any]

    if kind is not None:
        path = Path(value).expanduser().resolve()
        loader = _load_folder if kind == "folder" else _load_npz
        train, test, classes = loader(path, int(image_size), carve)
        name = f"{kind}:{path}"
        source = {"kind": kind, "path": str(path)}
    else:
        key = value
        if key not in REGISTRY:
            raise DataError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}, "
                            "folder:DIR (one subfolder of images per class), npz:FILE")
        if image_size != 32:
            raise DataError(f"{key} is 32×32; image_size={image_size} applies to folder: and npz: datasets only")
        spec = REGISTRY[key]
        name = key
        splits = ["test"] if carve else ["train", "test"]
        files = _locate(spec, splits, data_dir, download)
        classes = list(spec.classes) if spec.classes is not None else _read_cifar_meta(Path(files[_CIFAR_META]["path"]))
        parts = {}
        caches = {}
        for s in splits:
            x, y, caches[s] = _official_split(spec, s, files)
            parts[s] = (x, y)
        train, test = parts.get("train"), parts["test"]
        source = {"kind": "official", "source": spec.source, "files": list(files.values()),
                  "cache": {s: p for s, p in caches.items() if p is not None}}
        if spec.t8:
            source["t8"] = {"permutation": T8_PERMUTATION.tolist(), "rotations": T8_ROTATIONS.tolist()}

    if len(classes) < 1:
        raise DataError(f"{name}: no classes")
    # Indices into the parts they come from, so that colours stay those of the official position.
    if carve:
        tx, ty = test
        if len(ty) < 2:
            raise DataError(f"{name}: {len(ty)} images are too few to carve a test split from")
        n_test = min(max(int(round(carve_test * len(ty))), 1), len(ty) - 1)
        tr_idx, te_idx = _subset(ty, len(ty) - n_test, data_seed, f"{name} carve_test={carve_test}")
        source["split"] = f"train and test carved from the official test split (carve_test={carve_test})"
        train = (tx, ty, tr_idx)
        test = (tx, ty, te_idx)
    else:
        source["split"] = "official"
        train = (train[0], train[1], np.arange(len(train[1])))
        test = (test[0], test[1], np.arange(len(test[1])))

    def limited(part: tuple, limit: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
        x, y, idx = part
        if limit is not None and limit < len(idx):
            keep, _ = _subset(y[idx], limit, data_seed, f"{name} {what}={limit}")
            idx = idx[keep]
        return np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx], dtype=np.int64)

    holdout_x = holdout_y = None
    if holdout is not None:
        x, y, idx = train
        if holdout >= len(idx):
            raise DataError(f"{name}: holdout={holdout} leaves no training images (the split has {len(idx)})")
        kept, rest = _subset(y[idx], holdout, data_seed, f"{name} holdout={holdout}")
        holdout_x, holdout_y = np.ascontiguousarray(x[idx[kept]]), np.ascontiguousarray(y[idx[kept]], dtype=np.int64)
        train = (x, y, idx[rest])
    train_x, train_y = limited(train, limit_train, "limit_train")
    test_x, test_y = limited(test, limit_test, "limit_test")
    if len(train_y) == 0 or len(test_y) == 0:
        raise DataError(f"{name}: empty train or test split")
    source.update(limit_train=limit_train, limit_test=limit_test, carve_test=carve_test, data_seed=int(data_seed),
                  holdout=holdout,
                  recipe_version=RECIPE_VERSION, n_train=int(len(train_y)), n_test=int(len(test_y)))
    mean, std = _channel_stats(train_x)
    return Dataset(name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   classes=list(classes), mean=mean, std=std, source=source, holdout_x=holdout_x, holdout_y=holdout_y)


def load_dataset_for(config: Any) -> Dataset:
    """The dataset a TrainConfig names, with its carving, limits and hold-out (one place for every command)."""
    return load_dataset(config.dataset, config.data_dir, limit_train=config.limit_train, limit_test=config.limit_test,
                        carve_test=config.carve_test, data_seed=config.data_seed, holdout=config.holdout)
