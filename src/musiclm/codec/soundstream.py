"""SoundStream (Zeghidour et al., 2021): a causal convolutional codec with residual vector quantization.

Waveform ``[B, T]`` -> encoder -> latents at ``frame_rate`` -> residual VQ (vector-quantize-pytorch:
EMA codebooks, k-means init, dead-code restarts, quantizer dropout) -> codes ``[B, Q, F]`` -> decoder.

Two front ends share the residual units (dilations 1, 3, 9; ELU), the quantizer and the losses:
- ``"waveform"`` (the paper): strided causal convs down to the frame rate, transposed convs back up.
- ``"stft"`` (the CPU presets): a causal STFT, then residual units at the frame rate; the decoder
  predicts each frame's spectrum and overlap-adds its inverse FFT (as Vocos does). On this 2-core
  machine it reaches in 300 steps (18 s) a mel distance the waveform front end had not reached after
  1,200 steps (an hour): the strided stacks spend their compute at 16 kHz and learn slowly.
Every layer is causal at the frame level, so chunked (streaming) processing with carried state gives
the same codes and audio as a whole file.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from musiclm.audio import check_finite
from musiclm.codec import losses
from musiclm.codec.discriminators import Discriminators
from musiclm.config import Config, ConfigError
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable
from musiclm.training.engine import GroupUpdate


def _quiet_vector_quantize() -> None:
    """vector-quantize-pytorch logs a warning whenever k-means sees fewer vectors than codes (tiny batches):
    silenced when a codec is built, not on import."""
    logging.getLogger("vector_quantize_pytorch").setLevel(logging.ERROR)
    try:  # it logs through loguru when that is installed
        from loguru import logger

        logger.disable("vector_quantize_pytorch")
    except ImportError:  # pragma: no cover
        pass


class CodecError(ValueError):
    """Input the codec cannot take (wrong shape, NaN samples, codes out of range...)."""


@dataclasses.dataclass
class SoundStreamConfig(Config):
    sample_rate: int = 16000
    frontend: str = "stft"  # "stft" or "waveform" (the paper's strided convs), see the module docstring
    channels: int = 16  # C of the paper; block k has C * 2**k channels (the stft front end: `width`)
    strides: tuple[int, ...] = (2, 4, 5, 8)  # product = samples per frame (320 -> 50 Hz at 16 kHz)
    stft_window_frames: int = 4  # the stft encoder's analysis window, in frames (ends with the frame)
    latent_dim: int = 64
    num_quantizers: int = 12
    codebook_size: int = 1024
    quantizer_dropout: bool = True  # train on 1..Q quantizers so one model serves every bitrate
    ema_decay: float = 0.99
    dead_code_threshold: float = 2.0  # codes used less than this (EMA count) are restarted from the batch
    kmeans_iters: int = 10
    commitment_weight: float = 1.0
    # discriminators
    disc_channels: int = 16
    stft_disc_ffts: tuple[int, ...] = (256, 512, 1024)
    wave_disc_scales: int = 3
    disc_start_step: int = 0  # adversarial losses switch on at this step
    disc_lr: float = 1e-4
    # loss weights (reconstruction dominates, as in DAC / EnCodec)
    mel_weight: float = 15.0
    adv_weight: float = 1.0
    feat_weight: float = 2.0
    mel_ffts: tuple[int, ...] = (256, 512, 1024, 2048)
    mel_bins: int = 64

    PRESETS = {
        "tiny": {
            "channels": 4,
            "strides": (2, 4, 5, 8),
            "latent_dim": 16,
            "num_quantizers": 4,
            "codebook_size": 64,
            "disc_channels": 4,
            "stft_disc_ffts": (128, 256),
            "wave_disc_scales": 2,
            "mel_ffts": (128, 256, 512),
            "mel_bins": 32,
            "kmeans_iters": 2,
        },
        # ~2.4M-parameter generator, 16 kHz, 50 Hz, 12 x 1024 (6 kbps); reconstruction alone first:
        # it costs 0.1 s a step on 2 cores, an adversarial step ~1 s
        "small": {"channels": 12, "disc_start_step": 16_000},
        "paper": {
            "frontend": "waveform",
            "sample_rate": 24000,
            "channels": 32,
            "strides": (3, 4, 5, 8),  # 480 -> 50 Hz
            "latent_dim": 512,
            "num_quantizers": 12,
            "codebook_size": 1024,
            "disc_channels": 32,
            "stft_disc_ffts": (512, 1024, 2048),
            "mel_ffts": (512, 1024, 2048),
            "mel_bins": 80,
        },
    }

    def __post_init__(self) -> None:
        if not self.strides or any(s < 1 for s in self.strides):
            raise ConfigError(f"strides must be positive integers, got {self.strides}")
        if self.num_quantizers < 1 or self.codebook_size < 2:
            raise ConfigError("num_quantizers must be >= 1 and codebook_size >= 2")
        if self.frontend not in ("stft", "waveform"):
            raise ConfigError(f"frontend must be 'stft' or 'waveform', got {self.frontend!r}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def width(self) -> int:
        """Channels at the frame rate: the waveform encoder's last block, the stft front end's units."""
        return self.channels * 2 ** len(self.strides)


# ----------------------------------------------------------------------------- causal layers
class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only. With a ``cache`` dict it carries its left context across calls."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.context = self.dilation[0] * (self.kernel_size[0] - 1) + 1 - self.stride[0]

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(with_left_context(self, x, self.context, cache))


def with_left_context(owner: nn.Module, x: torch.Tensor, context: int, cache: dict | None) -> torch.Tensor:
    """``x`` with the last ``context`` samples of the previous chunk (zeros at the start) prepended;
    with a ``cache``, this chunk's tail is kept under ``owner`` for the next call."""
    past = None if cache is None else cache.get(owner)
    if past is None:
        past = x.new_zeros(*x.shape[:-1], context)
    x = torch.cat([past, x], dim=-1)
    if cache is not None:
        cache[owner] = x[..., x.shape[-1] - context :]
    return x


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Transposed conv whose overlapping tail is carried to the next chunk (overlap-add), then trimmed."""

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:  # type: ignore[override]
        y = F.conv_transpose1d(x, self.weight, None, self.stride)
        overlap = self.kernel_size[0] - self.stride[0]
        past = None if cache is None else cache.get(self)
        if past is not None:
            y = torch.cat([y[..., :overlap] + past, y[..., overlap:]], dim=-1)
        if cache is not None:
            cache[self] = y[..., y.shape[-1] - overlap :]
        return y[..., : y.shape[-1] - overlap] + self.bias[:, None]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, 7, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return x + self.proj(F.elu(self.conv(F.elu(x), cache)))


class EncoderBlock(nn.Module):
    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.units = nn.ModuleList(ResidualUnit(channels // 2, d) for d in (1, 3, 9))
        self.down = CausalConv1d(channels // 2, channels, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        for unit in self.units:
            x = unit(x, cache)
        return self.down(F.elu(x), cache)


class DecoderBlock(nn.Module):
    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.up = CausalConvTranspose1d(channels, channels // 2, 2 * stride, stride=stride)
        self.units = nn.ModuleList(ResidualUnit(channels // 2, d) for d in (1, 3, 9))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.up(F.elu(x), cache)
        for unit in self.units:
            x = unit(x, cache)
        return x


class WaveformEncoder(nn.Module):
    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self.stem = CausalConv1d(1, c.channels, 7)
        self.blocks = nn.ModuleList(
            EncoderBlock(c.channels * 2 ** (i + 1), s) for i, s in enumerate(c.strides)
        )
        self.head = CausalConv1d(c.width, c.latent_dim, 3)

    def forward(self, wav: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.stem(wav[:, None], cache)
        for block in self.blocks:
            x = block(x, cache)
        return self.head(F.elu(x), cache)  # [B, D, F]


class WaveformDecoder(nn.Module):
    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        top = c.width
        self.stem = CausalConv1d(c.latent_dim, top, 7)
        self.blocks = nn.ModuleList(DecoderBlock(top // 2**i, s) for i, s in enumerate(reversed(c.strides)))
        self.head = CausalConv1d(c.channels, 1, 7)

    def forward(self, z: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.stem(z, cache)
        for block in self.blocks:
            x = block(x, cache)
        return self.head(F.elu(x), cache)[:, 0]  # [B, T]

    def flush(self, cache: dict) -> torch.Tensor | None:
        return None  # the transposed convs emit every sample of a frame as it arrives


class STFTEncoder(nn.Module):
    """Frame ``j`` is the log-magnitude and phase of the STFT window that ends with hop ``j``."""

    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self.hop, self.n_fft = c.hop_length, c.hop_length * c.stft_window_frames
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.stem = nn.Conv1d(3 * (self.n_fft // 2 + 1), c.width, 1)
        self.units = nn.ModuleList(ResidualUnit(c.width, d) for d in (1, 3, 9))
        self.head = CausalConv1d(c.width, c.latent_dim, 3)

    def forward(self, wav: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        wav = with_left_context(self, wav, self.n_fft - self.hop, cache)
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        magnitude = spec.abs()
        phase = spec / magnitude.clamp_min(1e-5)  # unit phasor; 0 where there is no energy
        x = self.stem(torch.cat([torch.log(magnitude + 1e-5), phase.real, phase.imag], dim=1))
        for unit in self.units:
            x = unit(x, cache)
        return self.head(F.elu(x), cache)  # [B, D, F]


class STFTDecoder(nn.Module):
    """Each frame predicts the spectrum of a two-hop grain (log-magnitude, phase); its inverse FFT,
    Hann-windowed, covers hops ``j - 1`` and ``j``, so a hop is final once the next frame arrives.
    Streaming therefore holds back one hop per chunk (``flush`` gives the last one)."""

    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self.hop = c.hop_length
        self.register_buffer(
            "window", torch.hann_window(2 * self.hop), persistent=False
        )  # periodic: halves sum to 1
        self.stem = CausalConv1d(c.latent_dim, c.width, 7)
        self.units = nn.ModuleList(ResidualUnit(c.width, d) for d in (1, 3, 9))
        self.head = nn.Conv1d(c.width, 2 * (self.hop + 1), 1)

    def forward(self, z: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.stem(z, cache)
        for unit in self.units:
            x = unit(x, cache)
        log_magnitude, phase = self.head(F.elu(x)).float().chunk(2, dim=1)
        spectrum = torch.polar(torch.exp(log_magnitude.clamp(max=10.0)), phase)
        grains = torch.fft.irfft(spectrum, n=2 * self.hop, dim=1) * self.window[:, None]  # [B, 2 hop, F]
        rising, falling = grains[:, : self.hop], grains[:, self.hop :]
        # hop j = falling half of grain j + rising half of grain j + 1 (absent for the last frame)
        hops = falling + F.pad(rising[..., 1:], (0, 1))
        held = None if cache is None else cache.get(self)
        if held is not None:  # the previous chunk's last hop, completed by this chunk's first grain
            hops = torch.cat([held + rising[..., :1], hops], dim=-1)
        if cache is not None:
            cache[self] = hops[..., -1:]
            hops = hops[..., :-1]
        return hops.transpose(1, 2).reshape(z.shape[0], -1)  # [B, T]

    def flush(self, cache: dict) -> torch.Tensor | None:
        held = cache.pop(self, None)
        return None if held is None else held.transpose(1, 2).reshape(held.shape[0], -1)


# ----------------------------------------------------------------------------- stored codebooks
class _StoredCodebook(nn.Module):
    """One level's state as vector-quantize-pytorch's EuclideanCodebook keeps it; the EMA statistics only
    ride along, so that the library's quantizer can be rebuilt from it."""

    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self.register_buffer("initted", torch.tensor(False))
        self.register_buffer("cluster_size", torch.zeros(1, c.codebook_size))
        self.register_buffer("embed", torch.zeros(1, c.codebook_size, c.latent_dim))
        self.register_buffer("embed_avg", torch.zeros(1, c.codebook_size, c.latent_dim))


class _StoredLevel(nn.Module):
    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self._codebook = _StoredCodebook(c)


class StoredCodebooks(nn.Module):
    """A trained residual quantizer's state under the names vector-quantize-pytorch's ResidualVQ gives it,
    without the library: all that decoding needs. Importing the library costs 0.8 s of a generation's
    start (einx, which imports torch._dynamo and sympy)."""

    def __init__(self, c: SoundStreamConfig):
        super().__init__()
        self.layers = nn.ModuleList(_StoredLevel(c) for _ in range(c.num_quantizers))


# ----------------------------------------------------------------------------- the codec
class SoundStream(Trainable, PretrainedMixin):
    """Implements :class:`musiclm.interfaces.AcousticCodec`; trains with the shared engine as a GAN."""

    config_class = SoundStreamConfig
    model_type = "soundstream"

    def __init__(self, config: SoundStreamConfig, stored_codebooks: bool = False):
        """``stored_codebooks``: hold the quantizer as :class:`StoredCodebooks` (what loading for inference
        does); the library's quantizer is built from them when something first encodes."""
        super().__init__()
        self.config = config
        stft = config.frontend == "stft"
        self.encoder = STFTEncoder(config) if stft else WaveformEncoder(config)
        self.decoder = STFTDecoder(config) if stft else WaveformDecoder(config)
        # Under torchrun the codebooks' k-means init, EMA updates and dead-code restarts must see every
        # rank's vectors; the library fixes this when the quantizer is built, so build it in the group.
        self.synced_codebooks = _world_size() > 1
        self.quantizer = StoredCodebooks(config) if stored_codebooks else self._library_quantizer()
        self.discriminators = Discriminators(config)

    @classmethod
    def built_for_loading(cls, config: SoundStreamConfig, directory: Path) -> SoundStream:
        """A saved codec for inference: decoding reads the stored codebooks (see :class:`StoredCodebooks`)."""
        return cls(config, stored_codebooks=True)

    def _library_quantizer(self) -> nn.Module:
        from vector_quantize_pytorch import ResidualVQ

        _quiet_vector_quantize()
        config = self.config
        return ResidualVQ(
            dim=config.latent_dim,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            decay=config.ema_decay,
            kmeans_init=True,
            kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold,
            quantize_dropout=config.quantizer_dropout,
            commitment_weight=config.commitment_weight,
            sync_codebook=self.synced_codebooks,
        )

    def _encoding_quantizer(self) -> nn.Module:
        """The library's quantizer, which finds the nearest codes; a codec loaded for inference builds it from
        its stored codebooks on first use (never under DDP: training builds codecs with the library's)."""
        if isinstance(self.quantizer, StoredCodebooks):
            library = self._library_quantizer()
            library.load_state_dict(self.quantizer.state_dict())
            self.quantizer = library.to(self.device).train(self.quantizer.training)
        return self.quantizer

    # interface attributes
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def device(self) -> torch.device:
        return self.decoder.stem.weight.device

    def bitrate(self, num_quantizers: int | None = None) -> float:
        """Bits per second at ``num_quantizers`` levels (default: all)."""
        q = num_quantizers or self.num_quantizers
        return self.frame_rate * q * math.log2(self.codebook_size)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("discriminators.")]

    # ------------------------------------------------------------------ encode / decode
    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor):
            raise CodecError(f"encode expects a torch.Tensor [B, T], got {type(wav).__name__}")
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2:
            raise CodecError(f"encode expects mono audio [B, T] (or [T]), got shape {tuple(wav.shape)}")
        if wav.shape[-1] == 0:
            raise CodecError("encode got an empty waveform (0 samples)")
        check_finite(wav, "audio passed to the codec")
        return wav.to(self.device, torch.float32)

    def _check_quantizers(self, num_quantizers: int | None) -> int:
        q = self.num_quantizers if num_quantizers is None else num_quantizers
        if not 1 <= q <= self.num_quantizers:
            raise CodecError(f"num_quantizers must be in 1..{self.num_quantizers}, got {num_quantizers}")
        return q

    def _quantize(self, z: torch.Tensor, q: int) -> torch.Tensor:
        _, indices, _ = self._encoding_quantizer()(z.transpose(1, 2))
        return indices[..., :q].transpose(1, 2).long()  # [B, q, F]

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """``[B, T]`` float at ``sample_rate`` -> ``[B, Q, ceil(T / hop)]`` long (the end is zero-padded)."""
        wav = self._check_wav(wav)
        q = self._check_quantizers(num_quantizers)
        pad = -wav.shape[-1] % self.hop_length
        return self._quantize(self.encoder(F.pad(wav, (0, pad))), q)

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
            raise CodecError(f"decode expects codes [B, Q, F], got {getattr(codes, 'shape', type(codes))}")
        if codes.is_floating_point():
            raise CodecError("decode expects integer codes; got a float tensor")
        if not 1 <= codes.shape[1] <= self.num_quantizers:
            raise CodecError(
                f"codes have {codes.shape[1]} quantizer levels; this codec has {self.num_quantizers} "
                f"(pass the first 1..{self.num_quantizers} levels)"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise CodecError(
                f"codes must be in 0..{self.codebook_size - 1}; got values "
                f"{int(codes.min())}..{int(codes.max())}"
            )
        return codes.to(self.device, torch.long)

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, q, F]`` codes -> latents ``[B, D, F]``: each level's code vectors summed over all the levels,
        those past ``q`` as zeros, as the library's ``get_output_from_indices`` sums them (bit for bit; see
        tests/test_codec.py), but read from the codebooks directly: decoding needs neither the library
        nor einx, which traces each expression on its first call."""
        books = [layer._codebook.embed[0] for layer in self.quantizer.layers]
        vectors = torch.stack([book[level] for book, level in zip(books, codes.unbind(1), strict=False)])
        vectors = F.pad(vectors, (0, 0, 0, 0, 0, 0, 0, self.num_quantizers - codes.shape[1]))
        return vectors.sum(dim=0).transpose(1, 2)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, q <= Q, F]`` long -> ``[B, F * hop]`` float (fewer levels: lower bitrate)."""
        codes = self._check_codes(codes)
        return self.decoder(self._dequantize(codes))

    # ------------------------------------------------------------------ streaming
    @torch.no_grad()
    def encode_stream(
        self, chunks: Iterable[torch.Tensor], num_quantizers: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Encode ``[B, t]`` chunks of any length as they arrive; yields ``[B, Q, f]`` code chunks whose
        concatenation equals ``encode`` of the concatenated audio."""
        q = self._check_quantizers(num_quantizers)
        cache: dict = {}
        pending: torch.Tensor | None = None
        for chunk in chunks:
            chunk = self._check_wav(chunk)
            pending = chunk if pending is None else torch.cat([pending, chunk], dim=-1)
            usable = pending.shape[-1] - pending.shape[-1] % self.hop_length
            if usable:
                yield self._quantize(self.encoder(pending[..., :usable], cache), q)
                pending = pending[..., usable:]
        if pending is not None and pending.shape[-1]:
            pad = -pending.shape[-1] % self.hop_length
            yield self._quantize(self.encoder(F.pad(pending, (0, pad)), cache), q)

    @torch.no_grad()
    def decode_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode ``[B, q, f]`` code chunks as they arrive; the concatenation of the yielded ``[B, t]``
        audio equals ``decode`` of the whole (the stft decoder yields each chunk's last hop with the next)."""
        cache: dict = {}
        for codes in chunks:
            yield self.decoder(self._dequantize(self._check_codes(codes)), cache)
        tail = self.decoder.flush(cache)
        if tail is not None:
            yield tail

    # ------------------------------------------------------------------ training
    def optimizer_groups(self) -> dict[str, dict[str, Any]]:
        return {
            "generator": {"params": self.generator_parameters()},
            "discriminator": {"params": list(self.discriminators.parameters()), "lr": self.config.disc_lr},
        }

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training-time pass: reconstruction, codes ``[B, F, Q]`` (-1 where dropped) and commitment loss."""
        z = self.encoder(wav)
        quantized, indices, commit = self._encoding_quantizer()(z.transpose(1, 2))
        return self.decoder(quantized.transpose(1, 2)), indices, commit.sum()

    def train_batch(self, step: int, update: GroupUpdate) -> None:
        """One GAN step over the micro-batches of an optimiser step.

        The generator runs once per micro-batch and learns against the discriminators as they are; the
        discriminators then learn from those same outputs, detached. (DAC and AudioCraft update the
        discriminators first; under gradient accumulation that would keep every micro-batch's generator
        graph alive until the generator's update, or run the generator twice.)"""
        if _world_size() > 1 and not self.synced_codebooks:
            raise CodecError(
                "this codec was built before the process group existed, so its codebooks would "
                "drift apart between ranks; build it after torch.distributed.init_process_group"
            )
        adversarial = step >= self.config.disc_start_step
        fakes: list[torch.Tensor] = []  # the generator's output of each micro-batch, in order

        def generator(index: int, batch: Any) -> dict[str, torch.Tensor]:
            wav = self._whole_frames(batch)
            fake, _, commit = self(wav)
            fakes.append(fake.detach())
            mel = losses.mel_loss(self._mel_loss, fake, wav)
            out = {"mel": mel, "commit": commit}
            total = self.config.mel_weight * mel + commit
            if adversarial:
                fake_out, fake_feats = self.discriminators(fake)
                with torch.no_grad():
                    _, real_feats = self.discriminators(wav)
                out["adv"] = losses.generator_hinge(fake_out)
                out["feat"] = losses.feature_matching(real_feats, fake_feats)
                total = total + self.config.adv_weight * out["adv"] + self.config.feat_weight * out["feat"]
            out["loss"] = total
            return out

        def discriminator(index: int, batch: Any) -> dict[str, torch.Tensor]:
            real_out, _ = self.discriminators(self._whole_frames(batch))
            fake_out, _ = self.discriminators(fakes[index])
            return {"loss": losses.discriminator_hinge(real_out, fake_out)}

        update("generator", generator)
        # before disc_start_step the discriminators' schedule still advances, without a forward pass
        update("discriminator", discriminator if adversarial else None)

    def _whole_frames(self, batch: Any) -> torch.Tensor:
        wav = batch["audio"] if isinstance(batch, dict) else batch
        return wav[..., : wav.shape[-1] - wav.shape[-1] % self.hop_length]

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        wav = self._whole_frames(batch)
        fake = self.decode(self.encode(wav))
        return {"loss": losses.mel_loss(self._mel_loss, fake, wav)}

    @functools.cached_property
    def _mel_loss(self) -> nn.Module:
        """Built on first use; a cached property lives outside nn.Module's registry, so the loss's filterbanks
        are not saved with the codec's weights."""
        return losses.MultiScaleMelLoss(self.config)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# What `musiclm train codec` trains with per preset (TrainConfig fields), before --set changes.
_TRAIN_COMMON = {
    "lr": 3e-4,
    "betas": (0.8, 0.99),
    "grad_clip": 10.0,
    "weight_decay": 0.0,
    "warmup_steps": 100,
}
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {**_TRAIN_COMMON, **settings}
    for name, settings in {
        "tiny": {"steps": 50, "batch_size": 4, "log_every": 5, "ckpt_every": 25},
        "small": {
            "steps": 24_000,
            "batch_size": 16,
            "lr": 6e-4,
            "log_every": 20,
            "ckpt_every": 500,
            "num_workers": 1,
        },
        "paper": {"steps": 500_000, "batch_size": 32, "log_every": 50, "ckpt_every": 5000, "lr": 1e-4},
    }.items()
}
CROP_SECONDS = {"tiny": 0.5, "small": 0.5, "paper": 1.0}
# crops are loudness-normalised (-20 LUFS), then scaled by a random gain in this range: the rendered
# dataset sits at -30 to -42 LUFS and a codec that only saw -20 LUFS coded it badly
TRAIN_GAIN_DB = (-24.0, 0.0)


def codec_from_checkpoint(run_dir: str, map_location: str = "cpu") -> SoundStream:
    """The latest training checkpoint of a run folder (or its exported model) as an eval-mode codec."""
    from musiclm.training.checkpoint import list_checkpoints, load_checkpoint

    run = Path(run_dir)
    found = list_checkpoints(run / "checkpoints")
    if not found:
        if (run / "config.json").is_file():
            return SoundStream.from_pretrained(run, map_location)
        raise FileNotFoundError(f"{run} has neither checkpoints/ nor a saved model (config.json)")
    state = load_checkpoint(found[-1], map_location=map_location)
    model = SoundStream(SoundStreamConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.train_steps = int(state["step"])  # type: ignore[attr-defined]
    return model.to(map_location).eval()
