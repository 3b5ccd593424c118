"""Embedded dataset: render speed (x real time, 2 workers), loader throughput, attribute balance.

Renders 0.1 h with the real builder (2 workers, default 10-30 s clips, all soundfonts), times
random 10 s crops through ``AudioCropDataset``, and reads the attribute balance (and the wall time)
of a big build if there is one: DATA_BIG_BUILD, by default ``data/embedded`` (what
``musiclm data build --out data/embedded --hours 2`` makes).
The machine's load from other jobs is recorded, since it shares 2 cores.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import record
from musiclm.data.build import BuildOptions, build
from musiclm.data.datasets import AudioCropDataset

BIG_BUILD = Path(os.environ.get("DATA_BIG_BUILD", "data/embedded"))
BALANCE = [
    "split",
    "families",
    "tempo_class",
    "mode",
    "key",
    "collection",
    "style",
    "soundfont",
    "lineup",
    "is_melody",
    "voices",
]


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 3) for k, v in counts.items()}


def main() -> None:
    results: dict = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = build(BuildOptions(out=Path(tmp), hours=0.1, workers=2, seed=123))
        wall = time.perf_counter() - start
        card = json.loads((Path(tmp) / "card.json").read_text())
        audio_s = card["hours"] * 3600
        results["render"] = {
            "audio_seconds": round(audio_s, 1),
            "wall_seconds": round(wall, 1),
            "clips": card["clips"],
            "x_real_time_2_workers": round(audio_s / wall, 2),
            "extrapolated_wall_seconds_for_1_hour": round(3600 * wall / audio_s),
        }
        ds = AudioCropDataset(manifest, sample_rate=24000, crop_seconds=10.0, split=None, with_text=True)
        ds[0]
        n, start = 60, time.perf_counter()
        for key in np.random.default_rng(0).integers(0, 2**31, n):
            ds[int(key)]
        results["loader"] = {
            "crop_seconds": 10.0,
            "sample_rate": 24000,
            "processes": 1,
            "crops_per_second": round(n / (time.perf_counter() - start), 1),
        }
    if (BIG_BUILD / "card.json").is_file():
        big = json.loads((BIG_BUILD / "card.json").read_text())
        results["big_build"] = {
            "path": str(BIG_BUILD),
            "hours": big["hours"],
            "hours_per_split": big["hours_per_split"],
            "clips": big["clips"],
            "works": big["works"],
            "melody_groups": big["melody_groups"],
            "wall_seconds": big["build_seconds"],
            "x_real_time": round(big["hours"] * 3600 / big["build_seconds"], 2),
            "skip_reasons": big["skip_reasons"],
            "balance": {name: shares(big["counts"][name]) for name in BALANCE},
        }
    results["load_average_after"] = os.getloadavg()[0]
    record("data", results)


if __name__ == "__main__":
    main()
