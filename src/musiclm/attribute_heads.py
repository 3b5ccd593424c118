"""Heads that predict a clip's attributes (:data:`musiclm.attributes.HEADS`): a clip's targets for them and
the heads' losses.

Two models learn from the rendered dataset's attributes: the evaluation classifier
(:mod:`musiclm.evaluation.classifier`) and, where its config asks, MuLan's auxiliary attribute heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from musiclm.attributes import HEAD_ATTRIBUTE, HEADS


def encode_targets(attributes: dict, heads: dict[str, list[str]] = HEADS) -> dict[str, torch.Tensor]:
    """A manifest clip's attribute dict -> one target per head: a 0/1 vector over families, a class index
    for the others (``-1``: unknown, which losses ignore)."""
    families = torch.zeros(len(heads["family"]))
    for family in attributes.get("families", []):
        if family in heads["family"]:
            families[heads["family"].index(family)] = 1.0
    out = {"family": families}
    for head in ("tempo", "mode", "style"):
        labels, value = heads[head], attributes.get(HEAD_ATTRIBUTE[head])
        out[head] = torch.tensor(labels.index(value) if value in labels else -1)
    return out


def attribute_losses(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-head losses and accuracies of ``logits`` (head -> ``[B, labels]``) against
    :func:`encode_targets` rows; ``loss`` is their sum. Rows without any family are left out of the family
    loss, rows with an unknown class out of that head's."""
    # summed over families: averaged, each family weighed a tenth of a single-label head, and after 800
    # steps most of the classifier's family outputs had not yet risen past 0.5 (held-out family F1 0.23)
    family = F.binary_cross_entropy_with_logits(logits["family"], targets["family"], reduction="none").sum(-1)
    named = targets["family"].sum(-1) > 0
    out = {"family": family[named].mean() if named.any() else family.sum() * 0}
    if named.any():
        hits = ((logits["family"] > 0).float() == targets["family"]).all(-1)
        out["family_acc"] = hits[named].float().mean()
    for name in ("tempo", "mode", "style"):
        known = targets[name] >= 0
        if not known.any():  # cross-entropy over no rows is NaN
            out[name] = logits[name].sum() * 0
            continue
        out[name] = F.cross_entropy(logits[name][known], targets[name][known])
        out[f"{name}_acc"] = (logits[name][known].argmax(-1) == targets[name][known]).float().mean()
    out["loss"] = sum(out[k] for k in HEADS)
    return out
