"""Registry of named data sets: :func:`get_dataset`, :func:`dataset_names`, :func:`describe`.

Registered names: ``mnist``, ``mnist-sample`` (embedded, offline), ``cifar10``, ``cifar10-jpeg``
(CIFAR-10's JPEG copy), ``organamnist``, ``watermarked-mnist``, ``watermarked-mnist-sample`` (built on
``mnist-sample``), ``doubled-cifar10``, ``doubled-cifar10-jpeg``, ``doubled-mnist`` (the same
construction on MNIST digits, 3×32×56) and ``doubled-mnist-sample``. Data files live under the data
root (see :func:`ctxbudget.data.resolve_data_root`) in one folder per source set: ``mnist/``,
``cifar10/cifar-10-batches-py/``, ``cifar10-jpeg/cifar10-jpeg.tar.gz``, ``organamnist/organamnist.npz``.

``image-folder`` is a data set *per path*: the folder or archive named by ``path`` (``data.path``;
``classes``, ``data.classes``, optionally fixes the class order), see
:mod:`ctxbudget.data.imagefolder`. Only such sources take ``path`` and ``classes``
(:func:`takes_path`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from . import cifar, cifar_jpeg, imagefolder, medmnist, mnist, sample, synthetic
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


def _doubled(fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Loader:
    """Doubled construction on a CIFAR-10 loader ``fn(root, split, download) → (uint8 N×3×32×32, labels N)``."""
    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        x, y = fn(root, split, download)
        return synthetic.doubled(to_float_images(x), to_labels(y), seed=split_seed(seed, split))

    return load


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
_IDENT1: dict[str, Any] = dict(mean=(0.0,), std=(1.0,))
_CIFAR_STATS: dict[str, Any] = dict(mean=cifar.MEAN, std=cifar.STD)

_REGISTRY: dict[str, DatasetSpec] = {}
#: data sets built per path: name -> factory(path, classes or None) -> DatasetSpec
PathSource = Callable[[Path, Optional[Sequence[str]]], DatasetSpec]
_PATH_SOURCES: dict[str, PathSource] = {}


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
register("cifar10-jpeg", DatasetSpec(
    DatasetInfo("cifar10-jpeg", 10, (3, 32, 32), list(cifar.CLASSES), **_CIFAR_STATS, title=cifar_jpeg.TITLE),
    ("train", "test"), _plain(cifar_jpeg.load_cifar10_jpeg_arrays), cifar_jpeg.file_paths,
    "CIFAR-10 from its JPEG copy <root>/cifar10-jpeg/cifar10-jpeg.tar.gz (pixel values a few levels off the "
    "official batches); class-balanced example order"))
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
    _doubled(cifar.load_cifar10_arrays), cifar.file_paths,
    "two CIFAR-10 images side by side under a red (left label) / green (right label) border"))
register("doubled-cifar10-jpeg", DatasetSpec(
    DatasetInfo("doubled-cifar10-jpeg", 10, (3, 36, 64), list(cifar.CLASSES), **_CIFAR_STATS,
                title="Doubled CIFAR-10, JPEG copy"),
    ("train", "test"), _doubled(cifar_jpeg.load_cifar10_jpeg_arrays), cifar_jpeg.file_paths,
    "doubled-cifar10 built on cifar10-jpeg (CIFAR-10's JPEG copy)"))

register("doubled-mnist", DatasetSpec(
    DatasetInfo("doubled-mnist", 10, (3, 32, 56), _MNIST_CLASSES, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    ("train", "test"), _doubled_grey(_plain(mnist.load_mnist_arrays)), mnist.file_paths,
    "two MNIST digits (grey as RGB) side by side under a red (left label) / green (right label) border"))
register("doubled-mnist-sample", DatasetSpec(
    DatasetInfo("doubled-mnist-sample", 10, (3, 32, 56), _MNIST_CLASSES, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    ("train", "test"), _doubled_grey(_sample_load), _sample_files, "doubled-mnist built on mnist-sample (offline)"))


def _image_folder(path: Path, classes: Optional[Sequence[str]]) -> DatasetSpec:
    data = imagefolder.load_image_folder(path, classes)
    info = DatasetInfo("image-folder", len(data.classes), data.input_shape, list(data.classes), mean=data.mean,
                       std=data.std, title=f"image folder {path}")

    def load(root: Optional[PathLike], split: str, download: bool, seed: int) -> Loaded:
        return to_float_images(data.images[split]), to_labels(data.labels[split]), None

    return DatasetSpec(info, ("train", "test"), load, lambda root, split: [path],
                       f"images from {path} (train/ and test/, one folder per class; class-balanced order)")


def register_path_source(name: str, factory: PathSource) -> None:
    """Add (or replace) a data set built per path: ``factory(path, classes)`` returns its spec."""
    _PATH_SOURCES[name] = factory


register_path_source("image-folder", _image_folder)


def dataset_names() -> list[str]:
    """Names accepted by :func:`get_dataset` (``image-folder`` needs ``path``)."""
    return [*_REGISTRY, *_PATH_SOURCES]


def takes_path(name: str) -> bool:
    """Whether ``name`` is built per path (``data.path``, ``data.classes``), like ``image-folder``."""
    return name in _PATH_SOURCES


def get_spec(name: str, path: Optional[PathLike] = None, classes: Optional[Sequence[str]] = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``path``/``classes`` for a data set built per path (which
    reads it: :class:`DataError` for a bad folder or archive). ``ValueError`` for an unknown name, a
    missing ``path`` or a ``path``/``classes`` given to a set that takes none."""
    if name in _PATH_SOURCES:
        if path is None or str(path) == "":
            raise ValueError(f"data set {name!r} reads a folder or a .tar/.tar.gz/.zip archive: give its path "
                             "(data.path, --path)")
        return _PATH_SOURCES[name](Path(path).expanduser(), classes)
    if path is not None or classes is not None:
        raise ValueError(f"data set {name!r} takes no path or class list (data.path, data.classes); "
                         f"only {', '.join(_PATH_SOURCES)} does")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(dataset_names())}") from None


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(f"data set {spec.info.name!r} has splits {', '.join(spec.splits)}; got {split!r}")


def get_dataset(
    name: str, split: str, root: Optional[PathLike] = None, download: bool = False, seed: int = 0, *,
    path: Optional[PathLike] = None, classes: Optional[Sequence[str]] = None,
) -> ImageDataset:
    """Load split ``split`` of data set ``name`` as an :class:`ImageDataset`.

    ``root`` is the data root (default: ``$CTXBUDGET_DATA`` or ``~/.cache/ctxbudget``);
    ``download`` fetches missing files of the real data sets (never done otherwise); ``seed``
    drives the synthetic constructions (ignored by the real sets). ``path`` (and optionally
    ``classes``, the class order) name the folder or archive of ``image-folder``. Raises
    :class:`DataError` for missing/corrupt files and ``ValueError`` for an unknown name or split.
    """
    spec = get_spec(name, path, classes)
    _check_split(spec, split)
    images, labels, regions = spec.load(root, split, download, seed)
    return ImageDataset(images, labels, spec.info, regions=regions, split=split)


def get_info(name: str, path: Optional[PathLike] = None, classes: Optional[Sequence[str]] = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` without loading anything (``image-folder``: reads the
    decoded copy of ``path``, decoding it first if there is none)."""
    return get_spec(name, path, classes).info


def describe(name: str, root: Optional[PathLike] = None, seed: int = 0, download: bool = False, *,
             path: Optional[PathLike] = None, classes: Optional[Sequence[str]] = None) -> dict:
    """Summary of ``name`` for ``ctxbudget data info``.

    Keys: ``name``, ``title``, ``description``, ``classes``, ``num_classes``, ``input_shape``, ``mean``,
    ``std``, ``splits`` ({split: size}), ``label_counts`` ({split: [count per class]}), ``files``
    ({split: [paths]}), ``available`` (bool) and ``error`` (the :class:`DataError` message when a
    split could not be loaded, else ``None``). Downloads missing files only with ``download``.
    ``path``/``classes``: as for :func:`get_dataset` (a folder or archive that cannot be read
    gives ``available`` False and only ``name``, ``available`` and ``error``).
    """
    try:
        spec = get_spec(name, path, classes)
    except DataError as e:
        return {"name": name, "available": False, "error": str(e)}
    info = spec.info
    out: dict = {
        "name": info.name,
        "title": info.title or info.name,
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
            ds = get_dataset(name, split, root=root, seed=seed, download=download, path=path, classes=classes)
        except DataError as e:
            out["available"] = False
            out["error"] = out["error"] or str(e)
            continue
        out["splits"][split] = len(ds)
        out["label_counts"][split] = torch.bincount(ds.labels, minlength=info.num_classes).tolist()
    return out
