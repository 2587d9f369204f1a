"""Errors a user can act on. The CLI prints them as one line (``error: …``) and exits non-zero."""
from __future__ import annotations


class UserError(Exception):
    """Bad input, missing files, invalid settings: the message says what is wrong and what to do."""


class SoundnessError(RuntimeError):
    """A certified example was broken by an attack: a bound is not a true bound. Never expected."""
