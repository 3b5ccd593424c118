"""Statistics of scored pairs: shares that moved the asked way with their intervals, the shuffled
reference row, and two models compared on the same pairs and seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from musiclm.attributes import KIND_ATTRIBUTE


def swapped(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The same pairs with A and B exchanged at random (each with probability 1/2): whatever the row it
    comes from, its expected share is 50 %, the level of a generator that ignores the change."""
    flips = np.random.default_rng(seed).random(len(rows)) < 0.5
    out = []
    for row, flip in zip(rows, flips):
        a, b = (row["b"], row["a"]) if flip else (row["a"], row["b"])
        out.append({**row, "a": a, "b": b, "moved": bool(b > a), "swapped": bool(flip)})
    return out


def wilson_interval(moved: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a share ``moved / n``: with 11 pairs a kind, 64 % spans 35-85 %, so
    two models' per-kind shares differ by chance far more than they seem to."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = moved / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 3), round(float(centre + half), 3)]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of pairs that moved the asked way, per kind and over all, with counts and 95 % intervals."""

    def share(moved: list[bool]) -> dict[str, Any]:
        return {
            "share": float(np.mean(moved)) if moved else float("nan"),
            "n": len(moved),
            "ci95": wilson_interval(int(sum(moved)), len(moved)),
        }

    by_kind = {}
    for kind in KIND_ATTRIBUTE:
        moved = [r["moved"] for r in rows if r["kind"] == kind]
        if moved:
            by_kind[kind] = share(moved)
    return {**share([r["moved"] for r in rows]), "by_kind": by_kind}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` against ``losses`` (ties left out)."""
    from scipy.stats import binomtest

    n = wins + losses
    return 1.0 if n == 0 else float(binomtest(wins, n, 0.5).pvalue)


def _moved_by_pair(runs: Sequence[dict[str, Any]], row: str) -> dict[tuple, tuple[str, bool]]:
    """``(seed, A prompt, B prompt) -> (kind, moved)`` over the ``pairs.json`` results ``runs``."""
    out = {}
    for run in runs:
        seed = run["info"].get("seed")
        for pair in run["pairs"]:
            if pair.get(row) is not None:
                out[(seed, pair["a"], pair["b"])] = (pair["kind"], bool(pair[row]["moved"]))
    return out


def compare_runs(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]], row: str = "generated"
) -> dict[str, Any]:
    """Two models' paired adherence on the same pairs and seeds (``pairs.json`` results, several seeds a
    side pooled): each side's share over the pairs both scored, per kind and over all, and the pairs
    where they disagree, with a sign test on those (shares alone hide that most pairs agree)."""
    a, b = _moved_by_pair(first, row), _moved_by_pair(second, row)
    common = sorted(set(a) & set(b), key=str)
    if not common:
        raise ValueError(
            "the two sides share no scored pair: compare runs of the same pairs file with the same seeds"
        )

    def side(moves: dict, kind: str | None) -> list[bool]:
        return [moves[k][1] for k in common if kind is None or a[k][0] == kind]

    def block(kind: str | None) -> dict[str, Any]:
        x, y = side(a, kind), side(b, kind)
        wins = sum(q and not p for p, q in zip(x, y))
        losses = sum(p and not q for p, q in zip(x, y))
        return {
            "n": len(x),
            "first": round(float(np.mean(x)), 3),
            "second": round(float(np.mean(y)), 3),
            "second_only": wins,
            "first_only": losses,
            "p_value": float(f"{sign_test(wins, losses):.3g}"),
        }

    kinds = [k for k in KIND_ATTRIBUTE if any(a[c][0] == k for c in common)]
    return {
        "seeds": sorted({k[0] for k in common}, key=str),
        "all": block(None),
        "by_kind": {k: block(k) for k in kinds},
    }
