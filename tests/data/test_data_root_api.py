"""Data-root resolution and the public API surface."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import ctxbudget.data as data
from ctxbudget.data import (
    DataError,
    DatasetInfo,
    ImageDataset,
    dataset_names,
    describe,
    get_dataset,
    resolve_data_root,
    save_preview,
)


def test_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.setenv("CTXBUDGET_DATA", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "ctxbudget"
    monkeypatch.delenv("CTXBUDGET_DATA")
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "ctxbudget"
    assert resolve_data_root("~/x") == tmp_path / "home" / "x"


def test_env_root_is_used_by_loaders(tmp_path, monkeypatch, write_mnist):
    write_mnist(tmp_path / "mnist")
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path))
    assert len(get_dataset("mnist", "train")) == 40
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        get_dataset("mnist", "train")


def test_names_and_unknown():
    names = dataset_names()
    for n in ("mnist", "mnist-sample", "cifar10", "organamnist", "watermarked-mnist",
              "watermarked-mnist-sample", "doubled-cifar10"):
        assert n in names
    with pytest.raises(ValueError, match="mnist-sample"):
        get_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="train, test"):
        get_dataset("mnist-sample", "val")
    assert set(data.__all__) >= {"get_dataset", "dataset_names", "DatasetInfo", "ImageDataset",
                                 "augment_crop_flip", "resolve_data_root", "DataError", "describe", "save_preview"}
    from ctxbudget.errors import UserError

    assert issubclass(DataError, UserError)


def test_image_dataset_with_dataloader():
    info = DatasetInfo("toy", 3, (1, 4, 4), ["a", "b", "c"])
    ds = ImageDataset(torch.rand(7, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0]), info)
    assert len(ds) == 7 and ds.regions is None
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 4, 4) and yb.dtype == torch.int64
    with pytest.raises(ValueError):
        ImageDataset(torch.rand(7, 1, 5, 4), torch.zeros(7), info)
    with pytest.raises(ValueError):
        ImageDataset(torch.rand(7, 1, 4, 4), torch.zeros(7), info, regions=torch.zeros(7, 1, 4, 4))


def test_describe_and_preview(tmp_path, write_cifar):
    d = describe("mnist-sample")
    assert d["splits"] == {"train": 5000, "test": 1000} and d["available"]
    assert d["label_counts"]["test"] == [100] * 10 and d["input_shape"] == (1, 28, 28)
    assert d["files"]["train"][0].endswith("mnist_sample.npz")
    missing = describe("cifar10", root=tmp_path / "none")
    assert not missing["available"] and "data_batch_1" in missing["error"] and missing["splits"] == {}
    write_cifar(tmp_path)
    d = describe("doubled-cifar10", root=tmp_path)
    assert d["splits"] == {"train": 30, "test": 6} and sum(d["label_counts"]["train"]) == 30
    out = save_preview("watermarked-mnist-sample", tmp_path / "p" / "wm.png", per_class=2)
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = save_preview("doubled-cifar10", tmp_path / "dc.png", root=tmp_path, per_class=3, show_regions=True)
    assert out.stat().st_size > 1000
