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

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from musiclm.cli.apps import train_app
from musiclm.cli.common import Device, Manifests, OutDir, Preset, refusing_bad_input, setting_changes
from musiclm.files import check_output_folder, write_text_atomic

TRAINED_PARTS = ("codec", "w2vbert", "mulan", "melody", "semantic_stage", "coarse_stage", "fine_stage")
ONE_WRITER = {"semantic", "pipeline"}  # parts that rank 0 makes alone
RECIPE_FILE = "recipe.json"  # beside a part's weights: what trained it, as `--config` reads it

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


@dataclasses.dataclass
class Step:
    """One part of the chain: the library call that makes it, with its arguments (printed by --dry-run)."""

    name: str
    call: Callable[..., object]
    arguments: dict[str, Any]

    def run(self) -> object:
        return self.call(**self.arguments)


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
    recipes: Annotated[
        Path | None,
        typer.Option(
            help="Rebuild a pipeline from the recipe files beside its parts (checkpoints/musiclm_small: "
            "PART/recipe.json and recipe.json) instead of the preset's chain; --set still applies."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print each part's call and settings in order, and train nothing.")
    ] = False,
) -> None:
    """Train codec, w2v-BERT + k-means, MuLan (+ melody), tokenize, then the three stages; write
    OUT/pipeline."""
    from musiclm.training.distributed import barrier, setup

    if preset not in KMEANS_CLUSTERS:
        raise typer.BadParameter(f"--preset must be one of {sorted(KMEANS_CLUSTERS)}")
    per_part = _per_part_overrides(overrides)
    if not dry_run:
        melody = preflight(data, out, melody)
    with refusing_bad_input():
        if recipes is not None:
            plan = _recipe_plan(data, out, recipes, device, per_part, melody)
        else:
            plan = _plan(data, out, preset, melody, device, per_part, steps_scale)
    if dry_run:
        for number, step in enumerate(plan, start=1):
            typer.echo(f"[{number}/{len(plan)}] {step.name}: {json.dumps(step.arguments, default=str)}")
        return
    _, dist_info = setup(device)  # the group exists before the codec is built: its codebooks sync in it
    echo = typer.echo if dist_info.is_main else lambda _: None
    started = time.perf_counter()
    for number, step in enumerate(plan, start=1):
        marker = (out / "pipeline" if step.name == "pipeline" else out / "parts" / step.name) / ".done"
        if marker.exists():
            echo(f"[{number}/{len(plan)}] {step.name}: done before, skipped")
            continue
        echo(f"[{number}/{len(plan)}] {step.name} ...")
        part_started = time.perf_counter()
        if dist_info.is_main or step.name not in ONE_WRITER:
            with refusing_bad_input():
                step.run()
        barrier()
        if dist_info.is_main:
            write_text_atomic(marker, f"{time.perf_counter() - part_started:.1f} s\n")
    minutes = (time.perf_counter() - started) / 60
    echo(
        f"pipeline ready in {out / 'pipeline'} ({minutes:.1f} min); try:\n"
        f'  musiclm generate "a calm piano piece" --checkpoint {out / "pipeline"} --out out.wav'
    )


def _per_part_overrides(overrides: list[str] | None) -> dict[str, list[str]]:
    """``--set PART.model.FIELD=VALUE`` items -> ``{PART: ["model.FIELD=VALUE", ...]}``."""
    per_part: dict[str, list[str]] = {part: [] for part in TRAINED_PARTS}
    for item in overrides or []:
        part, dot, rest = item.partition(".")
        if not dot or part not in per_part or not rest.startswith(("model.", "train.")):
            raise typer.BadParameter(
                f"--set expects PART.model.FIELD=VALUE or PART.train.FIELD=VALUE with PART one "
                f"of {', '.join(TRAINED_PARTS)}; got {item!r}"
            )
        per_part[part].append(rest)
    return per_part


def _plan(
    data: list[Path],
    out: Path,
    preset: str,
    melody: bool,
    device: str,
    per_part: dict[str, list[str]],
    steps_scale: float,
) -> list[Step]:
    """Each part's step in the order of their dependencies, with the preset's settings."""
    from musiclm.parts import PARTS
    from musiclm.semantic.recipe import fit_kmeans
    from musiclm.stages.recipe import tokenize_manifests

    parts = out / "parts"

    def trained(name: str, **inputs: Any) -> Step:
        """A registry part's step: its --set items, the device, and its preset's steps scaled."""
        steps = PARTS[name].train_config(preset).steps
        scaled = None if steps_scale == 1.0 else max(1, round(steps * steps_scale))
        model, train = setting_changes(scaled, device=device, overrides=per_part[name])
        arguments = {**inputs, "out": parts / name, "preset": preset, "model": model, "train": train}
        return Step(name, PARTS[name].train, arguments)

    kmeans = {"model": parts / "w2vbert", "clusters": KMEANS_CLUSTERS[preset], "device": device}
    plan = [
        trained("codec", data=data),
        trained("w2vbert", data=data),
        Step("semantic", _fresh_folder(fit_kmeans), {"data": data, "out": parts / "semantic", **kmeans}),
        trained("mulan", data=data),
    ]
    if melody:
        plan.append(trained("melody", data=data))
    tokens = {"codec", "semantic", "mulan", *(("melody",) if melody else ())}
    tokenizing = {**{name: parts / name for name in tokens}, "device": device}
    plan.append(Step("tokens", tokenize_manifests, {"data": data, "out": parts / "tokens", **tokenizing}))
    stages = [f"{stage}_stage" for stage in ("semantic", "coarse", "fine")]
    plan += [trained(name, tokens=parts / "tokens") for name in stages]
    return plan + [_assembly(out, stages, melody)]


def _recipe_plan(
    data: list[Path], out: Path, recipes: Path, device: str, per_part: dict[str, list[str]], melody: bool
) -> list[Step]:
    """Each part's step in the order of their dependencies, with the settings of its recipe file in
    ``recipes`` (``PART/recipe.json``; the tokens' and the assembly's in ``recipe.json``). A recipe that
    continued an earlier part (``train.init``) trains from scratch here: that part is not rebuilt."""
    from musiclm.data.manifest import read_manifest
    from musiclm.parts import PARTS, read_json_object, read_run, recipe_arguments
    from musiclm.semantic.recipe import fit_kmeans
    from musiclm.stages.recipe import tokenize_manifests

    parts = out / "parts"
    pipeline = read_json_object(recipes / RECIPE_FILE, "give the folder of a pipeline with its recipe files")
    has = {name for name in (*TRAINED_PARTS, "semantic") if (recipes / name / RECIPE_FILE).is_file()}

    def replayed(name: str, **inputs: Any) -> Step:
        model, train = setting_changes(device=device, overrides=per_part[name])
        arguments = recipe_arguments(name, {}, model, train, recipes / name / RECIPE_FILE)
        if "init" not in train and arguments["train"].pop("init", None) is not None:
            typer.echo(
                f"note: {name}'s recipe continued an earlier {name} (train.init); trained from scratch"
            )
        return Step(name, PARTS[name].train, {**inputs, "out": parts / name, **arguments})

    kmeans = read_run(recipes / "semantic" / RECIPE_FILE, configs=False).options
    features = {"model": parts / "w2vbert"} if kmeans.get("backbone", "w2vbert") == "w2vbert" else {}
    plan = [replayed("codec", data=data)] + ([replayed("w2vbert", data=data)] if features else [])
    semantic = {"data": data, "out": parts / "semantic", **features, **kmeans, "device": device}
    plan += [Step("semantic", _fresh_folder(fit_kmeans), semantic), replayed("mulan", data=data)]
    melody = melody and "melody" in has
    plan += [replayed("melody", data=data)] if melody else []
    tokens = {name: parts / name for name in ("codec", "semantic", "mulan", *(("melody",) if melody else ()))}
    tokenizing = {**tokens, **pipeline.get("tokenize", {}), "device": device}
    plan.append(Step("tokens", tokenize_manifests, {"data": data, "out": parts / "tokens", **tokenizing}))
    held_out = {}  # the recipes keep the step of lowest validation loss where there is a valid split
    if any(clip.split == "valid" for manifest in data for clip in read_manifest(manifest, check_files=False)):
        valid = {"data": data, "out": parts / "tokens_valid", "split": "valid", **tokenizing}
        plan.append(Step("tokens_valid", tokenize_manifests, valid))
        held_out = {"val_tokens": parts / "tokens_valid"}
    stages = [name for name in ("semantic_stage", "coarse_stage", "fine_stage") if name in has]
    plan += [replayed(name, tokens=parts / "tokens", **held_out) for name in stages]
    assembly = {**_pipeline_defaults(recipes), **pipeline.get("assemble", {})}
    return plan + [_assembly(out, stages, melody, **assembly)]


def _pipeline_defaults(recipes: Path) -> dict[str, Any]:
    """The guidance and candidates the pipeline in ``recipes`` generates with by default (pipeline.json)."""
    from musiclm.parts import read_json_object

    found = read_json_object(recipes / "pipeline.json", "give the folder of an assembled pipeline")
    return {key: found[key] for key in ("guidance", "candidates") if key in found}


def _fresh_folder(fit_kmeans: Callable[..., object]) -> Callable[..., object]:
    """``fit_kmeans`` into this run's own folder: a rerun redoes a part without its .done marker."""

    def fit(data: list[Path], out: Path, **options: Any) -> object:
        check_output_folder(out, inputs=[*data, options.get("model")], overwrite=True)
        return fit_kmeans(data, out, **options)

    return fit


def _assembly(out: Path, stages: list[str], melody: bool, fp16: bool = False, **defaults: Any) -> Step:
    """The step that puts the trained parts into ``out/pipeline``; ``defaults``: its guidance and
    candidates."""
    parts = out / "parts"
    folders = {
        "codec": parts / "codec",
        "semantic": parts / "semantic",
        "mulan": parts / "mulan",
        "semantic_stage": parts / "semantic_stage",
        "coarse_stage": parts / "coarse_stage",
        "fine_stage": parts / "fine_stage" if "fine_stage" in stages else None,
        "melody": parts / "melody" if melody else None,
    }
    return Step("pipeline", _assemble, {"out": out / "pipeline", "fp16": fp16, **folders, **defaults})


def _assemble(
    out: Path, fp16: bool, guidance: float | None = None, candidates: int = 1, **folders: Any
) -> None:
    import torch

    from musiclm.pipeline import MusicLM

    # this run's own pipeline folder, redone when its .done marker is missing
    check_output_folder(out, inputs=list(folders.values()), overwrite=True)
    pipeline = MusicLM.from_parts(**folders, guidance=guidance, candidates=candidates)
    typer.echo(f"pipeline saved to {pipeline.save_pretrained(out, torch.float16 if fp16 else None)}")
