"""Certify a user's images: ``ctxbudget certify RUN IMAGE...`` and :func:`certify_images`.

``images.load_image`` reads PNG / JPEG (matplotlib's reader; JPEG decoding is done by Pillow, a
dependency of matplotlib) and ``.npy`` files and converts them to the model's input shape;
``core.certify_images`` reports the prediction and, for the run's learned budgets and for uniform
ε0, every method's margin lower bound and whether it certifies the prediction.
"""
from __future__ import annotations

from .core import certify_images
from .images import SUPPORTED, LoadedImage, load_image, read_image

__all__ = ["SUPPORTED", "LoadedImage", "certify_images", "load_image", "read_image"]
