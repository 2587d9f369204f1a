"""MNIST from the standard IDX files (gzipped or raw).

Layout: ``<root>/mnist/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte}[.gz]`` (a root that holds the files directly also works).
Images: uint8 ``N×28×28`` → float32 ``N×1×28×28`` in [0, 1]; labels int64 in 0..9.

IDX format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions d, then d big-endian
int32 sizes, then the data. Every header field and the data length are validated; anything wrong
raises :class:`DataError` naming the file.
"""
from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import DataError, PathLike, missing_file_error, resolve_data_root
from .download import download_url, md5_bytes

FOLDER = "mnist"
CLASSES = [str(d) for d in range(10)]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: MD5 of the decompressed files.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode IDX bytes (already decompressed) into an array; ``path`` is only for messages."""
    where = str(path.resolve())
    if len(data) < 4:
        raise DataError(f"{where} is truncated (only {len(data)} bytes); delete it and re-download")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{where} is not an IDX file (bad magic {data[:4].hex()}); replace it with the original file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{where} has a truncated or invalid IDX header; replace it with the original file")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{where} is truncated or corrupt: header says {dims} ({expected} data bytes), "
            f"found {len(data) - header}; delete it and re-download"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def find_file(folder: Path, name: str) -> Optional[Path]:
    """Return ``folder/name`` or ``folder/name.gz`` (raw preferred), or ``None``."""
    for cand in (folder / name, folder / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def read_idx_file(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping if it ends in ``.gz``."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path.resolve()} cannot be read or decompressed ({e}); delete it and re-download") from e
    return parse_idx(data, path)


def mnist_dir(root: Optional[PathLike] = None) -> Path:
    """Folder holding the IDX files: ``<root>/mnist``, or ``<root>`` itself if it holds them."""
    base = resolve_data_root(root)
    folder = base / FOLDER
    if not folder.is_dir() and find_file(base, FILES["train"][0]) is not None:
        return base
    return folder


def _download(folder: Path, name: str) -> Path:
    """Download ``name``.gz into ``folder`` from the first mirror whose file decompresses to the
    expected MD5 (the MD5 of the *decompressed* file, which is what docs/data.md documents)."""
    dest = folder / (name + ".gz")
    problems: list[str] = []
    for mirror in MIRRORS:
        try:
            download_url(mirror + name + ".gz", dest)
            got = md5_bytes(gzip.decompress(dest.read_bytes()))
        except (DataError, OSError, EOFError, zlib.error) as e:
            problems.append(str(e))
            got = None
        if got == MD5[name]:
            return dest
        if got is not None:
            problems.append(f"{mirror}{name}.gz: MD5 after decompression {got}, expected {MD5[name]}")
        if dest.exists():
            dest.unlink()
    raise DataError(f"could not download {dest.resolve()}: " + "; ".join(problems))


def file_paths(root: Optional[PathLike] = None, split: str = "train") -> list[Path]:
    """Where the files of ``split`` are (or would be)."""
    folder = mnist_dir(root)
    return [find_file(folder, n) or folder / (n + ".gz") for n in FILES[split]]


@functools.lru_cache(maxsize=8)
def _load_cached(img_path: str, lbl_path: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Decode and validate one split; ``stamp`` (sizes, mtimes) invalidates the cache on change."""
    paths = [Path(img_path), Path(lbl_path)]
    images = read_idx_file(paths[0])
    labels = read_idx_file(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{paths[0].resolve()} holds {images.dtype} {images.shape}, expected uint8 N×28×28")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{paths[1].resolve()} holds {labels.dtype} {labels.shape}, expected uint8 N")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{paths[0].resolve()} has {images.shape[0]} images but {paths[1].resolve()} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{paths[1].resolve()} has labels > 9; replace it with the original file")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mnist_arrays(
    root: Optional[PathLike] = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return read-only ``(images uint8 N×28×28, labels uint8 N)`` (cached in-process)."""
    if split not in FILES:
        raise ValueError(f"mnist has splits 'train' and 'test', not {split!r}")
    folder = mnist_dir(root)
    paths = []
    for name in FILES[split]:
        p = find_file(folder, name)
        if p is None and download:
            p = _download(folder, name)
        if p is None:
            raise missing_file_error(folder / (name + ".gz"), FOLDER, "is missing (and so is the uncompressed file)")
        paths.append(p.resolve())
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _load_cached(str(paths[0]), str(paths[1]), stamp)


def clear_cache() -> None:
    """Forget the in-process cache (e.g. after files changed on disk)."""
    _load_cached.cache_clear()
