"""How long `musiclm generate` takes from the shell for 10 s of music, process start included, and where
the time goes.

``shell``: the command itself, ``musiclm generate "a calm piano melody" --duration 10 --out OUT.wav
--overwrite``, as a user runs it. ``parts``: the same work in a fresh interpreter, step by step: importing
torch, importing the pipeline, loading the shipped model (``load_by_part``: each part's share, the
libraries a part imports first counted in its share) and generating. ``rest``: what the command spends
beyond its parts (Python's start, the command line, the request's checks, writing the file, exit).
Medians of START_ROUNDS (3) rounds, the command and the parts taking turns. Each figure is wall time and
CPU time (user + system, every thread): on a machine that other jobs share, the CPU time is what an idle
machine's wall time would be, within the threads' overlap. Set BENCH_CONDITIONS to describe the machine's
load (recorded with the figures, beside the load averages).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record

PROMPT = "a calm piano melody"
SECONDS = 10.0
ARGS = ["generate", PROMPT, "--duration", f"{SECONDS:g}", "--overwrite"]  # and --out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_parts() -> dict:
    """The command's parts in this fresh interpreter: ``{step: [wall s, cpu s]}``."""
    steps: dict = {}

    def timed(name: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        steps[name] = [time.perf_counter() - wall, time.process_time() - cpu]
        return result

    timed("import_torch", lambda: importlib.import_module("torch"))
    pipeline = timed("import_pipeline", lambda: importlib.import_module("musiclm.pipeline"))
    by_part: dict = {}
    load_component = pipeline.load_component

    def load_timed(directory, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        part = load_component(directory, *args, **kwargs)
        by_part[Path(directory).name] = [time.perf_counter() - wall, time.process_time() - cpu]
        return part

    pipeline.load_component = load_timed
    model = timed("load", pipeline.MusicLM.from_pretrained)
    timed("generate", lambda: model.generate([PROMPT], SECONDS))
    return {**steps, "load_by_part": by_part}


def shell_command(out: Path) -> list[float]:
    """Run the command as a user would: its wall and CPU seconds."""
    command = [str(Path(sys.executable).with_name("musiclm")), *ARGS, "--out", str(out)]
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True, capture_output=True)
    return [time.perf_counter() - wall, _children_cpu() - cpu]


def parts() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_start", "parts"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _medians(runs: list[list[float]]) -> dict:
    return {
        "wall_s": round(statistics.median(r[0] for r in runs), 2),
        "cpu_s": round(statistics.median(r[1] for r in runs), 2),
    }


def main() -> None:
    rounds = int(os.environ.get("START_ROUNDS", "3"))
    results: dict = {
        "conditions": os.environ.get("BENCH_CONDITIONS", ""),
        "niceness": os.nice(0),
        "load_average_before": os.getloadavg()[0],
        "shell_command": shlex.join(["musiclm", *ARGS, "--out", "OUT.wav"]),
        "rounds": rounds,
    }
    shell_runs, part_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            shell_runs.append(shell_command(Path(tmp) / "start.wav"))
            part_runs.append(parts())
    results["load_average_after"] = os.getloadavg()[0]
    results["shell"] = {
        **_medians(shell_runs),
        "runs_wall_cpu_s": [[round(x, 2) for x in r] for r in shell_runs],
    }
    steps = ("import_torch", "import_pipeline", "load", "generate")
    results["parts"] = {step: _medians([run[step] for run in part_runs]) for step in steps}
    by_part = [run["load_by_part"] for run in part_runs]
    results["load_by_part"] = {part: _medians([run[part] for run in by_part]) for part in by_part[0]}
    results["rest"] = {
        kind: round(results["shell"][kind] - sum(results["parts"][step][kind] for step in steps), 2)
        for kind in ("wall_s", "cpu_s")
    }
    record("start", results)


if __name__ == "__main__":
    if sys.argv[1:] == ["parts"]:
        print(json.dumps(child_parts()))
    else:
        main()
