"""Errors a user can act on. The CLI prints them as one line (``error: …``) and exits non-zero."""
from __future__ import annotations


class UserError(Exception):
    """Bad input, missing files, invalid settings: the message says what is wrong and what to do."""


class SoundnessError(RuntimeError):
    """A certified example was broken by an attack: a bound is not a true bound. Never expected."""


class RegistryError(UserError, ValueError):
    """The model registry cannot do what was asked: an unknown name, a weights file whose size or
    sha256 differs from the manifest, a run that cannot be registered. A ``UserError`` (one line on
    the command line) and a ``ValueError`` (for callers of the Python API)."""
