"""Datasets of SPEC §3: coloured MNIST-likes, CIFAR-10, their T8 versions, and user datasets.

Everything is loaded into uint8 NCHW numpy arrays once; derived arrays (coloured, T8) are cached on
disk keyed by the checksums of their source files, so they are computed once per machine and never
per run or epoch. Only the batch transforms at the end of the module use torch.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from dagwire.errors import DataError
from dagwire.files import atomic_write, atomic_write_json

if TYPE_CHECKING:
    import torch

# ----------------------------------------------------------------------------------------------
# Constants and tables

#: Bump when a recipe (colouring, T8, array layout) changes, so that old disk caches are not reused.
RECIPE_VERSION = 1

#: Where Debian's dataset packages install their files (dataset-fashion-mnist etc.).
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

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
_SPLIT_INDEX = {"train": 0, "test": 1}

#: Accepted md5s, per source, per file name. A `.gz` file is accepted when its own md5 is listed
#: under its name, or when the md5 of its decompressed content is listed under the name without
#: `.gz` (Debian recompressed Fashion-MNIST, so only the decompressed bytes match upstream's).
#: Published md5s: torchvision's datasets/mnist.py and cifar.py; decompressed MNIST and
#: Fashion-MNIST md5s: widely published (e.g. the Fashion-MNIST loaders' `raw_data` tables) and
#: recomputed here from the checksum-verified files in shared/data/mnist and Debian's package.
CHECKSUMS: dict[str, dict[str, set[str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": {"f68b3c2dcbeaaa9fbdd348bbdeb94873"},
        "train-labels-idx1-ubyte.gz": {"d53e105ee54ea40749a09fcbcd1e9432"},
        "t10k-images-idx3-ubyte.gz": {"9fb629c4189551a2d022fa330f9573f3"},
        "t10k-labels-idx1-ubyte.gz": {"ec29112dd5afa0611ce80d1b7f02629c"},
        "train-images-idx3-ubyte": {"6bbc9ace898e44ae57da46a324031adb"},
        "train-labels-idx1-ubyte": {"a25bea736e30d166cdddb491f175f624"},
        "t10k-images-idx3-ubyte": {"2646ac647ad5339dbf082846283269ea"},
        "t10k-labels-idx1-ubyte": {"27ae3e4e09519cfbb04c329615203637"},
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": {"8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
        "train-labels-idx1-ubyte.gz": {"25c81989df183df01b3e8a0aad5dffbe"},
        "t10k-images-idx3-ubyte.gz": {"bef4ecab320f06d8554ea6380940ec79"},
        "t10k-labels-idx1-ubyte.gz": {"bb300cfdad3c16e7a12a480ee83cd310"},
        "train-images-idx3-ubyte": {"f4a8712d7a061bf5bd6d2ca38dc4d50a"},
        "train-labels-idx1-ubyte": {"9018921c3c673c538a1fc5bad174d6f9"},
        "t10k-images-idx3-ubyte": {"8181f5470baa50b63fa0f6fddb340f0a"},
        "t10k-labels-idx1-ubyte": {"15d484375f8d13e6eb1aabb0c3f46965"},
    },
    "kmnist": {
        "train-images-idx3-ubyte.gz": {"bdb82020997e1d708af4cf47b453dcf7"},
        "train-labels-idx1-ubyte.gz": {"e144d726b3acfaa3e44228e80efcd344"},
        "t10k-images-idx3-ubyte.gz": {"5c965bf0a639b31b8f53240b1b52f4d7"},
        "t10k-labels-idx1-ubyte.gz": {"7320c461ea6c1c855c0b718fb2a4b134"},
    },
    "cifar-10": {
        "cifar-10-python.tar.gz": {"c58f30108f718f92721af3b95e74349a"},
        "data_batch_1": {"c99cafc152244af753f735de768cd75f"},
        "data_batch_2": {"d4bba439e000b95fd0a9bffe97cbabec"},
        "data_batch_3": {"54ebc095f3ab1f0389bbae665268c751"},
        "data_batch_4": {"634d18415352ddfa80567beed471001a"},
        "data_batch_5": {"482c414d41f54cd18b22e5b47cb7c3cb"},
        "test_batch": {"40351d587109b95175f43aff81a1287e"},
        "batches.meta": {"5ff9c542aee3614f3951f8cda6e48888"},
    },
}

_MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    "cifar-10": "https://www.cs.toronto.edu/~kriz/",
}
#: Seconds to wait on a silent connection: machines without internet must fail fast.
DOWNLOAD_TIMEOUT = 15.0

# torchvision keeps these under <root>/<Name>/raw; looking there lets its downloads be reused.
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}

_MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class _Spec:
    name: str
    source: str  # folder name of the official files: mnist, kmnist, fashion-mnist, cifar-10
    kind: str  # "idx" or "cifar"
    coloured: bool
    t8: bool
    classes: tuple[str, ...] | None  # None: read from the files (CIFAR's batches.meta)
    base: str | None = None  # for a T8 dataset, the dataset it is built from


def _build_registry() -> dict[str, _Spec]:
    base = [
        _Spec("cmnist", "mnist", "idx", True, False, _MNIST_CLASSES),
        _Spec("ckmnist", "kmnist", "idx", True, False, _KMNIST_CLASSES),
        _Spec("cfashionmnist", "fashion-mnist", "idx", True, False, _FASHION_CLASSES),
        _Spec("cifar10", "cifar-10", "cifar", False, False, None),
    ]
    reg = {s.name: s for s in base}
    for s in base:
        reg[s.name + "_t8"] = _Spec(s.name + "_t8", s.source, s.kind, s.coloured, True, s.classes, s.name)
    return reg


REGISTRY: dict[str, _Spec] = _build_registry()

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


USER_DATASET_KINDS = ("folder", "npz")  # folder:DIR (a subfolder of images per class), npz:FILE


def split_dataset_name(name: str) -> tuple[str | None, str]:
    """("folder" or "npz", the path) for a user dataset name, (None, the name in lower case) for a registered one."""
    prefix, sep, rest = name.strip().partition(":")
    if sep and prefix.lower() in USER_DATASET_KINDS and rest.strip():
        return prefix.lower(), rest.strip()
    return None, name.strip().lower()


def available_datasets() -> list[str]:
    """Names of the registered datasets (user datasets are `folder:DIR` and `npz:FILE`)."""
    return sorted(REGISTRY)


def cache_dir() -> Path:
    """The user cache dir: $DAGWIRE_CACHE, else $XDG_CACHE_HOME/dagwire, else ~/.cache/dagwire."""
    if os.environ.get("DAGWIRE_CACHE"):
        return Path(os.environ["DAGWIRE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dagwire"
    return Path.home() / ".cache" / "dagwire"


# ----------------------------------------------------------------------------------------------
# Official file formats


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


# ----------------------------------------------------------------------------------------------
# Checksums

_MD5_MEMO: dict[tuple[str, int, int], str] = {}


def _md5_bytes(b: bytes) -> str:
    return hashlib.md5(b, usedforsecurity=False).hexdigest()


def _file_md5(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_MEMO:
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _MD5_MEMO[key] = h.hexdigest()
    return _MD5_MEMO[key]


def _raw_md5(path: Path, file_md5: str) -> str:
    """md5 of a .gz file's decompressed bytes; remembered on disk by the file's md5 (gunzip is slow)."""
    table_path = cache_dir() / "decompressed-md5.json"
    try:
        table = json.loads(table_path.read_text())
    except (OSError, ValueError):
        table = {}
    if isinstance(table, dict) and isinstance(table.get(file_md5), str):
        return table[file_md5]
    try:
        with open(path, "rb") as f:
            raw_md5 = _md5_bytes(gzip.decompress(f.read()))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip file ({e})") from None
    table = table if isinstance(table, dict) else {}
    table[file_md5] = raw_md5
    try:
        atomic_write_json(table_path, table)
    except OSError:
        pass  # a read-only cache only costs speed
    return raw_md5


def _verify(path: Path, source: str) -> tuple[dict | None, str]:
    """(info, "") when `path` matches a known md5 of its name in CHECKSUMS[source], else (None, why)."""
    accepted = CHECKSUMS.get(source, {})
    md5 = _file_md5(path)
    info = {"file": path.name, "path": str(path), "md5": md5}
    if md5 in accepted.get(path.name, ()):
        return {**info, "verified_by": "md5"}, ""
    if path.name.endswith(".gz") and path.name[:-3] in accepted:
        try:
            raw = _raw_md5(path, md5)
        except DataError:
            return None, "truncated or corrupt gzip"
        if raw in accepted[path.name[:-3]]:
            return {**info, "decompressed_md5": raw, "verified_by": "decompressed md5"}, ""
        return None, f"md5 {md5} (decompressed {raw}) matches no known version"
    return None, f"md5 {md5} matches no known version"


# ----------------------------------------------------------------------------------------------
# Finding (and fetching) the official files


def _roots(data_dir: str | os.PathLike | None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("DAGWIRE_DATA"):
        roots.append(Path(os.environ["DAGWIRE_DATA"]).expanduser())
    roots.append(cache_dir() / "data")
    roots.append(Path(SYSTEM_DATA_ROOT))
    return roots


def _search_dirs(source: str, data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    for root in _roots(data_dir):
        cands = [root, root / source]
        if source == "cifar-10":
            cands += [root / _CIFAR_DIR, root / source / _CIFAR_DIR]
        elif source in _TORCHVISION_DIRS:
            cands.append(root / _TORCHVISION_DIRS[source] / "raw")
        for d in cands:
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find(names: Sequence[str], source: str, dirs: Sequence[Path], rejected: dict[str, str]) -> dict | None:
    """First file among `names` (in order) in any of `dirs` (in order) that passes its checksum."""
    for d in dirs:
        for name in names:
            p = d / name
            if p.is_file() and str(p) not in rejected:
                try:
                    info, why = _verify(p, source)
                except OSError as e:
                    info, why = None, f"unreadable: {e.strerror or e}"
                if info is not None:
                    return info
                rejected[str(p)] = why
    return None


def _download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest` atomically (a failed or partial download leaves nothing behind)."""
    import urllib.request  # only when downloading: it pulls in http and ssl

    def write(f: Any) -> None:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r:
            shutil.copyfileobj(r, f, 1 << 20)
    atomic_write(dest, write)


def _offline() -> bool:
    return os.environ.get("DAGWIRE_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _extract_cifar(archive: Path, dest_dir: Path) -> None:
    """Extract the batches of CIFAR-10's archive into dest_dir/cifar-10-batches-py, file by file atomically."""
    target = dest_dir / _CIFAR_DIR
    wanted = set(_CIFAR_FILES["train"] + _CIFAR_FILES["test"] + (_CIFAR_META,))
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".extract-") as tmp:
            with tarfile.open(archive, "r:gz") as tf:
                members = [m for m in tf.getmembers()
                           if m.isfile() and Path(m.name).name in wanted and Path(m.name).parent.name == _CIFAR_DIR]
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp, members=members)
            for m in members:
                os.replace(Path(tmp) / m.name, target / Path(m.name).name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: cannot extract into {target} ({e})") from None


def _locate(spec: _Spec, splits: Sequence[str], data_dir: str | os.PathLike | None,
            download: bool) -> dict[str, dict]:
    """Verified official files for `splits`, keyed by logical name; DataError in one line if missing."""
    source = spec.source
    if spec.kind == "idx":
        logical = [n for s in splits for n in _IDX_FILES[s]]
        names = {n: (n + ".gz", n) for n in logical}
    else:
        logical = [n for s in splits for n in _CIFAR_FILES[s]] + [_CIFAR_META]
        names = {n: (n,) for n in logical}
    dirs = _search_dirs(source, data_dir)
    rejected: dict[str, str] = {}
    found: dict[str, dict] = {}

    def search() -> list[str]:
        for n in logical:
            if n not in found:
                info = _find(names[n], source, dirs, rejected)
                if info is not None:
                    found[n] = info
        return [n for n in logical if n not in found]

    missing = search()
    notes: list[str] = []
    store = cache_dir() / "data" / source
    if missing and spec.kind == "cifar":
        archive = _find((_CIFAR_ARCHIVE,), source, dirs, rejected)
        if archive is not None:
            _extract_cifar(Path(archive["path"]), store)
            missing = search()
    if missing and download and not _offline():
        try:
            if spec.kind == "cifar":
                dest = store / _CIFAR_ARCHIVE
                _download(_MIRRORS[source] + _CIFAR_ARCHIVE, dest)
                info, why = _verify(dest, source)
                if info is None:
                    dest.unlink(missing_ok=True)
                    raise DataError(f"downloaded {dest.name} fails its checksum: {why}")
                _extract_cifar(dest, store)
            else:
                for n in missing:
                    dest = store / (n + ".gz")
                    _download(_MIRRORS[source] + n + ".gz", dest)
                    info, why = _verify(dest, source)
                    if info is None:
                        dest.unlink(missing_ok=True)
                        raise DataError(f"downloaded {dest.name} fails its checksum: {why}")
            rejected.clear()
            missing = search()
        except (OSError, DataError) as e:  # URLError and socket timeouts are OSErrors
            notes.append(f"download from {_MIRRORS[source]} failed: {str(e).strip() or type(e).__name__}")
    elif missing:
        notes.append("download disabled" + (" ($DAGWIRE_OFFLINE is set)" if download else ""))
    if missing:
        shown = ", ".join(names[n][0] for n in missing)
        if spec.kind == "cifar":
            shown += f" (or {_CIFAR_ARCHIVE})"
        msg = f"{spec.name}: missing {shown}; searched {', '.join(str(d) for d in dirs)}"
        if rejected:
            msg += "; rejected " + ", ".join(f"{p} ({why})" for p, why in rejected.items())
        msg += "; " + "; ".join(notes)
        if "train" in splits and "test" in splits and not any(n in missing for n in _test_logical(spec)):
            msg += "; the test split is present: carve_test (--carve-test) carves train and test from it"
        raise DataError(msg)
    return found


def _test_logical(spec: _Spec) -> tuple[str, ...]:
    return _IDX_FILES["test"] if spec.kind == "idx" else _CIFAR_FILES["test"] + (_CIFAR_META,)


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
# Official splits, with the derived-array cache

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


# ----------------------------------------------------------------------------------------------
# User datasets


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
