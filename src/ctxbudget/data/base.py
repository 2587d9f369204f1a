"""Core types of the data layer: :class:`DatasetInfo`, :class:`ImageDataset`, :class:`DataError`,
and data-root resolution.

Conventions used throughout ``ctxbudget.data``:

* images are ``float32`` tensors of shape ``N×C×H×W`` with pixel values in ``[0, 1]``;
* labels are ``int64`` tensors of shape ``N``;
* ``regions`` (optional) are ``bool`` tensors of shape ``N×1×H×W`` marking the pixels that carry
  the label (used for budget statistics); ``None`` for data sets without such a notion.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable naming the data root (see :func:`resolve_data_root`).
ENV_VAR = "CTXBUDGET_DATA"
#: Data root used when neither an argument nor ``$CTXBUDGET_DATA`` is given.
DEFAULT_ROOT = Path("~/.cache/ctxbudget")

HOW_TO_FIX = (
    "pass --data-dir pointing at a folder that contains {folder}/, set CTXBUDGET_DATA, "
    "or use download=True / --download"
)


class DataError(UserError):
    """A data file is missing or corrupt. The message names the file and what to do.

    Subclasses :class:`ctxbudget.errors.UserError`, so the CLI prints it as one line."""


def missing_file_error(path: Path, folder: str, what: str = "is missing") -> DataError:
    """Build the standard :class:`DataError` for ``path`` (inside the data set folder ``folder``)."""
    return DataError(f"{path.resolve()} {what}; " + HOW_TO_FIX.format(folder=folder))


def resolve_data_root(root: Optional[PathLike] = None) -> Path:
    """Return the data root: ``root`` if given, else ``$CTXBUDGET_DATA`` if set and non-empty,
    else ``~/.cache/ctxbudget``. ``~`` is expanded; the folder need not exist."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    Attributes:
        name: registered name (e.g. ``"mnist"``).
        num_classes: number of classes.
        input_shape: ``(C, H, W)`` of one image.
        classes: human-readable class names, ``len(classes) == num_classes``.
        mean, std: per-channel statistics for the model's ``Normalize`` layer (pixel units in
            ``[0, 1]``); ``(0.0,)``/``(1.0,)`` means identity.
        title: how tables and figures name the data source (e.g. ``"CIFAR-10, JPEG copy"``);
            empty: the name. See :attr:`label`.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    title: str = ""

    @property
    def label(self) -> str:
        """``"name (title)"`` where a title is set, else the name: what tables and figures show."""
        return f"{self.name} ({self.title})" if self.title else self.name


class ImageDataset(Dataset):
    """In-memory image classification data set.

    Attributes:
        images: ``float32`` tensor ``N×C×H×W`` in ``[0, 1]``.
        labels: ``int64`` tensor ``N``.
        info: the :class:`DatasetInfo`.
        regions: ``bool`` tensor ``N×1×H×W`` (pixels that carry the label) or ``None``.
        split: the split name (``"train"``, ``"test"``, ``"val"``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        regions: Optional[torch.Tensor] = None,
        split: str = "",
    ) -> None:
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(info.input_shape):
            raise ValueError(f"images must be N×{info.input_shape}, got {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if regions is not None and (
            regions.dtype != torch.bool
            or tuple(regions.shape) != (images.shape[0], 1, *images.shape[2:])
        ):
            raise ValueError(f"regions must be a bool N×1×H×W tensor, got {regions.dtype} {tuple(regions.shape)}")
        self.images = images.to(torch.float32)
        self.labels = labels.to(torch.int64)
        self.info = info
        self.regions = regions
        self.split = split

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.info.input_shape)}, regions={self.regions is not None})"
        )


def to_float_images(array: object) -> torch.Tensor:
    """uint8 array ``N×H×W`` or ``N×C×H×W`` → fresh float32 tensor ``N×C×H×W`` in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
    return torch.from_numpy(a.astype(np.float32)).div_(255.0)


def to_labels(array: object) -> torch.Tensor:
    """Integer array ``N`` → fresh int64 tensor ``N``."""
    return torch.from_numpy(np.asarray(array).reshape(-1).astype(np.int64))
