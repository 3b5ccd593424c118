"""Adapter: a pretrained HF ``transformers`` codec (EncodecModel or DacModel) as an AcousticCodec.

A user with e.g. ``facebook/encodec_24khz`` or ``descript/dac_16khz`` weights on disk can put it in
place of our SoundStream: ``HFCodec.from_pretrained(dir)`` (or ``load_component(dir)``, which reads
the ``model_type`` "encodec" / "dac" in HF's own ``config.json``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.codec.soundstream import CodecError


class HFCodec(nn.Module):
    """Wraps ``EncodecModel`` (its largest target bandwidth) or ``DacModel``; ``[B, T]`` <-> ``[B, Q, F]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        kind = model.config.model_type
        if kind not in ("encodec", "dac"):
            raise CodecError(f"HFCodec adapts EncodecModel or DacModel, got a {kind!r} model")
        if kind == "encodec" and model.config.audio_channels != 1:
            raise CodecError("only mono EnCodec models fit the acoustic-codec interface (audio_channels=1)")
        self.model, self.kind = model.eval(), kind
        cfg = model.config
        self.sample_rate = int(cfg.sampling_rate)
        self.codebook_size = int(cfg.codebook_size)
        if kind == "encodec":
            self.hop_length = math.prod(cfg.upsampling_ratios)
            self.bandwidth = max(cfg.target_bandwidths)
            self.num_quantizers = int(model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
        else:
            self.hop_length = int(cfg.hop_length)
            self.num_quantizers = int(cfg.n_codebooks)
        self.frame_rate = self.sample_rate / self.hop_length

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "HFCodec":
        from transformers import AutoModel

        if not Path(directory, "config.json").is_file():
            raise FileNotFoundError(f"{directory} has no config.json: not a saved HF codec folder")
        return cls(AutoModel.from_pretrained(str(directory)).to(map_location))

    def save_pretrained(self, directory: str | Path) -> Path:
        self.model.save_pretrained(str(directory))
        return Path(directory)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def bitrate(self, num_quantizers: int | None = None) -> float:
        return self.frame_rate * (num_quantizers or self.num_quantizers) * math.log2(self.codebook_size)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2 or wav.shape[-1] == 0:
            raise CodecError(f"encode expects mono audio [B, T] with T > 0, got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise CodecError("audio passed to the codec contains NaN or infinite samples")
        q = num_quantizers or self.num_quantizers
        if not 1 <= q <= self.num_quantizers:
            raise CodecError(f"num_quantizers must be in 1..{self.num_quantizers}, got {num_quantizers}")
        x = F.pad(wav.to(self.device, torch.float32), (0, -wav.shape[-1] % self.hop_length))[:, None]
        if self.kind == "encodec":
            codes = self.model.encode(x, bandwidth=self.bandwidth).audio_codes[0]  # one chunk: [B, Q, F]
        else:
            codes = self.model.encode(x).audio_codes
        return codes[:, :q].long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 3 or codes.is_floating_point():
            raise CodecError(
                f"decode expects integer codes [B, Q, F], got {tuple(codes.shape)} {codes.dtype}"
            )
        if not 1 <= codes.shape[1] <= self.num_quantizers:
            raise CodecError(f"codes have {codes.shape[1]} levels; this codec has {self.num_quantizers}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise CodecError(f"codes must be in 0..{self.codebook_size - 1}")
        codes = codes.to(self.device)
        if self.kind == "encodec":
            wav = self.model.decode(codes[None], [None]).audio_values
        else:
            wav = self.model.decode(audio_codes=codes).audio_values
        return wav.reshape(codes.shape[0], -1)[:, : codes.shape[-1] * self.hop_length]
