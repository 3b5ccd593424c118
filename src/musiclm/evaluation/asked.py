"""Tempo and key asked by name: prompts whose text names a BPM ("at about 120 BPM", "roughly 96 beats per
minute") or a key ("in D minor", "key of B flat major"), and whether a clip plays them, by the detectors
prompt adherence uses (librosa beat tracking; chroma against key profiles). The attributes a prompt file
carries are not read: only what the words ask counts as asked."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from musiclm.evaluation import adherence as adh

BPM = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*(?:bpm\b|beats?\s+(?:per|a|each)\s+minute)", re.IGNORECASE)
# The tonic's letter must be a capital: in "a minor key" the "a" is an article, not a key.
KEY = re.compile(r"\b([A-G])(?:([#♯b♭])|[\s-]+((?i:sharp|flat))\b)?[\s-]+((?i:major|minor))\b")
OCTAVE_FACTORS = (2, 0.5)  # twice or half the asked tempo; MIREX's triple and third are not octaves


def asked(text: str) -> dict[str, Any]:
    """The tempo and key a prompt names: ``{"bpm": float | None, "key": "Bb" | None, "mode": "minor" |
    None}`` (the first of each; key and mode are named together or not at all)."""
    bpm = BPM.search(text)
    key = KEY.search(text)
    out: dict[str, Any] = {"bpm": float(bpm.group(1)) if bpm else None, "key": None, "mode": None}
    if key:
        letter, sign, word, mode = key.groups()
        accidental = (sign or word or "").lower()
        out["key"] = letter + ("#" if accidental in ("#", "♯", "sharp") else "b" if accidental else "")
        out["mode"] = mode.lower()
    return out


def _share(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def asked_scores(wavs: list[torch.Tensor], sample_rate: int, texts: list[str]) -> dict[str, Any]:
    """Per clip whose prompt names a tempo or key, what was asked and detected; over them, the shares
    playing the asked tempo (within 8 %, and with octave errors allowed) and the asked key and mode."""
    clips: list[dict[str, Any]] = []
    for i, (wav, text) in enumerate(zip(wavs, texts)):
        want = asked(text)
        if want["bpm"] is None and want["key"] is None:
            continue
        y = wav.detach().cpu().numpy()
        clip: dict[str, Any] = {"prompt": i}
        if want["bpm"] is not None:
            bpm = adh.estimate_bpm(y, sample_rate)
            hit = adh.tempo_matches(bpm, want["bpm"], factors=OCTAVE_FACTORS)
            clip.update(bpm_asked=want["bpm"], bpm_detected=bpm, tempo=hit["acc1"], tempo_octave=hit["acc2"])
        if want["key"] is not None:
            est = adh.estimate_key(y, sample_rate)
            hit = adh.key_matches(est, want["key"], want["mode"])
            clip.update(
                key_asked=f"{want['key']} {want['mode']}",
                key_detected=" ".join(est),
                key=hit["key"],
                mode=hit["mode"],
            )
        clips.append(clip)
    tempo = [c for c in clips if "tempo" in c]
    key = [c for c in clips if "key" in c]
    return {
        "asked_tempo_n": len(tempo),
        "asked_tempo_share": _share([c["tempo"] for c in tempo]),
        "asked_tempo_octave_share": _share([c["tempo_octave"] for c in tempo]),
        "asked_key_n": len(key),
        "asked_key_share": _share([c["key"] for c in key]),
        "asked_mode_share": _share([c["mode"] for c in key]),
        "per_clip_asked": clips,
    }
