"""MNIST IDX loader: formats, validation, errors, caching, download (via file:// URLs only)."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxbudget.data import DataError, get_dataset
from ctxbudget.data import mnist as mnist_mod


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_gz_and_raw(tmp_path, write_mnist, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    ds = get_dataset("mnist", "train", root=tmp_path)
    assert ds.images.shape == (40, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and ds.regions is None
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0)
    torch.testing.assert_close(ds.images[:, 0], expected)
    assert ds.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    test = get_dataset("mnist", "test", root=str(tmp_path))
    assert len(test) == 20 and 0.0 <= test.images.min() and test.images.max() <= 1.0
    img, lbl = test[3]
    assert img.shape == (1, 28, 28) and int(lbl) == 3
    assert ds.info.mean == (0.0,) and ds.info.std == (1.0,) and ds.info.num_classes == 10


def test_root_may_be_the_mnist_folder_itself(tmp_path, write_mnist):
    write_mnist(tmp_path / "somewhere")
    assert len(get_dataset("mnist", "train", root=tmp_path / "somewhere")) == 40


def test_parse_idx_header_dims(idx_bytes):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = mnist_mod.parse_idx(idx_bytes(arr), Path("x"))
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_missing_file_names_file_and_remedy(tmp_path, write_mnist):
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        get_dataset("mnist", "train", root=tmp_path, download=False)
    msg = str(e.value)
    assert str((tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").resolve()) in msg
    assert "CTXBUDGET_DATA" in msg and "--data-dir" in msg and "download" in msg
    # the other split is still fine
    assert len(get_dataset("mnist", "test", root=tmp_path)) == 20


def test_absent_root_without_download(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        get_dataset("mnist", "test", root=tmp_path / "nothing", download=False)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:-100], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:2], "truncated"),
    ],
)
def test_corrupt_idx(tmp_path, write_mnist, idx_bytes, corrupt, match):
    arrays = write_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(arrays["train-images-idx3-ubyte"])))
    with pytest.raises(DataError, match=match) as e:
        get_dataset("mnist", "train", root=tmp_path)
    assert str(path.resolve()) in str(e.value)


def test_truncated_gzip(tmp_path, write_mnist):
    write_mnist(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        get_dataset("mnist", "train", root=tmp_path)
    assert str(path.resolve()) in str(e.value)


def test_count_mismatch_and_bad_shape(tmp_path, write_mnist, tiny_mnist):
    arrays = tiny_mnist()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    write_mnist(tmp_path / "a" / "mnist", arrays=arrays)
    with pytest.raises(DataError, match="labels"):
        get_dataset("mnist", "train", root=tmp_path / "a")
    arrays = tiny_mnist()
    arrays["train-images-idx3-ubyte"] = np.zeros((40, 27, 28), np.uint8)
    write_mnist(tmp_path / "b" / "mnist", arrays=arrays)
    with pytest.raises(DataError, match="28"):
        get_dataset("mnist", "train", root=tmp_path / "b")


def test_cache_is_reused_and_invalidated(tmp_path, write_mnist, tiny_mnist):
    write_mnist(tmp_path / "mnist", gz=False)
    a = mnist_mod.load_mnist_arrays(tmp_path, "train")
    b = mnist_mod.load_mnist_arrays(tmp_path, "train")
    assert a[0] is b[0]  # cached decode
    ds1, ds2 = get_dataset("mnist", "train", root=tmp_path), get_dataset("mnist", "train", root=tmp_path)
    ds1.images.zero_()  # datasets own their tensors: mutating one does not poison the cache
    assert ds2.images.sum() > 0 and get_dataset("mnist", "train", root=tmp_path).images.sum() > 0
    new = tiny_mnist(seed=5)
    write_mnist(tmp_path / "mnist", gz=False, arrays={k: v for k, v in new.items()})
    c = mnist_mod.load_mnist_arrays(tmp_path, "train")
    assert np.array_equal(c[0], new["train-images-idx3-ubyte"])


def test_invalid_split(tmp_path, write_mnist):
    write_mnist(tmp_path / "mnist")
    with pytest.raises(ValueError, match="train"):
        get_dataset("mnist", "val", root=tmp_path)


def test_download_from_mirror_with_md5_check(tmp_path, monkeypatch, idx_bytes, tiny_mnist):
    """download=True fetches missing .gz files from the mirrors (here: a file:// folder) and
    checks the MD5 of the decompressed content."""
    arrays = tiny_mnist()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = {}
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        (mirror / (name + ".gz")).write_bytes(gzip.compress(data))
        md5[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(mnist_mod, "MIRRORS", ["file:///nonexistent-mirror/", mirror.as_uri() + "/"])
    monkeypatch.setattr(mnist_mod, "MD5", md5)
    root = tmp_path / "root"
    ds = get_dataset("mnist", "train", root=root, download=True)
    assert len(ds) == 40 and (root / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    # wrong checksum → DataError and no file left behind
    monkeypatch.setattr(mnist_mod, "MD5", {k: "0" * 32 for k in md5})
    with pytest.raises(DataError, match="MD5"):
        get_dataset("mnist", "test", root=tmp_path / "root2", download=True)
    assert not (tmp_path / "root2" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
