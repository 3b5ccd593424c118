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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import train_app
from musiclm.cli.common import Device, Manifests, OutDir, Preset, refusing_bad_input, setting_changes
from musiclm.files import write_text_atomic

TRAINED_PARTS = ("codec", "w2vbert", "mulan", "melody", "semantic_stage", "coarse_stage", "fine_stage")

# Semantic vocabulary per preset: the paper's 1024 clusters need hours of audio to fill.
KMEANS_CLUSTERS = {"tiny": 32, "small": 512, "paper": 1024}
# Token bytes per second of audio, an upper bound: int32 acoustic tokens at 50 Hz x 12 levels (the
# paper's), semantic at 25 Hz, MuLan and melody windows; shard headers and paths ride on the 2x margin.
TOKEN_BYTES_PER_SECOND = 4 * (50 * 12 + 25 + 12 + 24)
SAMPLED_FILES = 20  # files whose audio is read before training (every file is checked to exist)


def preflight(data: list[Path], out: Path, melody: bool) -> bool:
    """Everything that can be checked before hours of training: each failure is one error naming the
    problem and the fix. Returns whether the melody embedder can be trained (pairs present)."""
    import shutil

    from musiclm.audio import AudioError, audio_info, read_clip
    from musiclm.data.manifest import ManifestError, read_manifest
    from musiclm.mulan.melody import clip_attr

    clips = []
    for manifest in data:
        try:
            clips += read_manifest(manifest)  # parses every line, checks every file exists
        except ManifestError as err:
            raise typer.BadParameter(f"{err}; fix the manifest before training", param_hint="--data") from err
    train = [c for c in clips if c.split == "train"]
    if not train:
        raise typer.BadParameter(
            f"no clips of split 'train' in {[str(m) for m in data]}", param_hint="--data"
        )
    if not any(c.captions for c in train):
        raise typer.BadParameter(
            "no training clip has a caption: MuLan learns text from captions "
            "(add .txt/.json sidecars and rerun musiclm data index)",
            param_hint="--data",
        )
    step = max(1, len(clips) // SAMPLED_FILES)
    seconds = 0.0
    for number, clip in enumerate(clips):
        try:
            if number % step == 0:
                read_clip(clip, seconds=1.0)
            seconds += clip.duration if clip.duration is not None else audio_info(clip.path).duration
        except AudioError as err:
            raise typer.BadParameter(
                f"{err}; remove it from the manifest or replace it", param_hint="--data"
            ) from err
    if melody:
        groups = Counter(clip_attr(c, "melody_group") for c in train)
        pairs = sum(n > 1 for group, n in groups.items() if group is not None)
        if pairs < 2:
            typer.echo(
                f"notice: {pairs} melody pair(s) in the training clips (the melody embedder needs "
                "clips of 2+ melody_groups): melody conditioning is skipped; pass --no-melody to "
                "silence this"
            )
            melody = False
    from musiclm.training.engine import probe_writable

    try:
        probe_writable(out)
    except OSError as err:
        raise typer.BadParameter(
            f"cannot write to {out} ({err.strerror}); choose a writable folder", param_hint="--out"
        ) from err
    need = 2 * seconds * TOKEN_BYTES_PER_SECOND
    free = shutil.disk_usage(out).free
    if free < need:
        raise typer.BadParameter(
            f"{free / 1e9:.2f} GB free under {out}, but the tokens of "
            f"{seconds / 3600:.1f} h of audio need about {need / 1e9:.2f} GB; "
            "free space or choose another --out",
            param_hint="--out",
        )
    return melody


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
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help=(
                "Override one part's setting: --set PART.model.FIELD=VALUE or --set PART.train.FIELD=VALUE, "
                "PART one of " + ", ".join(TRAINED_PARTS) + " (repeatable)."
            ),
        ),
    ] = None,
) -> None:
    """Train codec, w2v-BERT + k-means, MuLan (+ melody), tokenize, then the three stages; write
    OUT/pipeline."""
    from musiclm.training.distributed import barrier, setup

    if preset not in KMEANS_CLUSTERS:
        raise typer.BadParameter(f"--preset must be one of {sorted(KMEANS_CLUSTERS)}")
    per_part: dict[str, list[str]] = {part: [] for part in TRAINED_PARTS}
    for item in overrides or []:
        part, dot, rest = item.partition(".")
        if not dot or part not in per_part or not rest.startswith(("model.", "train.")):
            raise typer.BadParameter(
                f"--set expects PART.model.FIELD=VALUE or PART.train.FIELD=VALUE with PART one "
                f"of {', '.join(TRAINED_PARTS)}; got {item!r}"
            )
        per_part[part].append(rest)
    melody = preflight(data, out, melody)
    _, dist_info = setup(device)  # the group exists before the codec is built: its codebooks sync in it
    parts = out / "parts"
    one_writer = {"semantic", "pipeline"}  # parts that rank 0 makes alone
    plan = _plan(data, out, preset, melody, device, per_part, steps_scale)

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
            with refusing_bad_input():
                run()
        barrier()
        if dist_info.is_main:
            write_text_atomic(marker, f"{time.perf_counter() - part_started:.1f} s\n")
    minutes = (time.perf_counter() - started) / 60
    echo(
        f"pipeline ready in {out / 'pipeline'} ({minutes:.1f} min); try:\n"
        f'  musiclm generate "a calm piano piece" --checkpoint {out / "pipeline"} --out out.wav'
    )


def _plan(
    data: list[Path],
    out: Path,
    preset: str,
    melody: bool,
    device: str,
    per_part: dict[str, list[str]],
    steps_scale: float,
) -> list[tuple[str, Callable[[], object]]]:
    """Each part's name and the library call that makes it, in the order of their dependencies."""
    from musiclm.codec.recipe import train_codec
    from musiclm.codec.soundstream import TRAIN_DEFAULTS as CODEC_DEFAULTS
    from musiclm.files import check_output_folder
    from musiclm.mulan.melody import TRAIN_DEFAULTS as MELODY_DEFAULTS
    from musiclm.mulan.model import TRAIN_DEFAULTS as MULAN_DEFAULTS
    from musiclm.mulan.recipe import train_melody, train_mulan
    from musiclm.pipeline import MusicLM
    from musiclm.semantic.recipe import fit_kmeans, train_w2vbert
    from musiclm.semantic.w2vbert import TRAIN_DEFAULTS as W2VBERT_DEFAULTS
    from musiclm.stages.recipe import tokenize_manifests, train_stage
    from musiclm.stages.stages import TRAIN_DEFAULTS as STAGE_DEFAULTS

    parts = out / "parts"
    melody_dir = parts / "melody" if melody else None
    stage_dirs = [parts / f"{stage}_stage" for stage in ("semantic", "coarse", "fine")]

    def changes(part: str, defaults: dict) -> dict[str, dict]:
        """The ``model`` and ``train`` changes of a part's recipe: its --set items, the device, and its
        preset's steps scaled."""
        steps = None if steps_scale == 1.0 else max(1, round(defaults[preset]["steps"] * steps_scale))
        model, train = setting_changes(steps, device=device, overrides=per_part[part])
        return {"model": model, "train": train}

    def kmeans() -> None:
        # this run's own part: a rerun redoes a part without its .done marker
        check_output_folder(parts / "semantic", inputs=[*data, parts / "w2vbert"], overwrite=True)
        fit_kmeans(
            data, parts / "semantic", parts / "w2vbert", clusters=KMEANS_CLUSTERS[preset], device=device
        )

    def assemble() -> None:
        inputs = [parts / "codec", parts / "semantic", parts / "mulan", *stage_dirs, melody_dir]
        # this run's own pipeline folder, redone when its .done marker is missing
        check_output_folder(out / "pipeline", inputs=inputs, overwrite=True)
        pipeline = MusicLM.from_parts(*inputs)
        typer.echo(f"pipeline saved to {pipeline.save_pretrained(out / 'pipeline')}")

    plan: list[tuple[str, Callable[[], object]]] = [
        ("codec", lambda: train_codec(data, parts / "codec", preset, **changes("codec", CODEC_DEFAULTS))),
        (
            "w2vbert",
            lambda: train_w2vbert(data, parts / "w2vbert", preset, **changes("w2vbert", W2VBERT_DEFAULTS)),
        ),
        ("semantic", kmeans),
        ("mulan", lambda: train_mulan(data, parts / "mulan", preset, **changes("mulan", MULAN_DEFAULTS))),
    ]
    if melody:
        plan.append(
            (
                "melody",
                lambda: train_melody(data, parts / "melody", preset, **changes("melody", MELODY_DEFAULTS)),
            )
        )
    plan.append(
        (
            "tokens",
            lambda: tokenize_manifests(
                data,
                parts / "tokens",
                parts / "codec",
                parts / "semantic",
                parts / "mulan",
                melody_dir,
                device=device,
            ),
        )
    )
    for stage, folder in zip(("semantic", "coarse", "fine"), stage_dirs):
        plan.append(
            (
                folder.name,
                lambda stage=stage, folder=folder: train_stage(
                    stage, parts / "tokens", folder, preset, **changes(folder.name, STAGE_DEFAULTS)
                ),
            )
        )
    plan.append(("pipeline", assemble))
    return plan
