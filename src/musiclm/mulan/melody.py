"""The melody embedder of MusicLM section 3.3: one embedding per 4 s window that keeps the tune and
forgets the timbre.

A small Transformer reads log-mel frames of a window (grouped into patches of a few frames) and pools
them into a unit-norm embedding. It is trained with a semi-hard triplet loss on melody pairs: the same
melody hummed/whistled and fully arranged should land closer to each other than to any other melody.
Its own residual k-means turns each window's embedding into melody tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import MelSpectrogram, crop_or_pad, read_clip
from musiclm.config import Config
from musiclm.mulan.quantizer import ResidualKMeans, RVQTokens
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable


@dataclasses.dataclass
class MelodyConfig(Config):
    sample_rate: int = 24000
    n_mels: int = 64
    n_fft: int = 2048
    hop_length: int = 480  # 50 frames per second
    f_max: float = 4000.0  # melodies live below ~4 kHz; higher bands are mostly timbre
    window_seconds: float = 4.0
    hop_seconds: float = 3.0
    patch_frames: int = 4
    dim: int = 128
    layers: int = 2
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    embed_dim: int = 192
    margin: float = 0.2
    num_quantizers: int = 24
    codebook_size: int = 512

    # The paper's 6 heads do not divide d=512 in a standard attention layer; the paper preset uses 8.
    PRESETS = {
        "tiny": {
            "n_mels": 32,
            "dim": 32,
            "layers": 1,
            "heads": 2,
            "ff": 64,
            "embed_dim": 32,
            "num_quantizers": 4,
            "codebook_size": 16,
        },
        "small": {"dim": 128, "layers": 2, "heads": 4, "ff": 256, "num_quantizers": 24, "codebook_size": 128},
        "paper": {
            "n_mels": 128,
            "dim": 512,
            "layers": 12,
            "heads": 8,
            "ff": 1024,
            "embed_dim": 192,
            "num_quantizers": 24,
            "codebook_size": 512,
        },
    }


TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 20, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 5, "ckpt_every": 1000},
    "small": {
        "steps": 1500,
        "batch_size": 32,
        "lr": 5e-4,
        "warmup_steps": 100,
        "log_every": 10,
        "ckpt_every": 100,
        "val_every": 250,
        "val_batches": 4,
    },
    "paper": {"steps": 100_000, "batch_size": 256, "lr": 1e-4, "warmup_steps": 2000, "ckpt_every": 2000},
}


class MelodyEmbedder(RVQTokens, Trainable, PretrainedMixin):
    """``embed(wav[B, T]) -> [B, W, D]`` (4 s windows every 3 s), ``quantize -> [B, W, Q]``."""

    config_class = MelodyConfig
    model_type = "melody"

    def __init__(self, config: MelodyConfig):
        super().__init__()
        self.config = config
        self.sample_rate, self.embed_dim = config.sample_rate, config.embed_dim
        self.num_quantizers, self.codebook_size = config.num_quantizers, config.codebook_size
        self.window_seconds, self.hop_seconds = config.window_seconds, config.hop_seconds
        self.mel = MelSpectrogram(
            config.sample_rate, config.n_fft, config.hop_length, config.n_mels, f_max=config.f_max
        )
        frames = round(config.window_seconds * config.sample_rate / config.hop_length) + 1
        self.num_patches = -(-frames // config.patch_frames)
        self.patch = nn.Linear(config.n_mels * config.patch_frames, config.dim)
        self.pos = nn.Parameter(torch.randn(self.num_patches, config.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            config.ff,
            config.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.embed_dim)
        self.rvq = ResidualKMeans(config.embed_dim, config.num_quantizers, config.codebook_size)

    @property
    def window_samples(self) -> int:
        return round(self.config.window_seconds * self.sample_rate)

    def windows(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, W, window]``: windows every ``hop_seconds``; audio shorter than one window
        (or a last partial window) is zero-padded, so W = 1 + ceil((T - window) / hop) for T > window."""
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2 or wav.shape[-1] == 0:
            raise ValueError(f"expected audio of shape [B, T] with T > 0, got {tuple(wav.shape)}")
        win, hop = self.window_samples, round(self.hop_seconds * self.sample_rate)
        count = 1 + max(0, -(-(wav.shape[-1] - win) // hop))
        wav = crop_or_pad(wav, win + (count - 1) * hop)
        return wav.unfold(-1, win, hop)

    def encode_windows(self, chunks: torch.Tensor) -> torch.Tensor:
        """``[N, window]`` -> ``[N, D]`` unit norm."""
        mel = self.mel(chunks)  # [N, n_mels, F]
        # Per-window mean removal: loudness and the overall spectral tilt of an instrument say nothing of the
        # tune.
        mel = mel - mel.mean(dim=(1, 2), keepdim=True)
        pad = self.num_patches * self.config.patch_frames - mel.shape[-1]
        mel = F.pad(mel, (0, pad))
        patches = mel.unfold(-1, self.config.patch_frames, self.config.patch_frames)  # [N, M, P, pf]
        patches = patches.permute(0, 2, 1, 3).flatten(2)
        x = self.encoder(self.patch(patches) + self.pos)
        return F.normalize(self.head(self.norm(x).mean(1)), dim=-1)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        chunks = self.windows(wav.to(self.pos.device))
        return self.encode_windows(chunks.flatten(0, 1)).unflatten(0, chunks.shape[:2])

    def training_step(self, batch: dict[str, Any], *, step: int, group: str) -> dict[str, torch.Tensor]:
        emb = self.encode_windows(torch.cat([batch["anchor"], batch["positive"]]))
        labels = torch.cat([batch["group"], batch["group"]])
        return semi_hard_triplet_loss(emb, labels, self.config.margin)

    def validation_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.training_step(batch, step=0, group="model")


def semi_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """FaceNet's semi-hard mining over a batch: for each positive pair (a, p) the negative is the closest
    one still farther than p (d(a,p) < d(a,n)); if none is, the farthest negative (the easiest)."""
    dist = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    pos_mask, neg_mask = same & ~eye, ~same
    if not pos_mask.any() or not neg_mask.any():
        raise ValueError(
            "a triplet batch needs at least one positive pair and one negative; use batch >= 2 pairs"
        )
    d_ap = dist[:, :, None]  # [a, p, 1]
    d_an = dist[:, None, :]  # [a, 1, n]
    semi = neg_mask[:, None, :] & (d_an > d_ap)
    inf = torch.tensor(float("inf"), device=emb.device)
    closest_semi = torch.where(semi, d_an, inf).min(-1).values
    easiest = torch.where(neg_mask, dist, -inf).max(-1).values[:, None].expand_as(closest_semi)
    d_neg = torch.where(semi.any(-1), closest_semi, easiest)
    losses = F.relu(dist - d_neg + margin)[pos_mask]
    hardest_neg = torch.where(neg_mask, dist, inf).min(-1).values
    hardest_pos = torch.where(pos_mask, dist, -inf).max(-1).values
    valid = pos_mask.any(-1)
    acc = (hardest_pos[valid] < hardest_neg[valid]).float().mean()
    return {"loss": losses.mean(), "active": (losses > 0).float().mean(), "acc": acc}


def clip_attr(clip: Any, name: str, default: Any = None) -> Any:
    """A clip's attribute, whether the clip object carries it directly or in its ``attributes`` dict."""
    if hasattr(clip, name):
        return getattr(clip, name)
    return (getattr(clip, "attributes", None) or {}).get(name, default)


class MelodyPairs(torch.utils.data.Dataset):
    """Time-aligned 4 s crops of two renders of one melody (prefer the hummed line and an arrangement).

    The crop of the second clip sits at the same relative position as the first, since the two renders
    of one melody differ only by a small tempo jitter.
    """

    def __init__(self, clips: list[Any], sample_rate: int, window_seconds: float):
        self.clips, self.sample_rate, self.window_seconds = clips, sample_rate, window_seconds
        groups: dict[Any, list[int]] = {}
        for i, clip in enumerate(clips):
            group = clip_attr(clip, "melody_group")
            if group is not None:
                groups.setdefault(group, []).append(i)
        self.groups = [
            members for _, members in sorted(groups.items(), key=lambda kv: str(kv[0])) if len(members) > 1
        ]
        if len(self.groups) < 2:  # a triplet needs a negative: a pair of another melody
            raise ValueError(
                f"{len(self.groups)} melody pair(s): the triplet loss needs clips of at least 2 "
                "melody_groups "
                "(a hummed melody and its arrangement); build the dataset with melody pairs enabled"
            )

    def __len__(self) -> int:
        return len(self.groups)

    def _crop(self, clip: Any, position: float) -> torch.Tensor:
        duration = float(clip.duration or 0.0)
        start = max(0.0, position * (duration - self.window_seconds))
        wav = read_clip(clip, self.sample_rate, start=start, seconds=self.window_seconds)
        return crop_or_pad(wav, round(self.window_seconds * self.sample_rate))

    def __getitem__(self, key: int) -> dict[str, Any]:
        index = key % len(self)
        members = self.groups[index]
        rng = np.random.default_rng(key)
        hummed = [i for i in members if clip_attr(self.clips[i], "is_melody")]
        arranged = [i for i in members if not clip_attr(self.clips[i], "is_melody")]
        if hummed and arranged:
            a, p = int(rng.choice(hummed)), int(rng.choice(arranged))
        else:
            a, p = (int(i) for i in rng.choice(members, 2, replace=False))
        position = float(rng.random())
        return {
            "anchor": self._crop(self.clips[a], position),
            "positive": self._crop(self.clips[p], position),
            "group": torch.tensor(index),
        }
