"""The one causal decoder Transformer behind all three MusicLM stages.

Pre-norm blocks, PyTorch ``scaled_dot_product_attention``, T5-style relative position bias shared by all
layers (as in the paper, which follows AudioLM/T5), gated-GELU feed-forward (T5 v1.1's, with its tanh
GELU: with d=1024, FF 4096 and 24 layers it gives the paper's ~430M parameters per stage), dropout, and a
preallocated KV cache so that decoding a token costs one position's work, not the whole prefix's.
Relative positions make sliding windows natural: a window re-encoded at a new offset sees the same
biases. Two choices made for CPU speed are settings whose ``paper`` values are T5's: the norm (``rmsnorm``
as T5; ``layernorm`` without bias, one fused CPU kernel where RMSNorm is five) and dropout on the
attention probabilities (drawing a [B, H, T, T] mask was a quarter of a fine-stage training step on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerSpec:
    vocab_size: int
    dim: int
    layers: int
    heads: int
    ff: int
    dropout: float = 0.1
    rel_buckets: int = 32
    rel_max_distance: int = 256
    attention_dropout: float = 0.0
    norm: str = "layernorm"  # "layernorm" (no bias) or "rmsnorm"


def make_norm(spec: TransformerSpec) -> nn.Module:
    if spec.norm not in NORMS:
        raise ValueError(f"unknown norm {spec.norm!r}; choose one of {NORMS}")
    return nn.RMSNorm(spec.dim) if spec.norm == "rmsnorm" else nn.LayerNorm(spec.dim, bias=False)


NORMS = ("layernorm", "rmsnorm")


def relative_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Causal T5 buckets of ``distance = query - key >= 0``: exact when near, log-spaced when far."""
    exact = num_buckets // 2
    far = (
        exact
        + (
            torch.log(distance.float().clamp(min=1) / exact)
            / math.log(max_distance / exact)
            * (num_buckets - exact)
        ).long()
    )
    return torch.where(distance < exact, distance, far.clamp(max=num_buckets - 1))


class KVCache:
    """Keys and values of every layer for ``max_len`` positions, written in place as decoding goes, and the
    relative position bias of one query over up to ``max_len`` keys (``bias [1, H, 1, max_len]``, by distance,
    farthest first: see :meth:`RelativeBias.by_distance`)."""

    def __init__(self, spec: TransformerSpec, batch: int, max_len: int, device, dtype, bias: torch.Tensor):
        shape = (batch, spec.heads, max_len, spec.dim // spec.heads)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(spec.layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(spec.layers)]
        self.bias = bias
        self.length = 0
        self.max_len = max_len

    def step_bias(self, k_len: int) -> torch.Tensor:
        """The bias ``[1, H, 1, k_len]`` of the query at ``k_len - 1`` over keys ``0..k_len - 1``."""
        return self.bias[:, :, :, self.max_len - k_len :]


class RelativeBias(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.rel_buckets, spec.heads)

    def forward(self, offset: int, q_len: int, k_len: int) -> torch.Tensor:
        """Additive attention bias ``[1, H, q_len, k_len]`` for queries at ``offset..offset+q_len``."""
        q = torch.arange(offset, offset + q_len, device=self.embedding.weight.device)
        distance = q[:, None] - torch.arange(k_len, device=q.device)[None, :]
        bias = self.embedding(
            relative_bucket(distance.clamp(min=0), self.spec.rel_buckets, self.spec.rel_max_distance)
        )
        bias = bias.permute(2, 0, 1).unsqueeze(0)
        return bias.masked_fill(distance < 0, float("-inf"))

    @torch.no_grad()
    def by_distance(self, length: int) -> torch.Tensor:
        """``[1, H, 1, length]``: the bias of distances ``length - 1`` down to 0, for decoding. Each KV cache
        makes its own when it is made, on the weights' device and from their values then, and each decoding
        step slices it instead of bucketing distances again (that alone would cost as much as a small
        layer)."""
        distance = torch.arange(length - 1, -1, -1, device=self.embedding.weight.device)
        bias = self.embedding(relative_bucket(distance, self.spec.rel_buckets, self.spec.rel_max_distance))
        return bias.T[None, :, None, :].contiguous()


class Block(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.heads = spec.heads
        self.norm1, self.norm2 = make_norm(spec), make_norm(spec)
        self.attention_dropout = spec.attention_dropout
        self.qkv = nn.Linear(spec.dim, 3 * spec.dim, bias=False)
        self.proj = nn.Linear(spec.dim, spec.dim, bias=False)
        self.ff_in = nn.Linear(spec.dim, 2 * spec.ff, bias=False)
        self.ff_out = nn.Linear(spec.ff, spec.dim, bias=False)
        self.drop = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + t] = k
            cache.values[layer][:, :, start : start + t] = v
            k, v = cache.keys[layer][:, :, : start + t], cache.values[layer][:, :, : start + t]
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        a, g = self.ff_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.drop(self.ff_out(self.drop(F.gelu(a, approximate="tanh") * g)))


class Transformer(nn.Module):
    """Token ids ``[B, T]`` -> final hidden states ``[B, T, D]``; the stages own the output heads."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.dim)
        self.rel_bias = RelativeBias(spec)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.layers))
        self.norm = make_norm(spec)
        self.drop = nn.Dropout(spec.dropout)
        self.apply(_init)
        for block in self.blocks:  # GPT-2: scale residual projections by depth
            for lin in (block.proj, block.ff_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * spec.layers))

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.embed.weight
        return KVCache(self.spec, batch, max_len, w.device, w.dtype, self.rel_bias.by_distance(max_len))

    def forward(
        self, ids: torch.Tensor, cache: KVCache | None = None, added: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``added [B, T, D]``: vectors added to the ids' embeddings (a stage's inputs that are no token)."""
        t = ids.shape[1]
        offset = cache.length if cache is not None else 0
        if cache is not None and offset + t > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; {offset + t} requested")
        bias = (
            cache.step_bias(offset + t)
            if cache is not None and t == 1
            else self.rel_bias(offset, t, offset + t)
        )
        x = self.embed(ids)
        x = self.drop(x if added is None else x + added)
        for i, block in enumerate(self.blocks):
            x = block(x, bias, cache, i)
        if cache is not None:
            cache.length += t
        return self.norm(x)


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
