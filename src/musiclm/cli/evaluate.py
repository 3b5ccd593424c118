"""``musiclm eval`` (the evaluation suite), ``musiclm eval-prompts`` and ``musiclm train classifier``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from musiclm.cli.apps import app, train_app
from musiclm.cli.common import (
    BatchSize,
    Device,
    LearningRate,
    Manifests,
    OptionsFile,
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

PathOpt = Optional[Path]
GenerationDevice = Annotated[
    str,
    typer.Option(
        help="Where generation runs: 'auto', 'cpu', 'cuda' or 'cuda:N' (the measurements run on the CPU)."
    ),
]


@app.command("eval")
def eval_command(
    prompts: Annotated[
        Path, typer.Option(help="Prompt file: .txt (one a line) or .jsonl (see musiclm.evaluation.prompts).")
    ],
    reference: Annotated[
        Path,
        typer.Option(
            help="Manifest of real clips: held-out ones (split != train) for FAD, train ones for the "
            "floor row."
        ),
    ],
    out: OutDir,
    checkpoint: Annotated[PathOpt, typer.Option(help="MusicLM pipeline folder to generate with.")] = None,
    audio: Annotated[
        PathOpt,
        typer.Option(
            help="Already generated audio instead: a folder (sorted) or a manifest, one clip per prompt."
        ),
    ] = None,
    classifier: Annotated[
        PathOpt,
        typer.Option(
            help="Evaluation classifier folder (musiclm train classifier): KLD, family/style adherence, FAD."
        ),
    ] = None,
    mulan: Annotated[
        PathOpt, typer.Option(help="Conditioner folder for MCC and FAD (default: the checkpoint's).")
    ] = None,
    codec: Annotated[
        PathOpt,
        typer.Option(help="Codec folder for the resynthesis row and FAD (default: the checkpoint's)."),
    ] = None,
    seconds: Annotated[float, typer.Option(help="Seconds per clip.")] = 10.0,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N prompts.")] = None,
    seed: int = 0,
    batch: Annotated[int, typer.Option(help="Prompts generated at once.")] = 4,
    guidance: Annotated[
        Optional[float],
        typer.Option(help="Classifier-free guidance scale of generation (1: off; default: the pipeline's)."),
    ] = None,
    candidates: Annotated[
        Optional[int],
        typer.Option(
            help="Samples per prompt of which MuLan keeps the closest (1: off; default: the pipeline's)."
        ),
    ] = None,
    memorization: Annotated[
        int, typer.Option(help="Training clips for the memorization study (needs --checkpoint; 0: skip).")
    ] = 0,
    fad_inf: Annotated[bool, typer.Option(help="Also extrapolate FAD-inf.")] = True,
    reference_clips: Annotated[
        int,
        typer.Option(
            help="Fewest held-out clips, none of them under test, to measure FAD and KLD against "
            "(fewer: error)."
        ),
    ] = 16,
    strict: Strict = False,
    device: GenerationDevice = "cpu",
    options: OptionsFile = None,
) -> None:
    """Generate (or read) audio for every prompt and write report.md, metrics.json and plots to --out."""
    import json
    import time

    import torch

    from musiclm.data.manifest import read_manifest
    from musiclm.data.skips import SKIPPED_FILE, SkipLog
    from musiclm.evaluation import suite
    from musiclm.evaluation.prompts import read_prompts
    from musiclm.interfaces import load_component
    from musiclm.training.distributed import pick_device

    items = read_prompts(prompts)[:limit]
    skips = SkipLog(out / SKIPPED_FILE, strict)
    clips = read_manifest(reference)
    pipeline = None
    if checkpoint is not None:
        from musiclm.pipeline import MusicLM

        pipeline = MusicLM.from_pretrained(checkpoint, map_location=pick_device(device))
    cdc = load_component(codec) if codec else getattr(pipeline, "codec", None)
    ev = _evaluators(pipeline, mulan, cdc, classifier, seconds)
    rate = pipeline.sample_rate if pipeline is not None else (cdc.sample_rate if cdc is not None else 24000)
    info = {"checkpoint": str(checkpoint), "prompts_file": str(prompts), "reference": str(reference)}
    given = suite.given_audio_paths(audio, items) if pipeline is None or audio is not None else []
    # before any generation: an evaluation without a spare reference would be wasted
    suite.spare_reference(items, [c for c in clips if c.split != "train"], given, reference_clips)
    t0 = time.perf_counter()
    without_melody = None
    if pipeline is not None and audio is None:
        info["guidance"] = pipeline.guidance_for(guidance)
        info["candidates"] = pipeline.candidates_for(candidates)
        settings = {"checkpoint": str(checkpoint.resolve()), "guidance": info["guidance"], "seed": seed}
        settings["candidates"] = info["candidates"]
        settings.update(seconds=seconds, batch=batch, prompts=[(p.text, str(p.melody)) for p in items])
        suite.claim_audio_folder(out / "audio", settings)
        generation = {"out_dir": out / "audio", "guidance": guidance, "candidates": candidates}
        with torch.no_grad():
            wavs = suite.generate_audio(pipeline, items, seconds, seed, batch, **generation)
            if any(p.melody is not None for p in items):
                without_melody = suite.generate_audio(
                    pipeline, items, seconds, seed, batch, melody=False, **generation
                )
        info["generation_wall_s"] = round(time.perf_counter() - t0, 1)
        info["device"] = str(pipeline.device)
    else:
        wavs = [suite.usable_clip(p, rate, seconds, skips) for p in given]
        info["audio"] = str(audio)
    if pipeline is not None:
        pipeline.to("cpu")  # the evaluation embedders and metrics take CPU audio
    if memorization and pipeline is not None:
        from musiclm.evaluation.memorization import greedy_continuations, match_rates

        train = [c for c in clips if c.split == "train"][:memorization]
        prompt_s, cont_s = min(5.0, seconds / 2), min(5.0, seconds / 2)
        gen, target = greedy_continuations(
            pipeline, torch.stack([suite.load_clip(c, rate, seconds) for c in train]), prompt_s, cont_s
        )
        info["memorization"] = match_rates(gen, target, pipeline.semantic.centroids)
    metrics = suite.run_evaluation(
        items,
        clips,
        out,
        ev,
        sample_rate=rate,
        seconds=seconds,
        generated=wavs,
        codec=cdc,
        seed=seed,
        fad_inf=fad_inf,
        extra_info=info,
        under_test=given,
        reference_clips_min=reference_clips,
        skips=skips,
        without_melody=without_melody,
    )
    summary = {r: {k: round(v, 4) for k, v in m.items() if isinstance(v, float)} for r, m in metrics.items()}
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"report: {out / 'report.md'}")


def _evaluators(pipeline, mulan: Path | None, codec, classifier: Path | None, seconds: float):
    """The suite's conditioner, classifier and FAD embedders: the folders given, else the pipeline's parts."""
    from musiclm.evaluation import suite
    from musiclm.evaluation.fad import codec_embedder, conditioner_embedder
    from musiclm.interfaces import load_component

    cond = load_component(mulan) if mulan else getattr(pipeline, "mulan", None)
    clf = load_component(classifier).eval() if classifier else None
    ev = suite.Evaluators(conditioner=cond, classifier=clf)
    if cond is not None:
        ev.embedders["mulan"] = (
            conditioner_embedder(cond, window_seconds=min(10.0, seconds)),
            cond.sample_rate,
        )
    if codec is not None and hasattr(codec, "encoder"):
        ev.embedders["codec"] = (codec_embedder(codec), codec.sample_rate)
    if clf is not None:
        ev.embedders["classifier"] = (clf.frames, clf.config.sample_rate)
    if not ev.embedders:
        raise typer.BadParameter("no FAD embedding: pass --checkpoint, --mulan, --codec or --classifier")
    return ev


@app.command("eval-pairs")
def eval_pairs(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for pairs.json, pairs.md and the pair audio (rerun to resume)."),
    ],
    checkpoint: Annotated[
        PathOpt, typer.Option(help="MusicLM pipeline folder to generate both sides of each pair with.")
    ] = None,
    audio: Annotated[
        PathOpt,
        typer.Option(help="Already generated pair audio instead: a folder of NNN-a.wav and NNN-b.wav."),
    ] = None,
    pairs_file: Annotated[
        PathOpt, typer.Option("--pairs", help="Pairs file (.jsonl; default: the shipped one).")
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="Also score real renders made to match each side (the ceiling).")
    ] = False,
    chain: Annotated[
        bool,
        typer.Option(
            help="With --checkpoint: also score the renders sent through the model's codec, through its "
            "acoustic stages (given the renders' semantic tokens) and through every stage (given their "
            "MuLan audio tokens), to see which link loses the asked direction (implies --reference)."
        ),
    ] = False,
    classifier: Annotated[
        PathOpt, typer.Option(help="Evaluation classifier for the family pairs (default: the shipped one).")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Seconds per clip.")] = 10.0,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N pairs.")] = None,
    seed: int = 0,
    batch: Annotated[int, typer.Option(help="Pairs generated at once.")] = 4,
    guidance: Annotated[
        Optional[float],
        typer.Option(help="Classifier-free guidance scale of generation (1: off; default: the pipeline's)."),
    ] = None,
    candidates: Annotated[
        Optional[int],
        typer.Option(
            help="Samples per prompt of which MuLan keeps the closest (1: off; default: the pipeline's)."
        ),
    ] = None,
    device: GenerationDevice = "cpu",
    options: OptionsFile = None,
) -> None:
    """Paired adherence: per kind (tempo, mode, register, articulation, density, family), the share of
    prompt pairs that differ in that one attribute whose outputs move the asked way."""
    import json

    from musiclm.evaluation.pairs.run import evaluate_pairs

    with refusing_bad_input():
        result = evaluate_pairs(
            out,
            checkpoint=checkpoint,
            audio=audio,
            pairs_file=pairs_file,
            reference=reference,
            chain=chain,
            classifier=classifier,
            seconds=seconds,
            limit=limit,
            seed=seed,
            batch=batch,
            guidance=guidance,
            candidates=candidates,
            device=device,
        )
    summary = {
        name: {"all": round(row["share"], 3), **{k: round(v["share"], 3) for k, v in row["by_kind"].items()}}
        for name, row in result["rows"].items()
    }
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"report: {out / 'pairs.md'}")


@app.command("eval-melodies")
def eval_melodies(
    checkpoint: Annotated[PathOpt, typer.Option(help="Pipeline folder (default: the shipped model).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for melodies.md, melodies.json and the audio.")] = Path(
        "eval-melodies"
    ),
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    guidance: Annotated[
        Optional[float],
        typer.Option(help="Classifier-free guidance scale of the stages (1: off; default: the pipeline's)."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N test pieces (of 29).")] = None,
    device: GenerationDevice = "cpu",
) -> None:
    """Does the acoustic stage play the notes it is given? Rendered scales (1-8 notes/s, four instruments)
    and chords (2-4 voices, three instruments) through the codec alone and through the acoustic stages given
    their real semantic tokens, scored against the score: pitch agreement, onset F1, chroma F1."""
    import time

    import torch

    from musiclm.evaluation import melodies
    from musiclm.pipeline import SHIPPED_MODEL, MusicLM
    from musiclm.training.distributed import pick_device

    if limit is not None and limit < 1:
        raise typer.BadParameter(f"--limit must be at least 1, got {limit}")
    folder = checkpoint or SHIPPED_MODEL
    pipeline = MusicLM.from_pretrained(folder, map_location=pick_device(device))
    start = time.perf_counter()
    with torch.no_grad():
        result = melodies.check_acoustic_stages(
            pipeline, melodies.ITEMS[:limit], seed=seed, guidance=guidance
        )
    info = {
        "checkpoint": str(folder),
        "seed": seed,
        "guidance": pipeline.guidance_for(guidance),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    typer.echo(f"wrote {melodies.write_check(result, out, info)}")


@app.command("eval-pairs-compare")
def eval_pairs_compare(
    first: Annotated[
        list[Path],
        typer.Option("--first", help="An eval-pairs --out folder of the first model (repeat per seed)."),
    ],
    second: Annotated[
        list[Path],
        typer.Option("--second", help="An eval-pairs --out folder of the second model (repeat per seed)."),
    ],
    out: Annotated[PathOpt, typer.Option(help="Also write the comparison to this JSON file.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Whether a second model's paired adherence differs from a first's: the pairs (same prompts, same
    seeds) on which exactly one of them moved the asked way, and a sign test on those."""
    import json

    from musiclm.evaluation.pairs.statistics import compare_runs
    from musiclm.files import check_output, write_text_atomic

    if out is not None:
        check_output(out, inputs=[folder / "pairs.json" for folder in [*first, *second]], overwrite=overwrite)

    def load(folders: list[Path]) -> list[dict]:
        runs = []
        for folder in folders:
            path = folder / "pairs.json"
            if not path.is_file():
                raise typer.BadParameter(
                    f"{folder} has no pairs.json: give folders written by eval-pairs --out"
                )
            runs.append(json.loads(path.read_text()))
        return runs

    try:
        result = compare_runs(load(first), load(second))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    typer.echo(json.dumps(result, indent=1))


@app.command("eval-prompts")
def eval_prompts(
    out: Annotated[Path, typer.Option("--out", help="Prompt file to write (.jsonl).")],
    manifest: Annotated[
        PathOpt,
        typer.Option(
            help="Build prompts from a dataset manifest's held-out clips (captions, attributes, reference)."
        ),
    ] = None,
    musiccaps: Annotated[PathOpt, typer.Option(help="Import the MusicCaps CSV instead.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="At most N prompts.")] = None,
    melodies: Annotated[
        int,
        typer.Option(
            help="With --manifest: give the first N prompts of test-split clips their clip's tune, "
            "whistled, in OUT_melodies/ (melodies unseen in training); `musiclm eval` then scores "
            "melody agreement with and without it."
        ),
    ] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Write a JSONL prompt file for `musiclm eval`."""
    from musiclm.data.manifest import read_manifest
    from musiclm.evaluation.prompts import import_musiccaps, prompts_from_manifest, write_prompts
    from musiclm.files import check_output

    if (manifest is None) == (musiccaps is None):
        raise typer.BadParameter("pass exactly one of --manifest or --musiccaps")
    if melodies and manifest is None:
        raise typer.BadParameter("--melodies needs --manifest (the tunes come from its clips' MIDI)")
    check_output(out, inputs=[manifest, musiccaps], overwrite=overwrite)
    clips = read_manifest(manifest) if manifest else []
    items = (
        prompts_from_manifest([c for c in clips if c.split != "train"])
        if manifest
        else import_musiccaps(musiccaps, limit)
    )[:limit]
    if melodies:
        from musiclm.evaluation.whistle import whistled_melodies

        items = whistled_melodies(items, clips, out.with_name(out.stem + "_melodies"), melodies)
    write_prompts(out, items)
    given = sum(p.melody is not None for p in items)
    typer.echo(
        f"wrote {len(items)} prompts to {out}" + (f" ({given} with a whistled melody)" if melodies else "")
    )


@train_app.command("classifier")
def train_classifier(
    data: Manifests,
    out: OutDir,
    preset: TrainPreset = None,
    augment_codec: Annotated[
        PathOpt,
        typer.Option(help="Codec whose resynthesis augments training crops (default: the shipped model's)."),
    ] = None,
    augment: Annotated[
        bool, typer.Option(help="Augment training crops (level, reverb, band limit, codec).")
    ] = True,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train the evaluation-only classifier (never used to train the generator) on held-in clips,
    validate on the valid split, and print the accuracy per head on every held-out clip."""
    import json

    from musiclm.evaluation.classifier import train_classifier as train
    from musiclm.files import check_output_folder
    from musiclm.parts import recipe_arguments
    from musiclm.pipeline import SHIPPED_MODEL

    augment_codec = augment_codec or SHIPPED_MODEL / "codec"
    # a rerun with the same --out resumes its training (as every `musiclm train`), so an existing folder is
    # kept and continued, never refused; it must not be, hold or lie inside an input
    check_output_folder(out, inputs=[*data, augment_codec if augment else None], overwrite=True)
    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    given = {"preset": preset, "augment_codec": augment_codec if augment else None}
    with refusing_bad_input():
        acc = train(data, out, **recipe_arguments("classifier", given, model, settings, config))
    typer.echo(json.dumps(acc, indent=1))
