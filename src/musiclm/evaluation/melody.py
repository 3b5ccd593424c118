"""Melody accuracy of melody-conditioned generation: does the output follow the input melody?

Pitch is tracked with librosa's pYIN (probabilistic YIN; a model-free tracker, so it shares nothing
with the generator). Two agreements over frames voiced in both: ``chroma`` (same pitch class within
50 cents, octave errors forgiven, as MIREX raw chroma accuracy) and ``contour`` (correlation of the
pitch curves in semitones, which ignores a transposition).
"""

from __future__ import annotations

import librosa
import numpy as np
import torch

from musiclm.audio import resample

TRACK_RATE = 16000
HOP = 320  # 20 ms


def pitch_track(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    """f0 in Hz per 20 ms frame, NaN where unvoiced."""
    y = resample(wav.float(), sample_rate, TRACK_RATE).numpy()
    # quarter-semitone bins (pYIN's default is a tenth): a bin is off by at most 12.5 cents, well inside the
    # 50 cents the chroma agreement allows, and the tracker runs several times faster on every suite row
    f0, voiced, _ = librosa.pyin(
        y, fmin=65.0, fmax=1000.0, sr=TRACK_RATE, frame_length=1024, hop_length=HOP, resolution=0.25
    )
    return np.where(voiced, f0, np.nan)


def melody_agreement(reference: torch.Tensor, output: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """``chroma`` and ``contour`` agreement (NaN if fewer than 10 frames are voiced in both)."""
    a, b = pitch_track(reference, sample_rate), pitch_track(output, sample_rate)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    both = ~np.isnan(a) & ~np.isnan(b)
    out = {"voiced_overlap": float(both.mean()) if n else 0.0}
    if both.sum() < 10:
        return {**out, "chroma": float("nan"), "contour": float("nan")}
    sa, sb = 12 * np.log2(a[both] / 440.0), 12 * np.log2(b[both] / 440.0)
    cents = np.abs(((sa - sb) + 6) % 12 - 6)  # distance in semitones modulo the octave
    out["chroma"] = float((cents <= 0.5).mean())
    out["contour"] = float(np.corrcoef(sa, sb)[0, 1]) if sa.std() > 0 and sb.std() > 0 else float("nan")
    return out
