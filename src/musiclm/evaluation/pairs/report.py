"""The paired-adherence report: ``pairs.json`` and the table of ``pairs.md``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from musiclm.attributes import KIND_ATTRIBUTE
from musiclm.evaluation.pairs.file import Pair
from musiclm.evaluation.pairs.statistics import summarize
from musiclm.files import write_text_atomic


def write_pairs_report(
    out_dir: str | Path, rows: dict[str, list[dict[str, Any]]], pairs: Sequence[Pair], info: dict[str, Any]
) -> dict[str, Any]:
    """``pairs.json`` (summaries, every pair's detector values per row) and ``pairs.md`` (the table)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {name: summarize(r) for name, r in rows.items()}
    result = {
        "info": info,
        "rows": summaries,
        "pairs": [
            {
                **p.to_json(),
                **{name: next((x for x in r if x["index"] == i), None) for name, r in rows.items()},
            }
            for i, p in enumerate(pairs)
        ],
    }
    write_text_atomic(out_dir / "pairs.json", json.dumps(result, indent=1) + "\n")
    kinds = [k for k in KIND_ATTRIBUTE if any(k in s["by_kind"] for s in summaries.values())]

    def cell(summary: dict, kind: str | None) -> str:
        got = summary if kind is None else summary["by_kind"].get(kind)
        if not got or not got["n"]:
            return "-"
        low, high = got["ci95"]
        return f"{got['share']:.0%} ({got['n']}; {low:.0%}-{high:.0%})"

    lines = [
        "# Paired adherence",
        "",
        "Share of pairs whose output moves the asked way (B's detector value above A's); in brackets n and "
        "the 95 % Wilson interval.",
        "Detectors: tempo = onsets per second, mode = major minus minor key-profile fit, register = "
        "salience-weighted pitch, articulation = decay after each attack (dB/s), "
        "density = pitches at once, "
        "family = classifier P(B) - P(A). Shuffled: A and B swapped at random (about 50 %).",
        "",
        "| row | " + " | ".join(kinds) + " | all |",
        "|" + " --- |" * (len(kinds) + 2),
    ]
    lines += [
        f"| {name} | " + " | ".join(cell(s, k) for k in kinds) + f" | {cell(s, None)} |"
        for name, s in summaries.items()
    ]
    lines += ["", *[f"- {k}: {v}" for k, v in info.items()]]
    write_text_atomic(out_dir / "pairs.md", "\n".join(lines) + "\n")
    return result
