"""Saving and loading torch state files (checkpoints, fitted components): written atomically,
read with ``weights_only=True``, and a missing or damaged file is a one-line error."""

from __future__ import annotations

import os
from pathlib import Path


def save_state(state: dict, path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary name, then rename it into place."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path, what: str, fix: str, error=None, fix_damaged: str | None = None) -> dict:
    """Read a state file (``weights_only=True``); ``error`` (a ``MeddxError`` subclass) is raised
    when it is missing (``"<what> not found"``, ``fix``) or cannot be read (``fix_damaged``)."""
    import torch

    from meddx.errors import MeddxError

    error = error or MeddxError
    path = Path(path)
    if not path.exists():
        raise error(f"{what} not found", path=path, fix=fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise error(f"{what} cannot be read ({type(e).__name__})", path=path,
                    fix=fix_damaged or "the file is damaged: " + fix) from None


class StateFile:
    """Mixin for fitted components with ``state_dict()`` / ``load_state_dict()``: ``save(path)``
    writes the state atomically and ``Class.load(path)`` restores it (``weights_only=True``).
    ``STATE_NOUN`` names the file in errors (e.g. "GAN file")."""

    STATE_NOUN = "state file"

    def save(self, path: str | Path) -> Path:
        """Write ``state_dict()`` to ``path`` (temp file, then rename)."""
        return save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path):
        """Read what ``save`` wrote (``weights_only=True``); a missing or damaged file is a one-line error."""
        return cls().load_state_dict(load_state(path, cls.STATE_NOUN, f"re-save it with {cls.__name__}.save"))
