"""Acoustic stages on music with a known score (``musiclm eval-melodies``): the shipped pipeline, and any
other pipeline folders named in MELODY_PIPELINES (colon-separated), on the same 29 renders and seed.

Rows per pipeline: the renders themselves (what the detectors make of the truth), the codec alone (the
ceiling of anything the stages make) and the acoustic stages given the renders' real semantic tokens.
Targets (issue "An acoustic stage that plays its semantic tokens"): acoustic-stage pitch >= 0.8 on slow
melodies (<= 2 notes/s) and >= 0.7 on fast ones, onset F1 >= 0.8.
"""

from __future__ import annotations

import os
import time

from benchmarks.common import record, repo_relative


def main() -> None:
    import torch

    from musiclm.evaluation import melodies
    from musiclm.pipeline import SHIPPED_MODEL, MusicLM

    folders = [str(SHIPPED_MODEL)] + [p for p in os.environ.get("MELODY_PIPELINES", "").split(":") if p]
    results: dict = {"load_average_before": os.getloadavg()[0], "items": len(melodies.ITEMS), "seed": 0}
    results["pipelines"] = {}
    for folder in folders:
        start = time.perf_counter()
        with torch.no_grad():
            check = melodies.check_acoustic_stages(MusicLM.from_pretrained(folder), seed=0)
        results["pipelines"][repo_relative(folder)] = {
            "wall_s": round(time.perf_counter() - start, 1),
            "summary": check["summary"],
            "items": check["rows"],
        }
    results["load_average_after"] = os.getloadavg()[0]
    record("melodies", results)


if __name__ == "__main__":
    main()
