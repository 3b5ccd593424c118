"""KLD: the paper's protocol with our own classifier — KL(p_reference || p_generated) of its label
distributions, per head, averaged over pairs of a reference clip and the audio generated from its caption."""

from __future__ import annotations

import torch

EPS = 1e-6


def kl_per_head(ref: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Probabilities ``{head: [B, C]}`` -> KL per pair ``{head: [B]}``.

    ``family`` is multi-label: the mean over labels of the Bernoulli KL; the other heads are categorical.
    """
    out = {}
    for head, p in ref.items():
        q = gen[head]
        if p.shape != q.shape:
            raise ValueError(f"head {head!r}: reference {tuple(p.shape)} vs generated {tuple(q.shape)}")
        p, q = p.clamp(EPS, 1 - EPS), q.clamp(EPS, 1 - EPS)
        if head == "family":
            kl = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
            out[head] = kl.mean(-1)
        else:
            out[head] = (p * (p / q).log()).sum(-1)
    return out


def kld(classifier, reference: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
    """Mean KL per head and their mean (``kld``) over the pairs ``reference[i]``/``generated[i]``."""
    per = kl_per_head(classifier.predict(reference), classifier.predict(generated))
    out = {f"kld_{h}": float(v.mean()) for h, v in per.items()}
    out["kld"] = sum(out.values()) / len(out)
    return out
