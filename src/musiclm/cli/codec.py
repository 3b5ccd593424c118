"""``musiclm train codec`` and ``musiclm codec encode|decode|info|eval|export``."""

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

codec_app = typer.Typer(
    help="Encode, decode and evaluate audio with the acoustic codec.", no_args_is_help=True
)
app.add_typer(codec_app, name="codec")

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        help="Saved codec folder, or a training run folder (its latest checkpoint). "
        "Default: the shipped model's, checkpoints/musiclm_small/codec."
    ),
]


def _load(checkpoint: Path | None, device: str = "cpu"):
    from musiclm.codec.soundstream import codec_from_checkpoint
    from musiclm.interfaces import load_component
    from musiclm.pipeline import SHIPPED_MODEL
    from musiclm.training.distributed import pick_device

    path = checkpoint or SHIPPED_MODEL / "codec"
    if not path.exists():
        raise typer.BadParameter(
            f"{path} does not exist; pass --checkpoint DIR (a saved codec or a run folder)"
        )
    device = str(pick_device(device))
    if (path / "checkpoints").is_dir():
        return codec_from_checkpoint(str(path), device)
    return load_component(path, device)


@train_app.command("codec")
def train_codec(
    data: Manifests,
    out: OutDir,
    preset: TrainPreset = None,
    crop_seconds: Annotated[float | None, typer.Option(help="Seconds per training crop.")] = None,
    data_weight: Annotated[
        list[float] | None,
        typer.Option(
            "--data-weight",
            help="Share of crops drawn from each --data manifest, in the same order (repeatable; "
            "default: every clip equally likely, so a few long recordings are rarely seen).",
        ),
    ] = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "auto",
    overrides: Overrides = None,
    config: RunFile = None,
) -> None:
    """Train SoundStream (generator + discriminators) on audio manifests with the shared engine; resumable."""
    from musiclm.codec.recipe import train_codec as train
    from musiclm.parts import recipe_arguments

    model, settings = setting_changes(steps, batch_size, lr, device, overrides)
    given = {"preset": preset, "crop_seconds": crop_seconds, "data_weights": data_weight}
    with refusing_bad_input():
        train(data, out, **recipe_arguments("codec", given, model, settings, config))


@codec_app.command()
def info(
    checkpoint: Checkpoint = None,
    preset: Annotated[str | None, typer.Option(help="Describe a preset instead of a checkpoint.")] = None,
) -> None:
    """Sample rate, frame rate, quantizers, codebook size and bitrate."""
    if preset:
        from musiclm.codec.soundstream import SoundStream, SoundStreamConfig

        codec = SoundStream(SoundStreamConfig.preset(preset))
    else:
        codec = _load(checkpoint)
    bits = codec.frame_rate * codec.num_quantizers * __import__("math").log2(codec.codebook_size)
    typer.echo(
        f"sample rate: {codec.sample_rate} Hz\nframe rate: {codec.frame_rate:g} Hz\n"
        f"quantizers: {codec.num_quantizers}\ncodebook size: {codec.codebook_size}\n"
        f"bitrate: {bits / 1000:g} kbps at {codec.num_quantizers} quantizers "
        f"({bits / codec.num_quantizers / 1000:g} kbps per quantizer)"
    )


@codec_app.command()
def encode(
    src: Annotated[Path, typer.Argument(help="Input audio file.")],
    dst: Annotated[Path, typer.Argument(help="Output .npz of codes.")],
    quantizers: Annotated[int | None, typer.Option(help="Keep the first q levels (lower bitrate).")] = None,
    checkpoint: Checkpoint = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Audio file -> codes (.npz with codes [Q, F], sample_rate, frame_rate, num_samples)."""
    import numpy as np

    from musiclm.audio import audio_info, load_audio
    from musiclm.files import atomic_write, check_output

    check_output(dst, inputs=[src], overwrite=overwrite)
    codec = _load(checkpoint, device)
    rate = audio_info(src).samplerate
    if rate != codec.sample_rate:
        typer.echo(f"note: {src} is at {rate} Hz; resampling to the codec's {codec.sample_rate} Hz", err=True)
    wav = load_audio(src, codec.sample_rate)
    codes = codec.encode(wav[None], quantizers)[0].cpu()
    with atomic_write(dst) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            codes=codes.numpy().astype(np.int16),
            sample_rate=codec.sample_rate,
            frame_rate=codec.frame_rate,
            num_samples=wav.shape[-1],
        )
    typer.echo(f"{dst}: {codes.shape[0]} x {codes.shape[1]} codes")


@codec_app.command()
def decode(
    src: Annotated[Path, typer.Argument(help="Input .npz written by `musiclm codec encode`.")],
    dst: Annotated[Path, typer.Argument(help="Output .wav.")],
    checkpoint: Checkpoint = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Codes (.npz) -> audio file."""
    import torch

    from musiclm.audio import check_audio_out, save_audio
    from musiclm.files import check_output

    codes, n = _read_codes(src)
    check_audio_out(dst)
    check_output(dst, inputs=[src], overwrite=overwrite)
    codec = _load(checkpoint, device)
    wav = codec.decode(torch.from_numpy(codes)[None])[0]
    save_audio(dst, wav[:n] if n else wav, codec.sample_rate)
    typer.echo(f"{dst}: {wav.shape[-1] / codec.sample_rate:.2f} s")


def _read_codes(src: Path):
    """The codes ``[Q, F]`` (int64) and the sample count (0: unknown) of a .npz that `musiclm codec encode`
    wrote."""
    import zipfile

    import numpy as np

    if not src.is_file():
        raise typer.BadParameter(
            f"cannot read codes from {src}: {'a folder' if src.is_dir() else 'no such file'}"
        )
    try:
        data = np.load(src)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        data = None  # numpy's reason would only mislead (a file that is no .npz "holds pickled data")
    if not isinstance(data, np.lib.npyio.NpzFile) or "codes" not in data:
        raise typer.BadParameter(
            f"{src} is not a .npz of codes; write one with `musiclm codec encode AUDIO CODES.npz`"
        )
    with data:
        return data["codes"].astype(np.int64), int(data.get("num_samples", 0))


@codec_app.command("eval")
def evaluate_cmd(
    data: Manifests,
    checkpoint: Checkpoint = None,
    split: Annotated[str, typer.Option(help="Manifest split to evaluate ('all': every clip).")] = "test",
    clips: Annotated[int, typer.Option(help="At most this many files.")] = 16,
    seconds: Annotated[float, typer.Option(help="Seconds per excerpt.")] = 5.0,
    per_file: Annotated[int, typer.Option(help="Excerpts per file.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for table.md, metrics.json and plot.png.")] = Path(
        "codec_eval"
    ),
    opus: Annotated[bool, typer.Option(help="Compare with Opus (ffmpeg libopus).")] = True,
    device: Device = "cpu",
) -> None:
    """Mel distance, SI-SNR and spectral convergence per bitrate vs Opus; codebook perplexity."""
    import dataclasses
    import json

    from musiclm.codec import evaluate as ev
    from musiclm.data.manifest import read_manifest
    from musiclm.files import write_text_atomic

    codec = _load(checkpoint, device)
    files = [c.path for m in data for c in read_manifest(m) if split == "all" or c.split == split][:clips]
    if not files:
        raise typer.BadParameter(f"no clips of split {split!r} in {[str(m) for m in data]}")
    audio = ev.load_clips(files, codec.sample_rate, seconds, per_file)
    rows, ppl = ev.evaluate(codec, audio, opus=opus)
    out.mkdir(parents=True, exist_ok=True)
    text = ev.table(rows)
    ppl_text = ", ".join(f"{p:.0f}" for p in ppl)
    write_text_atomic(
        out / "table.md",
        f"{text}\n\ncodebook perplexity per quantizer (of {codec.codebook_size}): {ppl_text}\n",
    )
    write_text_atomic(
        out / "metrics.json",
        json.dumps(
            {
                "clips": len(audio),
                "seconds": seconds,
                "rows": [dataclasses.asdict(r) for r in rows],
                "perplexity": ppl,
                "steps": getattr(codec, "train_steps", None),
            },
            indent=1,
        ),
    )
    ev.plot(rows, out / "plot.png", f"{len(audio)} x {seconds:g} s excerpts")
    typer.echo(text)
    typer.echo(f"codebook perplexity per quantizer: {ppl_text}\nwrote {out}/table.md, metrics.json, plot.png")


@codec_app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Training run folder (uses its latest checkpoint).")],
    dst: Annotated[Path, typer.Argument(help="Folder to save the codec into (save_pretrained).")],
    fp16: Annotated[bool, typer.Option(help="Store weights in float16 (half the size).")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Save a run's latest checkpoint as a codec folder (config.json + model.safetensors)."""
    import torch

    from musiclm.codec.soundstream import codec_from_checkpoint
    from musiclm.files import check_output_folder

    check_output_folder(dst, inputs=[run], overwrite=overwrite)
    codec = codec_from_checkpoint(str(run))
    codec.save_pretrained(dst, dtype=torch.float16 if fp16 else None)
    typer.echo(f"saved step {getattr(codec, 'train_steps', '?')} to {dst}")
