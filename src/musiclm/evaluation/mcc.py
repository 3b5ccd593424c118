"""MuLan cycle consistency: cosine of the Conditioner's text embedding of the prompt and its audio
embedding of the output (the paper's MCC, with whatever Conditioner the caller trusts)."""

from __future__ import annotations

import torch


def mcc_scores(conditioner, texts: list[str], audio: torch.Tensor) -> torch.Tensor:
    """Cosine per pair ``[B]``; ``audio`` ``[B, T]`` at ``conditioner.sample_rate``."""
    if len(texts) != audio.shape[0]:
        raise ValueError(f"{len(texts)} prompts but {audio.shape[0]} audio clips; they must pair up")
    with torch.no_grad():
        t = torch.nn.functional.normalize(conditioner.embed_text(list(texts)).float(), dim=-1)
        a = torch.nn.functional.normalize(conditioner.embed_audio(audio).float(), dim=-1)
    return (t * a).sum(-1)
