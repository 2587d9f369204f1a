"""Registry of named data sets: :func:`get_dataset`, :func:`dataset_names`, :func:`describe`.

Registered names: ``mnist``, ``mnist-sample`` (embedded, offline), ``cifar10``, ``organamnist``,
``watermarked-mnist``, ``watermarked-mnist-sample`` (built on ``mnist-sample``),
``doubled-cifar10``, ``doubled-mnist`` (the same construction on MNIST digits, 3×32×56) and
``doubled-mnist-sample``. Data files live under the data root (see
:func:`ctxbudget.data.resolve_data_root`) in one folder per source set: ``mnist/``,
``cifar10/cifar-10-batches-py/``, ``organamnist/organamnist.npz``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import cifar, medmnist, mnist, sample, synthetic
from .base import DataError, DatasetInfo, ImageDataset, PathLike, to_float_images, to_labels

# (root, split, download, seed) -> (images float N×C×H×W, labels int64 N, regions or None)
Loaded = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]
Loader = Callable[[Optional[PathLike], str, bool, int], Loaded]


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one named data set."""

    info: DatasetInfo
    splits: tuple[str, ...]
    load: Loader
    files: Callable[[Optional[PathLike], str], list[Path]]
    description: str


_SPLIT_CODE = {"train": 0, "test": 1, "val": 2}


def split_seed(seed: int, split: str) -> int:
    """Seed of a synthetic split: ``10·seed + code(split)`` so that train/test draws differ."""
    return 10 * int(seed) + _SPLIT_CODE[split]


def _plain(fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Loader:
    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        x, y = fn(root, split, download)
        return to_float_images(x), to_labels(y), None

    return load


def _sample_load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
    x, y = sample.load_sample_arrays(split)
    return to_float_images(x), to_labels(y), None


def _watermarked(base: Loader) -> Loader:
    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        x, y, _ = base(root, split, download, seed)
        return synthetic.watermark(x, y, seed=split_seed(seed, split))

    return load


def _doubled_load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
    x, y = cifar.load_cifar10_arrays(root, split, download)
    return synthetic.doubled(to_float_images(x), to_labels(y), seed=split_seed(seed, split))


def _doubled_grey(base: Loader) -> Loader:
    """Doubled construction on a grey 28×28 base set (the grey value copied to R, G and B)."""
    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        x, y, _ = base(root, split, download, seed)
        return synthetic.doubled(x.expand(-1, 3, -1, -1), y, seed=split_seed(seed, split))

    return load


def _sample_files(root: Optional[PathLike], split: str) -> list[Path]:
    return [sample.SAMPLE_PATH]


_MNIST_CLASSES = list(mnist.CLASSES)
_WM_CLASSES = [f"{d}/w0" for d in range(10)] + [f"{d}/w1" for d in range(10)]
_IDENT1 = dict(mean=(0.0,), std=(1.0,))
_CIFAR_STATS = dict(mean=cifar.MEAN, std=cifar.STD)

_REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, spec: DatasetSpec) -> None:
    """Add (or replace) a named data set."""
    _REGISTRY[name] = spec


register("mnist", DatasetSpec(
    DatasetInfo("mnist", 10, (1, 28, 28), _MNIST_CLASSES, **_IDENT1), ("train", "test"),
    _plain(mnist.load_mnist_arrays), mnist.file_paths, "MNIST from the IDX files under <root>/mnist"))
register("mnist-sample", DatasetSpec(
    DatasetInfo("mnist-sample", 10, (1, 28, 28), _MNIST_CLASSES, **_IDENT1), ("train", "test"),
    _sample_load, _sample_files, "5,000/1,000 class-balanced real MNIST images shipped with the package"))
register("cifar10", DatasetSpec(
    DatasetInfo("cifar10", 10, (3, 32, 32), list(cifar.CLASSES), **_CIFAR_STATS), ("train", "test"),
    _plain(cifar.load_cifar10_arrays), cifar.file_paths, "CIFAR-10 python batches under <root>/cifar10"))
register("organamnist", DatasetSpec(
    DatasetInfo("organamnist", 11, (1, 28, 28), list(medmnist.CLASSES), **_IDENT1), ("train", "val", "test"),
    _plain(medmnist.load_organamnist_arrays), medmnist.file_paths,
    "MedMNIST OrganAMNIST from <root>/organamnist/organamnist.npz"))
register("watermarked-mnist", DatasetSpec(
    DatasetInfo("watermarked-mnist", 20, (1, 28, 28), _WM_CLASSES, **_IDENT1), ("train", "test"),
    _watermarked(_plain(mnist.load_mnist_arrays)), mnist.file_paths,
    "MNIST with a 30%-opacity 0/1 watermark in a side margin; label = digit + 10*mark"))
register("watermarked-mnist-sample", DatasetSpec(
    DatasetInfo("watermarked-mnist-sample", 20, (1, 28, 28), _WM_CLASSES, **_IDENT1), ("train", "test"),
    _watermarked(_sample_load), _sample_files, "watermarked-mnist built on mnist-sample (offline)"))
register("doubled-cifar10", DatasetSpec(
    DatasetInfo("doubled-cifar10", 10, (3, 36, 64), list(cifar.CLASSES), **_CIFAR_STATS), ("train", "test"),
    _doubled_load, cifar.file_paths,
    "two CIFAR-10 images side by side under a red (left label) / green (right label) border"))

register("doubled-mnist", DatasetSpec(
    DatasetInfo("doubled-mnist", 10, (3, 32, 56), _MNIST_CLASSES, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    ("train", "test"), _doubled_grey(_plain(mnist.load_mnist_arrays)), mnist.file_paths,
    "two MNIST digits (grey as RGB) side by side under a red (left label) / green (right label) border"))
register("doubled-mnist-sample", DatasetSpec(
    DatasetInfo("doubled-mnist-sample", 10, (3, 32, 56), _MNIST_CLASSES, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    ("train", "test"), _doubled_grey(_sample_load), _sample_files, "doubled-mnist built on mnist-sample (offline)"))


def dataset_names() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return list(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (``ValueError`` listing valid names if unknown)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(f"data set {spec.info.name!r} has splits {', '.join(spec.splits)}; got {split!r}")


def get_dataset(
    name: str, split: str, root: Optional[PathLike] = None, download: bool = False, seed: int = 0
) -> ImageDataset:
    """Load split ``split`` of data set ``name`` as an :class:`ImageDataset`.

    ``root`` is the data root (default: ``$CTXBUDGET_DATA`` or ``~/.cache/ctxbudget``);
    ``download`` fetches missing files of the real data sets (never done otherwise); ``seed``
    drives the synthetic constructions (ignored by the real sets). Raises :class:`DataError` for
    missing/corrupt files and ``ValueError`` for an unknown name or split.
    """
    spec = get_spec(name)
    _check_split(spec, split)
    images, labels, regions = spec.load(root, split, download, seed)
    return ImageDataset(images, labels, spec.info, regions=regions, split=split)


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` without loading anything."""
    return get_spec(name).info


def describe(name: str, root: Optional[PathLike] = None, seed: int = 0, download: bool = False) -> dict:
    """Summary of ``name`` for ``ctxbudget data info``.

    Keys: ``name``, ``description``, ``classes``, ``num_classes``, ``input_shape``, ``mean``,
    ``std``, ``splits`` ({split: size}), ``label_counts`` ({split: [count per class]}), ``files``
    ({split: [paths]}), ``available`` (bool) and ``error`` (the :class:`DataError` message when a
    split could not be loaded, else ``None``). Downloads missing files only with ``download``.
    """
    spec = get_spec(name)
    info = spec.info
    out: dict = {
        "name": info.name,
        "description": spec.description,
        "classes": list(info.classes),
        "num_classes": info.num_classes,
        "input_shape": tuple(info.input_shape),
        "mean": tuple(info.mean),
        "std": tuple(info.std),
        "splits": {},
        "label_counts": {},
        "files": {s: [str(p.resolve()) for p in spec.files(root, s)] for s in spec.splits},
        "available": True,
        "error": None,
    }
    for split in spec.splits:
        try:
            ds = get_dataset(name, split, root=root, seed=seed, download=download)
        except DataError as e:
            out["available"] = False
            out["error"] = out["error"] or str(e)
            continue
        out["splits"][split] = len(ds)
        out["label_counts"][split] = torch.bincount(ds.labels, minlength=info.num_classes).tolist()
    return out
