"""Manifests for audio you already have: a folder of files, or a MusicCaps-format CSV."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from musiclm.data.manifest import Clip, write_manifest
from musiclm.data.skips import SkipLog

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}


class IndexingError(ValueError):
    """A folder or CSV that cannot be indexed (the name avoids shadowing the builtin IndexError)."""


def audio_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (searched recursively) whose extension is an audio format's."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def index_inputs(folder: Path) -> list[Path]:
    """Every file :func:`index_folder` may read: the audio files under ``folder`` and their sidecars."""
    return [p for audio in audio_files(folder) for p in (audio, *_sidecar_paths(audio))]


def _sidecar_paths(path: Path) -> tuple[Path, Path]:
    return path.with_suffix(".json"), path.with_suffix(".txt")


def _sidecar(path: Path) -> tuple[list[str], dict]:
    """Captions and attributes from ``<name>.json`` (AudioCraft-style fields) or ``<name>.txt``."""
    js, txt = _sidecar_paths(path)
    if js.is_file():
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise IndexingError(f"sidecar {js} is not valid JSON ({err}); fix or remove it") from err
        attrs = {
            k: meta[k]
            for k in ("genre", "moods", "bpm", "key", "title", "artist", "instrument")
            if meta.get(k)
        }
        captions = [meta["description"]] if meta.get("description") else []
        if not captions and attrs:  # compose a caption from the tags
            words = [str(attrs.get("genre", "music"))]
            if attrs.get("moods"):
                moods = attrs["moods"] if isinstance(attrs["moods"], list) else [attrs["moods"]]
                words.insert(0, ", ".join(map(str, moods)))
            tail = [
                f"at {attrs['bpm']} BPM" if attrs.get("bpm") else "",
                f"in {attrs['key']}" if attrs.get("key") else "",
            ]
            text = " ".join(w for w in [*words, *tail] if w).strip()
            captions = [text[0].upper() + text[1:] + "."]
        return captions, attrs
    if txt.is_file():
        return [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()], {}
    return [], {}


def unusable(path: Path, info: sf._SoundFileInfo, min_seconds: float) -> str | None:
    """Why a readable header hides audio nothing can learn from, or None. Decodes the whole file
    once: a truncated body, NaN samples or silence only show in the samples."""
    if info.frames == 0:
        return "no samples (0-length file)"
    if info.duration < min_seconds:
        return f"{info.duration:.3f} s, shorter than {min_seconds:g} s"
    peak = 0.0
    for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            return "contains NaN or infinite samples"
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
    return "silent (every sample is 0)" if peak == 0 else None


def index_folder(
    folder: Path,
    out: Path,
    split: str = "train",
    license: str | None = None,
    min_seconds: float = 0.5,
    strict: bool = False,
) -> tuple[list[Clip], str]:
    """Every usable audio file under ``folder``. Unreadable, empty, NaN, silent or too-short files are
    skipped and listed in ``<manifest name>.skipped.jsonl`` (``strict``: the first one is an error);
    returns the clips and the summary of the skips ("" when none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IndexingError(f"{folder} is not a folder; pass the folder that holds your audio files")
    clips = []
    skips = SkipLog(Path(out).with_name(Path(out).stem + ".skipped.jsonl"), strict)
    for path in audio_files(folder):
        try:
            info = sf.info(str(path))
            reason = unusable(path, info, min_seconds)
        except Exception as err:  # soundfile raises several types by format
            reason = f"unreadable: {(str(err).strip() or type(err).__name__).splitlines()[0][:200]}"
        if reason is not None:
            skips.skip(path, reason)
            continue
        captions, attrs = _sidecar(path)
        attrs["collection"] = path.parent.name
        if license:
            attrs["license"] = license
        clips.append(
            Clip(
                path=path.resolve(),
                duration=round(info.duration, 4),
                sample_rate=info.samplerate,
                captions=captions,
                split=split,
                attributes=attrs,
            )
        )
    summary = skips.finish()
    if not clips:
        raise IndexingError(
            f"no usable audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {folder}"
            + (f"; {summary}" if summary else "")
        )
    write_manifest(out, clips)
    return clips, summary


def import_musiccaps(csv_path: Path, audio_dir: Path, out: Path) -> tuple[list[Clip], int]:
    """Rows of a MusicCaps-format CSV whose audio is local: ``<ytid>_<start>.*`` (the clip) or ``<ytid>.*``
    (the whole recording, then ``offset`` = start_s). Returns the clips and the number of rows without
    audio."""
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    if not csv_path.is_file():
        raise IndexingError(f"CSV {csv_path} not found")
    if not audio_dir.is_dir():
        raise IndexingError(f"audio folder {audio_dir} not found")
    files = {p.stem: p for p in audio_files(audio_dir)}
    clips, missing = [], 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"ytid", "start_s", "end_s", "caption"}
        if not needed <= set(reader.fieldnames or []):
            raise IndexingError(
                f"{csv_path} lacks the MusicCaps columns {sorted(needed - set(reader.fieldnames or []))}"
            )
        for row in reader:
            start, end = float(row["start_s"]), float(row["end_s"])
            clip_file = files.get(f"{row['ytid']}_{int(start)}")
            whole = files.get(row["ytid"])
            if clip_file is None and whole is None:
                missing += 1
                continue
            attrs = {"collection": "musiccaps", "ytid": row["ytid"]}
            if row.get("aspect_list"):
                try:
                    attrs["aspects"] = ast.literal_eval(row["aspect_list"])
                except (ValueError, SyntaxError):
                    attrs["aspects"] = row["aspect_list"]
            split = "test" if str(row.get("is_audioset_eval", "")).lower() == "true" else "train"
            clips.append(
                Clip(
                    path=(clip_file or whole).resolve(),
                    duration=end - start,
                    captions=[row["caption"]],
                    split=split,
                    attributes=attrs,
                    offset=None if clip_file else start,
                )
            )
    if not clips:
        raise IndexingError(
            f"none of the {missing} rows of {csv_path} has audio in {audio_dir} (<ytid>.wav or "
            "<ytid>_<start>.wav)"
        )
    write_manifest(out, clips)
    return clips, missing
