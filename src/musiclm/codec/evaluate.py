"""Codec evaluation: per bitrate (1..Q quantizers) against Opus at the same bitrate and at twice it.

Metrics (lower is better except SI-SNR): multi-scale log-mel L1 distance (FFT 512/1024/2048, 64 mels,
natural log of power), SI-SNR in dB (auraloss), spectral convergence ||S - S'||_F / ||S||_F of the
1024-point STFT magnitude, and per-quantizer codebook perplexity of the codes.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import auraloss
import numpy as np
import torch

from musiclm.audio import MelSpectrogram, load_audio, save_audio
from musiclm.files import atomic_write
from musiclm.progress import tqdm

OPUS_MIN_KBPS = 6.0  # libopus refuses less; lower targets are clamped up (and reported as such)


class OpusError(RuntimeError):
    pass


def mel_distance(fake: torch.Tensor, real: torch.Tensor, sample_rate: int) -> float:
    total = 0.0
    for n_fft in (512, 1024, 2048):
        mel = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64)
        total += float((mel(fake) - mel(real)).abs().mean())
    return total / 3


def si_snr(fake: torch.Tensor, real: torch.Tensor) -> float:
    return -float(auraloss.time.SISDRLoss()(fake[None, None], real[None, None]))


def spectral_convergence(fake: torch.Tensor, real: torch.Tensor) -> float:
    window = torch.hann_window(1024)
    mag = lambda x: torch.stft(x, 1024, 256, window=window, return_complex=True).abs()  # noqa: E731
    return float(auraloss.freq.SpectralConvergenceLoss()(mag(fake), mag(real)))


def perplexity(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """exp(entropy) of each quantizer's code histogram; ``codes`` is ``[Q, F]`` (all clips concatenated)."""
    out = []
    for level in codes:
        p = torch.bincount(level, minlength=codebook_size).double()
        p = p[p > 0] / p.sum()
        out.append(float(torch.exp(-(p * p.log()).sum())))
    return out


def opus_roundtrip(wav: torch.Tensor, sample_rate: int, kbps: float) -> torch.Tensor:
    """Encode with ffmpeg's libopus at ``kbps`` (VBR off) and decode back to ``sample_rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = Path(tmp, "in.wav"), Path(tmp, "x.opus"), Path(tmp, "out.wav")
        save_audio(src, wav, sample_rate)
        for args in (
            [
                "-i",
                str(src),
                "-c:a",
                "libopus",
                "-b:a",
                f"{max(kbps, OPUS_MIN_KBPS)}k",
                "-vbr",
                "off",
                str(enc),
            ],
            ["-i", str(enc), "-ar", str(sample_rate), "-ac", "1", str(dec)],
        ):
            run = subprocess.run(
                ["ffmpeg", "-y", "-loglevel", "error", *args], capture_output=True, text=True
            )
            if run.returncode:
                raise OpusError(f"ffmpeg/libopus failed: {run.stderr.strip()[:300]}")
        out = load_audio(dec, sample_rate)
    # Opus adds a fixed pre-skip delay that ffmpeg removes; trim or pad to the reference length
    return torch.nn.functional.pad(out, (0, max(0, wav.shape[-1] - out.shape[-1])))[: wav.shape[-1]]


@dataclass
class Row:
    system: str
    quantizers: int | None
    kbps: float
    mel: float
    si_snr: float
    sc: float


def evaluate(codec, clips: list[torch.Tensor], opus: bool = True) -> tuple[list[Row], list[float]]:
    """Average metrics over ``clips`` (``[T]`` tensors at the codec's rate) for every bitrate."""
    sr, q_max = codec.sample_rate, codec.num_quantizers
    sums: dict[tuple[str, int | None, float], np.ndarray] = {}
    all_codes = []

    def add(key: tuple[str, int | None, float], fake: torch.Tensor, real: torch.Tensor) -> None:
        m = np.array([mel_distance(fake, real, sr), si_snr(fake, real), spectral_convergence(fake, real)])
        sums[key] = sums.get(key, 0) + m

    for wav in tqdm(clips, desc="codec eval"):
        codes = codec.encode(wav[None]).cpu()  # the metrics run on the CPU, wherever the codec is
        all_codes.append(codes[0])
        for q in range(1, q_max + 1):
            kbps = codec.bitrate(q) / 1000
            add(("codec", q, kbps), codec.decode(codes[:, :q])[0, : wav.shape[-1]].cpu(), wav)
            if opus:
                for factor, name in ((1, "opus"), (2, "opus x2")):
                    add((name, q, kbps * factor), opus_roundtrip(wav, sr, kbps * factor), wav)
    rows = [
        Row(s, q, round(max(k, OPUS_MIN_KBPS) if s != "codec" else k, 3), *(v / len(clips)))
        for (s, q, k), v in sums.items()
    ]
    return rows, perplexity(torch.cat(all_codes, dim=-1), codec.codebook_size)


def table(rows: list[Row]) -> str:
    lines = [
        "| system | quantizers | kbps | mel distance | SI-SNR (dB) | spectral conv. |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.quantizers or 0, r.system)):
        lines.append(
            f"| {r.system} | {r.quantizers} | {r.kbps:.2f} | {r.mel:.3f} | {r.si_snr:.2f} | {r.sc:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric, label in zip(
        axes,
        ("mel", "si_snr", "sc"),
        ("mel distance (lower better)", "SI-SNR dB (higher better)", "spectral convergence (lower better)"),
    ):
        for system in ("codec", "opus", "opus x2"):
            pts = sorted((r.quantizers, getattr(r, metric)) for r in rows if r.system == system)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=system)
        ax.set_xlabel("quantizers (codec bitrate = q x per-level kbps)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip("."))
    finally:
        plt.close(fig)
    return Path(path)


def load_clips(paths: list[Path], sample_rate: int, seconds: float, per_file: int = 1) -> list[torch.Tensor]:
    """``per_file`` evenly spaced excerpts of ``seconds`` from each file (whole file when shorter)."""
    clips = []
    for path in paths:
        wav = load_audio(path, sample_rate)
        n = int(seconds * sample_rate)
        starts = np.linspace(0, max(0, wav.shape[-1] - n), per_file).astype(int) if wav.shape[-1] > n else [0]
        clips += [wav[s : s + n] for s in sorted(set(int(x) for x in starts))]
    return [c for c in clips if c.abs().max() > 1e-4 and c.shape[-1] >= sample_rate // 10]
