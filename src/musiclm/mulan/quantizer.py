"""Residual k-means: the RVQ that turns a fixed embedding into a few tokens.

MuLan and melody embeddings are trained first and quantized afterwards (MusicLM section 3.1), so the
codebooks are fitted once, level by level, with k-means on the residuals of the training embeddings
(faiss does the clustering). Quantizing is greedy: the nearest code per level, then its residual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from musiclm.progress import tqdm


class ResidualKMeans(nn.Module):
    """``Q`` codebooks of ``K`` codes of size ``D``, stored as a buffer so they save with the model."""

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int):
        super().__init__()
        self.dim, self.num_quantizers, self.codebook_size = dim, num_quantizers, codebook_size
        self.register_buffer("codebooks", torch.zeros(num_quantizers, codebook_size, dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, iterations: int = 25, seed: int = 0) -> list[float]:
        """Fit every level on ``[N, D]`` embeddings; returns the mean squared residual after each level.

        With fewer embeddings than codes (a tiny dataset), a level gets ``N`` clusters and its remaining
        codes repeat them: they are never the unique nearest code, so they are simply unused.
        """
        import faiss  # only fitting clusters; a loaded model quantizes with its saved codebooks

        x = embeddings.detach().float().reshape(-1, self.dim).cpu().numpy().astype(np.float32)
        if len(x) < 2:
            raise ValueError(f"fitting the RVQ needs at least 2 embeddings, got {len(x)}")
        residual, errors = x.copy(), []
        for level in range(self.num_quantizers):
            k = min(self.codebook_size, len(residual))
            km = faiss.Kmeans(
                self.dim, k, niter=iterations, seed=seed + level, verbose=False, min_points_per_centroid=1
            )
            km.train(np.ascontiguousarray(residual))
            centroids = torch.from_numpy(km.centroids).reshape(k, self.dim)
            codebook = centroids[torch.arange(self.codebook_size) % k]  # on the CPU, with the numpy residual
            self.codebooks[level] = codebook
            nearest = torch.cdist(torch.from_numpy(residual), codebook).argmin(-1)
            residual = residual - codebook.numpy()[nearest.numpy()]
            errors.append(float((residual**2).sum(1).mean()))
        self.fitted.fill_(True)
        return errors

    def _nearest(self, residual: torch.Tensor, level: int) -> torch.Tensor:
        return torch.cdist(residual.float(), self.codebooks[level].float()).argmin(-1)

    @torch.no_grad()
    def encode(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[..., Q]`` long."""
        if not bool(self.fitted):
            raise RuntimeError(
                "the RVQ has not been fitted: run fit_quantizer on training embeddings first "
                "(musiclm train mulan / train melody do this at the end of training)"
            )
        if embedding.shape[-1] != self.dim:
            raise ValueError(f"expected embeddings of size {self.dim}, got shape {tuple(embedding.shape)}")
        lead = embedding.shape[:-1]
        residual = embedding.reshape(-1, self.dim).to(self.codebooks.device, torch.float32)
        codes = []
        for level in range(self.num_quantizers):
            idx = self._nearest(residual, level)
            residual = residual - self.codebooks[level][idx]
            codes.append(idx)
        return torch.stack(codes, -1).reshape(*lead, self.num_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[..., q <= Q]`` long -> ``[..., D]``: the sum of the chosen codes of the first q levels."""
        q = codes.shape[-1]
        return sum(self.codebooks[level][codes[..., level]] for level in range(q))  # type: ignore[return-value]


class RVQTokens:
    """The token methods of a model whose embeddings a :class:`ResidualKMeans` at ``self.rvq`` quantizes
    (MuLan, the melody embedder, the CLAP adapter)."""

    rvq: ResidualKMeans

    def quantize(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` embedding -> ``[..., Q]`` tokens."""
        return self.rvq.encode(embedding)

    def code_vectors(self) -> torch.Tensor:
        """``[Q, K, D]``: the codebooks ``quantize`` chooses among."""
        return self.rvq.codebooks

    def dequantize(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., q <= Q]`` tokens -> ``[..., D]``: the embedding they stand for."""
        return self.rvq.decode(tokens)

    def fit_quantizer(self, embeddings: torch.Tensor) -> list[float]:
        """Fit the codebooks on ``[N, D]`` training embeddings; returns the residual after each level."""
        return self.rvq.fit(embeddings)


@torch.no_grad()
def collect_embeddings(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    count: int,
    batch_size: int = 16,
    desc: str = "embeddings for the RVQ",
) -> torch.Tensor:
    """``count`` embeddings of ``dataset[key]`` for keys 0..count-1 (key-seeded random crops): ``embed``
    takes the items' ``"audio"`` stacked, and their ``"notes"`` where they have them."""
    out = []
    for start in tqdm(range(0, count, batch_size), desc=desc, leave=False):
        items = [dataset[k] for k in range(start, min(count, start + batch_size))]
        given = [torch.stack([item[key] for item in items]) for key in ("audio", "notes") if key in items[0]]
        emb = embed(*given)
        out.append(emb.reshape(-1, emb.shape[-1]).cpu())  # melody embeddings come per window: [B, W, D]
    return torch.cat(out)
