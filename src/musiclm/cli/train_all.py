"""``musiclm train all``: every part in order, each resumable, ending in one pipeline folder.

The order follows the dependencies of the paper's system: the codec, w2v-BERT and its k-means, and
MuLan (+ the melody embedder) only need audio (and captions); the token stages need the tokens those
three produce. A finished part leaves ``OUT/<part>/.done``; rerunning the command skips finished
parts and resumes an interrupted one from its latest checkpoint.

Under ``torchrun`` every rank trains each part data-parallel and tokenizes its share of the clips;
rank 0 alone fits the k-means and assembles the pipeline (MuLan and the melody embedder fit and save
their RVQ on rank 0 too), and all ranks meet at a barrier after each part, before the next reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import train_app
from musiclm.cli.common import Device, Manifests, OutDir, Preset

# Semantic vocabulary per preset: the paper's 1024 clusters need hours of audio to fill.
KMEANS_CLUSTERS = {"tiny": 32, "small": 512, "paper": 1024}


@train_app.command("all")
def train_all(
    data: Manifests,
    out: OutDir,
    preset: Preset = "small",
    melody: Annotated[bool, typer.Option(help="Also train the melody embedder (needs melody pairs).")] = True,
    steps_scale: Annotated[
        float, typer.Option(help="Multiply every part's preset step count (e.g. 0.1 for a quick run).")
    ] = 1.0,
    device: Device = "auto",
) -> None:
    """Train codec, w2v-BERT + k-means, MuLan (+ melody), tokenize, then the three stages; write OUT/pipeline."""
    from musiclm.cli import codec, mulan, semantic, stages
    from musiclm.training.distributed import barrier, setup

    if preset not in KMEANS_CLUSTERS:
        raise typer.BadParameter(f"--preset must be one of {sorted(KMEANS_CLUSTERS)}")
    _, dist_info = setup(device)  # the group exists before the codec is built: its codebooks sync in it
    out.mkdir(parents=True, exist_ok=True)
    parts = out / "parts"
    one_writer = {"semantic", "pipeline"}  # parts that rank 0 makes alone

    def steps_of(defaults: dict) -> int | None:
        return None if steps_scale == 1.0 else max(1, round(defaults["steps"] * steps_scale))

    from musiclm.codec.soundstream import train_defaults as codec_defaults
    from musiclm.mulan.model import TRAIN_DEFAULTS as MULAN_DEFAULTS
    from musiclm.stages.stages import TRAIN_DEFAULTS as STAGE_DEFAULTS

    plan: list[tuple[str, Callable[[], None]]] = [
        ("codec", lambda: codec.train_codec(
            data, parts / "codec", preset, steps=steps_of(codec_defaults(preset).to_dict()), device=device)),
        ("w2vbert", lambda: semantic.train_semantic(
            data, parts / "w2vbert", preset, steps=steps_of(semantic.TRAIN_DEFAULTS[preset]), device=device)),
        ("semantic", lambda: semantic.fit_kmeans(
            parts / "w2vbert", data, parts / "semantic", clusters=KMEANS_CLUSTERS[preset], device=device)),
        ("mulan", lambda: mulan.train_mulan(
            data, parts / "mulan", preset, steps=steps_of(MULAN_DEFAULTS[preset]), device=device)),
    ]
    if melody:
        from musiclm.mulan.melody import TRAIN_DEFAULTS as MELODY_DEFAULTS

        plan.append(("melody", lambda: mulan.train_melody(
            data, parts / "melody", preset, steps=steps_of(MELODY_DEFAULTS[preset]), device=device)))
    melody_dir = parts / "melody" if melody else None
    plan.append(("tokens", lambda: stages.tokenize(
        parts / "codec", parts / "semantic", parts / "mulan", data, parts / "tokens", melody=melody_dir,
        device=device)))
    for stage in ("semantic", "coarse", "fine"):
        plan.append((f"{stage}_stage", lambda stage=stage: stages.train_stage(
            stage, parts / "tokens", parts / f"{stage}_stage", preset,
            steps=steps_of(STAGE_DEFAULTS[preset]), device=device)))
    plan.append(("pipeline", lambda: stages.assemble(
        parts / "codec", parts / "semantic", parts / "mulan", out / "pipeline",
        parts / "semantic_stage", parts / "coarse_stage", parts / "fine_stage", melody=melody_dir)))

    echo = typer.echo if dist_info.is_main else lambda _: None
    started = time.perf_counter()
    for number, (name, run) in enumerate(plan, start=1):
        marker = (out / "pipeline" if name == "pipeline" else parts / name) / ".done"
        if marker.exists():
            echo(f"[{number}/{len(plan)}] {name}: done before, skipped")
            continue
        echo(f"[{number}/{len(plan)}] {name} ...")
        part_started = time.perf_counter()
        if dist_info.is_main or name not in one_writer:
            run()
        barrier()
        if dist_info.is_main:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{time.perf_counter() - part_started:.1f} s\n")
    minutes = (time.perf_counter() - started) / 60
    echo(f"pipeline ready in {out / 'pipeline'} ({minutes:.1f} min); try:\n"
         f"  musiclm generate \"a calm piano piece\" --checkpoint {out / 'pipeline'} --out out.wav")
