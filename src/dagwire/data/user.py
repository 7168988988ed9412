"""User datasets: `folder:DIR` (one subfolder of images per class) and `npz:FILE` (arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dagwire.errors import DataError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _to_rgb_uint8(x: np.ndarray, where: str, image_size: int) -> np.ndarray:
    """Arrays of grey or colour images in any common layout -> uint8 N×3×S×S."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] in (1, 3):
            pass
        elif x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        else:
            raise DataError(f"{where}: images of shape {x.shape} have no channel axis of size 1 or 3")
    else:
        raise DataError(f"{where}: images must be N×H×W, N×H×W×C or N×C×H×W, got shape {x.shape}")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(f"{where}: float images must lie in [0, 1]")
        x = np.round(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer images must lie in 0..255")
        x = x.astype(np.uint8)
    else:
        raise DataError(f"{where}: images have dtype {x.dtype}; use uint8 or float in [0, 1]")
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    if x.shape[2:] != (image_size, image_size):
        from PIL import Image
        out = np.empty((len(x), 3, image_size, image_size), dtype=np.uint8)
        for i, img in enumerate(x):
            im = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), "RGB")
            out[i] = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
        x = out
    return np.ascontiguousarray(x)


def _load_image(path: Path, image_size: int) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image_folder(d: Path, classes: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in _class_dirs(d):
        for p in sorted(c.iterdir()):
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."):
                xs.append(_load_image(p, image_size))
                ys.append(classes.index(c.name))
    if not xs:
        raise DataError(f"{d}: no images found (expected one subfolder of images per class)")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _load_folder(path: Path, image_size: int, carve: bool) -> tuple:
    if not path.is_dir():
        raise DataError(f"folder dataset {path}: no such directory")
    train_dir, test_dir = path / "train", path / "test"
    if not (train_dir.is_dir() or test_dir.is_dir()):
        train_dir = test_dir = None
        split_dirs = [path]
        whole = path  # no splits: carve train and test out of all the images
    else:
        split_dirs = [d for d in (train_dir, test_dir) if d.is_dir()]
        whole = test_dir if test_dir.is_dir() else train_dir
    if not carve:
        if train_dir is None:
            raise DataError(f"folder dataset {path}: no train/ and test/ splits; pass carve_test (--carve-test) "
                            "to carve train and test out of its images")
        if not test_dir.is_dir():
            raise DataError(f"folder dataset {path}: no test/ split; pass carve_test (--carve-test) to carve one")
        if not train_dir.is_dir():
            raise DataError(f"folder dataset {path}: no train/ split; pass carve_test (--carve-test) to carve "
                            "train and test out of test/")
    classes = sorted({c.name for d in split_dirs for c in _class_dirs(d)})
    if not classes:
        raise DataError(f"folder dataset {path}: no class subfolders")
    if carve:
        return None, _read_image_folder(whole, classes, image_size), classes
    return (_read_image_folder(train_dir, classes, image_size),
            _read_image_folder(test_dir, classes, image_size), classes)


def _load_npz(path: Path, image_size: int, carve: bool) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"npz dataset {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's data error
        raise DataError(f"npz dataset {path}: cannot read ({type(e).__name__}: {e})") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = [("x_train", "y_train"), ("x_test", "y_test")]
        if carve:
            parts = [None, ("x_test", "y_test")]
    elif {"x", "y"} <= arrays.keys():
        if not carve:
            raise DataError(f"npz dataset {path}: only x, y (no test split); pass carve_test (--carve-test)")
        parts = [None, ("x", "y")]
    else:
        raise DataError(f"npz dataset {path}: needs arrays x_train, y_train, x_test, y_test (or x, y with "
                        f"carve_test); it has {sorted(arrays)}")
    ys = [np.asarray(arrays[p[1]]).reshape(-1) for p in parts if p is not None]
    if "classes" in arrays:
        classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
        values = None
    else:
        values = np.unique(np.concatenate(ys))
        classes = [str(v) for v in values]
    out = []
    for p in parts:
        if p is None:
            out.append(None)
            continue
        x = _to_rgb_uint8(arrays[p[0]], f"{path}:{p[0]}", image_size)
        y = np.asarray(arrays[p[1]]).reshape(-1)
        if len(y) != len(x):
            raise DataError(f"npz dataset {path}: {p[0]} has {len(x)} images, {p[1]} {len(y)} labels")
        if values is None:
            if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= len(classes))):
                raise DataError(f"npz dataset {path}: {p[1]} must be integers in 0..{len(classes) - 1}")
            y = y.astype(np.int64)
        else:
            y = np.searchsorted(values, y).astype(np.int64)
        out.append((x, y))
    return out[0], out[1], classes
