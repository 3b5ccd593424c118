"""Writing files without losing any: outputs checked against the command's inputs and existing files, and
written under a temporary name that replaces the real one only when complete."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputError(ValueError):
    """An output path that would destroy something: one of the command's inputs, an existing file."""


def check_output(path: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False) -> Path:
    """Refuse ``path`` as a command's output file when it is one of ``inputs`` (even with ``overwrite``),
    a folder, or an existing file that ``overwrite`` does not allow to replace. Commands call it before
    any model loads, so a refusal costs nothing."""
    path = Path(path)
    if any(source is not None and _same_file(path, Path(source)) for source in inputs):
        raise OutputError(
            f"cannot write {path}: it is also an input of this command and would be lost; "
            "choose another output path"
        )
    reason = unwritable(path)
    if reason is not None:
        raise OutputError(f"cannot write {path}: {reason}; choose another output path")
    if path.exists() and not overwrite:
        raise OutputError(
            f"{path} already exists; pass --overwrite to replace it, or choose another output path"
        )
    return path


def check_output_folder(
    path: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False
) -> Path:
    """Refuse ``path`` as a command's output folder when it is, contains or lies inside one of ``inputs``
    (even with ``overwrite``), is a file, or is a non-empty folder that ``overwrite`` does not allow to
    replace. Like :func:`check_output`, commands call it before any model loads."""
    path = Path(path)
    for source in inputs:
        if source is not None and _overlaps(path, Path(source)):
            raise OutputError(
                f"cannot write {path}: it is, holds or lies inside {source}, an input of this command, "
                "which would be lost; choose another output folder"
            )
    if path.is_dir():
        reason = None
    elif path.exists():
        reason = "it is a file, not a folder"
    else:
        reason = unwritable(path)
    if reason is not None:
        raise OutputError(f"cannot write {path}: {reason}; choose another output folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputError(
            f"{path} already exists and is not empty; pass --overwrite to replace it, "
            "or choose another output folder"
        )
    return path


def _overlaps(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same path or one lies inside the other (links followed)."""
    if _same_file(a, b):
        return True
    a, b = a.resolve(), b.resolve()
    return a.is_relative_to(b) or b.is_relative_to(a)


def unwritable(path: Path) -> str | None:
    """Why no file can be written at ``path``, or None: a folder is there, or a file where one of its
    folders should be."""
    if path.is_dir():
        return "it is a folder"
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # a link, a hard link or another spelling of the same file
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (its folder is created if missing): it replaces ``path``
    only when the block ends without an error and is deleted otherwise, so a crash or Ctrl-C leaves the
    earlier file whole (or none), never half a new one. The temporary name ends in ``.partial``: a writer
    that picks a format by extension must be told the format."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # unlink(missing_ok) still raises when a file sits where a folder should
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) through :func:`atomic_write`."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
