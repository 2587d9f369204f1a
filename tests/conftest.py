"""Fixtures shared by every test folder: the real MNIST when it is available (never downloaded)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_real_data_root() -> Optional[Path]:
    """A data root holding the full MNIST: ``$CTXBUDGET_DATA`` or ``<repo>/../shared/data``."""
    candidates = []
    if os.environ.get("CTXBUDGET_DATA"):
        candidates.append(Path(os.environ["CTXBUDGET_DATA"]).expanduser())
    candidates.append(REPO.parent / "shared" / "data")
    for root in candidates:
        folder = root / "mnist"
        if all((folder / n).is_file() or (folder / (n + ".gz")).is_file() for n in MNIST_NAMES):
            return root
    return None


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = find_real_data_root()
    if root is None:
        pytest.skip("full MNIST not found (set CTXBUDGET_DATA to a folder containing mnist/, "
                    "or place it at <repo>/../shared/data/mnist)")
    return root
