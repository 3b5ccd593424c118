"""The recipes of MuLan and the melody embedder: each trained on audio manifests with the shared engine, then
its RVQ fitted on embeddings of training crops, so that it turns embeddings into tokens."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from musiclm.audio import REFERENCE_LUFS
from musiclm.data.augment import Augment
from musiclm.data.datasets import AudioCropDataset
from musiclm.data.manifest import read_manifest
from musiclm.mulan.melody import MelodyEmbedder, MelodyPairs
from musiclm.mulan.model import MuLan
from musiclm.mulan.notes import write_note_cache
from musiclm.mulan.quantizer import collect_embeddings
from musiclm.parts import PARTS, run_record
from musiclm.progress import tqdm
from musiclm.training import Trainer, seed_everything
from musiclm.training.distributed import barrier


def train_mulan(
    data: Sequence[Path],
    out: Path,
    preset: str = "small",
    *,
    rvq_points: int = 2048,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> list[float] | None:
    """Train MuLan contrastively on the manifests' text-audio pairs into ``out``, then fit its RVQ on
    ``rvq_points`` audio embeddings of training crops; resumable. ``model`` and ``train``: changes to the
    preset's config and training settings. Returns the RVQ's residual energy after each level, on the
    process that fits it (None on the other ranks under torchrun)."""
    config = PARTS["mulan"].model_config(preset, model)
    settings = PARTS["mulan"].train_config(preset, train)
    seed_everything(settings.seed)
    if config.notes:  # transcribed once (resumable), so that no training crop waits for basic-pitch
        for manifest in data:
            write_note_cache(manifest, config.sample_rate, workers=settings.num_workers or 1)
    crops = dict(
        manifests=data,
        sample_rate=config.sample_rate,
        crop_seconds=config.window_seconds,
        split="train",
        with_notes=config.notes,
    )
    with_labels = config.attribute_weight > 0  # the heads' targets
    # the level stays at the dataset's loudness: tokenization feeds MuLan loudness-normalised audio
    augment = Augment(level_lufs=(REFERENCE_LUFS, REFERENCE_LUFS)) if config.augment else None
    pairs = AudioCropDataset(
        **crops,
        with_text=True,
        hard_negatives=config.hard_negatives,
        fresh_captions=config.fresh_captions,
        augment=augment,
        with_labels=with_labels,
    )
    val = _valid_set(
        data,
        config.sample_rate,
        config.window_seconds,
        with_text=True,
        hard_negatives=config.hard_negatives,
        with_labels=with_labels,
        with_notes=config.notes,
    )
    record = run_record("mulan", preset=preset, rvq_points=rvq_points)
    trainer = Trainer(MuLan(config), pairs, settings, out, val_data=val, record=record)
    trainer.fit()
    # the RVQ is fitted on clean crops, as tokenization will embed them
    rvq_crops = AudioCropDataset(**crops) if augment is not None else pairs
    return _fit_rvq_and_save(trainer, lambda mulan: mulan.embed_audio, rvq_crops, rvq_points, out, "MuLan")


def train_melody(
    data: Sequence[Path],
    out: Path,
    preset: str = "small",
    *,
    rvq_points: int = 2048,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> list[float] | None:
    """Train the melody embedder with a semi-hard triplet loss on the manifests' melody pairs into ``out``,
    then fit its RVQ on ``rvq_points`` embeddings of training crops; resumable. ``model`` and
    ``train``: changes to the preset's config and training settings. Returns the RVQ's residual energy
    after each level, on the process that fits it (None on the other ranks under torchrun)."""
    config = PARTS["melody"].model_config(preset, model)
    settings = PARTS["melody"].train_config(preset, train)
    seed_everything(settings.seed)
    clips = [c for m in data for c in read_manifest(m)]
    window = config.window_seconds
    pairs = MelodyPairs([c for c in clips if c.split == "train"], config.sample_rate, window)
    try:
        val = MelodyPairs([c for c in clips if c.split == "valid"], config.sample_rate, window)
    except ValueError:
        val = None
    record = run_record("melody", preset=preset, rvq_points=rvq_points)
    trainer = Trainer(MelodyEmbedder(config), pairs, settings, out, val_data=val, record=record)
    trainer.fit()
    crops = AudioCropDataset(data, config.sample_rate, window, split="train", with_text=False)
    return _fit_rvq_and_save(
        trainer, lambda embedder: embedder.embed, crops, rvq_points, out, "melody embedder"
    )


def _fit_rvq_and_save(
    trainer: Trainer, embed: Callable, crops: Dataset, points: int, out: Path, what: str
) -> list[float] | None:
    """Fit the trained model's RVQ on embeddings of training crops and save the folder: on rank 0 only
    under torchrun (one writer), while the other ranks wait for the folder."""
    energy = None
    if trainer.dist.is_main:
        trained = trainer.averaged_model().eval()
        errors = trained.fit_quantizer(collect_embeddings(embed(trained), crops, points))
        trained.save_pretrained(out)
        energy = [round(e, 4) for e in errors]
        tqdm.write(f"{what} saved to {out}; RVQ residual energy after each level: {energy}")
    barrier()
    return energy


def _valid_set(
    data: Sequence[Path],
    sample_rate: int,
    seconds: float,
    with_text: bool,
    hard_negatives: bool = False,
    with_labels: bool = False,
    with_notes: bool = False,
) -> AudioCropDataset | None:
    """Fixed middle crops of the 'valid' split, or None where the manifests have none."""
    try:
        return AudioCropDataset(
            data,
            sample_rate,
            seconds,
            split="valid",
            random_crop=False,
            with_text=with_text,
            hard_negatives=hard_negatives,
            with_labels=with_labels,
            with_notes=with_notes,
        )
    except ValueError:
        return None
