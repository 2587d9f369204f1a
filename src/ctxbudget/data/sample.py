"""``mnist-sample``: a small, class-balanced subset of real MNIST shipped inside the package.

The file ``mnist_sample.npz`` (next to this module) holds, for ``split`` in ``train``/``test``:

* ``{split}_images``: uint8 ``N×28×28`` (5,000 train / 1,000 test),
* ``{split}_labels``: uint8 ``N`` (exactly 500 / 100 per digit),
* ``{split}_indices``: int64 ``N``, the positions of the images in the original IDX split
  (ascending),

plus ``seed`` (the selection seed). It is built by ``scripts/build_mnist_sample.py`` with
:func:`build_sample_arrays`: for each digit, ``numpy.random.default_rng(seed).choice`` picks the
images without replacement (digits in order 0..9, train before test), and the picked indices
are sorted. It is the offline default of the quick start: no data root is needed.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import DataError, PathLike
from .mnist import load_mnist_arrays

SAMPLE_PATH = Path(__file__).with_name("mnist_sample.npz")
PER_CLASS = {"train": 500, "test": 100}


def build_sample_arrays(
    mnist_root: Optional[PathLike], seed: int = 0, per_class: Optional[dict[str, int]] = None
) -> dict[str, np.ndarray]:
    """Select the class-balanced subset from the IDX files under ``mnist_root`` (a data root
    holding ``mnist/`` or the ``mnist`` folder itself). Returns the arrays stored in the npz."""
    per_class = dict(PER_CLASS if per_class is None else per_class)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {"seed": np.asarray(seed, dtype=np.int64)}
    for split in ("train", "test"):
        images, labels = load_mnist_arrays(mnist_root, split)
        picked = []
        for digit in range(10):
            idx = np.flatnonzero(labels == digit)
            if idx.size < per_class[split]:
                raise DataError(f"only {idx.size} {split} images of digit {digit}; need {per_class[split]}")
            picked.append(rng.choice(idx, size=per_class[split], replace=False))
        sel = np.sort(np.concatenate(picked)).astype(np.int64)
        out[f"{split}_images"] = np.ascontiguousarray(images[sel])
        out[f"{split}_labels"] = np.ascontiguousarray(labels[sel])
        out[f"{split}_indices"] = sel
    return out


def save_sample(arrays: dict[str, np.ndarray], path: PathLike = SAMPLE_PATH) -> Path:
    """Write ``arrays`` with ``np.savez_compressed`` (deterministic bytes for equal arrays)."""
    path = Path(path)
    named: dict[str, Any] = dict(arrays)
    np.savez_compressed(path, **named)
    return path


@functools.lru_cache(maxsize=2)
def _load(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} is missing; it ships with the package - reinstall ctxbudget or rebuild it with "
                        "scripts/build_mnist_sample.py --mnist-dir ../shared/data/mnist")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"{p} cannot be read ({e}); rebuild it with scripts/build_mnist_sample.py") from e
    for a in data.values():
        a.setflags(write=False)
    return data


def load_sample_arrays(split: str = "train", path: PathLike = SAMPLE_PATH) -> tuple[np.ndarray, np.ndarray]:
    """Return read-only ``(images uint8 N×28×28, labels uint8 N)`` of the embedded sample."""
    if split not in PER_CLASS:
        raise ValueError(f"mnist-sample has splits 'train' and 'test', not {split!r}")
    data = _load(str(Path(path).resolve()))
    return data[f"{split}_images"], data[f"{split}_labels"]


def sample_indices(split: str = "train", path: PathLike = SAMPLE_PATH) -> np.ndarray:
    """Positions of the sample's images in the original MNIST ``split``."""
    return _load(str(Path(path).resolve()))[f"{split}_indices"]
