"""Embedded dataset: build speed (x real time, 2 workers), render speed, loader throughput, balance.

Builds 1 h with the real builder (2 workers, default 10-30 s clips, all soundfonts; the target is
>= 150x real time, i.e. 20 h in <= 8 minutes on 2 cores), then renders the same MIDI files twice side by
side: in this process (``render_midi``, the builder's way) and with one ``fluidsynth`` process per file
(the builder's way before), and times random 10 s crops through ``AudioCropDataset``. It reads the
attribute balance (and the wall time) of a big build if there is one: DATA_BIG_BUILD, by default
``data/embedded`` (what ``musiclm data build --out data/embedded --hours 20`` makes).
The machine's load from other jobs is recorded, since it shares 2 cores.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import record
from musiclm.data.build import BuildOptions, build
from musiclm.data.datasets import AudioCropDataset
from musiclm.data.manifest import read_manifest
from musiclm.data.render import SOUNDFONTS, render_midi

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


RENDERED = 24  # clips rendered both ways


def render_side_by_side(clips: list, tmp: Path) -> dict:
    """Seconds to render each clip's MIDI in this process and with one fluidsynth process, in turns."""
    fonts = {name: path for name, (path, _, _) in SOUNDFONTS.items()}
    in_process, one_process_each = [], []
    for clip in clips:
        font, rate = fonts[clip.attributes["soundfont"]], clip.sample_rate
        start = time.perf_counter()
        render_midi(clip.midi, font, rate, clip.attributes["gain"], clip.attributes["reverb"], clip.duration)
        in_process.append(time.perf_counter() - start)
        command = ["fluidsynth", "-ni", "-q", "-g", str(clip.attributes["gain"]), "-r", str(rate)]
        command += ["-R", str(int(clip.attributes["reverb"])), "-C", "0", "-F", str(tmp / "cli.wav")]
        start = time.perf_counter()
        subprocess.run([*command, font, str(clip.midi)], check=True, capture_output=True)
        one_process_each.append(time.perf_counter() - start)
    audio = sum(clip.duration for clip in clips)
    return {
        "clips": len(clips),
        "audio_seconds": round(audio, 1),
        "in_process_x_real_time_1_core": round(audio / sum(in_process), 1),
        "fluidsynth_process_per_clip_x_real_time_1_core": round(audio / sum(one_process_each), 1),
        "median_ratio": round(statistics.median(b / a for a, b in zip(in_process, one_process_each)), 1),
    }


def main() -> None:
    results: dict = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = build(BuildOptions(out=Path(tmp), hours=1.0, workers=2, seed=123))
        wall = time.perf_counter() - start
        card = json.loads((Path(tmp) / "card.json").read_text())
        audio_s = card["hours"] * 3600
        results["build"] = {
            "audio_seconds": round(audio_s, 1),
            "wall_seconds": round(wall, 1),
            "clips": card["clips"],
            "x_real_time_2_workers": round(audio_s / wall, 2),
            "extrapolated_wall_seconds_for_20_hours": round(20 * 3600 * wall / audio_s),
        }
        results["render"] = render_side_by_side(read_manifest(manifest)[:RENDERED], Path(tmp))
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
