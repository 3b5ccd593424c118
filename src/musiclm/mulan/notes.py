"""What MuLan's audio tower reads off the notes: basic-pitch transcription features of each window.

A ResNet pooling log-mel hears timbre well and mode and tempo little: a spectrum's chroma mixes each
note's partials into other pitch classes, and its receptive field is shorter than a slow beat. basic-pitch
(:class:`musiclm.semantic.notes.BasicPitch`, a pretrained transcription network on onnxruntime) says
which piano keys sound and start, so the key, the beat, the register and the density of a window can be
read from notes:

- :func:`note_posteriors`: audio -> ``[B, F, 89]`` at 25 frames a second, each key's note activity and
  then the onset strength (the strongest key's onset);
- :class:`NoteFeatures`: a window's posteriors -> key-profile correlations of its transcribed pitch-class
  profile, the autocorrelation of its onsets over 0.1-2 s, and six numbers (onsets a second, polyphony,
  voiced share, mean / lowest / highest sounding key);
- :func:`write_note_cache`: the posteriors of every clip of a manifest, stored once beside it, so that
  training crops cost no transcription (20 h of audio take about 40 CPU-minutes).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import key_profile_features, loudness_normalize, onset_autocorrelation, read_clip, resample
from musiclm.data.manifest import Clip, read_manifest
from musiclm.files import atomic_write
from musiclm.progress import tqdm

FRAME_RATE = 25  # posteriors a second: a 16th note at 180 BPM still gets its own frame
CHANNELS = 89  # 88 keys' note activity (A0 first), then the onset strength
LOWEST_MIDI = 21
SOUNDING = 0.3  # a key's activity above this is a sounding note (basic-pitch's own frame threshold)
ONSET = 0.5  # an onset-strength peak above this is a note start (basic-pitch's onset threshold)
CACHE_FOLDER = "notes"  # beside the manifest


@functools.cache
def _transcriber():
    from musiclm.semantic.notes import BasicPitch

    return BasicPitch()


def note_posteriors(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[B, T]`` audio -> ``[B, round(T / sample_rate * 25), 89]`` in [0, 1]: note activity averaged and
    onset strength max-pooled (an onset lasts a frame or two of basic-pitch's 86 a second) to 25 Hz."""
    transcriber = _transcriber()
    frames = max(1, round(wav.shape[-1] / sample_rate * FRAME_RATE))
    posteriors = transcriber.layer_features(resample(wav, sample_rate, transcriber.sample_rate))
    notes, onsets = posteriors[..., 264:352], posteriors[..., 352:440].amax(-1, keepdim=True)
    notes = F.adaptive_avg_pool1d(notes.transpose(1, 2), frames)
    onsets = F.adaptive_max_pool1d(onsets.transpose(1, 2), frames)
    return torch.cat([notes, onsets], dim=1).transpose(1, 2).to(wav.device)


def window_frames(posteriors: torch.Tensor, sample_starts: Sequence[int], sample_rate: int, seconds: float):
    """``[B, F, C]`` -> ``[B, W, seconds * 25, C]``: the frames of windows starting at those samples."""
    length = round(seconds * FRAME_RATE)
    padded = F.pad(posteriors, (0, 0, 0, length))
    starts = [round(s / sample_rate * FRAME_RATE) for s in sample_starts]
    return torch.stack([padded[:, s : s + length] for s in starts], dim=1)


class NoteFeatures(nn.Module):
    """``[N, F, 89]`` posteriors of a window -> ``[N, dim]`` features (no weights)."""

    LAG_SECONDS = (0.1, 2.0)

    def __init__(self):
        super().__init__()
        self.lags = tuple(round(s * FRAME_RATE) for s in self.LAG_SECONDS)
        pitch_class = (torch.arange(88) + LOWEST_MIDI) % 12
        self.register_buffer("fold", F.one_hot(pitch_class, 12).float(), persistent=False)  # [88, 12]
        self.dim = 36 + (self.lags[1] - self.lags[0]) + 6

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        notes, onsets = posteriors[..., :88].float(), posteriors[..., 88].float()
        active = notes > SOUNDING
        sounding = notes * active
        profile = (sounding @ self.fold).sum(1)
        profile = profile / profile.amax(-1, keepdim=True).clamp(min=1e-6)
        before, after = F.pad(onsets, (1, 0))[..., :-1], F.pad(onsets, (0, 1))[..., 1:]
        peaks = (onsets > ONSET) & (onsets >= before) & (onsets > after)
        seconds = posteriors.shape[1] / FRAME_RATE
        count = active.sum(-1).float()  # sounding keys per frame
        voiced = count > 0
        keys = torch.arange(88, device=notes.device, dtype=torch.float32) / 87
        lowest = torch.where(active, keys, torch.ones_like(keys)).amin(-1)
        highest = torch.where(active, keys, torch.zeros_like(keys)).amax(-1)
        mean_key = (sounding * keys).sum(-1) / sounding.sum(-1).clamp(min=1e-6)
        frames = voiced.sum(-1).clamp(min=1)

        def over_voiced(x: torch.Tensor) -> torch.Tensor:
            return (x * voiced).sum(-1) / frames

        numbers = torch.stack(
            [
                torch.log1p(peaks.sum(-1) / seconds),
                over_voiced(count) / 4,
                voiced.float().mean(-1),
                over_voiced(mean_key),
                over_voiced(lowest),
                over_voiced(highest),
            ],
            dim=-1,
        )
        rhythm = onset_autocorrelation(onsets, self.lags)
        return torch.cat([key_profile_features(profile), rhythm, numbers], dim=-1)


# --- the cache ------------------------------------------------------------------------------------------
def cache_path(clip: Clip, manifest: Path) -> Path:
    """Where a clip's posteriors are stored: ``notes/`` beside the manifest, under the audio's relative path
    (a hash of the absolute path for audio outside the manifest's folder)."""
    relative = os.path.relpath(clip.path, manifest.parent)
    if relative.startswith(".."):
        relative = hashlib.sha1(str(Path(clip.path).resolve()).encode()).hexdigest()[:20]
    name = f"{relative}@{clip.offset:g}" if clip.offset else relative
    return manifest.parent / CACHE_FOLDER / f"{name}.npy"


def read_cached(clip: Clip, manifest: Path, start: float, seconds: float) -> torch.Tensor:
    """``[seconds * 25, 89]`` posteriors of a crop from the cache (zero past the clip's end)."""
    path = cache_path(clip, manifest)
    if not path.is_file():
        raise FileNotFoundError(
            f"no note posteriors for {clip.path} at {path}: compute them once with "
            f"`musiclm mulan notes {manifest}`"
        )
    stored = np.load(path, mmap_mode="r")
    first, length = round(start * FRAME_RATE), round(seconds * FRAME_RATE)
    crop = torch.from_numpy(np.asarray(stored[first : first + length], dtype=np.float32) / 255)
    return F.pad(crop, (0, 0, 0, length - len(crop)))


def _write_clip(job: tuple[Clip, Path, int]) -> None:
    clip, path, sample_rate = job
    wav = loudness_normalize(read_clip(clip, sample_rate), sample_rate)  # as training crops are
    posteriors = note_posteriors(wav[None], sample_rate)[0]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, (posteriors.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def write_note_cache(manifest: str | Path, sample_rate: int, workers: int = 1) -> int:
    """Store the posteriors of every clip of ``manifest`` that has none yet; returns how many were written.
    Resumable: a clip's file appears whole or not at all."""
    manifest = Path(manifest)
    jobs = [(c, cache_path(c, manifest), sample_rate) for c in read_manifest(manifest)]
    jobs = [j for j in jobs if not j[1].is_file()]
    if workers <= 1:
        for job in tqdm(jobs, desc="note posteriors"):
            _write_clip(job)
    else:
        # one thread a process: the processes share the cores (the caller's own threads stay as they are)
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for _ in tqdm(pool.map(_write_clip, jobs, chunksize=4), total=len(jobs), desc="note posteriors"):
                pass
    return len(jobs)
