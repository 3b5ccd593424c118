"""Generation speed of whole pipelines, side by side: 10 s for one prompt with guidance 3, model loading
excluded, the pipelines taking turns in each of 3 rounds (so a noisy machine slows them alike).

The shipped pipeline is always measured; set GENERATION_PIPELINES to a colon-separated list of other
pipeline folders (e.g. one without a fine stage) to put beside it. The target for `small`: 10 s in
<= 10 s on 2 cores.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from benchmarks.common import record, repo_relative

PROMPT = "a slow, melancholic string quartet in D minor"
SECONDS, GUIDANCE, ROUNDS = 10.0, 3.0, 3


def main() -> None:
    from musiclm.pipeline import SHIPPED_MODEL, MusicLM

    folders = [str(SHIPPED_MODEL)] + [p for p in os.environ.get("GENERATION_PIPELINES", "").split(":") if p]
    models = {folder: MusicLM.from_pretrained(folder) for folder in folders}
    times: dict[str, list[float]] = {folder: [] for folder in folders}
    with torch.inference_mode():
        for round_ in range(ROUNDS):
            for folder, model in models.items():
                start = time.perf_counter()
                model.generate([PROMPT], SECONDS, seed=round_, guidance=GUIDANCE)
                times[folder].append(time.perf_counter() - start)
    record(
        "generation",
        {
            "seconds_of_audio": SECONDS,
            "guidance": GUIDANCE,
            "pipelines": {
                repo_relative(folder): {
                    "fine_stage": models[folder].stages.fine is not None,
                    "median_s": round(statistics.median(t), 2),
                    "runs_s": [round(x, 2) for x in t],
                }
                for folder, t in times.items()
            },
        },
    )
