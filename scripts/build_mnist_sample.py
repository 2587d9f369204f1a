#!/usr/bin/env python
"""Build ``src/ctxbudget/data/mnist_sample.npz``, the embedded ``mnist-sample`` data set.

Usage (from the repository root)::

    .venv/bin/python scripts/build_mnist_sample.py --mnist-dir ../shared/data/mnist

Reads the four standard MNIST IDX files (gzipped or raw) from ``--mnist-dir`` (a folder holding
them, or a data root holding ``mnist/``), picks 500 training and 100 test images per digit with
``numpy.random.default_rng(--seed)`` (default 0; digits 0..9 in order, train then test, without
replacement, indices sorted), and writes uint8 images, labels and the original indices with
``np.savez_compressed``. The output is byte-for-byte reproducible for the same inputs and seed
(see ``ctxbudget.data.sample`` for the file layout).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from ctxbudget.data.sample import PER_CLASS, SAMPLE_PATH, build_sample_arrays, save_sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-dir", required=True, help="folder with the MNIST IDX files (or a root holding mnist/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-class", type=int, default=PER_CLASS["train"])
    ap.add_argument("--test-per-class", type=int, default=PER_CLASS["test"])
    ap.add_argument("--out", default=str(SAMPLE_PATH))
    args = ap.parse_args(argv)
    arrays = build_sample_arrays(
        Path(args.mnist_dir), seed=args.seed,
        per_class={"train": args.train_per_class, "test": args.test_per_class},
    )
    out = save_sample(arrays, args.out)
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"{split}_labels"], minlength=10).tolist()
        print(f"{split}: {len(arrays[f'{split}_labels'])} images, per class {counts}")
    md5 = hashlib.md5(out.read_bytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, md5 {md5})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
