"""JSONL manifests: one audio clip a line, the common currency of every dataset in the project.

A line looks like::

    {"path": "clips/000123.wav", "duration": 12.0, "sample_rate": 24000, "split": "train",
     "captions": ["A lively folk dance on fiddle and accordion at about 130 BPM in G major"],
     "attributes": {"families": ["strings", "reed"], "bpm": 130, "key": "G", "mode": "major", ...},
     "midi": "midi/000123.mid"}

``offset`` (seconds) marks a clip that starts inside a longer file. Relative paths are relative to the
manifest's folder. Only ``path`` is required: an audio-only
manifest of a user's music is a list of paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from musiclm.files import write_text_atomic


class ManifestError(ValueError):
    """A manifest that cannot be used: names the file and line."""


@dataclasses.dataclass
class Clip:
    path: Path
    duration: float | None = None
    sample_rate: int | None = None
    captions: list[str] = dataclasses.field(default_factory=list)
    split: str = "train"
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    midi: Path | None = None
    offset: float | None = None  # seconds into ``path`` where the clip starts (a clip of a longer file)

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            return os.path.relpath(p, relative_to) if relative_to is not None else str(p)

        data = dataclasses.asdict(self)
        data["path"], data["midi"] = rel(self.path), rel(self.midi)
        return {k: v for k, v in data.items() if v not in (None, [], {})}


def read_manifest(path: str | Path, skip_bad: bool = False, check_files: bool = True) -> list[Clip]:
    """Parse a manifest; a bad line is an error naming it, or is skipped (and counted) with ``skip_bad``."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found")
    root = path.parent
    clips: list[Clip] = []
    skipped: list[str] = []
    fields = {f.name for f in dataclasses.fields(Clip)}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict) or "path" not in data:
                    raise ValueError('each line must be a JSON object with a "path"')
                data = {k: v for k, v in data.items() if k in fields}
                data["path"] = (root / data["path"]).resolve()
                if data.get("midi"):
                    data["midi"] = (root / data["midi"]).resolve()
                clip = Clip(**data)
                if check_files and not clip.path.is_file():
                    raise ValueError(f"audio file {clip.path} does not exist")
            except (ValueError, TypeError) as err:
                problem = f"{path}:{number}: {err}"
                if not skip_bad:
                    raise ManifestError(problem + " (pass --skip-bad to skip such lines)") from err
                skipped.append(problem)
                continue
            clips.append(clip)
    if skipped:
        print(f"skipped {len(skipped)} bad line(s) of {path}; first: {skipped[0]}")
    if not clips:
        raise ManifestError(f"manifest {path} has no usable clips")
    return clips


def write_manifest(path: str | Path, clips: list[Clip]) -> Path:
    """Write atomically; paths are stored relative to the manifest's folder."""
    path = Path(path)
    root = path.parent.resolve()
    lines = (json.dumps(c.to_json(root), ensure_ascii=False) + "\n" for c in clips)
    return write_text_atomic(path, "".join(lines))
