"""Generation speed of whole pipelines, side by side: 10 s for one prompt with guidance 3, model loading
excluded, the pipelines taking turns in each of 3 rounds (so a noisy machine slows them alike).

The shipped pipeline is always measured; set GENERATION_PIPELINES to a colon-separated list of other
pipeline folders (e.g. one without a fine stage) to put beside it, and GENERATION_CANDIDATES to a
colon-separated list of samples per prompt (e.g. 1:4) to measure each pipeline with each (default: each
pipeline's own). The target for `small`: 10 s in <= 10 s on 2 cores.
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
    counts = [int(n) for n in os.environ.get("GENERATION_CANDIDATES", "").split(":") if n] or [None]
    models = {folder: MusicLM.from_pretrained(folder) for folder in folders}
    runs = [(folder, models[folder].candidates_for(n)) for folder in folders for n in counts]
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    with torch.inference_mode():
        for round_ in range(ROUNDS):
            for folder, candidates in runs:
                start = time.perf_counter()
                models[folder].generate(
                    [PROMPT], SECONDS, seed=round_, guidance=GUIDANCE, candidates=candidates
                )
                times[folder, candidates].append(time.perf_counter() - start)
    record(
        "generation",
        {
            "seconds_of_audio": SECONDS,
            "guidance": GUIDANCE,
            "pipelines": {
                repo_relative(folder) + ("" if len(counts) == 1 else f" (candidates {candidates})"): {
                    "fine_stage": models[folder].stages.fine is not None,
                    "candidates": candidates,
                    "median_s": round(statistics.median(t), 2),
                    "runs_s": [round(x, 2) for x in t],
                }
                for (folder, candidates), t in times.items()
            },
        },
    )
