"""Helpers for benchmarks: timing medians and recording results with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
BUILDS = Path(__file__).parent / "data"  # datasets the benchmarks build for themselves (ignored by git)


def embedded_manifest(env: str, hours: float = 1.5, eval_every: int = 4) -> Path:
    """The manifest that the environment variable ``env`` names, else a small embedded build of its own
    (made by the real builder on first use, resumed or reused after): ``hours`` of audio with one work in
    every ``eval_every`` to valid and one to test, so that a small build has enough held-out clips."""
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not path.is_file():
            raise SystemExit(f"{env}={path} is not a manifest file; unset it to build a small dataset")
        return path
    from musiclm.data.build import BuildOptions, build

    out = BUILDS / f"embedded_{hours:g}h_every{eval_every}"
    print(f"building the benchmark dataset in {out} (set {env} to use another manifest)", flush=True)
    return build(BuildOptions(out=out, hours=hours, workers=2, seed=0, eval_every=eval_every))


def repo_relative(path: str | Path) -> str:
    """``path`` as results record it: relative to the repository when inside it, else its last part, so
    that no machine's folder names end up in committed results."""
    root = Path(__file__).resolve().parent.parent
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else resolved.name


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def median_time(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median seconds of ``fn`` by ``clock``: wall time, or ``time.process_time`` for the CPU time of a
    one-thread run on a machine that other jobs share."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def record(name: str, results: dict[str, Any]) -> None:
    from musiclm.files import write_text_atomic

    payload = {"command": " ".join(["python -m benchmarks", name]), "machine": machine(), **results}
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    sys.stdout.flush()
