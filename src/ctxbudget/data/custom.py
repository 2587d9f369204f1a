"""Register a user's data set from arrays or a ``torch.utils.data.Dataset``: :func:`register_dataset`.

After ``register_dataset("my-set", train=(x, y), test=(x_test, y_test))`` the name works
everywhere a built-in name does (``get_dataset``, ``data.name`` in configs, ``train``,
``load_run``, ``evaluate``) in the same Python process. The splits are kept in memory.

Accepted per split:

* ``(images, labels)``: numpy arrays or tensors; images ``N×C×H×W`` or ``N×H×W`` (one channel),
  either ``uint8`` (0…255, divided by 255) or floating point already in [0, 1]; labels integers in
  ``[0, num_classes)``, shape ``N``;
* a ``Dataset`` whose items are ``(image C×H×W or H×W, label)`` with the same value rules.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DatasetInfo, PathLike
from .registry import DatasetSpec, Loaded, register

SplitData = Union[tuple[Any, Any], Dataset]


def _from_dataset(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("a Dataset split must define __len__") from None
    if n == 0:
        raise ValueError("a split may not be empty")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"Dataset items must be (image, label) pairs; item {i} is {type(item).__name__}")
        xs.append(torch.as_tensor(np.asarray(item[0])))
        ys.append(int(item[1]))
    return torch.stack(xs), torch.tensor(ys)


def _images(raw: Any, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(raw)) if not isinstance(raw, torch.Tensor) else raw.detach().cpu()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise ValueError(f"{name}: images must be N×C×H×W or N×H×W, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"{name}: images must be uint8 (0…255) or floating point in [0, 1], got {x.dtype}")
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"{name}: floating-point images must be finite and lie in [0, 1] (pixel units); "
                         f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    return x.contiguous()


def _labels(raw: Any, n: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw))
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: labels must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: labels must be integers, got {y.dtype}")
    return y.to(torch.int64)


def _split(data: SplitData, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Dataset):
        raw_x, raw_y = _from_dataset(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        raw_x, raw_y = data
    else:
        raise TypeError(f"{name}: expected (images, labels) or a torch Dataset, got {type(data).__name__}")
    x = _images(raw_x, name)
    return x, _labels(raw_y, x.shape[0], name)


def register_dataset(name: str, train: SplitData, test: SplitData, *, num_classes: Optional[int] = None,
                     classes: Optional[Sequence[str]] = None, mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None, description: str = "") -> DatasetInfo:
    """Register ``name`` with in-memory ``train`` and ``test`` splits; returns its :class:`DatasetInfo`.

    ``num_classes`` defaults to ``len(classes)``, else 1 + the largest label; ``mean``/``std``
    (per channel, pixel units) set the classifier's ``Normalize`` (default identity). Raises
    ``ValueError``/``TypeError`` for inconsistent shapes, labels out of range or pixel values
    outside [0, 1]. Replaces an existing registration of the same name.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"data set name must be a non-empty string, got {name!r}")
    splits = {"train": _split(train, f"{name}/train"), "test": _split(test, f"{name}/test")}
    shape = tuple(int(v) for v in splits["train"][0].shape[1:])
    if tuple(splits["test"][0].shape[1:]) != shape:
        raise ValueError(f"{name}: train and test images differ in shape: {shape} vs "
                         f"{tuple(splits['test'][0].shape[1:])}")
    top = max(int(y.max()) for _, y in splits.values()) + 1
    k = num_classes if num_classes is not None else (len(classes) if classes is not None else top)
    if min(int(y.min()) for _, y in splits.values()) < 0 or top > k:
        raise ValueError(f"{name}: labels must lie in [0, {k}), got labels up to {top - 1}")
    if k < 2:
        raise ValueError(f"{name}: need at least 2 classes, got {k}")
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{name}: {len(names)} class names for {k} classes")
    c = shape[0]
    mean_t = tuple(float(v) for v in (mean if mean is not None else [0.0] * c))
    std_t = tuple(float(v) for v in (std if std is not None else [1.0] * c))
    if len(mean_t) != c or len(std_t) != c or min(std_t) <= 0:
        raise ValueError(f"{name}: mean/std need {c} entries (one per channel) and std > 0")
    info = DatasetInfo(name, k, (shape[0], shape[1], shape[2]), names, mean=mean_t, std=std_t)

    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        x, y = splits[split]
        return x.clone(), y.clone(), None

    register(name, DatasetSpec(info, ("train", "test"), load, lambda root, split: [],
                               description or f"user data set registered in this process ({k} classes, {shape})"))
    return info
