"""Codec losses: multi-scale mel reconstruction (auraloss), hinge GAN losses, feature matching."""

from __future__ import annotations

from typing import TYPE_CHECKING

import auraloss
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from musiclm.codec.soundstream import SoundStreamConfig


def multiscale_mel_loss(config: "SoundStreamConfig") -> nn.Module:
    """Log-mel magnitude L1 plus spectral convergence at several FFT sizes (auraloss)."""
    return auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(config.mel_ffts),
        hop_sizes=[n // 4 for n in config.mel_ffts],
        win_lengths=list(config.mel_ffts),
        scale="mel", n_bins=config.mel_bins, sample_rate=config.sample_rate,
        w_sc=1.0, w_log_mag=1.0,
    )


def mel_loss(fn: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return fn.to(real.device)(fake[:, None].float(), real[:, None].float())


def discriminator_hinge(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def generator_hinge(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real and generated audio, relative to the real scale."""
    terms = [
        (r - f).abs().mean() / (r.abs().mean() + 1e-5)
        for rs, fs in zip(real, fake)
        for r, f in zip(rs, fs)
    ]
    return sum(terms) / len(terms)
