"""The official files: their checksums, where they are looked for, and how they are downloaded and extracted."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Sequence

from dagwire.errors import DataError
from dagwire.files import atomic_write, atomic_write_json

from .formats import _CIFAR_ARCHIVE, _CIFAR_DIR, _CIFAR_FILES, _CIFAR_META, _IDX_FILES
from .registry import _Spec

#: Where Debian's dataset packages install their files (dataset-fashion-mnist etc.).
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

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


def cache_dir() -> Path:
    """The user cache dir: $DAGWIRE_CACHE, else $XDG_CACHE_HOME/dagwire, else ~/.cache/dagwire."""
    if os.environ.get("DAGWIRE_CACHE"):
        return Path(os.environ["DAGWIRE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dagwire"
    return Path.home() / ".cache" / "dagwire"


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
