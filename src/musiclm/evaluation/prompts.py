"""Prompt files for ``musiclm eval``.

Two formats, told apart by the suffix:

* ``.txt``: one prompt a line (blank lines and lines starting with ``#`` are skipped);
* ``.jsonl``: one object a line: ``{"text": ..., "attributes": {...}, "melody": "hum.wav",
  "duration": 10.0, "reference": "clips/0001.wav", "audio": "generated/0001.wav"}`` — only ``text``
  is required. ``attributes`` use the dataset's names (``families``, ``tempo_class``, ``bpm``, ``key``,
  ``mode``, ``style``); ``reference`` pairs the prompt with a real clip (for KLD); ``audio`` is
  already-generated output for it. Relative paths are relative to the prompt file.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from musiclm.data.manifest import Clip
from musiclm.files import write_text_atomic


class PromptError(ValueError):
    """A prompt file that cannot be used: names the file and line."""


@dataclasses.dataclass
class Prompt:
    text: str
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    melody: Path | None = None
    duration: float | None = None
    reference: Path | None = None
    reference_offset: float | None = None  # seconds into ``reference`` where the real clip starts
    audio: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        return {k: v for k, v in data.items() if v not in (None, {}, [])}


def read_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file {path} not found")
    prompts: list[Prompt] = []
    fields = {f.name for f in dataclasses.fields(Prompt)}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if path.suffix != ".jsonl":
            prompts.append(Prompt(line.strip()))
            continue
        try:
            data = json.loads(line)
            if (
                not isinstance(data, dict)
                or not isinstance(data.get("text"), str)
                or not data["text"].strip()
            ):
                raise ValueError('each line must be a JSON object with a non-empty "text"')
            unknown = set(data) - fields
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
            for key in ("melody", "reference", "audio"):
                if data.get(key):
                    data[key] = (path.parent / data[key]).resolve()
                    if not data[key].is_file():
                        raise ValueError(f"{key} file {data[key]} does not exist")
            if data.get("duration") is not None and not float(data["duration"]) > 0:
                raise ValueError(f"duration must be positive seconds, got {data['duration']!r}")
            prompts.append(Prompt(**data))
        except (ValueError, TypeError) as err:
            raise PromptError(f"{path}:{number}: {err}") from err
    if not prompts:
        raise PromptError(f"prompt file {path} has no prompts")
    return prompts


def write_prompts(path: str | Path, prompts: list[Prompt]) -> Path:
    return write_text_atomic(
        path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in prompts)
    )


def prompts_from_manifest(clips: list[Clip], caption_set: str | None = "heldout") -> list[Prompt]:
    """One prompt per clip with captions: its first caption, its attributes and the clip as reference.
    ``caption_set="heldout"`` keeps only clips captioned with the held-out wording."""
    out = []
    for clip in clips:
        if not clip.captions:
            continue
        if caption_set is not None and clip.attributes.get("caption_set", caption_set) != caption_set:
            continue
        out.append(
            Prompt(
                clip.captions[0],
                dict(clip.attributes),
                duration=clip.duration,
                reference=clip.path,
                reference_offset=clip.offset,
            )
        )
    return out


def import_musiccaps(csv_path: str | Path, limit: int | None = None, eval_only: bool = False) -> list[Prompt]:
    """MusicCaps captions as prompts (10 s each; the aspect list goes to ``attributes["aspects"]``).
    The audio is on YouTube and not here, so these prompts carry no reference."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise PromptError(f"MusicCaps CSV {csv_path} not found")
    prompts = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"caption", "aspect_list", "start_s", "end_s"} - set(reader.fieldnames or [])
        if missing:
            raise PromptError(f"{csv_path} lacks column(s) {sorted(missing)}: not the MusicCaps CSV")
        for row in reader:
            if eval_only and row.get("is_audioset_eval") != "True":
                continue
            try:
                aspects = ast.literal_eval(row["aspect_list"])
            except (ValueError, SyntaxError):
                aspects = []
            attrs = {"aspects": aspects, "ytid": row.get("ytid")}
            prompts.append(
                Prompt(row["caption"].strip(), attrs, duration=float(row["end_s"]) - float(row["start_s"]))
            )
            if limit is not None and len(prompts) >= limit:
                break
    return prompts
