"""Downloading and checking data files (stdlib ``urllib`` only).

Nothing here is called unless a loader is asked with ``download=True``; tests never use it with
a real URL.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .base import DataError

_CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    """Hex MD5 of the file at ``path``."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_bytes(data: bytes) -> str:
    """Hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


def download_url(
    urls: Sequence[str] | str,
    dest: Path,
    md5: Optional[str] = None,
    timeout: float = 60.0,
) -> Path:
    """Download the first working URL of ``urls`` to ``dest`` (atomically, via a temp file in the
    same folder) and check its MD5 when ``md5`` is given. Raises :class:`DataError` if every
    mirror fails."""
    if isinstance(urls, str):
        urls = [urls]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            print(f"downloading {url} -> {dest}", file=sys.stderr)
            req = urllib.request.Request(url, headers={"User-Agent": "ctxbudget"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(resp, out, _CHUNK)
            if md5 is not None:
                got = md5_file(tmp)
                if got != md5:
                    raise DataError(f"MD5 mismatch for {url}: expected {md5}, got {got}")
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException, DataError) as e:  # next mirror
            errors.append(f"{url}: {e}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DataError(f"could not download {dest.name} to {dest.resolve()}: " + "; ".join(errors))


def extract_tar(archive: Path, dest_dir: Path) -> None:
    """Extract a (gzipped) tar ``archive`` into ``dest_dir``, refusing paths that escape it."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members: Iterable[tarfile.TarInfo] = tar.getmembers()
            root = dest_dir.resolve()
            for m in members:
                target = (dest_dir / m.name).resolve()
                if root not in target.parents and target != root:
                    raise DataError(f"unsafe path {m.name!r} in {archive.resolve()}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest_dir, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest_dir)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive.resolve()} is not a valid tar archive ({e}); delete it and retry") from e
