"""The token stages' recipes: audio manifests in, a token folder out (:func:`tokenize_manifests`); a token
folder in, a trained stage out (:func:`train_stage`).

The folder dictates what a stage's config cannot choose: the parts' vocabularies, how many RVQ levels the
codec has (the coarse stage models the first ones, the fine stage the rest) and, for a stage that embeds
MuLan tokens as MuLan's code vectors, those vectors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from musiclm.config import ConfigError
from musiclm.data.manifest import ManifestError, read_manifest
from musiclm.interfaces import load_component
from musiclm.parts import part, run_record
from musiclm.progress import tqdm
from musiclm.stages.data import StageDataset, dataset_options, load_shards
from musiclm.stages.shards import coarse_levels, codebooks_mulan, read_codebooks, read_meta, same_parts
from musiclm.stages.stages import StageConfig, StageLM
from musiclm.training import Trainer, seed_everything
from musiclm.training.distributed import pick_device

# the fields of StageConfig that a token folder's meta.json sets
VOCAB_FIELDS = (
    "mulan_quantizers",
    "mulan_codebook",
    "melody_quantizers",
    "melody_codebook",
    "semantic_vocab",
    "semantic_rate",
    "codebook_size",
    "acoustic_rate",
)


def tokenize_manifests(
    data: Sequence[Path],
    out: Path,
    codec: Path | None = None,
    semantic: Path | None = None,
    mulan: Path | None = None,
    melody: Path | None = None,
    *,
    split: str = "train",
    refresh: Literal["semantic", "mulan"] | None = None,
    shard_size: int = 64,
    device: str = "cpu",
    strict: bool = False,
    fresh_captions: int | None = None,
) -> int:
    """Turn the clips of ``split`` in the manifests ``data`` into token shards in ``out`` (acoustic, semantic,
    MuLan audio and text, melody), ``shard_size`` clips a shard; resumable, and under ``torchrun`` each rank
    writes its share. ``codec``, ``semantic`` and ``mulan``: part folders (default: the shipped model's);
    ``melody``: a melody embedder's folder (default: no melody tokens). ``split``: a manifest split,
    'heldout' (every split but train) or 'all'. ``refresh`` 'semantic' (or 'mulan') only replaces the
    semantic (MuLan) tokens of the shards already in ``out`` by those of ``semantic`` (``mulan``), the
    other tokens kept. ``strict``: an unusable clip is an error instead of a skip. ``fresh_captions``: the
    MuLan text tokens of drawn captions a rendered clip adds (default: the tokenizing job's). Returns
    how many of this rank's shards were written or found, or rewritten by a refresh."""
    # tokenizing needs the audio stack, which training from a token folder runs without (a GPU machine)
    from musiclm.pipeline import SHIPPED_MODEL
    from musiclm.stages.tokenize import (
        FRESH_CAPTIONS,
        refresh_mulan_tokens,
        refresh_semantic_tokens,
        tokenize_clips,
    )

    if refresh not in (None, "semantic", "mulan"):
        raise ConfigError(f"refresh must be 'semantic' or 'mulan', got {refresh!r}")
    device = str(pick_device(device, int(os.environ.get("LOCAL_RANK", 0))))
    fresh_captions = FRESH_CAPTIONS if fresh_captions is None else fresh_captions
    # a missing file is skipped and counted like an unreadable one, not an end to the job
    every_clip = [c for m in data for c in read_manifest(m, check_files=False)]
    if refresh == "semantic":  # the shards name their clips, whatever split they were made from
        tokenizer = load_component(semantic or SHIPPED_MODEL / "semantic", device)
        rewritten = refresh_semantic_tokens(out, every_clip, tokenizer, device=device)
        tqdm.write(f"semantic tokens of {rewritten} shard(s) in {out} replaced")
        return rewritten
    if refresh == "mulan":
        conditioner = load_component(mulan or SHIPPED_MODEL / "mulan", device)
        rewritten = refresh_mulan_tokens(
            out, every_clip, conditioner, device=device, fresh_captions=fresh_captions
        )
        tqdm.write(f"MuLan tokens of {rewritten} shard(s) in {out} recomputed")
        return rewritten
    clips = [
        c
        for c in every_clip
        if split == "all" or c.split == split or split == "heldout" and c.split != "train"
    ]
    if not clips:
        raise ManifestError(f"no clips of split {split!r} in {[str(m) for m in data]}")
    folders = {"codec": codec, "semantic": semantic, "mulan": mulan}
    parts = [load_component(path or SHIPPED_MODEL / name, device) for name, path in folders.items()]
    parts.append(load_component(melody, device) if melody is not None else None)
    shards = tokenize_clips(
        clips, out, *parts, shard_size=shard_size, device=device, strict=strict, fresh_captions=fresh_captions
    )
    tqdm.write(f"{len(shards)} shard(s) of this rank in {out}")
    return len(shards)


def stage_config(
    stage: str,
    tokens: Path,
    preset: str = "small",
    *,
    coarse_quantizers: int | None = None,
    model: Mapping[str, Any] | None = None,
) -> tuple[StageConfig, Tensor | None]:
    """The config of the ``stage`` stage trained on the token folder ``tokens``: the preset's with the
    folder's vocabularies and ``model``'s changes, and the MuLan codebooks a ``codebook`` stage embeds (None
    for the others). ``coarse_quantizers``: RVQ levels of the coarse stage (default: ``model``'s, else the
    first third of the codec's). A change that contradicts the folder (another vocabulary) is refused."""
    meta = read_meta(tokens)
    model = dict(model or {})
    contradicted = [
        f"{k} {model[k]!r} (the folder's: {meta[k]!r})"
        for k in VOCAB_FIELDS
        if model.get(k, meta[k]) != meta[k]
    ]
    if contradicted:
        raise ConfigError(
            f"{tokens} was tokenized with other parts than the config names: {', '.join(contradicted)}; "
            "tokenize with the parts of the config, or leave these fields out of it"
        )
    levels = meta["num_quantizers"]
    coarse_quantizers = coarse_quantizers or model.pop("coarse_quantizers", None) or coarse_levels(levels)
    if not 0 < coarse_quantizers < levels:
        raise ConfigError(f"--coarse-quantizers must be in 1..{levels - 1}")
    folder = {k: meta[k] for k in VOCAB_FIELDS}
    split = {"coarse_quantizers": coarse_quantizers, "fine_quantizers": levels - coarse_quantizers}
    config = part(f"{stage}_stage").model_config(preset, {**model, **folder, **split})
    if config.mulan_embedding != "codebook" or stage == "fine":  # the fine stage has no MuLan tokens
        return config, None
    codebooks = read_codebooks(tokens)
    return config.replace(mulan_dim=codebooks.shape[-1]), codebooks


def train_stage(
    stage: str,
    tokens: Path,
    out: Path,
    preset: str = "small",
    *,
    val_tokens: Path | None = None,
    coarse_quantizers: int | None = None,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> StageLM:
    """Train the ``stage`` (semantic, coarse or fine) stage on the windows of ``tokens`` with the shared
    engine, into ``out``; resumable. ``val_tokens``: a token folder of held-out clips made with the same
    parts, one validation window a clip. ``coarse_quantizers``: RVQ levels of the coarse stage (default:
    the first third of the codec's). ``model`` and ``train``: changes to the preset's stage config (its
    windows scaled to the stage) and training settings."""
    meta = read_meta(tokens)
    # folders made before the codebooks file was kept name no MuLan: only their layouts are compared
    mulans = {codebooks_mulan(tokens), codebooks_mulan(val_tokens)} if val_tokens else set()
    differ = val_tokens is not None and not same_parts(read_meta(val_tokens), meta)
    if differ or None not in mulans and len(mulans) > 1:
        raise ConfigError(
            f"{val_tokens} was tokenized with other parts than {tokens}: tokenize both "
            "with the same codec, semantic, MuLan and melody folders"
        )
    config, codebooks = stage_config(stage, tokens, preset, coarse_quantizers=coarse_quantizers, model=model)
    settings = part(f"{stage}_stage").train_config(preset, train)
    seed_everything(settings.seed)  # the same initial weights on every run of this config
    lm = StageLM(config)
    if codebooks is not None:
        lm.set_mulan_codebooks(codebooks)
    hops = dataset_options(meta)
    data, val_data = (StageDataset(load_shards(t), lm, **hops) if t else None for t in (tokens, val_tokens))
    record = run_record(f"{stage}_stage", preset=preset, stage=stage)
    trained = Trainer(lm, data, settings, out, val_data=val_data, record=record).fit()
    tqdm.write(f"trained {stage} stage saved to {out}")
    return trained
