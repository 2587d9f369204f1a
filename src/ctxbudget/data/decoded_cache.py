"""Decoded copies of image files on disk: one ``.npz`` per source, rebuilt when the source changes.

Decoding tens of thousands of PNG/JPEG files takes a while, so the image-folder loader
(:mod:`ctxbudget.data.imagefolder`) stores what it decoded (uint8 arrays) and reads that back
next time. The copy lives in the *cache folder*, never beside the source (the data root may be
read-only):

* ``$CTXBUDGET_CACHE`` if set and non-empty, else ``~/.cache/ctxbudget/decoded``;
* one file per source: ``<cache>/<source name>-<16 hex digits of sha256(resolved source path)>.npz``.

Each file records the source's *stamp* (:func:`source_stamp`: size and modification time of an
archive, or of every file of a folder) and a format version; a copy whose stamp or version differs
from the source's is rebuilt (and replaced). Files are written to a temporary name in the cache
folder and renamed over the old copy (``os.replace``), so a crash never leaves a half-written
copy. Where the cache folder cannot be written, a warning is shown and the data is decoded again
on every load.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

#: Environment variable naming the cache folder.
CACHE_ENV = "CTXBUDGET_CACHE"
#: Cache folder used when ``$CTXBUDGET_CACHE`` is not set.
DEFAULT_CACHE = Path("~/.cache/ctxbudget/decoded")
_META = ("__stamp__", "__version__")

Arrays = dict[str, np.ndarray]


def resolve_cache_dir() -> Path:
    """``$CTXBUDGET_CACHE`` if set and non-empty, else ``~/.cache/ctxbudget/decoded`` (``~`` expanded;
    the folder need not exist)."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def source_stamp(source: Path) -> str:
    """A string that changes when ``source`` changes: ``"file:<bytes>:<mtime ns>"`` for a file,
    ``"folder:<sha256>"`` of every path, size and modification time under a folder."""
    st = source.stat()
    if source.is_file():
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                s = os.stat(p)
            except OSError:           # a dangling link: its name still counts
                h.update(f"{os.path.relpath(p, source)}\0missing\n".encode())
                continue
            h.update(f"{os.path.relpath(p, source)}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
        h.update(f"{os.path.relpath(dirpath, source)}/\n".encode())   # empty folders count too
    return "folder:" + h.hexdigest()


def cache_path(source: Path, cache_dir: Optional[Path] = None) -> Path:
    """Where the decoded copy of ``source`` lives (see the module docstring)."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    stem = source.name.split(".")[0] or "source"
    return (cache_dir or resolve_cache_dir()) / f"{stem}-{key}.npz"


def read_copy(path: Path, stamp: str, version: int) -> Optional[Arrays]:
    """The arrays of the copy at ``path`` if it exists and matches ``stamp`` and ``version``, else None
    (a missing, stale or unreadable copy is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["__stamp__"]) != stamp or int(z["__version__"]) != version:
                return None
            return {k: z[k] for k in z.files if k not in _META}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_copy(path: Path, arrays: Arrays, stamp: str, version: int) -> bool:
    """Write ``arrays`` (plus stamp and version) to ``path`` atomically; False, with a warning, when
    the cache folder cannot be written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)               # the mode open() would give (mkstemp alone: 0600)
        with os.fdopen(fd, "wb") as fh:
            payload: dict[str, Any] = {"__stamp__": np.array(stamp), "__version__": np.array(version), **arrays}
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True
    except OSError as exc:
        warnings.warn(f"cannot write the decoded copy {path} ({exc.strerror or exc}); the images will be decoded "
                      f"again next time (set {CACHE_ENV} to a writable folder)", stacklevel=3)
        return False
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def load_or_build(source: Path, build: Callable[[], Arrays], version: int,
                  cache_dir: Optional[Path] = None) -> Arrays:
    """The arrays decoded from ``source``: read from its cached copy when that is current, else
    ``build()`` them and store the copy. ``version``: bump it when ``build`` changes what it returns."""
    stamp = source_stamp(source)
    path = cache_path(source, cache_dir)
    arrays = read_copy(path, stamp, version)
    if arrays is None:
        arrays = build()
        if source_stamp(source) == stamp:        # do not store a copy of a source that changed meanwhile
            write_copy(path, arrays, stamp, version)
    return arrays
