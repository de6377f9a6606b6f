"""Atomic checkpoint files: a run's complete state in one ``torch.save`` dict."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    # Checkpoints hold numpy arrays (normaliser statistics) and plain config dicts.
    return torch.load(path, map_location=map_location, weights_only=False)
