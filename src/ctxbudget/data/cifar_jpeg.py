"""CIFAR-10 from its JPEG copy: ``<root>/cifar10-jpeg/cifar10-jpeg.tar.gz``.

The archive holds all 60,000 CIFAR-10 images as 32×32 RGB JPEG files in the image-folder layout
(``train/<class>/NNNN.jpg``, 5,000 per class; ``test/<class>/NNNN.jpg``, 1,000 per class; CIFAR-10's
ten classes in CIFAR-10's order). It is read by :mod:`ctxbudget.data.imagefolder` (decoded once, then
cached under ``$CTXBUDGET_CACHE`` or ``~/.cache/ctxbudget/decoded``; the data root may be read-only),
with its fixed example order: class-balanced prefixes, so ``data.train_limit`` takes the same number
of images of every class.

The files are JPEG at quality about 75, so pixel values differ from the official python batches by a
few levels: results on this copy are close to, but not the same as, results on the official data,
and every table made from it says "JPEG copy". There is no download: place the archive yourself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, PathLike, resolve_data_root
from .cifar import CLASSES
from .imagefolder import load_image_folder

FOLDER = "cifar10-jpeg"
ARCHIVE = "cifar10-jpeg.tar.gz"
#: How tables and figures name the data source.
TITLE = "CIFAR-10, JPEG copy"
SHAPE = (3, 32, 32)


def archive_path(root: Optional[PathLike] = None) -> Path:
    """``<root>/cifar10-jpeg/cifar10-jpeg.tar.gz``."""
    return resolve_data_root(root) / FOLDER / ARCHIVE


def file_paths(root: Optional[PathLike] = None, split: str = "train") -> list[Path]:
    """The one archive both splits come from."""
    return [archive_path(root)]


def load_cifar10_jpeg_arrays(
    root: Optional[PathLike] = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(images uint8 N×3×32×32, labels int64 N)`` of ``split`` (labels in CIFAR-10's order)."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar10-jpeg has splits 'train' and 'test', not {split!r}")
    path = archive_path(root)
    if not path.is_file():
        raise DataError(f"{path.resolve()} is missing; pass --data-dir pointing at a folder that contains "
                        f"{FOLDER}/{ARCHIVE}, or set CTXBUDGET_DATA" + (" (this copy has no download)" if download else ""))
    data = load_image_folder(path, classes=CLASSES)
    if data.input_shape != SHAPE:
        raise DataError(f"{path.resolve()} holds {'×'.join(map(str, data.input_shape))} images, expected "
                        f"CIFAR-10's {'×'.join(map(str, SHAPE))}")
    return data.images[split], data.labels[split]
