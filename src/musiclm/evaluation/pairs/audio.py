"""Pair audio on disk: a folder holds ``NNN-a.wav`` and ``NNN-b.wav`` for each pair ``NNN`` of a pairs
file, whether generated, rendered as a reference or sent through part of the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from musiclm.audio import save_audio
from musiclm.evaluation.pairs.file import Pair, PairsError
from musiclm.progress import tqdm


def side_paths(folder: str | Path, index: int) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{index:03d}-a.wav", folder / f"{index:03d}-b.wav"


def load_pair_audio(
    folder: str | Path, count: int, sample_rate: int, seconds: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``NNN-a.wav`` / ``NNN-b.wav`` for pairs ``0..count-1`` (the layout :func:`generate_pairs` writes)."""
    from musiclm.evaluation.suite import load_clip  # the suite loads every evaluator: only when reading

    paths = [side_paths(folder, i) for i in range(count)]
    missing = [str(p) for pair in paths for p in pair if not p.is_file()]
    if missing:
        raise PairsError(
            f"{len(missing)} pair audio file(s) missing in {folder}, e.g. {missing[0]}; a "
            "folder of pair audio holds NNN-a.wav and NNN-b.wav for each pair NNN of the pairs "
            "file"
        )
    return [(load_clip(a, sample_rate, seconds), load_clip(b, sample_rate, seconds)) for a, b in paths]


def generate_pairs(
    pipeline,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    seconds: float,
    seed: int = 0,
    batch_size: int = 4,
    **generate_kwargs,
) -> Path:
    """Generate both sides of every pair into ``out_dir`` (skipping pairs already there) and return it.

    The A sides of a batch of pairs are one call and their B sides another, with the same seed: sampling
    draws its noise per row, so pair i's two prompts are sampled with the same random numbers and differ
    only by the prompt. Batches have fixed bounds, so a resumed run makes the same audio as an
    uninterrupted one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="generating pairs", unit="batch"):
        idx = range(start, min(start + batch_size, len(pairs)))
        if all(p.is_file() for i in idx for p in side_paths(out_dir, i)):
            continue
        for side in ("a", "b"):
            texts = [getattr(pairs[i], side) for i in idx]
            wavs = pipeline.generate(texts, duration=seconds, seed=seed + start, **generate_kwargs)
            for i, wav in zip(idx, wavs):
                save_audio(side_paths(out_dir, i)[side == "b"], wav.float().cpu(), pipeline.sample_rate)
    return out_dir
