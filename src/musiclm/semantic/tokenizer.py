"""Semantic tokens: k-means cluster ids of one layer of a self-supervised model, 25 per second.

A :class:`KMeansTokenizer` folder holds everything (``config.json`` + ``model.safetensors``: the
feature model's weights, the per-dimension feature mean/std and the centroids), so
``musiclm.interfaces.load_component(dir)`` gives a ready :class:`~musiclm.interfaces.SemanticTokenizer`.
Features are standardised per dimension before k-means, as for HuBERT/w2v-BERT units (AudioLM), unless
``standardize`` is off.
Whatever rate the feature model runs at, tokens come out at exactly ``frame_rate``:
a clip of T samples gives ``round(frame_rate * T / sample_rate)`` tokens.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import AudioError, check_finite
from musiclm.config import Config, ConfigError
from musiclm.files import atomic_write
from musiclm.pretrained import PretrainedMixin
from musiclm.progress import tqdm

# Feature models a tokenizer can sit on: name -> "module:Class" with ``from_config_dict``,
# ``config_dict``, ``sample_rate``, ``feature_dim``, ``num_layers`` and ``layer_features(wav, layer)``.
BACKBONES = {
    "w2vbert": "musiclm.semantic.w2vbert:W2VBert",
    "hf_wav2vec2bert": "musiclm.semantic.adapters:HFWav2Vec2Bert",
    "hf_hubert": "musiclm.semantic.adapters:HFHubert",
    "basic_pitch": "musiclm.semantic.notes:BasicPitch",
}
SILENCE_PEAK = 1e-5


@dataclasses.dataclass
class KMeansTokenizerConfig(Config):
    backbone: str = "w2vbert"
    backbone_config: dict = dataclasses.field(default_factory=dict)
    layer: int = 7
    num_clusters: int = 1024
    feature_dim: int = 1024
    frame_rate: float = 25.0
    # Standardise each feature dimension before k-means (HuBERT/w2v-BERT units). Off for posteriorgrams,
    # where it would blow up the noise of keys that rarely sound to the size of the notes that do.
    standardize: bool = True


def build_backbone(name: str, config: dict) -> nn.Module:
    if name not in BACKBONES:
        raise ConfigError(f"unknown feature model {name!r}; choose one of {sorted(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls).from_config_dict(config)


class KMeansTokenizer(nn.Module, PretrainedMixin):
    config_class = KMeansTokenizerConfig
    model_type = "semantic_kmeans"

    def __init__(self, config: KMeansTokenizerConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, config.backbone_config)
        if self.backbone.feature_dim != config.feature_dim:
            raise ConfigError(
                f"feature_dim {config.feature_dim} != the feature model's {self.backbone.feature_dim}"
            )
        if not 0 <= config.layer <= self.backbone.num_layers:
            raise ConfigError(
                f"layer {config.layer} out of range: the feature model has layers "
                f"0..{self.backbone.num_layers}"
            )
        self.register_buffer("mean", torch.zeros(config.feature_dim))
        self.register_buffer("std", torch.ones(config.feature_dim))
        self.register_buffer("centroids", torch.zeros(config.num_clusters, config.feature_dim))
        self.eval()

    @classmethod
    def on(
        cls,
        backbone: nn.Module,
        layer: int,
        num_clusters: int,
        frame_rate: float = 25.0,
        standardize: bool = True,
    ) -> KMeansTokenizer:
        """A tokenizer (k-means not fitted yet) over an existing feature model, keeping its weights."""
        name = next(
            (n for n, path in BACKBONES.items() if path.endswith(":" + type(backbone).__name__)), None
        )
        if name is None:
            raise ConfigError(
                f"{type(backbone).__name__} is not a known feature model; known: {sorted(BACKBONES)}"
            )
        config = KMeansTokenizerConfig(
            name, backbone.config_dict(), layer, num_clusters, backbone.feature_dim, frame_rate, standardize
        )
        tokenizer = cls(config)
        tokenizer.backbone.load_state_dict(backbone.state_dict())
        return tokenizer.eval()

    @property
    def sample_rate(self) -> int:
        return self.backbone.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def vocab_size(self) -> int:
        return self.config.num_clusters

    def num_tokens(self, num_samples: int) -> int:
        return round(self.frame_rate * num_samples / self.sample_rate)

    def _check(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2:
            raise AudioError(
                f"expected mono audio [B, T] at {self.sample_rate} Hz, got shape {tuple(wav.shape)}"
            )
        check_finite(wav)
        if self.num_tokens(wav.shape[-1]) < 1:
            raise AudioError(
                f"audio of {wav.shape[-1]} samples is shorter than one {self.frame_rate:g} Hz token "
                f"({self.sample_rate / self.frame_rate:g} samples at {self.sample_rate} Hz): give longer "
                "audio"
            )
        silent = wav.abs().amax(-1) < SILENCE_PEAK
        if silent.any():
            raise AudioError(
                f"clip(s) {silent.nonzero().flatten().tolist()} are silent (peak < {SILENCE_PEAK:g}): "
                "silence has no semantic content; drop those clips or trim the silence"
            )
        return wav

    @torch.no_grad()
    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> standardised layer features ``[B, F, D]`` at exactly ``frame_rate``."""
        wav = self._check(wav)
        feats = self.backbone.layer_features(
            wav.to(self.mean.device, torch.float32), self.config.layer
        ).float()
        frames = self.num_tokens(wav.shape[-1])
        if feats.shape[1] != frames:  # e.g. HuBERT's 50 Hz: average neighbours down to 25 Hz
            feats = F.adaptive_avg_pool1d(feats.transpose(1, 2), frames).transpose(1, 2)
        return (feats - self.mean) / self.std

    @torch.no_grad()
    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` float -> ``[B, F]`` long cluster ids, F = round(frame_rate * T / sample_rate)."""
        feats = self.features(wav)
        distances = torch.cdist(feats, self.centroids[None].expand(len(feats), -1, -1))
        return distances.argmin(-1)

    @torch.no_grad()
    def fit_kmeans(
        self, clips: Iterable[torch.Tensor], max_frames: int = 200_000, iterations: int = 50, seed: int = 0
    ) -> dict[str, float]:
        """Fit mean/std and k-means (faiss) on features of ``clips`` (each ``[T]`` or ``[B, T]``)."""
        import faiss

        chunks, total = [], 0
        for wav in tqdm(clips, desc="features", unit="clip"):
            if wav.abs().max() < SILENCE_PEAK:
                continue  # silent crops carry nothing to cluster
            feats = self.backbone.layer_features(
                self._check(wav).to(self.mean.device), self.config.layer
            ).float()
            feats = F.adaptive_avg_pool1d(feats.transpose(1, 2), self.num_tokens(wav.shape[-1])).transpose(
                1, 2
            )
            chunks.append(feats.flatten(0, 1).cpu())
            total += len(chunks[-1])
            if total >= max_frames:
                break
        if total < self.vocab_size:
            raise ValueError(
                f"only {total} feature frames for {self.vocab_size} clusters: give more (or longer) clips"
            )
        data = torch.cat(chunks)[:max_frames]
        mean, std = data.mean(0), data.std(0).clamp_min(1e-5)
        if not self.config.standardize:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        normed = ((data - mean) / std).numpy().astype(np.float32)
        kmeans = faiss.Kmeans(normed.shape[1], self.vocab_size, niter=iterations, seed=seed, verbose=False)
        kmeans.train(normed)
        self.set_kmeans(kmeans.centroids, mean.numpy(), std.numpy())
        return {"frames": float(len(normed)), "inertia": float(kmeans.obj[-1]) / len(normed)}

    def set_kmeans(self, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != self.config.feature_dim:
            raise ConfigError(
                f"k-means centroids of dimension {centroids.shape[-1] if centroids.ndim else '?'} do not fit "
                f"the feature model's dimension {self.config.feature_dim} (layer {self.config.layer} of "
                f"{self.config.backbone}): fit k-means on this model's features"
            )
        if len(centroids) != self.vocab_size:
            raise ConfigError(f"{len(centroids)} centroids for a tokenizer of {self.vocab_size} clusters")
        self.centroids.copy_(torch.from_numpy(centroids))
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def save_kmeans(self, path: str | Path) -> Path:
        """The k-means part alone (``.npz``: centroids, mean, std), to reuse over the same feature model."""
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                centroids=self.centroids.cpu().numpy(),
                mean=self.mean.cpu().numpy(),
                std=self.std.cpu().numpy(),
            )
        return Path(path)

    def load_kmeans(self, path: str | Path) -> None:
        with np.load(path) as data:
            missing = {"centroids", "mean", "std"} - set(data.files)
            if missing:
                raise ConfigError(
                    f"{path} lacks {sorted(missing)}: not a k-means file written by save_kmeans"
                )
            self.set_kmeans(data["centroids"], data["mean"], data["std"])
