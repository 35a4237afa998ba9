"""One exception family for everything a user can get wrong.

Every message names the file (or option) at fault and what to do about it. The
CLI prints ``str(error)`` on one line and exits with code 2; it never shows a
traceback for a ``MeddxError``.
"""

from __future__ import annotations

from pathlib import Path


class MeddxError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        self.fix = fix
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(message.rstrip("."))
        if fix:
            parts.append(f". Fix: {fix.rstrip('.')}")
        super().__init__(("".join(parts) + ".").replace("\n", " "))


class InputError(MeddxError):
    """A file or folder cannot be read as the kind of data it claims to be."""


class CorruptFileError(InputError):
    """The file exists but is truncated, corrupt or undecodable."""


class MissingCodecError(InputError):
    """Decoding needs an optional package that is not installed (the message names it)."""


class DatasetError(MeddxError):
    """The dataset as a whole is unusable: empty, one class, missing labels, bad manifest."""


class ImageContentError(InputError):
    """The pixels themselves are unusable: NaN/Inf, constant, wrong dimensionality, too large."""


class PlanError(MeddxError):
    """A plan file is invalid or inconsistent with the data."""


class RunError(MeddxError):
    """A run directory is missing, incomplete or incompatible with the request."""


class DataUnavailableError(MeddxError):
    """Data that meddx can fetch is neither on disk nor downloadable (offline, blocked, wrong URL)."""


class ParameterError(PlanError):
    """A component's parameter is missing, of the wrong type or out of range (from a plan or a direct call)."""
