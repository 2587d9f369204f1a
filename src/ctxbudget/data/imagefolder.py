"""Image-folder data sets: a folder or a ``.tar`` / ``.tar.gz`` / ``.zip`` archive of image files.

Layout (an archive may wrap it in one top-level folder; other top-level entries are ignored)::

    train/<class>/<image>      PNG, JPEG or any other format Pillow reads
    test/<class>/<image>

Labels: class ``k`` is the ``k``-th class folder name in sorted order, or the ``k``-th entry of
``classes`` when given (it must name exactly the class folders). Images are decoded once with
Pillow into uint8 ``N×C×H×W`` arrays and cached on disk (:mod:`ctxbudget.data.decoded_cache`).

Rules; each broken rule is a one-line :class:`DataError` that names the file or folder:

* both ``train/`` and ``test/`` exist, hold the same class folders, and every class folder holds at
  least one image, directly (no sub-folders);
* every image decodes and all have the same size H×W (nothing is resized) and the same channels:
  grey (Pillow modes ``1``, ``L``: C = 1) or colour (``RGB``, ``P``, ``CMYK``, ``YCbCr``: C = 3). An
  alpha channel (``LA``, ``RGBA``, ``PA``) is dropped only where every pixel is opaque; 16-bit
  and floating-point images are refused.

Hidden files and folders (names starting with ``.``), ``__MACOSX/``, ``Thumbs.db`` and
``desktop.ini`` are skipped.

Order of the examples of a split (fixed, so ``data.train_limit`` / ``test_limit``, which take the
first N, give class-balanced subsets): within each class the files are ordered by a hash of their
path (BLAKE2b of ``"<split>/<class>/<file>"``, so no file-name pattern carries over), and the
classes are interleaved: the i-th of the n_k files of class k is placed at (i + ½)/n_k, ties in
class order. Every prefix then holds each class in proportion to its size (equal sizes: a prefix
of N holds ⌊N/K⌋ or ⌈N/K⌉ of each of the K classes).
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Sequence

import numpy as np

from .base import DataError
from .decoded_cache import load_or_build, source_stamp

SPLITS = ("train", "test")
#: Version of what :func:`decode_source` returns; bump it to rebuild every cached copy.
FORMAT_VERSION = 1
GREY_MODES = ("1", "L")
COLOUR_MODES = ("RGB", "P", "CMYK", "YCbCr")
ALPHA_MODES = {"LA": "L", "RGBA": "RGB", "PA": "RGB"}
_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_LAYOUT = "a folder or a .tar/.tar.gz/.zip archive holding train/<class>/<image> and test/<class>/<image>"


@dataclass(frozen=True)
class FolderData:
    """Decoded image folder.

    ``classes``: class folder names in sorted order (label k ↔ ``classes[k]``); per split in
    ``images`` (uint8 ``N×C×H×W``), ``labels`` (int64 ``N``) and ``files`` (str ``N``, the path of
    each image inside the source, e.g. ``"train/cat/0001.png"``), in the order of the module
    docstring; ``mean``/``std``: per-channel statistics of the train split in [0, 1] pixel units.
    """

    classes: tuple[str, ...]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    files: dict[str, np.ndarray]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images["train"].shape[1:]
        return int(c), int(h), int(w)


# ----------------------------------------------------------------------------------- reading the source
class _Source:
    """The files of a folder or an archive as ``(path inside the source, bytes or None for a folder)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise DataError(f"{path.resolve()} does not exist; data.path must name {_LAYOUT}")
        self.kind = "folder" if path.is_dir() else "zip" if zipfile.is_zipfile(path) else \
            "tar" if _is_tar(path) else ""
        if not self.kind:
            raise DataError(f"{path.resolve()} is neither a folder nor a .tar/.tar.gz/.zip archive; "
                            f"data.path must name {_LAYOUT}")

    def where(self, name: str) -> str:
        """How messages name the entry ``name``: its path for a folder, ``NAME in ARCHIVE`` otherwise."""
        if self.kind != "folder":
            return f"{name} in {self.path.resolve()}"
        return str(self.path.resolve() / name) + ("/" if name.endswith("/") else "")

    def entries(self) -> Iterator[tuple[str, Optional[bytes]]]:
        try:
            if self.kind == "folder":
                yield from self._folder()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    for info in zf.infolist():
                        yield info.filename, (None if info.is_dir() else zf.read(info))
            else:
                with tarfile.open(self.path, "r:*") as tf:
                    for m in tf:
                        if m.isdir():
                            yield m.name, None
                        elif m.isfile():
                            f = tf.extractfile(m)
                            yield m.name, (f.read() if f is not None else b"")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
            raise DataError(f"{self.path.resolve()} cannot be read as a {self.kind} ({type(exc).__name__}: {exc}); "
                            "is it truncated?") from None

    def _folder(self) -> Iterator[tuple[str, Optional[bytes]]]:
        """The entries of ``train/`` and ``test/`` (or of one wrapper folder's), read in sorted order;
        nothing else is read."""
        tops = [p for p in sorted(self.path.iterdir()) if _parts(p.name)]
        base = self.path
        if not any(p.name in SPLITS for p in tops) and len(tops) == 1 and tops[0].is_dir():
            base = tops[0]
        for split in SPLITS:
            for dirpath, dirnames, filenames in os.walk(base / split):
                dirnames.sort()
                rel = Path(dirpath).relative_to(self.path).as_posix()
                yield rel, None
                for name in sorted(filenames):
                    yield f"{rel}/{name}", (Path(dirpath) / name).read_bytes()


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def _parts(name: str) -> tuple[str, ...]:
    """``"./a/b/"`` → ``("a", "b")``; () for names to skip (hidden, ``__MACOSX``, …)."""
    parts = tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in (".", "/"))
    if any(p.startswith(".") or p in _JUNK for p in parts):
        return ()
    return parts


@dataclass
class _Layout:
    """The class folders of each split and their files (bytes), before decoding."""

    prefix: tuple[str, ...]
    folders: dict[str, dict[str, dict[str, bytes]]]     # split -> class -> file name -> bytes


def _read_layout(src: _Source) -> _Layout:
    entries: list[tuple[tuple[str, ...], Optional[bytes]]] = []
    for name, data in src.entries():
        parts = _parts(name)
        if parts:
            entries.append((parts, data))
    prefix: tuple[str, ...] = ()
    tops = {p[0] for p, _ in entries}
    if not tops & set(SPLITS) and len(tops) == 1:            # one wrapper folder around train/ and test/
        prefix = (next(iter(tops)),)
    folders: dict[str, dict[str, dict[str, bytes]]] = {}
    n = len(prefix)
    for parts, data in entries:
        if parts[:n] != prefix or len(parts) <= n or parts[n] not in SPLITS:
            continue
        split, rest = parts[n], parts[n + 1:]
        classes = folders.setdefault(split, {})
        if not rest:
            continue
        if data is None:
            if len(rest) == 1:
                classes.setdefault(rest[0], {})
            continue
        if len(rest) == 1:
            raise DataError(f"{src.where('/'.join(parts))} lies directly in {split}/; put every image in a class "
                            f"folder {split}/<class>/")
        if len(rest) > 2:
            raise DataError(f"{src.where('/'.join(parts))} is in a sub-folder of the class folder {split}/{rest[0]}/; "
                            "put the images directly in the class folder")
        classes.setdefault(rest[0], {})[rest[1]] = data
    return _Layout(prefix, folders)


def _check_layout(src: _Source, layout: _Layout) -> list[str]:
    """The sorted class names; DataError for a missing split, an empty class folder or class sets that differ."""
    base = "/".join(layout.prefix + ("",))
    for split in SPLITS:
        if split not in layout.folders:
            raise DataError(f"{src.where(base + split + '/')} is missing; data.path must name {_LAYOUT}")
        if not layout.folders[split]:
            raise DataError(f"{src.where(base + split + '/')} holds no class folder; expected {split}/<class>/<image>")
        for cls, files in sorted(layout.folders[split].items()):
            if not files:
                raise DataError(f"{src.where(f'{base}{split}/{cls}/')} is an empty class folder (no image files)")
    train, test = (set(layout.folders[s]) for s in SPLITS)
    if train != test:
        only_train, only_test = sorted(train - test), sorted(test - train)
        what = []
        if only_train:
            what.append(f"test/ lacks {', '.join(only_train)}")
        if only_test:
            what.append(f"train/ lacks {', '.join(only_test)}")
        raise DataError(f"{src.path.resolve()}: train/ and test/ have different class folders ({'; '.join(what)}); "
                        "both splits need the same classes")
    return sorted(train)


# ----------------------------------------------------------------------------------------- decoding
def _decode(data: bytes, where: str) -> tuple[np.ndarray, str]:
    """One image file → (uint8 ``C×H×W``, its Pillow mode); C = 1 for grey, 3 for colour."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode in ALPHA_MODES:
                alpha = np.asarray(im.getchannel("A") if mode != "PA" else im.convert("RGBA").getchannel("A"))
                if int(alpha.min()) < 255:
                    raise DataError(f"{where} has transparent pixels (mode {mode}); ctxbudget does not guess a "
                                    "background: flatten it to RGB or L first")
                im2 = im.convert(ALPHA_MODES[mode])
            elif mode in GREY_MODES:
                im2 = im.convert("L")
            elif mode in COLOUR_MODES:
                im2 = im.convert("RGB")
            else:
                raise DataError(f"{where} has mode {mode} (e.g. 16-bit or floating-point pixels); save it as 8-bit "
                                "grey (L) or RGB")
            a = np.asarray(im2, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many kinds of errors on broken files
        raise DataError(f"{where} cannot be decoded as an image ({type(exc).__name__}: {exc})") from None
    return (a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))), mode


def _kind(c: int, mode: str) -> str:
    return f"{'grey' if c == 1 else 'colour'} (mode {mode})"


def balanced_order(labels: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """The permutation of the module docstring: within class by BLAKE2b of ``keys``, classes interleaved."""
    labels = np.asarray(labels)
    order = np.empty(0, dtype=np.int64)
    pos = np.empty(0)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        h = [hashlib.blake2b(keys[int(i)].encode(), digest_size=8).hexdigest() for i in idx]
        idx = idx[np.argsort(np.array(h), kind="stable")]
        order = np.concatenate([order, idx])
        pos = np.concatenate([pos, (np.arange(len(idx)) + 0.5) / len(idx)])
    return order[np.lexsort((labels[order], pos))]


def _stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``N×C×H×W`` images in [0, 1] units (rounded to 4 digits)."""
    c = images.shape[1]
    s, s2, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].astype(np.float64) / 255.0
        s += x.sum(axis=(0, 2, 3))
        s2 += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(v), 4) if v > 1e-4 else 1.0 for v in std)


def decode_source(path: Path) -> dict[str, np.ndarray]:
    """Read, check and decode the image folder or archive at ``path`` (no caching): the arrays of a
    :class:`FolderData` as a flat dict (``classes``, ``mean``, ``std``, ``<split>_images``, …)."""
    src = _Source(path)
    layout = _read_layout(src)
    classes = _check_layout(src, layout)
    base = "/".join(layout.prefix + ("",))
    first: Optional[tuple[str, tuple[int, ...], str]] = None     # where, shape, mode of the first image
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split in SPLITS:
        xs, ys, names = [], [], []
        for k, cls in enumerate(classes):
            for fname, data in sorted(layout.folders[split][cls].items()):
                name = f"{split}/{cls}/{fname}"
                where = src.where(base + name)
                x, mode = _decode(data, where)
                if first is None:
                    first = (where, x.shape, mode)
                elif x.shape != first[1]:
                    if x.shape[0] != first[1][0]:
                        raise DataError(f"{where} is {_kind(x.shape[0], mode)} but {first[0]} is "
                                        f"{_kind(first[1][0], first[2])}; all images need the same channels "
                                        "(convert them first)")
                    raise DataError(f"{where} is {x.shape[1]}×{x.shape[2]} (H×W) but {first[0]} is "
                                    f"{first[1][1]}×{first[1][2]}; all images need the same size (ctxbudget does "
                                    "not resize: resize them first)")
                xs.append(x)
                ys.append(k)
                names.append(name)
        labels = np.array(ys, dtype=np.int64)
        order = balanced_order(labels, names)
        out[f"{split}_images"] = np.stack(xs)[order]
        out[f"{split}_labels"] = labels[order]
        out[f"{split}_files"] = np.array(names)[order]
    mean, std = _stats(out["train_images"])
    out["mean"], out["std"] = np.array(mean), np.array(std)
    return out


# ------------------------------------------------------------------------------------------ loading
@functools.lru_cache(maxsize=2)
def _load(resolved: str, stamp: str) -> FolderData:
    a = load_or_build(Path(resolved), lambda: decode_source(Path(resolved)), FORMAT_VERSION)
    for arr in a.values():
        arr.setflags(write=False)
    return FolderData(classes=tuple(str(c) for c in a["classes"]),
                      images={s: a[f"{s}_images"] for s in SPLITS}, labels={s: a[f"{s}_labels"] for s in SPLITS},
                      files={s: a[f"{s}_files"] for s in SPLITS},
                      mean=tuple(float(v) for v in a["mean"]), std=tuple(float(v) for v in a["std"]))


def load_image_folder(path: str | os.PathLike[str], classes: Optional[Sequence[str]] = None) -> FolderData:
    """The decoded image folder or archive at ``path`` (decoded once, then read from the on-disk copy;
    also kept in this process). With ``classes``, label k is ``classes[k]`` (same folders, your order).
    Read-only arrays."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p.resolve()} does not exist; data.path must name {_LAYOUT}")
    data = _load(str(p.resolve()), source_stamp(p))
    return data if classes is None else relabel(data, classes, p)


def relabel(data: FolderData, classes: Sequence[str], path: Path) -> FolderData:
    """``data`` with label k meaning ``classes[k]``; DataError unless ``classes`` names exactly the class folders."""
    classes = [str(c) for c in classes]
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise DataError(f"data.classes lists {', '.join(dup)} more than once")
    unknown, missing = sorted(set(classes) - set(data.classes)), sorted(set(data.classes) - set(classes))
    if unknown or missing:
        what = ([f"{', '.join(unknown)} (no such class folder)"] if unknown else []) + \
               ([f"not {', '.join(missing)}"] if missing else [])
        raise DataError(f"data.classes must name exactly the class folders of {path.resolve()} "
                        f"({', '.join(data.classes)}); it lists {' but '.join(what)}")
    new = np.array([classes.index(c) for c in data.classes], dtype=np.int64)
    labels = {s: new[y] for s, y in data.labels.items()}
    for y in labels.values():
        y.setflags(write=False)
    return FolderData(tuple(classes), data.images, labels, data.files, data.mean, data.std)


def clear_cache() -> None:
    """Forget the in-process copies (the on-disk copies stay)."""
    _load.cache_clear()
