"""Codec losses: multi-scale log-mel reconstruction, hinge GAN losses, feature matching."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import MelSpectrogram

if TYPE_CHECKING:
    from musiclm.codec.soundstream import SoundStreamConfig


class MultiScaleMelLoss(nn.Module):
    """L1 between log-mel power spectrograms (floor 1e-5) at several FFT sizes: the mel distance that
    ``musiclm codec eval`` reports, so training optimises what is measured. (A log-magnitude floor of
    1e-8, as in auraloss' default, spent the loss on inaudible bins and stalled learning.)"""

    def __init__(self, config: "SoundStreamConfig"):
        super().__init__()
        self.scales = nn.ModuleList(
            # small FFTs get fewer bands: 64 mel bands over 129 bins would leave some empty
            MelSpectrogram(
                config.sample_rate, n_fft=n, hop_length=n // 4, n_mels=min(config.mel_bins, n // 8)
            )
            for n in config.mel_ffts
        )

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return sum((mel(fake) - mel(real)).abs().mean() for mel in self.scales) / len(self.scales)


def mel_loss(fn: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return fn.to(real.device)(fake.float(), real.float())


def discriminator_hinge(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def generator_hinge(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real and generated audio, relative to the real scale."""
    terms = [
        (r - f).abs().mean() / (r.abs().mean() + 1e-5) for rs, fs in zip(real, fake) for r, f in zip(rs, fs)
    ]
    return sum(terms) / len(terms)
