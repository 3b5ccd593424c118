"""Prompt adherence: is the asked-for attribute in the output? Detectors independent of the generator:
instrument family, style, tempo class and mode by the evaluation classifier when one is given (it reads
them from renders far better than the signal-processing detectors: see its card); tempo by librosa beat
tracking and key and mode by chroma key profiles (Krumhansl-Kessler) always, as ``tempo_class_beat``,
``tempo_acc1/2``, ``key``, ``key_relative`` and ``mode_chroma`` (``tempo_class`` and ``mode`` without a
classifier)."""

from __future__ import annotations

import librosa
import numpy as np
import torch

from musiclm.attributes import tempo_class
from musiclm.audio import KEY_PROFILES

PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def estimate_bpm(wav: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    y = np.asarray(wav, dtype=np.float32)
    tempo, _ = librosa.beat.beat_track(y=y, sr=sample_rate)
    return float(np.atleast_1d(tempo)[0])


def tempo_matches(
    bpm_est: float, bpm_true: float, tolerance: float = 0.08, factors: tuple[float, ...] = (2, 0.5, 3, 1 / 3)
) -> dict[str, bool]:
    """MIREX-style: ``acc1`` within 8 %, ``acc2`` also with the estimate times one of ``factors`` (by
    default MIREX's double, half, triple and third)."""

    def near(x: float) -> bool:
        return abs(x - bpm_true) <= tolerance * bpm_true

    return {"acc1": near(bpm_est), "acc2": any(near(bpm_est * f) for f in (1, *factors))}


def key_scores(wav: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Correlation of the clip's mean chroma with the 24 rotated profiles: ``[2, 12]`` (major, minor) x
    tonic."""
    y = np.asarray(wav, dtype=np.float32)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=2048).mean(1)
    if not np.isfinite(chroma).all() or chroma.std() == 0:
        return np.zeros((2, 12))
    return np.array(
        [
            [np.corrcoef(chroma, np.roll(profile, tonic))[0, 1] for tonic in range(12)]
            for profile in KEY_PROFILES.numpy()
        ]
    )


def estimate_key(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[str, str]:
    """``(tonic name, "major"|"minor")`` of the best-correlating profile."""
    scores = key_scores(wav, sample_rate)
    mode, tonic = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return PITCH_NAMES[tonic], ("major", "minor")[mode]


def pitch_class(name: str) -> int:
    """'D', 'Bb', 'F#' -> 0..11."""
    try:
        return librosa.note_to_midi(name.strip() + "4") % 12
    except librosa.util.exceptions.ParameterError as err:
        raise ValueError(
            f"cannot read key name {name!r}: expected a note name such as 'D', 'Bb' or 'F#'"
        ) from err


def key_matches(est: tuple[str, str], key: str | None, mode: str | None) -> dict[str, bool]:
    """``key`` (tonic and mode right), ``mode`` (mode right), ``key_relative`` (right or its relative key)."""
    out: dict[str, bool] = {}
    if mode is not None:
        out["mode"] = est[1] == mode
    if key is not None and mode is not None:
        tonic, true = pitch_class(est[0]), pitch_class(key)
        out["key"] = tonic == true and est[1] == mode
        relative = (true + (9 if mode == "major" else 3)) % 12
        out["key_relative"] = out["key"] or (tonic == relative and est[1] != mode)
    return out


def adherence(
    wavs: list[torch.Tensor], sample_rate: int, attributes: list[dict], classifier=None
) -> list[dict[str, float]]:
    """Per clip, 1.0/0.0 for each attribute the prompt asked for and a detector checks."""
    probs = None
    if classifier is not None:
        from musiclm.audio import resample

        length = min(w.shape[-1] for w in wavs)
        batch = torch.stack([resample(w[:length], sample_rate, classifier.config.sample_rate) for w in wavs])
        probs = classifier.predict(batch)
    rows = []
    for i, (wav, attrs) in enumerate(zip(wavs, attributes)):
        row: dict[str, float] = {}
        y = wav.detach().cpu().numpy()
        # the signal-processing detectors' names when a classifier reads tempo class and mode
        beat, chroma = ("tempo_class_beat", "mode_chroma") if probs is not None else ("tempo_class", "mode")
        if attrs.get("tempo_class") or attrs.get("bpm"):
            bpm = estimate_bpm(y, sample_rate)
            row["bpm_estimate"] = bpm
            if attrs.get("tempo_class"):
                row[beat] = float(tempo_class(bpm) == attrs["tempo_class"])
            if attrs.get("bpm"):
                row.update(
                    {f"tempo_{k}": float(v) for k, v in tempo_matches(bpm, float(attrs["bpm"])).items()}
                )
        if attrs.get("mode") or attrs.get("key"):
            est = estimate_key(y, sample_rate)
            matches = key_matches(est, attrs.get("key"), attrs.get("mode"))
            if "mode" in matches:
                matches[chroma] = matches.pop("mode")
            row.update({k: float(v) for k, v in matches.items()})
        if probs is not None:
            cfg = classifier.config
            fams = [f for f in attrs.get("families", []) if f in cfg.families]
            if fams:  # recall of the asked-for families
                row["family"] = float(
                    np.mean([float(probs["family"][i, cfg.families.index(f)] > 0.5) for f in fams])
                )
            for head, key, labels in (
                ("style", "style", cfg.styles),
                ("tempo", "tempo_class", cfg.tempos),
                ("mode", "mode", cfg.modes),
            ):
                if attrs.get(key) in labels:
                    row[key] = float(labels[int(probs[head][i].argmax())] == attrs[key])
        rows.append(row)
    return rows
