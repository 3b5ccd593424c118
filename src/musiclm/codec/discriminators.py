"""SoundStream's two discriminators: multi-resolution complex STFT (2-D convs over real/imag
spectrograms) and multi-scale waveform (MelGAN-style grouped 1-D convs on downsampled audio)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from musiclm.codec.soundstream import SoundStreamConfig

Outputs = tuple[list[torch.Tensor], list[list[torch.Tensor]]]  # logits per sub-discriminator, their features


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(2, c, (3, 9), padding=(1, 4)),
                nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
                nn.Conv2d(c, 2 * c, (3, 9), stride=(1, 2), padding=(1, 4)),
                nn.Conv2d(2 * c, 2 * c, (3, 9), stride=(1, 2), padding=(1, 4)),
                nn.Conv2d(2 * c, 2 * c, (3, 3), padding=(1, 1)),
            ]
        )
        self.out = nn.Conv2d(2 * c, 1, (3, 3), padding=(1, 1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
        x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, frames, freq]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class WaveDiscriminator(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(1, c, 15, padding=7),
                nn.Conv1d(c, 4 * c, 41, stride=4, groups=4, padding=20),
                nn.Conv1d(4 * c, 8 * c, 41, stride=4, groups=16, padding=20),
                nn.Conv1d(8 * c, 8 * c, 41, stride=4, groups=16, padding=20),
                nn.Conv1d(8 * c, 8 * c, 5, padding=2),
            ]
        )
        self.out = nn.Conv1d(8 * c, 1, 3, padding=1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = wav[:, None]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class Discriminators(nn.Module):
    def __init__(self, config: "SoundStreamConfig"):
        super().__init__()
        self.stft = nn.ModuleList(STFTDiscriminator(n, config.disc_channels) for n in config.stft_disc_ffts)
        self.wave = nn.ModuleList(
            WaveDiscriminator(config.disc_channels) for _ in range(config.wave_disc_scales)
        )

    def forward(self, wav: torch.Tensor) -> Outputs:
        logits, feats = [], []
        for disc in self.stft:
            out, f = disc(wav)
            logits.append(out)
            feats.append(f)
        x = wav
        for i, disc in enumerate(self.wave):
            if i:  # each scale sees the audio at half the previous rate
                x = F.avg_pool1d(x[:, None], 4, 2, padding=1)[:, 0]
            out, f = disc(x)
            logits.append(out)
            feats.append(f)
        return logits, feats
