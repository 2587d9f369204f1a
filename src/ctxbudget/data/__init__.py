"""Data layer of ctxbudget: named image data sets as in-memory tensors.

>>> from ctxbudget.data import get_dataset
>>> ds = get_dataset("mnist-sample", "train")      # offline, shipped with the package
>>> ds.images.shape, ds.labels.shape               # (5000, 1, 28, 28), (5000,)

Images are float32 ``N×C×H×W`` in [0, 1], labels int64 ``N``; ``ds.info`` carries the class
names and the Normalize statistics; ``ds.regions`` (bool ``N×1×H×W`` or None) marks the pixels
that carry the label. Real data sets are read from the data root (argument, else
``$CTXBUDGET_DATA``, else ``~/.cache/ctxbudget``), one folder per set (``mnist/``, ``cifar10/``,
``cifar10-jpeg/``, ``organamnist/``), and downloaded only with ``download=True``. Your own data:
image files in class folders (a folder or an archive) as ``get_dataset("image-folder", split,
path=…)`` (``data.name: image-folder``, ``data.path``; see :mod:`ctxbudget.data.imagefolder`),
``register_dataset`` (arrays or a ``Dataset``) or, for full control over loading,
``register(name, DatasetSpec(…))``.
"""
from __future__ import annotations

from .augment import augment_crop_flip
from .base import DataError, DatasetInfo, ImageDataset, resolve_data_root
from .custom import register_dataset
from .preview import save_preview
from .registry import DatasetSpec, dataset_names, describe, get_dataset, get_info, register

__all__ = [
    "DataError",
    "DatasetInfo",
    "DatasetSpec",
    "ImageDataset",
    "augment_crop_flip",
    "dataset_names",
    "describe",
    "get_dataset",
    "get_info",
    "register",
    "register_dataset",
    "resolve_data_root",
    "save_preview",
]
