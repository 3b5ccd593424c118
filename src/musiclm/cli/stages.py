"""``musiclm tokenize``, ``musiclm train stage``, ``musiclm assemble`` and ``musiclm generate``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import app, train_app
from musiclm.cli.common import (
    BatchSize,
    Device,
    LearningRate,
    Manifests,
    OutDir,
    Overrides,
    Overwrite,
    RunFile,
    Steps,
    Strict,
    TrainPreset,
    refusing_bad_input,
    setting_changes,
)

Part = Annotated[Path, typer.Option(help="Folder of a saved part (save_pretrained).")]
ShippedPart = Annotated[
    Path | None, typer.Option(help="Folder of a saved part (default: the shipped model's).")
]
# `generate` reads each --style clip at this rate to refuse a bad one before the model loads: any rate tells a
# clip's length and loudness, and a low one is cheap (the model reads it again at MuLan's rate)
STYLE_CHECK_RATE = 16000


@app.command()
def tokenize(
    data: Manifests,
    out: OutDir,
    codec: ShippedPart = None,
    semantic: ShippedPart = None,
    mulan: ShippedPart = None,
    melody: Annotated[
        Path | None, typer.Option(help="Melody embedder folder (melody tokens; default: none).")
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Clips per shard file.")] = 64,
    split: Annotated[
        str,
        typer.Option(
            help="Manifest split to tokenize ('heldout': every split but train; 'all': every clip)."
        ),
    ] = "train",
    device: Device = "cpu",
    strict: Strict = False,
    refresh_mulan: Annotated[
        bool,
        typer.Option(
            help="Only recompute the MuLan audio and text tokens of the shards already in OUT with --mulan "
            "(after MuLan was retrained); acoustic, semantic and melody tokens stay. Resumable."
        ),
    ] = False,
    refresh_semantic: Annotated[
        bool,
        typer.Option(
            help="Only replace the semantic tokens of the shards already in OUT by --semantic's (to try "
            "another semantic tokenizer on the stages); acoustic, MuLan and melody tokens stay. Resumable."
        ),
    ] = False,
    fresh_captions: Annotated[
        int | None,
        typer.Option(
            help="MuLan text tokens of this many captions drawn from each rendered clip's attributes, beside "
            "its stored captions' (the stages' text-conditioned windows pick among them; default: 16)."
        ),
    ] = None,
) -> None:
    """Turn audio clips into token shards (acoustic, semantic, MuLan audio, melody); resumable,
    torchrun-aware."""
    from musiclm.stages.recipe import tokenize_manifests

    with refusing_bad_input():
        tokenize_manifests(
            data,
            out,
            codec,
            semantic,
            mulan,
            melody,
            split=split,
            refresh="semantic" if refresh_semantic else "mulan" if refresh_mulan else None,
            shard_size=shard_size,
            device=device,
            strict=strict,
            fresh_captions=fresh_captions,
        )


@app.command("pack-tokens")
def pack_tokens(
    tokens: Annotated[Path, typer.Argument(help="Token folder written by `musiclm tokenize`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the packed copy.")],
    levels: Annotated[
        int | None,
        typer.Option(help="Acoustic RVQ levels kept (default: the coarse stage's, the first third)."),
    ] = None,
) -> None:
    """Copy a token folder with int16 tokens and the coarse stage's acoustic levels only: what the semantic
    and coarse stages train from, small enough to carry to a GPU machine."""
    from musiclm.stages.shards import pack_tokens as pack

    packed = pack(tokens, out, levels)
    megabytes = packed.source_bytes / 1e6, packed.packed_bytes / 1e6
    typer.echo(f"{packed.shards} shard(s) packed into {out}: {megabytes[0]:.1f} MB -> {megabytes[1]:.1f} MB")


@train_app.command("stage")
def train_stage(
    tokens: Annotated[Path, typer.Option(help="Token folder written by `musiclm tokenize`.")],
    out: OutDir,
    stage: Annotated[str | None, typer.Option(help="semantic, coarse or fine (default: --config's).")] = None,
    preset: TrainPreset = None,
    coarse_quantizers: Annotated[
        int | None,
        typer.Option(
            help="RVQ levels of the coarse stage (default: the first third, as the paper's 4 of 12)."
        ),
    ] = None,
    val_tokens: Annotated[
        Path | None,
        typer.Option(
            help="Token folder of held-out clips (musiclm tokenize --split valid): validation loss, "
            "one window a clip."
        ),
    ] = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train one token stage from token shards with the shared engine."""
    from musiclm.parts import read_run, recipe_arguments
    from musiclm.stages.recipe import train_stage as train

    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    with refusing_bad_input():
        if stage is None and config is not None:  # an older run.json names its stage in the model only
            run = read_run(config)
            stage = run.options.get("stage", run.model.get("stage"))
        if stage is None:
            raise typer.BadParameter("--stage is required (semantic, coarse or fine) without a --config run")
        given = {"stage": stage, "preset": preset, "coarse_quantizers": coarse_quantizers}
        arguments = recipe_arguments(f"{stage}_stage", given, model, settings, config)
        train(tokens=tokens, out=out, val_tokens=val_tokens, **arguments)


@app.command()
def assemble(
    codec: Part,
    semantic: Part,
    mulan: Part,
    out: OutDir,
    semantic_stage: Part,
    coarse_stage: Part,
    fine_stage: Annotated[
        Path | None,
        typer.Option(help="Fine stage folder (without one the codec decodes the coarse levels alone)."),
    ] = None,
    melody: Annotated[Path | None, typer.Option(help="Melody embedder folder.")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            help="The pipeline's default classifier-free guidance scale, chosen by measuring adherence "
            "(musiclm eval-pairs). Default: off, the paper's sampling."
        ),
    ] = None,
    candidates: Annotated[
        int,
        typer.Option(
            help="The pipeline's default samples per prompt, of which MuLan keeps the closest to the prompt; "
            "chosen by measuring adherence (musiclm eval-pairs). Default: 1, the paper's sampling."
        ),
    ] = 1,
    fp16: Annotated[bool, typer.Option(help="Store weights in float16 (half the size).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Put trained parts together into one pipeline folder (checks that they fit each other)."""
    import torch

    from musiclm.files import check_output_folder
    from musiclm.pipeline import MusicLM

    parts = [codec, semantic, mulan, semantic_stage, coarse_stage, fine_stage, melody]
    check_output_folder(out, inputs=parts, overwrite=overwrite)
    model = MusicLM.from_parts(*parts, guidance=guidance, candidates=candidates)
    typer.echo(f"pipeline saved to {model.save_pretrained(out, torch.float16 if fp16 else None)}")


@app.command()
def generate(
    prompts: Annotated[list[str] | None, typer.Argument(help="Text prompt(s); one output file each.")] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            help="Batch mode: prompts from a .txt (one a line), a .jsonl prompt file or a MusicCaps .csv."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Prompts generated together (one forward pass per batch).")
    ] = 8,
    duration: Annotated[float, typer.Option(help="Seconds of music to generate.")] = 10.0,
    out: Annotated[Path, typer.Option("--out", help="Output .wav (several prompts: OUT-0.wav, ...).")] = Path(
        "out.wav"
    ),
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Pipeline folder (musiclm assemble). Default: the shipped checkpoints/musiclm_small."
        ),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            help="Batch mode: skip batches whose files all exist and keep any file that exists (rerun an "
            "interrupted batch job to resume)."
        ),
    ] = False,
    overwrite: Overwrite = False,
    seed: Annotated[int | None, typer.Option(help="Random seed: the same seed gives the same music.")] = None,
    melody: Annotated[Path | None, typer.Option(help="Hummed/whistled melody wav to follow.")] = None,
    continue_: Annotated[Path | None, typer.Option("--continue", help="Audio to continue.")] = None,
    story: Annotated[
        list[str] | None,
        typer.Option(help="Story mode: --story 'TEXT:SECONDS', repeated; the seconds add up to --duration."),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            help="Classifier-free guidance scale; 1: off, the paper's sampling. Default: the pipeline's "
            "(3 for the shipped model)."
        ),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(
            help="Samples drawn per prompt, of which MuLan keeps the closest to the prompt; 1: no choosing, "
            "the paper's sampling. Default: the pipeline's."
        ),
    ] = None,
    temperatures: Annotated[
        tuple[float, float, float],
        typer.Option(help="Sampling temperatures of the semantic, coarse and fine stages."),
    ] = (1.0, 0.95, 0.4),
    top_k: Annotated[int | None, typer.Option(help="Sample from the k most likely tokens only.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    style: Annotated[
        list[str] | None,
        typer.Option(
            help="Music to sound like: --style CLIP[:WEIGHT], repeatable. Each prompt is blended with the "
            "clips in MuLan's space, the text weighing 1 and a clip its WEIGHT (default 1): song.wav:0.5 "
            "makes the clip a third of the blend. Without a text prompt the clips alone are the prompt."
        ),
    ] = None,
    blend: Annotated[
        list[str] | None,
        typer.Option(
            help="More text to blend in: --blend 'TEXT:WEIGHT', repeatable. Each prompt is blended with "
            "these texts in MuLan's space as with --style clips, the prompt weighing 1: 'a slow organ "
            "chorale:0.5' makes the chorale a third of the blend. Without a text prompt the blended texts "
            "alone are the prompt: --blend 'a jig on fiddle:0.7' --blend 'a slow organ chorale:0.3'."
        ),
    ] = None,
    device: Device = "cpu",
) -> None:
    """Generate music from text and/or audio prompts (with a progress bar per stage, and one over the batches
    in batch mode)."""
    import torch

    from musiclm.audio import check_audio_out, save_audio
    from musiclm.files import check_output
    from musiclm.pipeline import SHIPPED_MODEL, GenerationError, MusicLM
    from musiclm.progress import tqdm
    from musiclm.training.distributed import pick_device

    # what can be refused without the model is refused before it loads (seconds on a CPU, more on a GPU)
    device = str(pick_device(device))
    checkpoint = checkpoint or SHIPPED_MODEL
    if batch_size < 1:
        raise typer.BadParameter(f"--batch-size must be at least 1, got {batch_size}")
    texts, segments, styles, blended = _checked_prompts(prompts, prompts_file, story, style, blend)
    if not math.isfinite(duration) or duration <= 0:
        raise typer.BadParameter(f"--duration must be a positive number of seconds, got {duration:g}")
    shortest = _shortest_duration(checkpoint)
    if shortest is not None and duration < shortest:
        raise typer.BadParameter(
            f"--duration {duration:g} s is shorter than one frame of this model; give at least {shortest:g} s"
        )
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise typer.BadParameter(f"--guidance must be a finite scale >= 0 (1 turns it off), got {guidance:g}")
    if candidates is not None and candidates < 1:
        raise typer.BadParameter(f"--candidates must be at least 1, got {candidates}")
    for option, path in (("--melody", melody), ("--continue", continue_)):
        if path is not None and not path.exists():
            raise typer.BadParameter(f"{path} not found", param_hint=option)
    check_audio_out(out)
    count = len(texts) or 1
    paths = [out] if count == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]
    inputs = (melody, continue_, *(clip for clip, _ in styles))
    for path in paths:  # --skip-existing keeps the files that exist (below) instead of refusing them
        check_output(path, inputs, overwrite=overwrite or skip_existing)
    model = MusicLM.from_pretrained(checkpoint, map_location=device)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)] or [None]
    for number, batch in enumerate(tqdm(batches, desc="batches", unit="batch", disable=len(batches) == 1)):
        if skip_existing and all(p.is_file() for p in paths[number * batch_size : (number + 1) * batch_size]):
            continue
        try:
            wavs = model.generate(
                batch,
                duration,
                melody=melody,
                continuation=continue_,
                story=segments or None,
                seed=seed,
                guidance=guidance,
                temperatures=temperatures,
                top_k=top_k,
                top_p=top_p,
                candidates=candidates,
                style=styles,
                blend=blended,
                progress=len(batches) == 1,
            )
        except GenerationError as err:
            raise typer.BadParameter(str(err)) from err
        for path, wav in zip(paths[number * batch_size :], wavs):
            if path.exists() and not overwrite:
                continue
            save_audio(path, wav.to(torch.float32), model.sample_rate)
            if len(batches) == 1:
                typer.echo(f"wrote {path} ({wav.shape[-1] / model.sample_rate:.1f} s)")
    if len(batches) > 1:
        typer.echo(f"wrote {count} files: {paths[0]} ... {paths[-1]} ({duration:g} s each)")


def _checked_prompts(prompts, prompts_file, story, style, blend) -> tuple[list, list, list, list]:
    """The texts, story segments, style clips and blended texts of a ``generate`` request, each refused
    with its own message before the model loads (a style clip read at a low rate to tell its length and
    loudness)."""
    from musiclm.pipeline import GenerationError, prompt_blend, read_style

    texts = list(prompts or []) + (_prompt_texts(prompts_file) if prompts_file is not None else [])
    segments = [_story_segment(item) for item in story or []]
    empty = [i for i, text in enumerate(prompts or []) if not text.strip()]
    if empty:
        raise typer.BadParameter(f"prompt(s) at position {empty} are empty; describe the music to generate")
    blended = [_blended_text(item) for item in blend or []]
    try:
        styles, blended = prompt_blend(texts, segments, [_style_clip(item) for item in style or []], blended)
        for path, _ in styles:
            read_style(path, STYLE_CHECK_RATE)
    except GenerationError as err:
        raise typer.BadParameter(str(err)) from err
    if not texts and not segments and not styles and not blended:
        where = f" in {prompts_file}" if prompts_file is not None else ""
        raise typer.BadParameter(
            f"no prompts{where}: give one ('calm piano'), a --prompts-file, --style, --blend or --story"
        )
    return texts, segments, styles, blended


def _shortest_duration(checkpoint: Path) -> float | None:
    """Seconds of one frame of the pipeline's slower token stream, read from its semantic stage's
    config.json (a shorter --duration rounds to no frames at all); None where it cannot be read, for
    MusicLM.from_pretrained to name what is wrong with the folder."""
    try:
        config = json.loads((checkpoint / "semantic_stage" / "config.json").read_text())["config"]
        return 1 / min(float(config["semantic_rate"]), float(config["acoustic_rate"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def _prompt_texts(path: Path) -> list[str]:
    """Every prompt of a batch file, checked before anything is generated (an empty one names its line)."""
    from musiclm.evaluation.prompts import PromptError, import_musiccaps, read_prompts

    try:
        found = import_musiccaps(path) if path.suffix == ".csv" else read_prompts(path)
    except PromptError as err:
        raise typer.BadParameter(str(err), param_hint="--prompts-file") from err
    empty = [i for i, p in enumerate(found) if not p.text.strip()]
    if empty:
        raise typer.BadParameter(
            f"{path}: prompt(s) {empty[:10]} (0-based) are empty", param_hint="--prompts-file"
        )
    return [p.text for p in found]


def _style_clip(item: str) -> tuple[Path, float]:
    """``'CLIP[:WEIGHT]'`` of ``--style`` -> ``(CLIP, WEIGHT)``, weight 1 when none is given (a colon not
    followed by a number is part of the path)."""
    path, sep, weight = item.rpartition(":")
    if not sep or Path(item).exists():
        return Path(item), 1.0
    try:
        return Path(path), float(weight)
    except ValueError:
        if Path(path).exists():
            raise typer.BadParameter(
                f"{item!r}: the weight after the last ':' must be a number, e.g. {path}:0.5",
                param_hint="--style",
            ) from None
        return Path(item), 1.0


def _story_segment(item: str) -> tuple[str, float]:
    from musiclm.pipeline import story_segment

    try:
        return story_segment(item)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--story") from err


def _blended_text(item: str) -> tuple[str, float]:
    from musiclm.pipeline import blended_text

    try:
        return blended_text(item)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--blend") from err


@app.command("eval-stage")
def eval_stage(
    tokens: Annotated[
        Path, typer.Option(help="Held-out token folder (musiclm tokenize --split valid / test).")
    ],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Pipeline folder (default: the shipped model).")
    ] = None,
    semantic_stage: Annotated[
        Path | None, typer.Option(help="Use this semantic stage instead of the pipeline's.")
    ] = None,
    coarse_stage: Annotated[
        Path | None, typer.Option(help="Use this coarse stage instead of the pipeline's.")
    ] = None,
    fine_stage: Annotated[
        Path | None, typer.Option(help="Use this fine stage instead of the pipeline's.")
    ] = None,
    clips: Annotated[int, typer.Option(help="Held-out clips for the teacher-forced measures.")] = 40,
    real_clips: Annotated[
        int, typer.Option(help="Clips whose real semantic tokens are decoded (0: skip).")
    ] = 16,
    seconds: Annotated[
        float, typer.Option(help="Seconds decoded per clip in the real-semantic check.")
    ] = 5.0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the figures to this JSON file.")] = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Does each stage listen? Teacher-forced NLL under each conditioning, alignment costs, real-semantic
    decoding."""
    import torch

    from musiclm.evaluation import diagnostics
    from musiclm.files import check_output, write_text_atomic
    from musiclm.interfaces import load_component
    from musiclm.pipeline import SHIPPED_MODEL, MusicLM, StageSet
    from musiclm.stages.data import StageDataset, dataset_options, load_shards, shard_paths
    from musiclm.stages.shards import read_meta
    from musiclm.stages.tokenize import vocab_meta
    from musiclm.training.distributed import pick_device

    device = pick_device(device)
    if out is not None:
        check_output(out, overwrite=overwrite)
    pipeline = MusicLM.from_pretrained(checkpoint or SHIPPED_MODEL, map_location=device)
    replaced = {"semantic": semantic_stage, "coarse": coarse_stage, "fine": fine_stage}
    stages = StageSet(
        *(
            load_component(replaced[name], device) if replaced[name] else getattr(pipeline.stages, name)
            for name in ("semantic", "coarse", "fine")
        )
    )
    pipeline = MusicLM(
        pipeline.codec, pipeline.semantic, pipeline.mulan, stages, pipeline.melody
    )  # checks the fit
    meta, expected = (
        read_meta(tokens),
        vocab_meta(pipeline.codec, pipeline.semantic, pipeline.mulan, pipeline.melody),
    )
    differ = sorted(
        k for k in expected if k in meta and meta[k] != expected[k] and k not in ("mulan_hop", "mulan_window")
    )
    if differ:
        raise typer.BadParameter(
            f"{tokens} was tokenized with other parts than the pipeline's ({', '.join(differ)} "
            "differ); tokenize the held-out clips with the pipeline's codec, semantic and MuLan"
        )
    shards, paths = load_shards(tokens), shard_paths(tokens)
    hops = dataset_options(meta)
    report: dict = {"tokens": str(tokens), "stages": {}}
    with torch.inference_mode():
        for name in ("semantic", "coarse", "fine"):
            model = getattr(stages, name)
            if model is None:
                continue
            model.eval()
            data = StageDataset(shards, model, **hops)
            report["stages"][name] = {
                "layout": model.config.layout,
                "mulan_levels": model.mulan_levels,
                "mulan_embedding": model.config.mulan_embedding,
                **diagnostics.conditioning_nll(model, data, clips),
            }
            typer.echo(f"{name}: {_figures(report['stages'][name])}")
        if real_clips:
            coarse_data = StageDataset(shards, stages.coarse, **hops)
            report["real_semantic"] = diagnostics.real_semantic(
                pipeline, coarse_data, shards, paths, real_clips, seconds
            )
            typer.echo(f"real semantic: {_figures(report['real_semantic'])}")
    if out is not None:
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
        typer.echo(f"wrote {out}")


def _figures(figures: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
