"""Write an evaluation's ``metrics.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import librosa  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from musiclm.files import atomic_write, write_text_atomic  # noqa: E402

ROW_NOTES = {
    "generated": "the model under test",
    "ground truth": "held-out real clips of the prompts (ceiling)",
    "codec resynthesis": "ground truth through the codec (the codec's ceiling)",
    "random training": "random training clips that ignore the prompt (floor)",
}
LOWER_IS_BETTER = ("fad", "kld")
SECTIONS = ("note_rate", "asked_", "melody_")  # keys reported in sections of their own, not the metrics table
MOVES = (
    "Note-change rate: new notes a second of a clip's predominant pitch line (pYIN; a held tone or a "
    "drone is about 0). Ratio: a row's rate over that of the real clip its prompt describes (ground "
    "truth), per prompt; the median is over prompts whose real clip changes note at all. Target for "
    "the generated row: a median ratio between 0.75 and 1.33; drones show as a ratio far below 1."
)
ASKED = (
    "Prompts whose words name a BPM or a key (`musiclm.evaluation.asked`), read by the adherence "
    "detectors (librosa beat tracking; CQT chroma against Krumhansl-Kessler profiles). Tempo: within 8 % "
    "of the asked BPM, and with octave errors allowed (twice or half; not triple or third). Key: tonic "
    "and mode, and mode alone. Ground truth is the ceiling. Targets: asked tempo with octave errors "
    "for >= 60 % of prompts naming a BPM, asked mode for >= 80 % of prompts naming a key. Published "
    "anchor: a 2026 comparison found Stable Audio 3 playing the asked tempo in 61 % of clips and the "
    "asked key in 64 %."
)

MELODY = (
    "Prompts that carry a melody (`musiclm eval-prompts --melodies`: the tune of the test-split clip "
    "the prompt describes, whistled; no training clip holds it): pitch class, the share of frames "
    "voiced in both where the output's pYIN pitch has the melody's pitch class (within 50 cents, octave "
    "errors forgiven); contour, the correlation of the two pitch curves. Ground truth is the ceiling. "
    "Target for the generated row: pitch class >= 0.60 with the melody, above its level without."
)
MELODY_BASELINE = (
    "Without the melody: each melody prompt generated again from the same text and seed, its melody "
    "left out, and scored against the same melody; the difference is what the melody adds (over the "
    "prompts where both are defined)."
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def table(metrics: dict[str, dict[str, Any]]) -> str:
    cols = sorted(
        {k for m in metrics.values() for k, v in m.items() if isinstance(v, (int, float)) and k != "n"}
    )
    lines = ["| row | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, m in metrics.items():
        lines.append(
            f"| {name} | {m.get('n', '')} | " + " | ".join(_fmt(m.get(c, float("nan"))) for c in cols) + " |"
        )
    return "\n".join(lines)


def moves_section(metrics: dict[str, dict[str, Any]], texts: list[str] | None) -> list[str]:
    md = ["## Music that moves", "", MOVES, ""]
    md += [
        "| row | median notes/s | median ratio to the real clip | prompts with a ratio |",
        "|---|---|---|---|",
    ]
    for name, m in metrics.items():
        cells = [m.get(k, float("nan")) for k in ("note_rate_median", "note_rate_ratio_median")]
        md.append(f"| {name} | " + " | ".join(map(_fmt, cells)) + f" | {m.get('note_rate_ratio_n', '–')} |")
    generated, real = metrics.get("generated", {}), metrics.get("ground truth", {})
    if texts and "per_clip_note_rate_ratio" in generated:
        md += ["", "| # | prompt | real notes/s | generated notes/s | ratio |", "|---|---|---|---|---|"]
        for i, text in enumerate(texts):
            rates = (real["per_clip_note_rate"][i], generated["per_clip_note_rate"][i])
            cells = " | ".join(map(_fmt, (*rates, generated["per_clip_note_rate_ratio"][i])))
            md.append(f"| {i} | {text[:70].replace('|', '/')} | {cells} |")
    return md + [""]


def asked_section(metrics: dict[str, dict[str, Any]]) -> list[str]:
    keys = ("asked_tempo_share", "asked_tempo_octave_share", "asked_key_share", "asked_mode_share")
    md = ["## Tempo and key asked by name", "", ASKED, ""]
    md += [
        "| row | prompts naming a BPM | tempo within 8 % | with octave errors | prompts naming a key "
        "| key and mode | mode |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        tempo, octave, key, mode = (_fmt(m.get(k, float("nan"))) for k in keys)
        md.append(
            f"| {name} | {m.get('asked_tempo_n', 0)} | {tempo} | {octave} | {m.get('asked_key_n', 0)} "
            f"| {key} | {mode} |"
        )
    return md + [""]


def melody_section(metrics: dict[str, dict[str, Any]]) -> list[str]:
    scored = {name: m for name, m in metrics.items() if "melody_chroma" in m}
    if not scored:
        return []
    md = ["## Melody conditioning", "", MELODY, ""]
    md += ["| row | prompts with a melody | pitch class | contour |", "|---|---|---|---|"]
    for name, m in scored.items():
        n = sum(a is not None for a in m["per_clip_melody_chroma"])
        md.append(f"| {name} | {n} | {_fmt(m['melody_chroma'])} | {_fmt(m['melody_contour'])} |")
    generated = metrics.get("generated", {})
    if "melody_with" in generated:
        cells = " | ".join(_fmt(generated[k]) for k in ("melody_with", "melody_without", "melody_gain"))
        md += ["", MELODY_BASELINE, ""]
        md += [
            "| prompts | pitch class with the melody | without (same text and seed) | difference |",
            "|---|---|---|---|",
            f"| {generated['melody_n']} | {cells} |",
        ]
    return md + [""]


def plot_spectrograms(path: Path, samples: dict[str, torch.Tensor], sample_rate: int) -> Path:
    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 2.2 * len(samples)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], samples.items()):
        mel = librosa.feature.melspectrogram(y=wav.numpy(), sr=sample_rate, n_mels=80)
        librosa.display.specshow(
            librosa.power_to_db(mel, ref=np.max), sr=sample_rate, x_axis="time", y_axis="mel", ax=ax
        )
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def plot_bars(path: Path, metrics: dict[str, dict[str, Any]], prefix: str, title: str) -> Path | None:
    keys = sorted({k for m in metrics.values() for k in m if k.startswith(prefix)})
    if not keys:
        return None
    x = np.arange(len(keys))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(keys)), 3))
    for i, (row, m) in enumerate(metrics.items()):
        ax.bar(x + i * width, [m.get(k, np.nan) for k in keys], width, label=row)
    ax.set_xticks(
        x + width * (len(metrics) - 1) / 2, [k[len(prefix) :] for k in keys], rotation=30, fontsize=8
    )
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Save ``fig`` as ``path`` (its format from the extension) through a temporary file, and close it."""
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip("."))
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return Path(path)


def write_report(
    out_dir: str | Path,
    metrics: dict[str, dict[str, Any]],
    info: dict[str, Any],
    samples: dict[str, torch.Tensor] | None = None,
    sample_rate: int = 24000,
    texts: list[str] | None = None,
) -> Path:
    """``out_dir/metrics.json`` (everything, per-clip scores included), ``report.md`` and plots;
    ``texts`` are the prompts, for the per-prompt note-change table."""
    import librosa.display  # noqa: F401  (registers specshow)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "metrics.json", json.dumps({"info": info, "rows": metrics}, indent=2, default=str) + "\n"
    )
    plots = [
        p
        for p in (
            plot_bars(
                out / "adherence.png", metrics, "adherence_", "prompt adherence (accuracy) by attribute"
            ),
            plot_bars(out / "kld_by_head.png", metrics, "kld_", "KLD by classifier head (lower is better)"),
            plot_spectrograms(out / "spectrograms.png", samples, sample_rate) if samples else None,
        )
        if p is not None
    ]
    summary = {
        r: {k: v for k, v in m.items() if k != "seconds" and not k.startswith(("per_clip_", *SECTIONS))}
        for r, m in metrics.items()
    }
    md = ["# Evaluation report", ""]
    md += [f"- {k}: {v}" for k, v in info.items()]
    md += ["", "## Rows", ""] + [f"- **{r}**: {ROW_NOTES.get(r, '')}" for r in metrics]
    md += [
        "",
        "## Metrics",
        "",
        "FAD and KLD: lower is better; MCC and adherence: higher is better.",
        "",
        table(summary),
        "",
    ]
    md += asked_section(metrics) + moves_section(metrics, texts) + melody_section(metrics)
    md += [f"![{p.stem}]({p.name})" for p in plots]
    return write_text_atomic(out / "report.md", "\n".join(md) + "\n")
