"""SoundStream's recipe: audio manifests in, a trained codec out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from musiclm.codec.soundstream import CROP_SECONDS, TRAIN_GAIN_DB, SoundStream
from musiclm.data.datasets import AudioCropDataset
from musiclm.parts import PARTS, run_record
from musiclm.progress import tqdm
from musiclm.training import Trainer, seed_everything
from musiclm.training.distributed import setup


def train_codec(
    data: Sequence[Path],
    out: Path,
    preset: str = "small",
    *,
    crop_seconds: float | None = None,
    data_weights: Sequence[float] | None = None,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> SoundStream:
    """Train SoundStream (generator + discriminators) on crops of the manifests' train clips with the shared
    engine, into ``out``; resumable. ``crop_seconds``: seconds per crop (default: the preset's);
    ``data_weights``: the share of crops drawn from each manifest (default: every clip equally likely).
    ``model`` and ``train``: changes to the preset's codec config and training settings."""
    config = PARTS["codec"].model_config(preset, model)
    settings = PARTS["codec"].train_config(preset, train)
    crop = crop_seconds or CROP_SECONDS[preset]
    dataset = AudioCropDataset(
        [str(m) for m in data],
        config.sample_rate,
        crop,
        split="train",
        weights=data_weights,
        gain_db=TRAIN_GAIN_DB,
    )
    setup(
        settings.device
    )  # under torchrun, the quantizer syncs its codebooks only if built in the process group
    seed_everything(settings.seed)  # identical initial weights in every DDP process
    codec = SoundStream(config)
    tqdm.write(
        f"SoundStream {preset}: {sum(p.numel() for p in codec.generator_parameters()) / 1e6:.2f}M generator "
        f"params, {len(dataset)} training clips, {crop} s crops, batch {settings.batch_size}, "
        f"{settings.steps} steps"
    )
    record = run_record("codec", preset=preset, crop_seconds=crop, data_weights=data_weights)
    trained = Trainer(codec, dataset, settings, out, record=record).fit()
    tqdm.write(f"saved the trained codec to {out}")
    return trained
