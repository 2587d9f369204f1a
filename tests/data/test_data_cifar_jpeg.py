"""``cifar10-jpeg`` and ``doubled-cifar10-jpeg``: on a tiny archive in the real layout, and a cheap look
at the real archive when ``$CTXBUDGET_DATA`` holds it (a handful of files; never all 60,000)."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxbudget.data import DataError, cifar_jpeg, get_dataset, get_info
from ctxbudget.data.cifar import CLASSES
from ctxbudget.data.imagefolder import _decode


@pytest.fixture
def tiny_root(tmp_path, monkeypatch, pack):
    """``<root>/cifar10-jpeg/cifar10-jpeg.tar.gz`` with 3 train / 1 test 32×32 JPEG per class."""
    from PIL import Image

    from ctxbudget.data import imagefolder

    monkeypatch.setenv("CTXBUDGET_CACHE", str(tmp_path / "cache"))
    imagefolder.clear_cache()
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for split, n in (("train", 3), ("test", 1)):
        for cls in CLASSES:
            (src / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / split / cls / f"{i:04d}.jpg")
    (tmp_path / "root" / "cifar10-jpeg").mkdir(parents=True)
    pack(src, tmp_path / "root" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz")
    yield tmp_path / "root"
    imagefolder.clear_cache()


def test_tiny_archive_in_the_real_layout(tiny_root):
    train = get_dataset("cifar10-jpeg", "train", root=tiny_root)
    assert train.images.shape == (30, 3, 32, 32) and train.info.classes == list(CLASSES)
    assert train.labels[:10].tolist() == list(range(10))                  # class-balanced prefix
    assert train.info.mean == (0.4914, 0.4822, 0.4465)                    # the official CIFAR-10 statistics
    assert "JPEG copy" in train.info.label and "JPEG copy" in get_info("doubled-cifar10-jpeg").label
    doubled = get_dataset("doubled-cifar10-jpeg", "test", root=tiny_root, seed=0)
    assert doubled.images.shape == (10, 3, 36, 64) and doubled.regions is not None
    assert torch.equal(doubled.images[:, :, 4:, :32], get_dataset("cifar10-jpeg", "test", root=tiny_root).images)


def test_missing_archive_names_it(tmp_path):
    with pytest.raises(DataError, match="cifar10-jpeg/cifar10-jpeg.tar.gz is missing") as e:
        get_dataset("cifar10-jpeg", "test", root=tmp_path)
    assert str(tmp_path.resolve()) in str(e.value) and "CTXBUDGET_DATA" in str(e.value)


def _real_archive() -> Path:
    root = os.environ.get("CTXBUDGET_DATA", "")
    path = Path(root).expanduser() / cifar_jpeg.FOLDER / cifar_jpeg.ARCHIVE if root else None
    if path is None or not path.is_file():
        pytest.skip("the CIFAR-10 JPEG copy is not under $CTXBUDGET_DATA (cifar10-jpeg/cifar10-jpeg.tar.gz)")
    return path


def test_real_archive_metadata_and_a_handful_of_files():
    """Cheap: the registry's metadata and the first few files of the real archive (no full decode)."""
    path = _real_archive()
    assert cifar_jpeg.file_paths(path.parent.parent, "train") == [path]
    info = get_info("cifar10-jpeg")
    assert info.input_shape == (3, 32, 32) and info.classes == list(CLASSES) and info.num_classes == 10
    seen = []
    with tarfile.open(path, "r:gz") as tf:
        for m in tf:
            if m.isfile():
                split, cls, name = m.name.lstrip("./").split("/")
                x, mode = _decode(tf.extractfile(m).read(), m.name)
                assert split in ("train", "test") and cls in CLASSES and name.endswith(".jpg")
                assert x.shape == (3, 32, 32) and x.dtype == np.uint8 and mode == "RGB"
                seen.append(m.name)
                if len(seen) == 5:
                    break
    assert len(seen) == 5
