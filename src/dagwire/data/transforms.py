"""Image transforms: the recipes of SPEC §3 (colouring, T8 and its inverse) on uint8 numpy arrays, and
the per-batch training transforms (random crop and flip, normalisation) on torch tensors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

#: Each image's colours are drawn from the seed (split index, image index) (SPEC §3).
_SPLIT_INDEX = {"train": 0, "test": 1}

# T8 is drawn once, from a fixed seed, and is the same for every image (SPEC §3).
_t8_rng = np.random.default_rng(8)
#: Output tile j (row-major in the 4×4 grid) is input tile T8_PERMUTATION[j] ...
T8_PERMUTATION: np.ndarray = _t8_rng.permutation(16)
#: ... rotated counter-clockwise by T8_ROTATIONS[j] quarter turns (np.rot90 on the tile).
T8_ROTATIONS: np.ndarray = _t8_rng.integers(0, 4, 16)
del _t8_rng
T8_PERMUTATION.flags.writeable = False
T8_ROTATIONS.flags.writeable = False


# ----------------------------------------------------------------------------------------------
# Recipes: colouring and T8


def colourize(grey: np.ndarray, split: str) -> np.ndarray:
    """Colour N×28×28 grey images of official split `split` as SPEC §3: uint8 N×3×32×32."""
    if split not in _SPLIT_INDEX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if grey.ndim != 3 or grey.shape[1:] != (28, 28):
        raise ValueError(f"expected N×28×28 grey images, got {grey.shape}")
    s = _SPLIT_INDEX[split]
    n = len(grey)
    fb = np.empty((n, 2, 3))
    for k in range(n):
        rng = np.random.default_rng([s, k])
        fb[k, 0] = rng.random(3)  # foreground first, then background (SPEC §3)
        fb[k, 1] = rng.random(3)
    out = np.empty((n, 3, 32, 32), dtype=np.uint8)
    chunk = 2048  # float64 temporaries of the whole of MNIST's train split would take 1.5 GB
    for a in range(0, n, chunk):
        g = np.pad(grey[a:a + chunk], ((0, 0), (2, 2), (2, 2))).astype(np.float64)[:, None] / 255.0
        f = fb[a:a + chunk, 0, :, None, None]
        b = fb[a:a + chunk, 1, :, None, None]
        out[a:a + chunk] = np.round(255.0 * (b + (f - b) * g))
    return out


def _tiles(x: np.ndarray) -> np.ndarray:
    if x.ndim != 4 or x.shape[2:] != (32, 32):
        raise ValueError(f"T8 needs N×C×32×32 images, got {x.shape}")
    n, c = x.shape[:2]
    return x.reshape(n, c, 4, 8, 4, 8).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 16, 8, 8)


def _untile(t: np.ndarray) -> np.ndarray:
    n, c = t.shape[:2]
    return np.ascontiguousarray(t.reshape(n, c, 4, 4, 8, 8).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 32, 32))


def t8_transform(x: np.ndarray) -> np.ndarray:
    """Apply the fixed T8 tile permutation and rotations to N×C×32×32 images."""
    t = _tiles(x)[:, :, T8_PERMUTATION]  # fancy indexing copies, so the rotations below are safe
    for k in range(1, 4):
        j = np.flatnonzero(T8_ROTATIONS == k)
        t[:, :, j] = np.rot90(t[:, :, j], k, axes=(-2, -1))
    return _untile(t)


def t8_inverse(x: np.ndarray) -> np.ndarray:
    """Undo t8_transform."""
    t = _tiles(x).copy()
    for k in range(1, 4):
        j = np.flatnonzero(T8_ROTATIONS == k)
        t[:, :, j] = np.rot90(t[:, :, j], -k, axes=(-2, -1))
    out = np.empty_like(t)
    out[:, :, T8_PERMUTATION] = t
    return _untile(out)


# ----------------------------------------------------------------------------------------------
# Batch transforms (torch)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of each zero-padded image (offset 0..2·pad) and random horizontal flip, batched."""
    import torch

    if x.ndim != 4:
        raise ValueError(f"augment_batch expects B×C×H×W, got {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, not {pad}")
    b, c, h, w = x.shape
    gdev = generator.device
    rows = torch.arange(h, device=gdev).expand(b, h)
    cols = torch.arange(w, device=gdev).expand(b, w)
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=gdev)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=gdev)
        rows, cols = rows + dy, cols + dx
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    if flip:
        flipped = torch.rand((b, 1), generator=generator, device=gdev) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images -> float32 (x/255 - mean)/std per channel."""
    import torch

    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.to(torch.float32) / 255.0 - m) / s
