"""Atomic training checkpoints: written to a temporary name, synced, then renamed into place.

A run killed at any instant leaves either the previous checkpoint or the new one, never half of one.
Checkpoints are read with ``torch.load(weights_only=True)``, which unpickles no code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from musiclm.files import atomic_write

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and what to do."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], path: Path, keep: int | None = None) -> Path:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)
    if keep is not None:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = _read(path, map_location)
    except Exception as err:
        earlier = [p for p in list_checkpoints(path.parent) if p.name < path.name]
        intact = next((p for p in reversed(earlier) if _loads(p)), None)
        hint = (
            f"the previous checkpoint {intact} is intact (it loads): move {path.name} away to resume from it"
            if intact is not None
            else f"no earlier checkpoint loads ({len(earlier)} tried): delete {path.name} to start over"
        )
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({_first_line(err)}); {hint}"
        ) from err
    return state


def _read(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a musiclm training checkpoint")
    return state


def _loads(path: Path) -> bool:
    try:
        _read(path)
    except Exception:  # any failure to load means "not intact"; the reason is the caller's to report
        return False
    return True


def remove_partial_writes(directory: Path) -> None:
    """Delete ``*.partial`` files left by a run killed while writing a checkpoint."""
    if directory.is_dir():
        for tmp in directory.glob("*.partial"):
            tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_line(err: Exception) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0]
