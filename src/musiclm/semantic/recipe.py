"""The semantic tokenizer's recipes: w2v-BERT trained self-supervised on audio, then k-means on one layer of a
feature model (a trained w2v-BERT, a local HF model, or basic-pitch's note posteriorgrams)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from musiclm.audio import read_clip
from musiclm.config import ConfigError
from musiclm.data.datasets import AudioCropDataset
from musiclm.data.manifest import read_manifest
from musiclm.parts import PARTS, run_record
from musiclm.progress import tqdm
from musiclm.semantic.tokenizer import BACKBONES, KMeansTokenizer, build_backbone
from musiclm.semantic.w2vbert import W2VBert
from musiclm.training import Trainer, seed_everything
from musiclm.training.distributed import pick_device


def train_w2vbert(
    data: Sequence[Path],
    out: Path,
    preset: str = "small",
    *,
    crop_seconds: float = 4.0,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> W2VBert:
    """Train w2v-BERT (contrastive + MLM, self-supervised on audio alone) on ``crop_seconds`` crops of the
    manifests' train clips with the shared engine, into ``out``; resumable. ``model`` and ``train``: changes
    to the preset's config and training settings."""
    settings = PARTS["w2vbert"].train_config(preset, train)
    seed_everything(settings.seed)  # the same initial weights on every run of this config
    w2vbert = W2VBert(PARTS["w2vbert"].model_config(preset, model))
    dataset = AudioCropDataset(data, w2vbert.sample_rate, crop_seconds, split="train")
    record = run_record("w2vbert", preset=preset, crop_seconds=crop_seconds)
    trained = Trainer(w2vbert, dataset, settings, out, record=record).fit()
    tqdm.write(f"w2v-BERT saved to {out}")
    return trained


def fit_kmeans(
    data: Sequence[Path],
    out: Path,
    model: Path | None = None,
    backbone: str = "w2vbert",
    *,
    layer: int | None = None,
    clusters: int = 1024,
    standardize: bool | None = None,
    max_clips: int = 200,
    max_frames: int = 200_000,
    seed: int = 0,
    device: str = "cpu",
) -> KMeansTokenizer:
    """Fit k-means of ``clusters`` on one layer's features of up to ``max_clips`` train clips drawn from the
    manifests, and save the tokenizer to ``out``. ``model``: the feature model's folder, for ``backbone``
    w2vbert (a trained w2v-BERT) or one of the HF backbones; basic_pitch needs none. ``layer``: by default
    the middle MLM layer. ``standardize``: by default every backbone's features but basic_pitch's."""
    features, default_layer = _feature_model(backbone, model)
    if standardize is None:
        standardize = backbone != "basic_pitch"
    tokenizer = KMeansTokenizer.on(
        features, layer if layer is not None else default_layer, clusters, standardize=standardize
    )
    tokenizer.to(pick_device(device))  # the features are computed there; faiss clusters them on the CPU
    clips = [c for m in data for c in read_manifest(m) if c.split == "train"]
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(clips))[:max_clips]
    audio = (read_clip(clips[i], tokenizer.sample_rate) for i in chosen)
    stats = tokenizer.fit_kmeans(audio, max_frames=max_frames, seed=seed)
    tokenizer.save_pretrained(out)
    tokenizer.save_kmeans(Path(out) / "kmeans.npz")
    tqdm.write(
        f"k-means of {clusters} clusters on layer {tokenizer.config.layer} "
        f"({int(stats['frames'])} frames, inertia/frame {stats['inertia']:.3f}) saved to {out}"
    )
    return tokenizer


def _feature_model(backbone: str, model: Path | None) -> tuple[nn.Module, int]:
    """The feature model of ``backbone`` with the weights in ``model``, and its default layer."""
    if backbone == "basic_pitch":  # the model ships in the basic-pitch package: nothing to point at
        return build_backbone(backbone, {}), 0
    if model is None:
        raise ConfigError(f"--backbone {backbone} needs --model DIR (its weights)")
    if backbone == "w2vbert":
        features = W2VBert.from_pretrained(model)
        # The paper takes the 7th of 12 MLM layers; by default take the same relative depth.
        return features, features.config.contrastive_layers + max(
            1, round(features.config.mlm_layers * 7 / 12)
        )
    if backbone in BACKBONES:
        module, cls = BACKBONES[backbone].split(":")
        features = getattr(importlib.import_module(module), cls).from_hf_pretrained(model)
        return features, features.num_layers // 2
    raise ConfigError(f"--backbone must be one of {sorted(BACKBONES)}")
