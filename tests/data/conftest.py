"""Fixtures for the data-layer tests: tiny files in each real on-disk format, and the real MNIST
when it is available (never downloaded)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def tiny_mnist(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images and labels (every digit present) for both splits."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        out[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        out[f"{split}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    return out


@pytest.fixture(name="idx_bytes")
def idx_bytes_fixture() -> Callable[[np.ndarray], bytes]:
    """The :func:`idx_bytes` encoder (as a fixture, so tests need not import this conftest)."""
    return idx_bytes


@pytest.fixture(name="tiny_mnist")
def tiny_mnist_fixture() -> Callable[..., dict[str, np.ndarray]]:
    """The :func:`tiny_mnist` array factory."""
    return tiny_mnist


@pytest.fixture
def write_mnist() -> Callable[..., dict[str, np.ndarray]]:
    """``write_mnist(folder, gz=True, arrays=None)`` writes the four IDX files and returns the arrays."""

    def write(folder: Path, gz: bool = True, arrays: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        arrays = tiny_mnist() if arrays is None else arrays
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in arrays.items():
            data = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        return arrays

    return write


def cifar_arrays(n_per_batch: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n_per_batch) + i) % 10]
        out[name] = (data, labels)
    return out


@pytest.fixture
def write_cifar() -> Callable[..., dict[str, tuple[np.ndarray, list[int]]]]:
    """``write_cifar(root, n_per_batch=6)`` writes ``root/cifar10/cifar-10-batches-py/*`` (real format)."""

    def write(root: Path, n_per_batch: int = 6) -> dict[str, tuple[np.ndarray, list[int]]]:
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        arrays = cifar_arrays(n_per_batch)
        for name, (data, labels) in arrays.items():
            d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{name}_{k}.png".encode() for k in range(len(labels))]}
            with open(folder / name, "wb") as f:
                pickle.dump(d, f, protocol=2)
        meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                        "frog", "horse", "ship", "truck")],
                b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=2)
        return arrays

    return write


@pytest.fixture
def write_organ() -> Callable[..., dict[str, np.ndarray]]:
    """``write_organ(root)`` writes ``root/organamnist/organamnist.npz`` in the MedMNIST layout."""

    def write(root: Path, sizes: tuple[int, int, int] = (33, 11, 22), **overrides: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(1)
        arrays = {}
        for split, n in zip(("train", "val", "test"), sizes):
            arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 11).astype(np.uint8).reshape(n, 1)
        arrays.update(overrides)
        folder = root / "organamnist"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "organamnist.npz", **arrays)
        return arrays

    return write


# ------------------------------------------------------------------------- image folders (Pillow)
FOLDER_CLASSES = ("cat", "ant", "bee")      # unsorted on purpose: labels follow the sorted names


def folder_pixels(split: str, cls: str, i: int, size: int = 8, channels: int = 3) -> np.ndarray:
    """The deterministic uint8 H×W×C (H×W for one channel) image number ``i`` of ``split/cls``."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(f"{split}/{cls}/{i}".encode()))
    shape = (size, size) if channels == 1 else (size, size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_image_folder(folder: Path, *, per_class: dict[str, int] | None = None, size: int = 8,
                       jpeg_class: Optional[str] = "bee", wrapper: str = "") -> Path:
    """``folder/[wrapper/]{train,test}/<class>/<i>.png`` (``jpeg_class``: JPEG files), 8×8 RGB images;
    ``per_class``: images per class in train (test: half, at least 1). Returns the folder."""
    from PIL import Image

    per_class = per_class or {"cat": 4, "ant": 4, "bee": 4}
    base = folder / wrapper if wrapper else folder
    for split in ("train", "test"):
        for cls, n in per_class.items():
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n if split == "train" else max(1, n // 2)):
                img = Image.fromarray(folder_pixels(split, cls, i, size))
                if cls == jpeg_class:
                    img.save(d / f"{i:03d}.jpg", quality=95)
                else:
                    img.save(d / f"{i:03d}.png")
    return folder


def pack(folder: Path, archive: Path) -> Path:
    """Pack the contents of ``folder`` into ``archive`` (.tar, .tar.gz or .zip by its suffix)."""
    import tarfile
    import zipfile

    files = sorted(p for p in folder.rglob("*"))
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in files:
                zf.write(p, p.relative_to(folder).as_posix())
    else:
        with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tf:
            for p in files:
                tf.add(p, p.relative_to(folder).as_posix(), recursive=False)
    return archive


@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    """``image_folder(name="tiny", **kw)``: a tiny image folder (see :func:`write_image_folder`) under
    ``tmp_path``; the decoded-copy cache goes to ``tmp_path/cache`` and the in-process copies are cleared."""
    from ctxbudget.data import imagefolder

    monkeypatch.setenv("CTXBUDGET_CACHE", str(tmp_path / "cache"))
    imagefolder.clear_cache()

    def make(name: str = "tiny", **kw) -> Path:
        return write_image_folder(tmp_path / name, **kw)

    yield make
    imagefolder.clear_cache()


@pytest.fixture(name="pack")
def pack_fixture() -> Callable[[Path, Path], Path]:
    """The :func:`pack` archiver (as a fixture, so tests need not import this conftest)."""
    return pack


@pytest.fixture(name="folder_pixels")
def folder_pixels_fixture() -> Callable[..., np.ndarray]:
    """The :func:`folder_pixels` image factory."""
    return folder_pixels
