"""CIFAR-10 pickle batches and OrganAMNIST npz loaders on tiny files in the real formats."""
from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
import torch

from ctxbudget.data import DataError, get_dataset
from ctxbudget.data import cifar as cifar_mod
from ctxbudget.data import medmnist as med_mod


def test_cifar_batches(tmp_path, write_cifar):
    arrays = write_cifar(tmp_path)
    train = get_dataset("cifar10", "train", root=tmp_path)
    test = get_dataset("cifar10", "test", root=tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    # channel-major layout: first 1024 values are the red plane
    data, labels = arrays["data_batch_2"]
    x = train.images[6]
    assert torch.allclose(x[0].flatten() * 255, torch.from_numpy(data[0, :1024].astype(np.float32)))
    assert torch.allclose(x[2, 0, 5] * 255, torch.tensor(float(data[0, 2048 + 5])))
    assert train.labels[6:12].tolist() == labels
    assert train.info.mean == (0.4914, 0.4822, 0.4465) and train.info.std == (0.2023, 0.1994, 0.2010)
    assert cifar_mod.class_names(tmp_path)[0] == "airplane"


def test_cifar_missing_and_corrupt(tmp_path, write_cifar):
    with pytest.raises(DataError, match="data_batch_1") as e:
        get_dataset("cifar10", "train", root=tmp_path)
    assert "cifar10/" in str(e.value) and "CTXBUDGET_DATA" in str(e.value)
    write_cifar(tmp_path)
    bad = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError) as e:
        get_dataset("cifar10", "train", root=tmp_path)
    assert str(bad.resolve()) in str(e.value)
    assert len(get_dataset("cifar10", "test", root=tmp_path)) == 6


def test_cifar_download_and_extract(tmp_path, write_cifar, monkeypatch):
    src = tmp_path / "src"
    write_cifar(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar10" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buf.getvalue())
    monkeypatch.setattr(cifar_mod, "URL", archive.as_uri())
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", hashlib.md5(buf.getvalue()).hexdigest())
    ds = get_dataset("doubled-cifar10", "test", root=tmp_path / "root", download=True)
    assert ds.images.shape == (6, 3, 36, 64)
    assert (tmp_path / "root" / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()


def test_organamnist(tmp_path, write_organ):
    arrays = write_organ(tmp_path)
    for split, n in (("train", 33), ("val", 11), ("test", 22)):
        ds = get_dataset("organamnist", split, root=tmp_path)
        assert ds.images.shape == (n, 1, 28, 28) and ds.labels.shape == (n,)
        assert ds.labels.tolist() == arrays[f"{split}_labels"].reshape(-1).tolist()
        assert torch.equal((ds.images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(arrays[f"{split}_images"]))
    assert ds.info.num_classes == 11 and len(ds.info.classes) == 11 and ds.info.classes[-1] == "spleen"
    with pytest.raises(ValueError, match="val"):
        get_dataset("organamnist", "validation", root=tmp_path)


def test_organamnist_errors(tmp_path, write_organ):
    path = tmp_path / "organamnist" / "organamnist.npz"
    with pytest.raises(DataError, match="organamnist.npz") as e:
        get_dataset("organamnist", "train", root=tmp_path)
    assert str(path.resolve()) in str(e.value)
    write_organ(tmp_path / "a")
    p = tmp_path / "a" / "organamnist" / "organamnist.npz"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot be read"):
        get_dataset("organamnist", "train", root=tmp_path / "a")
    np.savez_compressed(tmp_path / "b.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "b" / "organamnist").mkdir(parents=True)
    (tmp_path / "b.npz").rename(tmp_path / "b" / "organamnist" / "organamnist.npz")
    with pytest.raises(DataError, match="lacks the key"):
        get_dataset("organamnist", "train", root=tmp_path / "b")
    write_organ(tmp_path / "c", test_labels=np.full((22, 1), 11, np.uint8))
    with pytest.raises(DataError, match="labels outside"):
        get_dataset("organamnist", "test", root=tmp_path / "c")
    med_mod.clear_cache()
