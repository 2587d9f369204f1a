"""CIFAR-10 from the standard python-pickle batches.

Layout: ``<root>/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.
Each batch is a pickled dict with ``b"data"`` (uint8 ``N×3072``, channel-major: 1024 R, 1024 G,
1024 B values, each row-major 32×32) and ``b"labels"`` (list of ints 0..9). Images become float32
``N×3×32×32`` in [0, 1]. With ``download=True`` the official tarball (MD5-checked) is fetched
into ``<root>/cifar10/`` and extracted.

Note: pickles can execute code; only load CIFAR batches from a source you trust (the official
archive is MD5-checked on download).
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, PathLike, missing_file_error, resolve_data_root
from .download import download_url, extract_tar

FOLDER = "cifar10"
SUBDIR = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def batches_dir(root: Optional[PathLike] = None) -> Path:
    """``<root>/cifar10/cifar-10-batches-py`` (or ``<root>/cifar-10-batches-py`` if only that exists)."""
    base = resolve_data_root(root)
    std = base / FOLDER / SUBDIR
    if not std.is_dir() and (base / SUBDIR).is_dir():
        return base / SUBDIR
    return std


def file_paths(root: Optional[PathLike] = None, split: str = "train") -> list[Path]:
    """Where the batch files of ``split`` are (or would be)."""
    return [batches_dir(root) / b for b in BATCHES[split]]


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise missing_file_error(path, FOLDER)
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # pickle raises many kinds of errors on garbage
        raise DataError(f"{path.resolve()} is not a valid CIFAR-10 pickle batch ({type(e).__name__}: {e}); "
                        "delete it and re-download") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path.resolve()} does not hold a dict; it is not a CIFAR-10 batch")
    return obj


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → ``(uint8 N×3×32×32, uint8 N)``."""
    d = _unpickle(path)
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path.resolve()} lacks the 'data'/'labels' entries of a CIFAR-10 batch")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"{path.resolve()} holds data {data.dtype} {data.shape} / labels {labels.shape}, "
                        "expected uint8 N×3072 and N labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path.resolve()} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def _maybe_download(root: Optional[PathLike]) -> None:
    folder = resolve_data_root(root) / FOLDER
    archive = folder / ARCHIVE
    if not archive.is_file():
        download_url(URL, archive, md5=ARCHIVE_MD5, timeout=300)
    extract_tar(archive, folder)


@functools.lru_cache(maxsize=4)
def _load_cached(paths: tuple[str, ...], stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(Path(p)) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_cifar10_arrays(
    root: Optional[PathLike] = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return read-only ``(images uint8 N×3×32×32, labels uint8 N)`` (cached in-process)."""
    if split not in BATCHES:
        raise ValueError(f"cifar10 has splits 'train' and 'test', not {split!r}")
    paths = file_paths(root, split)
    if download and not all(p.is_file() for p in paths):
        _maybe_download(root)
        paths = file_paths(root, split)
    for p in paths:
        if not p.is_file():
            raise missing_file_error(p, FOLDER)
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _load_cached(tuple(str(p.resolve()) for p in paths), stamp)


def class_names(root: Optional[PathLike] = None) -> list[str]:
    """Class names from ``batches.meta`` when present and valid, else the standard list."""
    meta = batches_dir(root) / "batches.meta"
    if meta.is_file():
        try:
            names = _unpickle(meta).get(b"label_names")
            if names is not None and len(names) == 10:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except DataError:
            pass
    return list(CLASSES)


def clear_cache() -> None:
    """Forget the in-process cache."""
    _load_cached.cache_clear()
