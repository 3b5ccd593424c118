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

ROW_NOTES = {
    "generated": "the model under test",
    "ground truth": "held-out real clips of the prompts (ceiling)",
    "codec resynthesis": "ground truth through the codec (the codec's ceiling)",
    "random training": "random training clips that ignore the prompt (floor)",
}
LOWER_IS_BETTER = ("fad", "kld")


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


def plot_spectrograms(path: Path, samples: dict[str, torch.Tensor], sample_rate: int) -> Path:
    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 2.2 * len(samples)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], samples.items()):
        mel = librosa.feature.melspectrogram(y=wav.numpy(), sr=sample_rate, n_mels=80)
        librosa.display.specshow(
            librosa.power_to_db(mel, ref=np.max), sr=sample_rate, x_axis="time", y_axis="mel", ax=ax
        )
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


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
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(
    out_dir: str | Path,
    metrics: dict[str, dict[str, Any]],
    info: dict[str, Any],
    samples: dict[str, torch.Tensor] | None = None,
    sample_rate: int = 24000,
) -> Path:
    """``out_dir/metrics.json`` (everything, per-clip adherence included), ``report.md`` and plots."""
    import librosa.display  # noqa: F401  (registers specshow)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps({"info": info, "rows": metrics}, indent=2, default=str) + "\n"
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
        r: {k: v for k, v in m.items() if k not in ("per_clip_adherence", "seconds")}
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
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"
