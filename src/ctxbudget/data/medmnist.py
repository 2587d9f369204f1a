"""OrganAMNIST (MedMNIST v2/v3, 1×28×28 axial CT organ crops, 11 classes).

Layout: ``<root>/organamnist/organamnist.npz`` with keys ``{train,val,test}_images`` (uint8
``N×28×28``) and ``{train,val,test}_labels`` (integer ``N×1``, flattened to ``N``). Images become
float32 ``N×1×28×28`` in [0, 1]. Splits: ``train``, ``val``, ``test``.
"""
from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, PathLike, missing_file_error, resolve_data_root
from .download import download_url

FOLDER = "organamnist"
FILENAME = "organamnist.npz"
URL = "https://zenodo.org/records/10519652/files/organamnist.npz?download=1"
MD5 = "68e3f8846a6bd62f0c9bf841c0d9eacc"  # MedMNIST v3 (zenodo record 10519652)
SPLITS = ("train", "val", "test")
CLASSES = [
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
]


def npz_path(root: Optional[PathLike] = None) -> Path:
    """``<root>/organamnist/organamnist.npz`` (or ``<root>/organamnist.npz`` if only that exists)."""
    base = resolve_data_root(root)
    std = base / FOLDER / FILENAME
    if not std.is_file() and (base / FILENAME).is_file():
        return base / FILENAME
    return std


def file_paths(root: Optional[PathLike] = None, split: str = "train") -> list[Path]:
    """Where the file is (or would be)."""
    return [npz_path(root)]


@functools.lru_cache(maxsize=2)
def _load_npz(path: str, stamp: tuple) -> dict[str, np.ndarray]:
    p = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            for split in SPLITS:
                for kind in ("images", "labels"):
                    key = f"{split}_{kind}"
                    if key not in z.files:
                        raise DataError(f"{p.resolve()} lacks the key {key!r}; it is not organamnist.npz")
                    out[key] = z[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{p.resolve()} cannot be read ({type(e).__name__}: {e}); delete it and re-download") from e
    for split in SPLITS:
        imgs, lbls = out[f"{split}_images"], out[f"{split}_labels"].reshape(-1)
        if imgs.dtype != np.uint8 or imgs.ndim != 3 or imgs.shape[1:] != (28, 28) or lbls.shape[0] != imgs.shape[0]:
            raise DataError(f"{p.resolve()}: {split} holds images {imgs.dtype} {imgs.shape} and labels "
                            f"{out[f'{split}_labels'].shape}; expected uint8 N×28×28 and N×1")
        if lbls.size and (lbls.min() < 0 or lbls.max() >= len(CLASSES)):
            raise DataError(f"{p.resolve()}: {split} labels outside 0..{len(CLASSES) - 1}")
        lbls = lbls.astype(np.uint8)
        imgs.setflags(write=False)
        lbls.setflags(write=False)
        out[f"{split}_labels"] = lbls
    return out


def load_organamnist_arrays(
    root: Optional[PathLike] = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return read-only ``(images uint8 N×28×28, labels uint8 N)`` (cached in-process)."""
    if split not in SPLITS:
        raise ValueError(f"organamnist has splits {SPLITS}, not {split!r}")
    path = npz_path(root)
    if not path.is_file() and download:
        download_url(URL, path, md5=MD5, timeout=300)
    if not path.is_file():
        raise missing_file_error(path, FOLDER)
    st = path.stat()
    data = _load_npz(str(path.resolve()), (st.st_size, st.st_mtime_ns))
    return data[f"{split}_images"], data[f"{split}_labels"]


def clear_cache() -> None:
    """Forget the in-process cache."""
    _load_npz.cache_clear()
