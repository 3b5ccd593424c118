"""``musiclm train w2vbert`` and ``musiclm semantic fit-kmeans``, ``tokenize`` and ``probe``."""

from __future__ import annotations

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
    TrainPreset,
    refusing_bad_input,
    setting_changes,
)

semantic_app = typer.Typer(
    help="Semantic tokens: w2v-BERT features + k-means, 25 per second.", no_args_is_help=True
)
app.add_typer(semantic_app, name="semantic")

ShippedTokenizer = Annotated[
    Path | None,
    typer.Option(
        help="Tokenizer folder written by fit-kmeans. Default: the shipped model's, "
        "checkpoints/musiclm_small/semantic."
    ),
]

# The engine's settings per preset: tiny for smoke runs, small for one CPU machine.
CropSeconds = Annotated[
    float | None, typer.Option(help="Seconds of audio per training crop (default: 4; the paper: 30).")
]


@train_app.command("w2vbert")
def train_w2vbert(
    data: Manifests,
    out: OutDir,
    preset: TrainPreset = None,
    crop_seconds: CropSeconds = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train w2v-BERT (contrastive + MLM, self-supervised on audio alone) with the shared engine."""
    from musiclm.parts import recipe_arguments
    from musiclm.semantic.recipe import train_w2vbert as train

    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    given = {"preset": preset, "crop_seconds": crop_seconds}
    with refusing_bad_input():
        train(data, out, **recipe_arguments("w2vbert", given, model, settings, config))


@semantic_app.command("fit-kmeans")
def fit_kmeans(
    data: Manifests,
    out: OutDir,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Feature model folder: a trained w2v-BERT, or a local HF model (basic_pitch needs none)."
        ),
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="w2vbert, hf_wav2vec2bert, hf_hubert or basic_pitch (note posteriorgrams).")
    ] = "w2vbert",
    layer: Annotated[
        int | None, typer.Option(help="Layer whose features are clustered (default: the middle MLM layer).")
    ] = None,
    clusters: Annotated[int, typer.Option(help="k-means clusters = vocabulary size (paper: 1024).")] = 1024,
    standardize: Annotated[
        bool | None,
        typer.Option(
            help="Standardise each feature dimension before k-means (default: yes, except for basic_pitch's "
            "posteriorgrams)."
        ),
    ] = None,
    max_clips: Annotated[int, typer.Option(help="Clips of the manifest to sample features from.")] = 200,
    max_frames: Annotated[int, typer.Option(help="Feature frames to cluster at most.")] = 200_000,
    seed: int = 0,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Fit k-means on one layer's features of the training audio; write a tokenizer folder."""
    from musiclm.files import check_output_folder
    from musiclm.semantic.recipe import fit_kmeans as fit

    check_output_folder(out, inputs=[*data, model], overwrite=overwrite)
    with refusing_bad_input():
        fit(
            data,
            out,
            model,
            backbone,
            layer=layer,
            clusters=clusters,
            standardize=standardize,
            max_clips=max_clips,
            max_frames=max_frames,
            seed=seed,
            device=device,
        )


@semantic_app.command("tokenize")
def tokenize(
    audio: Annotated[Path, typer.Argument(help="Audio file (any rate; resampled to the tokenizer's).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the tokens (.npy, int64 [F]).")],
    tokenizer: ShippedTokenizer = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Semantic tokens of one audio file, 25 a second."""
    import numpy as np

    from musiclm.audio import load_audio
    from musiclm.files import atomic_write, check_output
    from musiclm.interfaces import load_component
    from musiclm.pipeline import SHIPPED_MODEL
    from musiclm.training.distributed import pick_device

    check_output(out, inputs=[audio], overwrite=overwrite)
    model = load_component(tokenizer or SHIPPED_MODEL / "semantic", pick_device(device))
    tokens = model.tokenize(load_audio(audio, model.sample_rate)[None])[0].cpu()
    with atomic_write(out) as tmp, open(tmp, "wb") as f:
        np.save(f, tokens.numpy())
    typer.echo(
        f"{len(tokens)} tokens ({len(tokens) / model.frame_rate:.2f} s at {model.frame_rate:g} Hz) -> {out}"
    )


@semantic_app.command("probe")
def probe(
    data: Manifests,
    out: Annotated[Path, typer.Option("--out", help="Where to write the figures (JSON).")],
    tokenizer: ShippedTokenizer = None,
    split: Annotated[str, typer.Option(help="Split whose clips are scored.")] = "test",
    train_split: Annotated[str, typer.Option(help="Split each token's notes are learned on.")] = "train",
    clips: Annotated[int, typer.Option(help="Clips of --split to score (drawn at random).")] = 100,
    train_clips: Annotated[int, typer.Option(help="Clips of --train-split to learn from.")] = 200,
    context_seconds: Annotated[
        float, typer.Option(help="Seconds tokenized alone and inside their clip for the context agreement.")
    ] = 2.0,
    seed: int = 0,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """How well a tokenizer's tokens carry the notes of rendered clips (their MIDI): pitch-class and onset
    F1 from each token's mean piano roll, per-clip correlations, and stability under context."""
    import json

    import numpy as np

    from musiclm.data.manifest import read_manifest
    from musiclm.evaluation.semantic_probe import probe as run_probe
    from musiclm.files import check_output, write_text_atomic
    from musiclm.interfaces import load_component
    from musiclm.pipeline import SHIPPED_MODEL
    from musiclm.training.distributed import pick_device

    check_output(out, inputs=data, overwrite=overwrite)
    path = tokenizer or SHIPPED_MODEL / "semantic"
    model = load_component(path, pick_device(device))
    every = [c for m in data for c in read_manifest(m)]
    rng = np.random.default_rng(seed)

    def draw(name: str, n: int) -> list:
        chosen = [c for c in every if c.split == name]
        if not chosen:
            raise typer.BadParameter(f"no clip of split {name!r} in {[str(m) for m in data]}")
        return [chosen[i] for i in sorted(rng.permutation(len(chosen))[:n])]

    figures = run_probe(model, draw(train_split, train_clips), draw(split, clips), context_seconds, seed)
    figures = {"tokenizer": str(path), "data": [str(m) for m in data], "split": split, **figures}
    write_text_atomic(out, json.dumps(figures, indent=2) + "\n")
    typer.echo(json.dumps(figures, indent=2))
