"""Read an image file and convert it to a model's input shape: :func:`load_image`.

Formats: ``.png`` (matplotlib), ``.jpg``/``.jpeg`` (matplotlib, decoded by Pillow, which matplotlib
depends on), ``.npy`` (numpy, no pickles). Accepted layouts: H×W (grey), H×W×C or C×H×W with
C ∈ {1, 3, 4} (a fourth, alpha channel is dropped). Values: uint8 0…255 or floating point in
[0, 1]. Conversions: RGB → grey with the ITU-R 601 luma weights (0.299, 0.587, 0.114), grey → RGB
by repetition, and an area-preserving (antialiased bilinear) resize to the model's H×W when the
aspect ratio matches within 2 % (``stretch=True`` allows any). Anything else is a ``UserError``
that says what was found and what the model expects.

:func:`read_image` also says how the image was resized: a resize by more than ``NOTE_FACTOR`` (2×)
in either dimension, up or down (a 3×3 array blown up to 28×28, a photo shrunk to 28×28), comes
with a one-line note, since the result may not be what the user meant to certify.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

SUPPORTED = (".png", ".jpg", ".jpeg", ".npy")
LUMA = (0.299, 0.587, 0.114)
ASPECT_TOLERANCE = 0.02
NOTE_FACTOR = 2.0


@dataclass
class LoadedImage:
    """:func:`read_image`'s result: ``x`` (C×H×W float32 in [0, 1], the model's shape), the file's
    ``original_size`` (height, width), and ``note`` (a sentence when it was resized by more than
    ``NOTE_FACTOR`` in either dimension, else None)."""

    x: torch.Tensor
    original_size: tuple[int, int]
    note: str | None


def resize_note(path: str | Path, original: tuple[int, int], target: tuple[int, int]) -> str | None:
    """A one-line note when ``original`` (height, width) → ``target`` scales a dimension by more than
    ``NOTE_FACTOR`` (up or down); None otherwise."""
    (ih, iw), (h, w) = original, target
    factors = (h / ih, w / iw)
    if all(1 / NOTE_FACTOR <= f <= NOTE_FACTOR for f in factors):
        return None
    how = ", ".join(f"{name} {f:.3g}× {'up' if f > 1 else 'down'}" for name, f in zip(("height", "width"), factors))
    return (f"{path} is {ih}×{iw} (height×width) and was resized to the model's {h}×{w} ({how}); "
            "check that this is the image you meant to certify")


def _read(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise UserError(f"{path}: unsupported image format {suffix or '(none)'}; use {', '.join(SUPPORTED)}")
    if not path.is_file():
        raise UserError(f"image {path} not found")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        import matplotlib.image

        return matplotlib.image.imread(str(path))
    except UserError:
        raise
    except Exception as exc:  # truncated file, not an image, pickled object, …
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def _to_unit_float(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.floating):
        raise UserError(f"{path}: pixel type {a.dtype} not supported; use uint8 (0-255) or floats in [0, 1]")
    a = a.astype(np.float32)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise UserError(f"{path}: float pixels must be finite and lie in [0, 1] (found NaN/inf or no pixels)")
    if a.min() < 0 or a.max() > 1:
        lo, hi = float(a.min()), float(a.max())
        raise UserError(f"{path}: float pixels must be finite and lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return a


def _to_chw(a: np.ndarray, channels: int, path: Path) -> np.ndarray:
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and not (a.shape[0] == channels and a.shape[-1] != channels):
        a = np.moveaxis(a, -1, 0)                                   # H×W×C (image files) → C×H×W
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4):
        pass                                                        # already C×H×W
    else:
        raise UserError(f"{path}: expected H×W, H×W×C or C×H×W with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[0] == 4:
        a = a[:3]                                                   # drop alpha
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise UserError(f"{path}: empty image {a.shape}")
    if a.shape[0] == channels:
        return a
    if channels == 1 and a.shape[0] == 3:
        return np.tensordot(np.asarray(LUMA, np.float32), a, axes=1)[None].astype(np.float32)
    if channels == 3 and a.shape[0] == 1:
        return np.repeat(a, 3, axis=0)
    raise UserError(f"{path}: {a.shape[0]}-channel image cannot be converted to the model's {channels} channels")


def load_image(path: str | Path, input_shape: tuple[int, int, int], *, stretch: bool = False,
               invert: bool = False) -> torch.Tensor:
    """Read ``path`` and return a float32 C×H×W tensor in [0, 1] of the model's ``input_shape``.

    ``invert`` maps v → 1 − v (e.g. a dark digit on white paper for an MNIST model, which expects a
    light digit on black). Raises ``UserError`` when the file cannot be read or converted.
    :func:`read_image` gives the same tensor with the original size and the resize note.
    """
    return read_image(path, input_shape, stretch=stretch, invert=invert).x


def read_image(path: str | Path, input_shape: tuple[int, int, int], *, stretch: bool = False,
               invert: bool = False) -> LoadedImage:
    """:func:`load_image` that also returns the file's size and the note on a large resize."""
    path = Path(path)
    c, h, w = (int(v) for v in input_shape)
    img = _to_chw(_to_unit_float(np.asarray(_read(path)), path), c, path)
    ih, iw = img.shape[1:]
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    if (ih, iw) != (h, w):
        ratio = (iw / ih) / (w / h)
        if not stretch and abs(ratio - 1) > ASPECT_TOLERANCE:
            raise UserError(f"{path}: image is {ih}×{iw} (height×width) but the model takes {h}×{w}; the aspect ratios "
                            "differ, so resizing would distort it (crop it first, or pass --stretch)")
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp(0.0, 1.0)
    if invert:
        x = 1.0 - x
    return LoadedImage(x=x.contiguous(), original_size=(int(ih), int(iw)), note=resize_note(path, (ih, iw), (h, w)))
