"""The token stages' recipe: a token folder written by ``musiclm tokenize`` in, a trained stage out.

The folder dictates what a stage's config cannot choose: the parts' vocabularies, how many RVQ levels the
codec has (the coarse stage models the first ones, the fine stage the rest) and, for a stage that embeds
MuLan tokens as MuLan's code vectors, those vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musiclm.config import ConfigError
from musiclm.progress import tqdm
from musiclm.stages.data import StageDataset, dataset_options, load_shards
from musiclm.stages.shards import coarse_levels, codebooks_mulan, read_codebooks, read_meta, same_parts
from musiclm.stages.stages import TRAIN_DEFAULTS, StageConfig, StageLM
from musiclm.training import TrainConfig, Trainer

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
    if coarse_quantizers is None:
        coarse_quantizers = coarse_levels(meta["num_quantizers"])
    if not 0 < coarse_quantizers < meta["num_quantizers"]:
        raise ConfigError(f"--coarse-quantizers must be in 1..{meta['num_quantizers'] - 1}")
    config = StageConfig.for_stage(
        stage,
        preset,
        coarse_quantizers=coarse_quantizers,
        fine_quantizers=meta["num_quantizers"] - coarse_quantizers,
        **{k: meta[k] for k in VOCAB_FIELDS},
        **(model or {}),
    )
    codebooks = None
    if config.mulan_embedding == "codebook" and stage != "fine":  # the fine stage has no MuLan tokens
        codebooks = read_codebooks(tokens)
        config = config.replace(mulan_dim=codebooks.shape[-1])
    settings = TrainConfig.from_dict({**TRAIN_DEFAULTS.get(preset, {}), **(train or {})})
    lm = StageLM(config)
    if codebooks is not None:
        lm.set_mulan_codebooks(codebooks)
    hops = dataset_options(meta)
    data, val_data = (StageDataset(load_shards(t), lm, **hops) if t else None for t in (tokens, val_tokens))
    trained = Trainer(lm, data, settings, out, val_data=val_data).fit()
    tqdm.write(f"trained {stage} stage saved to {out}")
    return trained
