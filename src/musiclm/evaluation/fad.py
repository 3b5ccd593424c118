"""Fréchet Audio Distance with pluggable embeddings, and FAD-infinity (Gui et al. 2024, as in fadtk).

An embedding function maps a batch of waveforms ``[B, T]`` to frame embeddings ``[B, F, D]``; the
statistics are taken over all frames of all clips, as FAD does with VGGish frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import linalg

from musiclm.audio import sliding_windows

EmbedFn = Callable[[torch.Tensor], torch.Tensor]


class FADError(ValueError):
    """Embeddings that cannot give a Fréchet distance."""


def frame_embeddings(embed: EmbedFn, wavs: Sequence[torch.Tensor], batch_size: int = 8) -> np.ndarray:
    """All frames of all clips, ``[N_frames, D]`` float64; clips of a batch are cropped to the shortest."""
    out = []
    with torch.no_grad():
        for i in range(0, len(wavs), batch_size):
            chunk = wavs[i : i + batch_size]
            length = min(w.shape[-1] for w in chunk)
            emb = embed(torch.stack([w[:length] for w in chunk]))
            if emb.dim() == 2:
                emb = emb[:, None]
            out.append(emb.reshape(-1, emb.shape[-1]).double().cpu().numpy())
    return np.concatenate(out)


def statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise FADError(f"need at least 2 embedding frames [N, D] for a covariance, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise FADError("embeddings contain NaN or inf: check the audio (musiclm.audio.check_finite)")
    return emb.mean(0), np.cov(emb, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2); a tiny diagonal is added if the product is singular."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(len(mu1))
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(distance, 0.0)  # it is >= 0; round-off can dip below for identical sets


def fad(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    return frechet_distance(*statistics(emb_a), *statistics(emb_b))


def fad_infinity(
    emb_eval: np.ndarray,
    emb_ref: np.ndarray,
    sizes: Sequence[int] | None = None,
    trials: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """FAD is biased by sample size (~ a + b/N): fit FAD(N) on subsets of the evaluated frames and
    extrapolate to N -> inf. Returns ``{"fad_inf", "slope", "r2"}``."""
    n = len(emb_eval)
    if sizes is None:
        lo = max(emb_eval.shape[1] + 2, n // 5, 2)
        sizes = np.unique(np.linspace(lo, n, 6).astype(int))
    sizes = [int(s) for s in sizes if 2 <= s <= n]
    if len(sizes) < 2:
        raise FADError(f"FAD-inf needs >= 2 subset sizes within the {n} frames; evaluate more audio")
    rng = np.random.default_rng(seed)
    ref_stats = statistics(emb_ref)
    xs, ys = [], []
    for size in sizes:
        for _ in range(trials):
            subset = emb_eval[rng.choice(n, size, replace=False)]
            xs.append(1.0 / size)
            ys.append(frechet_distance(*statistics(subset), *ref_stats))
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * np.asarray(xs) + intercept
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2)) or 1.0
    return {
        "fad_inf": float(intercept),
        "slope": float(slope),
        "r2": 1 - float(np.sum((ys - pred) ** 2)) / ss_tot,
    }


# ---------------------------------------------------------------- embedding functions for the parts
def conditioner_embedder(conditioner, window_seconds: float = 10.0, hop_seconds: float = 1.0) -> EmbedFn:
    """MuLan audio embeddings of windows (the paper's 10 s windows at 1 s stride) as the frames."""
    sr = conditioner.sample_rate

    def embed(wav: torch.Tensor) -> torch.Tensor:
        frames = sliding_windows(wav, round(window_seconds * sr), round(hop_seconds * sr))  # [B, W, win]
        return conditioner.embed_audio(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])

    return embed


def codec_embedder(codec) -> EmbedFn:
    """The codec encoder's continuous latents (before quantization), one per codec frame."""
    encoder = getattr(codec, "encoder", None)
    if encoder is None:
        raise FADError(f"{type(codec).__name__} exposes no .encoder module; use another FAD embedding")

    def embed(wav: torch.Tensor) -> torch.Tensor:
        z = encoder(wav)  # [B, D, F]
        return z.transpose(1, 2)

    return embed
