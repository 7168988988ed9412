"""Tests of dagwire.data: official formats, checksums, colouring, T8, subsets, user datasets, batches."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_npz
from dagwire import data
from dagwire.data import fetch, official
from dagwire.errors import DataError

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
if not SHARED_MNIST.is_dir():
    SHARED_MNIST = Path("/work/shared/data/mnist")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
REAL_SYSTEM_ROOT = fetch.SYSTEM_DATA_ROOT


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Never touch ~/.cache, the network, or files outside tmp_path."""
    monkeypatch.setenv("DAGWIRE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DAGWIRE_OFFLINE", "1")
    monkeypatch.delenv("DAGWIRE_DATA", raising=False)
    monkeypatch.setattr(fetch, "SYSTEM_DATA_ROOT", tmp_path / "system")
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def accept(monkeypatch, source: str, *paths: Path) -> None:
    for p in paths:
        monkeypatch.setitem(data.CHECKSUMS[source], p.name, {md5(p)})


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | arr.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(arr, magic)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def balanced_labels(n: int, k: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k).astype(np.uint8)


def make_idx_set(monkeypatch, folder: Path, source: str = "mnist", n_train: int | None = 200, n_test: int = 100,
                 seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a tiny MNIST-like dataset in the official gz IDX format and accept its checksums."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        if n is None:
            continue
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = balanced_labels(n, seed=seed + len(split))
        pi = write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        pl = write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
        accept(monkeypatch, source, pi, pl)
        out[split] = (x, y)
    return out


def expected_colour(grey: np.ndarray, split_index: int, k: int) -> np.ndarray:
    rng = np.random.default_rng([split_index, k])
    f, b = rng.random(3), rng.random(3)
    g = np.pad(grey, 2).astype(np.float64) / 255.0
    return np.round(255 * (b[:, None, None] + (f - b)[:, None, None] * g[None])).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Registry and checksum table


def test_registry_names():
    assert data.available_datasets() == sorted(
        ["cmnist", "ckmnist", "cfashionmnist", "cifar10", "cmnist_t8", "ckmnist_t8", "cfashionmnist_t8", "cifar10_t8"])


def test_unknown_dataset_lists_available():
    with pytest.raises(DataError) as e:
        data.load_dataset("imagenet")
    msg = str(e.value)
    assert "imagenet" in msg and "cifar10_t8" in msg and "folder:" in msg and "npz:" in msg and "\n" not in msg


def test_checksum_table_matches_shared_mnist():
    # The shared files are verified by their published .gz md5; their decompressed md5s are in the table too.
    if not SHARED_MNIST.is_dir():
        pytest.skip("shared MNIST test split absent")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = SHARED_MNIST / (name + ".gz")
        assert md5(gz) in data.CHECKSUMS["mnist"][name + ".gz"]
        assert hashlib.md5(gzip.decompress(gz.read_bytes())).hexdigest() in data.CHECKSUMS["mnist"][name]


# ---------------------------------------------------------------------------------------------
# IDX loader


def test_read_idx_gz_and_raw(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "a.gz", x), 2051), x)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "a", x, gz=False), 2051), x)
    with pytest.raises(DataError, match="magic"):
        data.read_idx(tmp_path / "a", 2049)


def test_idx_dataset_loads_official_format(tmp_path, monkeypatch):
    sets = make_idx_set(monkeypatch, tmp_path / "d")
    ds = data.load_dataset("cmnist", tmp_path / "d")
    assert ds.name == "cmnist" and ds.classes == [str(i) for i in range(10)] and ds.num_classes == 10
    assert ds.train_x.shape == (200, 3, 32, 32) and ds.test_x.shape == (100, 3, 32, 32) and ds.image_size == 32
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64 and ds.train_x.flags.c_contiguous
    np.testing.assert_array_equal(ds.train_y, sets["train"][1])
    np.testing.assert_array_equal(ds.test_y, sets["test"][1])
    assert [f["file"] for f in ds.source["files"]] == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"]


def test_idx_found_in_source_subfolder_and_env(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path / "root" / "kmnist", source="kmnist")
    assert data.load_dataset("ckmnist", tmp_path / "root").classes[1] == "ki"
    data.clear_memory_cache()
    monkeypatch.setenv("DAGWIRE_DATA", str(tmp_path / "root"))
    assert len(data.load_dataset("ckmnist").train_y) == 200


def test_idx_bad_magic(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    p = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((200, 784), np.uint8), magic=2049)
    accept(monkeypatch, "mnist", p)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: bad IDX magic number 2049"):
        data.load_dataset("cmnist", tmp_path)


def test_idx_truncated_content(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    raw = idx_bytes(np.zeros((100, 28, 28), np.uint8))[:-10]
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw))
    accept(monkeypatch, "mnist", p)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: IDX file has .*truncated"):
        data.load_dataset("cmnist", tmp_path)


def test_idx_truncated_gzip(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = p.read_bytes()
    monkeypatch.setitem(data.CHECKSUMS["mnist"], "t10k-labels-idx1-ubyte", {"0" * 32})  # force a gunzip check
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as e:
        data.load_dataset("cmnist", tmp_path)
    assert f"{p} (truncated or corrupt gzip)" in str(e.value)
    # An accepted but truncated gzip is reported by the parser, naming the file.
    accept(monkeypatch, "mnist", p)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated or corrupt gzip"):
        data.load_dataset("cmnist", tmp_path)


def test_idx_checksum_mismatch(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    p = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", balanced_labels(200, seed=42))
    with pytest.raises(DataError) as e:
        data.load_dataset("cmnist", tmp_path)
    msg = str(e.value)
    assert "missing train-labels-idx1-ubyte.gz" in msg and f"rejected {p} (md5 {md5(p)} " in msg
    assert "matches no known version" in msg


def test_decompressed_md5_accepted(tmp_path, monkeypatch):
    # Like Debian's Fashion-MNIST: the .gz differs from upstream's, its content does not.
    make_idx_set(monkeypatch, tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    monkeypatch.setitem(data.CHECKSUMS["mnist"], p.name, {"0" * 32})
    monkeypatch.setitem(data.CHECKSUMS["mnist"], "t10k-labels-idx1-ubyte",
                        {hashlib.md5(gzip.decompress(p.read_bytes())).hexdigest()})
    ds = data.load_dataset("cmnist", tmp_path)
    info = [f for f in ds.source["files"] if f["file"] == p.name][0]
    assert info["verified_by"] == "decompressed md5"
    # A different content under the same name is rejected.
    write_idx(p, balanced_labels(100, seed=9))
    data.clear_memory_cache()
    with pytest.raises(DataError, match="matches no known version"):
        data.load_dataset("cmnist", tmp_path)


def test_missing_files_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        data.load_dataset("cmnist", tmp_path / "empty", download=True)
    msg = str(e.value)
    assert "\n" not in msg
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        assert name in msg
    for place in (tmp_path / "empty", tmp_path / "empty" / "mnist", tmp_path / "cache" / "data" / "mnist",
                  tmp_path / "system" / "mnist"):
        assert str(place) in msg
    assert "DAGWIRE_OFFLINE" in msg


def test_missing_train_split_suggests_carving(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path, n_train=None)
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte.gz.*carve_test") as e:
        data.load_dataset("cmnist", tmp_path, download=False)
    assert "t10k" not in str(e.value).split(";")[0]


def test_download_into_cache(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    make_idx_set(monkeypatch, src)
    monkeypatch.delenv("DAGWIRE_OFFLINE")
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(fetch, "_download", fake_download)
    ds = data.load_dataset("cmnist")
    assert len(urls) == 4 and all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in urls)
    assert (tmp_path / "cache" / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert len(ds.train_y) == 200

    def failing(url, dest):
        raise OSError("no route to host")

    data.clear_memory_cache()
    monkeypatch.setattr(fetch, "_download", failing)
    with pytest.raises(DataError, match="download from .* failed: no route to host"):
        data.load_dataset("ckmnist")


# ---------------------------------------------------------------------------------------------
# Colouring


def test_colour_formula_known_image(tmp_path, monkeypatch):
    sets = make_idx_set(monkeypatch, tmp_path)
    ds = data.load_dataset("cmnist", tmp_path)
    for split, xs, si in (("train", ds.train_x, 0), ("test", ds.test_x, 1)):
        grey = sets[split][0]
        for k in (0, 1, len(grey) - 1):
            np.testing.assert_array_equal(xs[k], expected_colour(grey[k], si, k))
    # The 2-pixel border is pure background colour b.
    rng = np.random.default_rng([0, 3])
    f, b = rng.random(3), rng.random(3)
    assert not np.array_equal(np.round(255 * f), np.round(255 * b))
    np.testing.assert_array_equal(ds.train_x[3, :, 0, 0], np.round(255 * b).astype(np.uint8))


def test_colour_hand_computed_pixel():
    grey = np.zeros((1, 28, 28), np.uint8)
    grey[0, 0, 0] = 255
    grey[0, 0, 1] = 51  # g = 0.2
    out = data.colourize(grey, "test")
    f, b = (lambda r: (r.random(3), r.random(3)))(np.random.default_rng([1, 0]))
    np.testing.assert_array_equal(out[0, :, 2, 2], np.round(255 * f))
    np.testing.assert_array_equal(out[0, :, 2, 3], np.round(255 * (0.8 * b + 0.2 * f)))
    np.testing.assert_array_equal(out[0, :, 2, 4], np.round(255 * b))
    with pytest.raises(ValueError):
        data.colourize(grey, "val")


def test_colour_deterministic_and_cached(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    a = data.load_dataset("cmnist", tmp_path)
    cached = sorted((tmp_path / "cache" / "arrays").glob("cmnist-*.npz"))
    assert len(cached) == 2 and a.source["cache"]["train"] in map(str, cached)
    data.clear_memory_cache()

    def boom(*args, **kwargs):
        raise AssertionError("recoloured although cached")

    monkeypatch.setattr(official, "colourize", boom)
    b = data.load_dataset("cmnist", tmp_path)  # from the disk cache
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    for p in cached:
        p.unlink()
    c = data.load_dataset("cmnist", tmp_path)  # from the in-process memo
    np.testing.assert_array_equal(a.train_x, c.train_x)
    # Returned arrays are copies: mutating them does not corrupt the memo.
    c.train_x[:] = 0
    np.testing.assert_array_equal(data.load_dataset("cmnist", tmp_path).train_x, a.train_x)


def test_colour_cache_keyed_by_content(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path, seed=0)
    a = data.load_dataset("cmnist", tmp_path)
    make_idx_set(monkeypatch, tmp_path, seed=1)  # new content, same names
    data.clear_memory_cache()
    b = data.load_dataset("cmnist", tmp_path)
    assert not np.array_equal(a.train_x, b.train_x)
    assert len(list((tmp_path / "cache" / "arrays").glob("cmnist-train-*.npz"))) == 2


# ---------------------------------------------------------------------------------------------
# T8


def test_t8_constants_from_seed_8():
    rng = np.random.default_rng(8)
    np.testing.assert_array_equal(data.T8_PERMUTATION, rng.permutation(16))
    np.testing.assert_array_equal(data.T8_ROTATIONS, rng.integers(0, 4, 16))
    assert sorted(data.T8_PERMUTATION) == list(range(16))
    assert (data.T8_PERMUTATION != np.arange(16)).any() and (data.T8_ROTATIONS != 0).any()


def test_t8_inverse_and_not_identity():
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    y = data.t8_transform(x)
    assert y.shape == x.shape and y.dtype == np.uint8 and not np.array_equal(x, y)
    np.testing.assert_array_equal(data.t8_inverse(y), x)
    np.testing.assert_array_equal(data.t8_transform(data.t8_inverse(x)), x)
    # The same pixel shuffle for every image: permuting one image's pixels by the map of an index image.
    index = np.arange(1024).reshape(1, 1, 32, 32)
    where = data.t8_transform(np.stack([index // 256, index % 256], 1)[:, :, 0].astype(np.uint8))
    src = where[0, 0].astype(int) * 256 + where[0, 1]
    for img in x:
        np.testing.assert_array_equal(data.t8_transform(img[None])[0], img.reshape(3, -1)[:, src])


@pytest.mark.parametrize("tile,r,c", [(0, 0, 0), (5, 1, 6), (15, 7, 2), (9, 3, 3)])
def test_t8_marked_pixel(tile, r, c):
    j = int(np.flatnonzero(data.T8_PERMUTATION == tile)[0])  # output position of input tile `tile`
    k = int(data.T8_ROTATIONS[j])
    x = np.zeros((1, 1, 32, 32), np.uint8)
    x[0, 0, 8 * (tile // 4) + r, 8 * (tile % 4) + c] = 255
    y = data.t8_transform(x)
    # np.rot90 turns counter-clockwise: (r, c) -> (7 - c, r).
    rr, cc = r, c
    for _ in range(k):
        rr, cc = 7 - cc, rr
    expected = np.zeros_like(x)
    expected[0, 0, 8 * (j // 4) + rr, 8 * (j % 4) + cc] = 255
    np.testing.assert_array_equal(y, expected)


def test_t8_dataset_is_transformed_coloured(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path)
    base = data.load_dataset("cmnist", tmp_path)
    t8 = data.load_dataset("cmnist_t8", tmp_path)
    assert t8.name == "cmnist_t8" and t8.source["t8"]["permutation"] == data.T8_PERMUTATION.tolist()
    np.testing.assert_array_equal(t8.train_x, data.t8_transform(base.train_x))
    np.testing.assert_array_equal(t8.test_x, data.t8_transform(base.test_x))
    np.testing.assert_array_equal(t8.train_y, base.train_y)
    assert len(list((tmp_path / "cache" / "arrays").glob("cmnist_t8-*.npz"))) == 2


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def cifar_pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def make_cifar(monkeypatch, folder: Path, per_batch: int = 20, accept_files: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(10)]
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = list(balanced_labels(per_batch, seed=len(arrays)).tolist())
        (folder / name).write_bytes(cifar_pickle({b"batch_label": name.encode(), b"data": x, b"labels": y}))
        arrays[name] = (x, y)
    (folder / "batches.meta").write_bytes(cifar_pickle({b"label_names": [n.encode() for n in names],
                                                        b"num_vis": 3072}))
    if accept_files:
        accept(monkeypatch, "cifar-10", *[folder / n for n in list(arrays) + ["batches.meta"]])
    return arrays, names


def test_cifar_loader(tmp_path, monkeypatch):
    arrays, names = make_cifar(monkeypatch, tmp_path / "cifar-10-batches-py")
    ds = data.load_dataset("cifar10", tmp_path)
    assert ds.classes == names and ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    x1, y1 = arrays["data_batch_1"]
    # Rows are 1024 red, then green, then blue values, each row-major.
    assert ds.train_x[0, 0, 0, 0] == x1[0, 0] and ds.train_x[0, 1, 0, 0] == x1[0, 1024]
    assert ds.train_x[0, 0, 1, 0] == x1[0, 32] and ds.train_x[0, 2, 31, 31] == x1[0, 3071]
    np.testing.assert_array_equal(ds.train_y[:20], y1)
    np.testing.assert_array_equal(ds.train_x[20:40].reshape(20, -1), arrays["data_batch_2"][0])
    np.testing.assert_array_equal(ds.test_y, arrays["test_batch"][1])
    t8 = data.load_dataset("cifar10_t8", tmp_path)
    np.testing.assert_array_equal(t8.test_x, data.t8_transform(ds.test_x))


def test_cifar_from_archive(tmp_path, monkeypatch):
    make_cifar(monkeypatch, tmp_path / "build" / "cifar-10-batches-py")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    accept(monkeypatch, "cifar-10", archive)
    ds = data.load_dataset("cifar10", tmp_path / "dl")
    assert len(ds.train_y) == 100
    assert (tmp_path / "cache" / "data" / "cifar-10" / "cifar-10-batches-py" / "data_batch_3").is_file()


def test_cifar_corrupt_and_missing(tmp_path, monkeypatch):
    make_cifar(monkeypatch, tmp_path)
    p = tmp_path / "data_batch_4"
    p.write_bytes(p.read_bytes()[:100])
    accept(monkeypatch, "cifar-10", p)
    with pytest.raises(DataError, match=r"data_batch_4: cannot read CIFAR pickle"):
        data.load_dataset("cifar10", tmp_path)
    p.write_bytes(cifar_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    accept(monkeypatch, "cifar-10", p)
    with pytest.raises(DataError, match=r"data_batch_4: CIFAR data is"):
        data.load_dataset("cifar10", tmp_path)
    p.unlink()
    with pytest.raises(DataError, match=r"missing data_batch_4 \(or cifar-10-python.tar.gz\); searched"):
        data.load_dataset("cifar10", tmp_path)
    # Unaccepted files are never unpickled.
    make_cifar(monkeypatch, tmp_path / "other", accept_files=False)
    with pytest.raises(DataError, match="matches no known version"):
        data.load_dataset("cifar10", tmp_path / "other")


# ---------------------------------------------------------------------------------------------
# Subsets


def test_limits_stratified_and_seeded(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path, n_train=400, n_test=200)
    full = data.load_dataset("cmnist", tmp_path)
    a = data.load_dataset("cmnist", tmp_path, limit_train=100, limit_test=50, data_seed=1)
    assert len(a.train_y) == 100 and len(a.test_y) == 50
    np.testing.assert_array_equal(np.bincount(a.train_y, minlength=10), [10] * 10)
    np.testing.assert_array_equal(np.bincount(a.test_y, minlength=10), [5] * 10)
    b = data.load_dataset("cmnist", tmp_path, limit_train=100, limit_test=50, data_seed=1)
    c = data.load_dataset("cmnist", tmp_path, limit_train=100, limit_test=50, data_seed=2)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.train_x, c.train_x)
    # The subset keeps the colours of the images' official positions.
    rows = {full.train_x[i].tobytes(): i for i in range(len(full.train_y))}
    picked = [rows[img.tobytes()] for img in a.train_x]
    assert picked == sorted(picked) and len(set(picked)) == 100
    np.testing.assert_array_equal(full.train_y[picked], a.train_y)
    # mean/std are those of the subset used.
    np.testing.assert_allclose(a.mean, (a.train_x / 255.0).mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.std, (a.train_x / 255.0).std(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    assert a.source["limit_train"] == 100 and a.source["data_seed"] == 1
    big = data.load_dataset("cmnist", tmp_path, limit_train=10_000)
    np.testing.assert_array_equal(big.train_x, full.train_x)


def test_holdout_is_disjoint_stratified_and_drawn_before_the_limit(tmp_path, monkeypatch):
    make_idx_set(monkeypatch, tmp_path, n_train=400, n_test=200)
    full = data.load_dataset("cmnist", tmp_path)
    ds = data.load_dataset("cmnist", tmp_path, holdout=100, limit_train=200, data_seed=1)
    assert len(ds.holdout_y) == 100 and len(ds.train_y) == 200
    np.testing.assert_array_equal(np.bincount(ds.holdout_y, minlength=10), [10] * 10)
    held = {x.tobytes() for x in ds.holdout_x}
    assert not held & {x.tobytes() for x in ds.train_x}  # never trained on
    assert held <= {x.tobytes() for x in full.train_x}
    np.testing.assert_array_equal(ds.test_x, full.test_x)  # the test split is untouched
    again = data.load_dataset("cmnist", tmp_path, holdout=100, limit_train=150, data_seed=1)
    np.testing.assert_array_equal(again.holdout_x, ds.holdout_x)  # the limit does not move the hold-out
    np.testing.assert_allclose(ds.mean, (ds.train_x / 255.0).mean(axis=(0, 2, 3)), atol=1e-12)
    assert data.load_dataset("cmnist", tmp_path).holdout_x is None
    with pytest.raises(DataError, match="leaves no training images"):
        data.load_dataset("cmnist", tmp_path, holdout=400)


@pytest.mark.parametrize("kwargs", [dict(limit_train=0), dict(limit_test=-3), dict(limit_train=2.5),
                                    dict(limit_train=True), dict(carve_test=0.0), dict(carve_test=1.0),
                                    dict(carve_test=1.5), dict(carve_test=-0.1), dict(data_seed=-1),
                                    dict(image_size=28)])
def test_bad_arguments(kwargs):
    with pytest.raises(DataError):
        data.load_dataset("cmnist", **kwargs)


def test_carve_test(tmp_path, monkeypatch):
    sets = make_idx_set(monkeypatch, tmp_path, n_train=None, n_test=300)  # no train files at all
    ds = data.load_dataset("cmnist", tmp_path, carve_test=0.2, data_seed=3)
    assert len(ds.train_y) == 240 and len(ds.test_y) == 60
    np.testing.assert_array_equal(np.bincount(ds.test_y, minlength=10), [6] * 10)
    np.testing.assert_array_equal(np.bincount(ds.train_y, minlength=10), [24] * 10)
    grey, labels = sets["test"]
    official = {img.tobytes(): k for k, img in enumerate(data.colourize(grey, "test"))}  # test-split colours
    tr = [official[img.tobytes()] for img in ds.train_x]
    te = [official[img.tobytes()] for img in ds.test_x]
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 300
    np.testing.assert_array_equal(labels[tr], ds.train_y)
    other = data.load_dataset("cmnist", tmp_path, carve_test=0.2, data_seed=4)
    assert not np.array_equal(other.test_x, ds.test_x)
    limited = data.load_dataset("cmnist", tmp_path, carve_test=0.2, data_seed=3, limit_train=100, limit_test=30)
    assert len(limited.train_y) == 100 and len(limited.test_y) == 30
    assert {x.tobytes() for x in limited.test_x} <= {x.tobytes() for x in ds.test_x}


# ---------------------------------------------------------------------------------------------
# User datasets


def write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_dataset(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("zebra", "apple"):
            for i in range(n):
                write_png(root / split / cls / f"{i}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    grey = np.full((16, 16), 77, np.uint8)
    write_png(root / "train" / "apple" / "grey.png", grey)
    ds = data.load_dataset(f"folder:{root}", image_size=16)
    assert ds.classes == ["apple", "zebra"] and ds.name == f"folder:{root}"
    assert ds.train_x.shape == (9, 3, 16, 16) and ds.test_x.shape == (4, 3, 16, 16)
    np.testing.assert_array_equal(ds.train_y, [0] * 5 + [1] * 4)
    np.testing.assert_array_equal(ds.train_x[4], np.full((3, 16, 16), 77, np.uint8))  # "grey.png" sorts last
    flat = tmp_path / "flat"
    for cls in ("a", "b"):
        for i in range(5):
            write_png(flat / cls / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="carve_test"):
        data.load_dataset(f"folder:{flat}")
    carved = data.load_dataset(f"folder:{flat}", carve_test=0.4, image_size=8)
    assert len(carved.train_y) == 6 and len(carved.test_y) == 4
    np.testing.assert_array_equal(np.bincount(carved.test_y), [2, 2])
    (flat / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        data.load_dataset(f"folder:{flat}", carve_test=0.4)
    with pytest.raises(DataError, match="no such directory"):
        data.load_dataset(f"folder:{tmp_path / 'nope'}")


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.random((20, 32, 32))  # grey float in [0, 1]
    xte = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)  # NHWC
    ytr, yte = np.arange(20) % 2, np.arange(10) % 2
    p = tmp_path / "d.npz"
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = data.load_dataset(f"npz:{p}")
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (10, 3, 32, 32) and ds.classes == ["0", "1"]
    np.testing.assert_array_equal(ds.train_x[:, 0], np.round(xtr * 255).astype(np.uint8))
    np.testing.assert_array_equal(ds.train_x, np.repeat(ds.train_x[:, :1], 3, axis=1))
    np.testing.assert_array_equal(ds.test_x, xte.transpose(0, 3, 1, 2))
    # x, y only, NCHW one channel, resized, string labels.
    q = tmp_path / "e.npz"
    np.savez(q, x=rng.integers(0, 256, (30, 1, 28, 28), dtype=np.uint8), y=np.array(["cat", "dog", "emu"] * 10))
    with pytest.raises(DataError, match="carve_test"):
        data.load_dataset(f"npz:{q}")
    e = data.load_dataset(f"npz:{q}", carve_test=0.3)
    assert e.classes == ["cat", "dog", "emu"] and e.train_x.shape == (21, 3, 32, 32) and len(e.test_y) == 9
    np.testing.assert_array_equal(np.bincount(e.test_y), [3, 3, 3])
    r = tmp_path / "f.npz"
    np.savez(r, x_train=xtr * 2, y_train=ytr, x_test=xte, y_test=yte)
    with pytest.raises(DataError, match=r"f\.npz:x_train: float images must lie in \[0, 1\]"):
        data.load_dataset(f"npz:{r}")
    with pytest.raises(DataError, match="no such file"):
        data.load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# ---------------------------------------------------------------------------------------------
# Batch transforms


def padded_windows(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    c, h, w = img.shape
    p = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    p[:, pad:pad + h, pad:pad + w] = img
    return [p[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def test_augment_deterministic_crop_and_flip():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is visible
    out = data.augment_batch(x, torch.Generator().manual_seed(5), pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(5), pad=2))
    assert not torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(6), pad=2))
    offsets, flips = set(), 0
    for img, o in zip(x, out):
        wins = padded_windows(img, 2)
        plain = [i for i, w in enumerate(wins) if torch.equal(w, o)]
        mirrored = [i for i, w in enumerate(wins) if torch.equal(w.flip(-1), o)]
        assert len(plain) + len(mirrored) == 1
        offsets.add((plain + mirrored)[0])
        flips += bool(mirrored)
    assert len(offsets) > 10 and 10 < flips < 54


def test_augment_flip_only_and_crop_only():
    x = torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8)
    out = data.augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=True)
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(a or b for a, b in zip(same, mirrored)) and 5 < sum(mirrored) < 35
    out = data.augment_batch(x, torch.Generator().manual_seed(0), pad=1, flip=False)
    for img, o in zip(x, out):
        assert any(torch.equal(w, o) for w in padded_windows(img, 1))


def test_normalize_batch():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    y = data.normalize_batch(x, (0.0, 0.1, 0.5), (1.0, 0.5, 0.25))
    assert y.dtype == torch.float32 and y.shape == (2, 3, 2, 2)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.0, 0.2, 2.0]))


# ---------------------------------------------------------------------------------------------
# Real data (skipped where absent)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-cache")


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST absent")
def test_real_cfashionmnist(monkeypatch, real_cache):
    monkeypatch.setattr(fetch, "SYSTEM_DATA_ROOT", REAL_SYSTEM_ROOT)
    monkeypatch.setenv("DAGWIRE_CACHE", str(real_cache))
    ds = data.load_dataset("cfashionmnist")
    assert ds.train_x.shape == (60000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(ds.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_y), [1000] * 10)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert all(f["verified_by"] == "decompressed md5" for f in ds.source["files"])
    grey = data.read_idx(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz", 2051)
    np.testing.assert_array_equal(ds.test_x[9999], expected_colour(grey[9999], 1, 9999))
    assert all(0.2 < m < 0.8 for m in ds.mean) and all(0.1 < s < 0.5 for s in ds.std)


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="shared MNIST absent")
def test_real_cmnist_carved(monkeypatch, real_cache):
    monkeypatch.setenv("DAGWIRE_CACHE", str(real_cache))
    ds = data.load_dataset("cmnist", SHARED_MNIST, carve_test=0.2)
    assert ds.train_x.shape == (8000, 3, 32, 32) and ds.test_x.shape == (2000, 3, 32, 32)
    readme = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(np.bincount(ds.train_y) + np.bincount(ds.test_y), readme)
    assert np.abs(np.bincount(ds.test_y) - 0.2 * np.array(readme)).max() <= 1
    assert [f["verified_by"] for f in ds.source["files"]] == ["md5", "md5"]


# ---------------------------------------------------------------------------------------------
# Bit-identical loads: every array, class list and normalisation statistic of each load below hashes
# to the digest that the loader of commit b4ebd76 (2026-12-01, data.py still one module) gave. A change
# that alters any pixel, label, order or statistic fails here.


def load_digest(ds: data.Dataset) -> str:
    """sha256 over the load's arrays (dtype, shape, bytes), classes, mean and std; not its paths."""
    h = hashlib.sha256()
    for a in (ds.train_x, ds.train_y, ds.test_x, ds.test_y, ds.holdout_x, ds.holdout_y):
        h.update(b"none" if a is None else f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([ds.classes, ds.mean, ds.std]).encode())
    return h.hexdigest()


LIMITS = {"limit_train": 600, "limit_test": 300, "holdout": 100, "data_seed": 3}
REAL_LOADS = {  # (dataset, its folder or None for the default search path, load arguments): known digest
    ("cfashionmnist", None, "limits"): "803318e15e59948ee3698932e5f5cfda69bf7d9f39e729b8d868a51eb07017da",
    ("cfashionmnist_t8", None, "limits"): "0f0f411ad53bcc6143e15bb7ab9cfab1e3ab74e68d41fa42df4b1712d1ad8422",
    ("cmnist", SHARED_MNIST, "carved"): "db083340b2bafb48860e97f002d3b696e8dd8292605beb9bf75846254c6c391f",
    ("cmnist_t8", SHARED_MNIST, "carved"): "862003bae2df86e32c66b43556d4df9012329f07fe0fd2a7b5651c4646122073",
}
LOAD_ARGS = {"limits": LIMITS, "carved": {**LIMITS, "carve_test": 0.2}, "small": {"limit_train": 50, "holdout": 10},
             "carved_small": {"carve_test": 0.3, "limit_test": 20, "data_seed": 5}, "whole": {}}


@pytest.mark.parametrize("name, folder, args", list(REAL_LOADS), ids=[f"{n}-{a}" for n, _, a in REAL_LOADS])
def test_real_loads_bit_identical(monkeypatch, real_cache, name, folder, args):
    if not (folder or DEBIAN_FASHION).is_dir():
        pytest.skip(f"{folder or DEBIAN_FASHION} absent")
    monkeypatch.setattr(fetch, "SYSTEM_DATA_ROOT", REAL_SYSTEM_ROOT)
    monkeypatch.setenv("DAGWIRE_CACHE", str(real_cache))
    ds = data.load_dataset(name, folder, **LOAD_ARGS[args])
    assert load_digest(ds) == REAL_LOADS[name, folder, args], (name, args)


def written_files(monkeypatch, root: Path, source: str) -> Path:
    """The test-written official files of `source` under root (fixed seeds, so fixed bytes); their folder."""
    if source == "cifar-10":
        make_cifar(monkeypatch, root / "cifar-10-batches-py")
    elif source == "folder":
        rng = np.random.default_rng(7)
        for i in range(12):
            write_png(root / ("train" if i < 8 else "test") / f"c{i % 2}" / f"{i}.png",
                      rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    elif source == "npz":
        root.mkdir(parents=True)
        write_npz(root / "tiny.npz")
        return root / "tiny.npz"
    else:
        make_idx_set(monkeypatch, root, source=source, seed=4)
    return root


WRITTEN_LOADS = {  # (dataset, source of the written files, load arguments): known digest
    ("cmnist", "mnist", "small"): "a3a12cde55cfbedc377f7aeaf6acd208c34316285e267a51faac9a64742e0bb6",
    ("cmnist_t8", "mnist", "carved_small"): "9df3e69a6ba4d5d3f0f342b60a8dceba0db70868eb8ffbd51db54b149e73e1e4",
    ("ckmnist", "kmnist", "small"): "a5de30cfb8d127a682dea4ca289a8384cf74096af8d9f5182a7ea9d8ec1ceb93",
    ("ckmnist_t8", "kmnist", "small"): "fdc293a04461c0689eb4fa9b2d23bb7e35a7df4e242c31dfd36e4ee466bf689e",
    ("ckmnist", "kmnist", "carved_small"): "7e85ed31245cd2f3fbd16a8cfffab77744819c5da84a0e1290f0f7325b94455d",
    ("cifar10", "cifar-10", "small"): "54a11de138b2684ff6e7f13fcbf546291306d26d0b40ca69140670be19bdbb1c",
    ("cifar10_t8", "cifar-10", "small"): "410f42ffbdf96fddf28942b0e3c053155380621bef77728583559749981e5fe2",
    ("cifar10", "cifar-10", "carved_small"): "690c6d8302c72259fbb8a48ef473eb72a70d38dbdc8d5bae2d4bef1f6227ab70",
    ("folder", "folder", "whole"): "f86ae384324bedc4893dd2cd5a29b7d66970021fefda2af98b2fa05d9f3cf1e7",
    ("npz", "npz", "small"): "dc036847562102ecaa740ebcdb5c08d4de5b520b95d8c8884485c7a3e1003473",
}


@pytest.mark.parametrize("name, source, args", list(WRITTEN_LOADS), ids=[f"{n}-{a}" for n, _, a in WRITTEN_LOADS])
def test_written_loads_bit_identical(tmp_path, monkeypatch, name, source, args):
    where = written_files(monkeypatch, tmp_path / "files", source)
    if source in ("folder", "npz"):
        ds = data.load_dataset(f"{source}:{where}", image_size=16 if source == "folder" else 32, **LOAD_ARGS[args])
    else:
        ds = data.load_dataset(name, where, **LOAD_ARGS[args])
    assert load_digest(ds) == WRITTEN_LOADS[name, source, args], (name, args)
