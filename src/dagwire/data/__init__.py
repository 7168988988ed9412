"""Datasets of SPEC §3: coloured MNIST-likes, CIFAR-10, their T8 versions, and user datasets.

Everything is loaded into uint8 NCHW numpy arrays once; derived arrays (coloured, T8) are cached on
disk keyed by the checksums of their source files, so they are computed once per machine and never
per run or epoch. Only the batch transforms use torch.

The modules, one per job: `formats` reads the official files (IDX, CIFAR-10 pickles), `fetch` finds,
verifies and downloads them, `transforms` holds the recipes and batch transforms, `registry` names the
datasets, `official` builds and caches their full splits, `user` reads folder: and npz: datasets, and
`load` is the entry point. Every public name is importable from `dagwire.data`.
"""

from .fetch import CHECKSUMS, DOWNLOAD_TIMEOUT, SYSTEM_DATA_ROOT, cache_dir
from .formats import read_cifar_batch, read_idx
from .load import Dataset, load_dataset, load_dataset_for
from .official import RECIPE_VERSION, clear_memory_cache
from .registry import REGISTRY, USER_DATASET_KINDS, available_datasets, split_dataset_name
from .transforms import (T8_PERMUTATION, T8_ROTATIONS, augment_batch, colourize, normalize_batch, t8_inverse,
                         t8_transform)

__all__ = [
    "CHECKSUMS", "DOWNLOAD_TIMEOUT", "RECIPE_VERSION", "REGISTRY", "SYSTEM_DATA_ROOT", "T8_PERMUTATION", "T8_ROTATIONS",
    "USER_DATASET_KINDS", "Dataset", "augment_batch", "available_datasets", "cache_dir", "clear_memory_cache",
    "colourize", "load_dataset", "load_dataset_for", "normalize_batch", "read_cifar_batch", "read_idx",
    "split_dataset_name", "t8_inverse", "t8_transform",
]
