"""``ctxbudget data info NAME`` and ``ctxbudget data preview NAME --out FILE.png``.

``image-folder`` takes ``--path FOLDER|ARCHIVE`` and optionally ``--classes a,b,c`` (the class order),
as ``data.path`` / ``data.classes`` do in a config."""
from __future__ import annotations

import argparse
import json
import sys

from . import dataset_names, describe, save_preview


def add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect and preview data sets",
                              description="Inspect the registered data sets and draw sample grids.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("name", help="data set name, e.g. mnist, mnist-sample, cifar10, cifar10-jpeg, organamnist, "
                                     "watermarked-mnist, doubled-cifar10, image-folder (see 'ctxbudget data list')")
    common.add_argument("--data-dir", default=None,
                        help="data root holding one folder per data set (default: $CTXBUDGET_DATA, "
                             "else ~/.cache/ctxbudget)")
    common.add_argument("--download", action="store_true",
                        help="download missing files (MD5-checked) instead of failing")
    common.add_argument("--path", default=None, metavar="FOLDER|ARCHIVE",
                        help="image-folder only: a folder or .tar/.tar.gz/.zip archive holding train/<class>/ and "
                             "test/<class>/ (as data.path)")
    common.add_argument("--classes", default=None, metavar="A,B,...",
                        help="image-folder only: the class folders in label order (default: sorted; as data.classes)")

    lst = sub.add_parser("list", help="list the registered data sets")
    lst.set_defaults(func=_list)

    info = sub.add_parser("info", parents=[common], help="print classes, shapes, split sizes and label counts")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)

    prev = sub.add_parser("preview", parents=[common], help="save a PNG grid of a few samples per class")
    prev.add_argument("--out", required=True, help="output PNG path")
    prev.add_argument("--split", default="train", help="split to draw from (default: train)")
    prev.add_argument("--seed", type=int, default=0, help="seed for the choice of samples")
    prev.set_defaults(func=_preview)


def _list(args) -> int:
    for name in dataset_names():
        print(name)
    return 0


def _classes(args) -> list[str] | None:
    return None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]


def _info(args) -> int:
    info = describe(args.name, args.data_dir, download=args.download, path=args.path, classes=_classes(args))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    if not info.get("available", True):
        print(f"error: {info.get('error')}", file=sys.stderr)
        return 2
    return 0


def _preview(args) -> int:
    path = save_preview(args.name, args.out, root=args.data_dir, split=args.split, seed=args.seed,
                        download=args.download, path=args.path, classes=_classes(args))
    print(f"wrote {path}")
    return 0
