"""``musiclm train mulan``, ``musiclm train melody``, ``musiclm mulan eval`` and ``musiclm mulan embed``."""

from __future__ import annotations

import json
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

mulan_app = typer.Typer(
    help="Evaluate MuLan / melody embeddings and embed audio or text.", no_args_is_help=True
)
app.add_typer(mulan_app, name="mulan")

RvqPoints = Annotated[
    int | None, typer.Option(help="Training crops embedded to fit the RVQ codebooks (default: 2048).")
]


@train_app.command("mulan")
def train_mulan(
    data: Manifests,
    out: OutDir,
    preset: TrainPreset = None,
    text_model: Annotated[
        str | None, typer.Option(help="HF text encoder name or folder (default: bundled MiniLM).")
    ] = None,
    finetune_text: Annotated[
        bool | None, typer.Option(help="Fine-tune the text encoder too (default: the preset's).")
    ] = None,
    rvq_points: RvqPoints = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train MuLan contrastively on the manifests' text-audio pairs, then fit its RVQ on audio embeddings."""
    from musiclm.mulan.recipe import train_mulan as train
    from musiclm.parts import recipe_arguments

    text = {"text_model": text_model, "finetune_text": finetune_text}
    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    model = {**{k: v for k, v in text.items() if v is not None}, **model}
    given = {"preset": preset, "rvq_points": rvq_points}
    with refusing_bad_input():
        train(data, out, **recipe_arguments("mulan", given, model, settings, config))


@train_app.command("melody")
def train_melody(
    data: Manifests,
    out: OutDir,
    preset: TrainPreset = None,
    rvq_points: RvqPoints = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train the melody embedder with a semi-hard triplet loss on melody pairs, then fit its RVQ."""
    from musiclm.mulan.recipe import train_melody as train
    from musiclm.parts import recipe_arguments

    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    given = {"preset": preset, "rvq_points": rvq_points}
    with refusing_bad_input():
        train(data, out, **recipe_arguments("melody", given, model, settings, config))


@mulan_app.command("eval")
def evaluate(
    data: Manifests,
    model: Annotated[
        Path | None,
        typer.Option(help="Saved MuLan (or CLAP conditioner) folder (default: the shipped model's)."),
    ] = None,
    melody: Annotated[
        Path | None, typer.Option(help="Saved melody embedder folder (default: the shipped model's).")
    ] = None,
    split: Annotated[str, typer.Option(help="Held-out split to evaluate on.")] = "test",
    max_seconds: Annotated[
        float, typer.Option(help="Seconds of each clip embedded (windows averaged).")
    ] = 30.0,
    out: Annotated[Path | None, typer.Option(help="Write the results here as JSON.")] = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Retrieval, zero-shot attributes (seen and held-out wording), RVQ fidelity, melody retrieval."""
    from musiclm.files import check_output, write_text_atomic
    from musiclm.interfaces import load_component
    from musiclm.mulan.evaluate import evaluate_melody, evaluate_mulan
    from musiclm.training.distributed import pick_device

    if out is not None:
        check_output(out, inputs=data, overwrite=overwrite)
    if model is None and melody is None:  # the shipped model's conditioner and melody embedder
        from musiclm.pipeline import SHIPPED_MODEL

        model, melody = SHIPPED_MODEL / "mulan", SHIPPED_MODEL / "melody"
    results = {}
    device = pick_device(device)
    if model is not None:
        results["mulan"] = evaluate_mulan(load_component(model, device), data, split, max_seconds)
    if melody is not None:
        results["melody"] = evaluate_melody(load_component(melody, device), data, split)
    text = json.dumps(results, indent=2)
    typer.echo(text)
    if out is not None:
        write_text_atomic(out, text + "\n")


@mulan_app.command("embed")
def embed(
    model: Annotated[
        Path | None,
        typer.Option(
            help="Saved MuLan, CLAP conditioner or melody embedder folder (default: the shipped MuLan)."
        ),
    ] = None,
    audio: Annotated[list[Path] | None, typer.Option(help="Audio file(s) to embed (repeatable).")] = None,
    text: Annotated[list[str] | None, typer.Option(help="Text(s) to embed (repeatable).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Save embeddings and tokens to this .safetensors file.")
    ] = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Embed audio files and/or texts; print their tokens and the audio-text cosine similarities."""
    import torch
    from safetensors.torch import save_file

    from musiclm.audio import load_audio
    from musiclm.files import atomic_write, check_output
    from musiclm.interfaces import load_component
    from musiclm.pipeline import SHIPPED_MODEL
    from musiclm.training.distributed import pick_device

    if out is not None:
        check_output(out, inputs=audio or [], overwrite=overwrite)
    part = load_component(model or SHIPPED_MODEL / "mulan", pick_device(device))
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if audio:
            for i, path in enumerate(audio):
                wav = load_audio(path, part.sample_rate)[None]
                emb = (part.embed(wav)[0] if hasattr(part, "embed") else part.embed_audio(wav)[0]).cpu()
                tensors[f"audio{i}"], tensors[f"audio{i}_tokens"] = emb, part.quantize(emb[None])[0].cpu()
                typer.echo(f"audio {path}: tokens {tensors[f'audio{i}_tokens'].tolist()}")
        if text:
            if not hasattr(part, "embed_text"):
                raise typer.BadParameter(f"{model} is a melody embedder: it embeds audio only")
            embs = part.embed_text(list(text)).cpu()
            for i, (t, emb) in enumerate(zip(text, embs, strict=True)):
                tensors[f"text{i}"], tensors[f"text{i}_tokens"] = emb, part.quantize(emb[None])[0].cpu()
                typer.echo(f"text {t!r}: tokens {tensors[f'text{i}_tokens'].tolist()}")
        if audio and text and hasattr(part, "embed_text"):
            for i in range(len(audio)):
                sims = [round(float(tensors[f"audio{i}"] @ tensors[f"text{j}"]), 3) for j in range(len(text))]
                typer.echo(f"cosine(audio {i}, texts) = {sims}")
    if out is not None:
        with atomic_write(out) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        typer.echo(f"saved {len(tensors)} tensors to {out}")


@mulan_app.command("notes")
def notes(
    data: Manifests,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes transcribing side by side (one per core).")
    ] = 1,
    sample_rate: Annotated[int, typer.Option(min=8000, help="Rate the clips are read at (MuLan's).")] = 24000,
) -> None:
    """Transcribe every clip of the manifests once with basic-pitch into notes/ beside each manifest: the note
    posteriors a MuLan with ``model.notes`` trains on (``train mulan`` does this itself where they are
    missing). Resumable."""
    from musiclm.mulan.notes import write_note_cache

    for manifest in data:
        written = write_note_cache(manifest, sample_rate, workers)
        typer.echo(f"{manifest}: {written} clips transcribed")
