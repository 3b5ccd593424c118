"""Random changes of training audio toward what a model meets outside clean renders: any level, room reverb,
a band limit, resynthesis through an acoustic codec. The evaluation classifier trains on them so that it
reads generated audio; MuLan so that its audio tower generalises past the clips it saw."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from musiclm.audio import crop_or_pad, loudness_normalize, resample


@dataclasses.dataclass
class Augment:
    """Random changes of a training crop toward what generated audio brings: any level, room reverb, a band
    limit (the codecs run at 16 kHz), and resynthesis through an acoustic codec at a random bitrate."""

    codec: Any = None  # an AcousticCodec; None: no resynthesis
    codec_share: float = 0.25  # resynthesis costs ~0.3 s a 5 s crop on one core: most of a training step
    band_limit_share: float = 0.3  # of the crops not resynthesised
    reverb_share: float = 0.3
    level_lufs: tuple[float, float] = (-40.0, -14.0)

    @torch.inference_mode()
    def __call__(self, wav: torch.Tensor, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
        length = wav.shape[-1]
        if self.codec is not None and rng.random() < self.codec_share:
            levels = int(rng.integers(max(1, self.codec.num_quantizers // 3), self.codec.num_quantizers + 1))
            coded = resample(loudness_normalize(wav, sample_rate), sample_rate, self.codec.sample_rate)
            coded = self.codec.decode(self.codec.encode(coded[None], num_quantizers=levels))[0]
            wav = crop_or_pad(resample(coded, self.codec.sample_rate, sample_rate), length)
        elif rng.random() < self.band_limit_share:
            rate = int(rng.choice([8000, 11025, 16000]))
            wav = crop_or_pad(resample(resample(wav, sample_rate, rate), rate, sample_rate), length)
        if rng.random() < self.reverb_share:
            rt60 = float(rng.uniform(0.3, 1.5))
            t = np.arange(int(rt60 * sample_rate)) / sample_rate
            tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * float(rng.uniform(0.05, 0.3))
            response = torch.from_numpy(np.concatenate([[1.0], tail]).astype(np.float32))
            n = 1 << (length + len(response)).bit_length()  # a power of two: FFTs of odd sizes are 10x slower
            wav = torch.fft.irfft(torch.fft.rfft(wav, n) * torch.fft.rfft(response, n), n)[:length]
        target = float(rng.uniform(*self.level_lufs))
        return loudness_normalize(wav, sample_rate, target_lufs=target)
