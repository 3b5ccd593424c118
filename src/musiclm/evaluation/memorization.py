"""Memorization (MusicLM section 5): prompt the semantic stage with a training clip's MuLan audio
tokens and its first semantic tokens, decode greedily, and compare with the clip's true continuation.

Exact match: the whole continuation is identical. Approximate match: the Sinkhorn optimal-transport
cost between the two token histograms, with the ground cost between tokens the distance of their
k-means centroids, is below tau = 0.85. Centroid distances are divided by their median over distinct
pairs, so two unrelated histograms cost about 1 and identical ones 0 (the paper leaves the scale open).
"""

from __future__ import annotations

import numpy as np
import ot
import torch

from musiclm.stages.sampling import Sampling, generate_stage

TAU = 0.85


def ground_cost(centroids: torch.Tensor | np.ndarray) -> np.ndarray:
    c = np.asarray(centroids, dtype=np.float64)
    cost = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    off = cost[~np.eye(len(c), dtype=bool)]
    scale = np.median(off) if off.size and np.median(off) > 0 else 1.0
    return cost / scale


def sinkhorn_cost(a_tokens: np.ndarray, b_tokens: np.ndarray, cost: np.ndarray, reg: float = 0.05) -> float:
    """Entropic OT cost between the token histograms of two sequences (each on the tokens it uses)."""
    ua, ca = np.unique(a_tokens, return_counts=True)
    ub, cb = np.unique(b_tokens, return_counts=True)
    return float(ot.sinkhorn2(ca / ca.sum(), cb / cb.sum(), cost[np.ix_(ua, ub)], reg, numItermax=2000))


def match_rates(
    generated: torch.Tensor, target: torch.Tensor, centroids, tau: float = TAU
) -> dict[str, float]:
    """``generated``/``target`` ``[N, F]`` token continuations -> exact and approximate match rates."""
    if generated.shape != target.shape:
        raise ValueError(
            f"generated {tuple(generated.shape)} and target {tuple(target.shape)} must have one shape"
        )
    cost = ground_cost(centroids)
    exact = (generated == target).all(-1).numpy()
    costs = np.array([sinkhorn_cost(g.numpy(), t.numpy(), cost) for g, t in zip(generated, target)])
    return {
        "exact_match": float(exact.mean()),
        "approx_match": float((costs < tau).mean()),
        "ot_cost_mean": float(costs.mean()),
        "n": len(exact),
    }


@torch.no_grad()
def greedy_continuations(
    pipeline, wavs: torch.Tensor, prompt_seconds: float, continue_seconds: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy semantic continuations of the clips ``[N, T]`` (at the pipeline's rate) after
    ``prompt_seconds``; returns ``(generated, target)`` tokens ``[N, F]`` of the ``continue_seconds``."""
    sem = pipeline.stages.semantic
    rate = pipeline.semantic.sample_rate
    from musiclm.audio import resample

    wav_sem = resample(wavs, pipeline.sample_rate, rate)
    tokens = pipeline.semantic.tokenize(wav_sem)
    n_prompt = round(prompt_seconds * sem.frame_rate)
    n_total = n_prompt + round(continue_seconds * sem.frame_rate)
    if tokens.shape[1] < n_total:
        raise ValueError(
            f"clips give {tokens.shape[1]} semantic frames; prompt + continuation needs {n_total}: "
            "use longer clips or shorter prompt_seconds/continue_seconds"
        )
    mulan = pipeline.mulan.quantize(
        pipeline.mulan.embed_audio(resample(wavs, pipeline.sample_rate, pipeline.mulan.sample_rate))
    )
    melody = None
    if sem.config.melody_quantizers and pipeline.melody is not None:
        melody = pipeline.melody.quantize(
            pipeline.melody.embed(resample(wavs, pipeline.sample_rate, pipeline.melody.sample_rate))
        )[:, : sem.config.melody_windows]
    out = generate_stage(
        sem,
        lambda s, n, e: sem.condition(mulan=mulan, melody=melody),
        n_total,
        len(wavs),
        Sampling(temperature=0.0),
        prompt=tokens[:, None, :n_prompt],
    )[:, 0]
    return out[:, n_prompt:n_total], tokens[:, n_prompt:n_total]
