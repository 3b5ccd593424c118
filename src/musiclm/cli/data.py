"""``musiclm data ...``: build the embedded dataset, index your own audio, import MusicCaps-style CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import app
from musiclm.cli.common import Overwrite, Strict

data_app = typer.Typer(
    help="Datasets: render the embedded dataset, index audio folders.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option("--out", help="Dataset folder (rerun to resume).")],
    hours: Annotated[
        float, typer.Option(help="Hours of audio to render (all splits, melody renders included).")
    ] = 1.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the clips.")] = 24000,
    workers: Annotated[int, typer.Option(help="Parallel render processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of every choice (works, crops, instruments, ...).")] = 0,
    min_seconds: Annotated[float, typer.Option(help="Shortest clip length drawn.")] = 10.0,
    max_seconds: Annotated[float, typer.Option(help="Longest clip length drawn.")] = 30.0,
    melody_fraction: Annotated[
        float, typer.Option(help="Share of arrangements that also get a melody-only render.")
    ] = 0.3,
    collection: Annotated[
        list[str] | None, typer.Option(help="Only these music21 collections (repeatable).")
    ] = None,
    soundfont: Annotated[list[str] | None, typer.Option(help="Only these soundfonts (repeatable).")] = None,
    strict: Strict = False,
) -> None:
    """Render music21 corpus works to captioned mono clips: DIR/manifest.jsonl, card.md, card.json."""
    import json

    from musiclm.data.build import BuildError, BuildOptions, build
    from musiclm.data.render import RenderError

    opts = BuildOptions(
        out=out,
        hours=hours,
        sample_rate=sample_rate,
        workers=workers,
        seed=seed,
        clip_seconds=(min_seconds, max_seconds),
        melody_fraction=melody_fraction,
        collections=collection,
        soundfonts=soundfont,
        strict=strict,
    )
    try:
        manifest = build(opts)
    except (BuildError, RenderError) as err:
        raise typer.BadParameter(str(err)) from err
    card = json.loads((manifest.parent / "card.json").read_text())
    typer.echo((manifest.parent / "card.md").read_text())
    typer.echo(f"wrote {manifest} ({card['clips']} clips, {card['hours']} h)")


@data_app.command("index")
def index_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of audio files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write.")],
    split: Annotated[str, typer.Option(help="Split written on every line.")] = "train",
    license: Annotated[str | None, typer.Option(help="License recorded for every clip.")] = None,
    min_seconds: Annotated[float, typer.Option(help="Skip files shorter than this.")] = 0.5,
    strict: Strict = False,
    overwrite: Overwrite = False,
) -> None:
    """Index a folder of your own audio; captions come from sidecar .json/.txt files when present.
    Unreadable, empty, silent or too-short files are skipped and listed in OUT-NAME.skipped.jsonl."""
    from musiclm.data.index import IndexingError, index_folder, index_inputs
    from musiclm.files import check_output

    check_output(out, inputs=index_inputs(folder), overwrite=overwrite)
    try:
        clips, skipped = index_folder(
            folder, out, split=split, license=license, min_seconds=min_seconds, strict=strict
        )
    except IndexingError as err:
        raise typer.BadParameter(str(err)) from err
    captioned = sum(bool(c.captions) for c in clips)
    typer.echo(
        f"wrote {out}: {len(clips)} files, {sum(c.duration or 0 for c in clips) / 3600:.3f} h, "
        f"{captioned} with captions"
    )
    typer.echo(skipped or "nothing skipped")


@data_app.command("musiccaps")
def musiccaps_cmd(
    csv: Annotated[
        Path, typer.Argument(help="MusicCaps-format CSV (ytid, start_s, end_s, caption, aspect_list).")
    ],
    audio_dir: Annotated[
        Path, typer.Option(help="Folder with the audio, named <ytid>.<ext> or <ytid>_<start>.<ext>.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write.")],
    overwrite: Overwrite = False,
) -> None:
    """Import a MusicCaps-format CSV whose rows point at local audio files."""
    from musiclm.data.index import IndexingError, audio_files, import_musiccaps
    from musiclm.files import check_output

    check_output(out, inputs=[csv, *audio_files(audio_dir)], overwrite=overwrite)
    try:
        clips, missing = import_musiccaps(csv, audio_dir, out)
    except IndexingError as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"wrote {out}: {len(clips)} rows with local audio, {missing} rows without")
