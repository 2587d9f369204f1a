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
