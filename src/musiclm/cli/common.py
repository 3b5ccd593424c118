"""Options shared by several commands (every ``musiclm train ...``, every writer of one output file), so
they read the same everywhere."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from musiclm.errors import raised_on_purpose

Steps = Annotated[int | None, typer.Option(help="Optimizer steps in all (default: the preset's).")]
BatchSize = Annotated[int | None, typer.Option(help="Global batch per step, over all processes.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Device = Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda' or 'cuda:N'.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a setting: --set train.ema_decay=0.999 (training) or --set "
        "model.dim=256 (the model's config); a bare name is a training setting (repeatable).",
    ),
]
OutDir = Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, logs, and the trained model.")]
Manifests = Annotated[
    list[Path], typer.Option("--data", help="JSONL manifest(s) of audio clips (repeatable).")
]
Preset = Annotated[str, typer.Option(help="Model size preset: tiny, small or paper.")]
TrainPreset = Annotated[
    str | None, typer.Option(help="Model size preset: tiny, small or paper (default: small, or --config's).")
]
RunFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Replay a run: its OUT/run.json (or a shipped part's recipe.json) gives the preset, the model "
        "and training config and the recipe's options; what this command line gives wins (--set, --steps, "
        "--device...), and the data comes from it.",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        help="Replace an output file, or fill an output folder, that exists (one of the command's inputs "
        "never is)."
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        help="Stop at the first input that cannot be used instead of skipping it (skips go to skipped.jsonl)."
    ),
]


def options_from_file(path: Path, command: Any) -> dict[str, Any]:
    """The options a JSON file gives ``command`` (a click command), keyed by parameter name: the file's keys
    are the options' names as typed, without the dashes (``{"reference-clips": 8, "fad-inf": false}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise typer.BadParameter(f"cannot read {path} as JSON: {err}") from err
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object of option names and values")
    names = {
        opt.removeprefix("--"): param.name
        for param in command.params
        if param.name != "options"
        for opt in param.opts
        if opt.startswith("--")
    }
    unknown = [key for key in data if key not in names]
    if unknown:
        valid = ", ".join(sorted(names))
        raise typer.BadParameter(f"{path}: unknown option {', '.join(map(repr, unknown))}; valid: {valid}")
    return {names[key]: value for key, value in data.items()}


def _use_options_file(ctx: typer.Context, path: Path | None) -> Path | None:
    # click reads an option that the command line leaves out from the context's default map, so the file's
    # values fill in only what the command line does not give
    if path is not None and not ctx.resilient_parsing:
        ctx.default_map = {**(ctx.default_map or {}), **options_from_file(path, ctx.command)}
    return path


OptionsFile = Annotated[
    Path | None,
    typer.Option(
        "--options",
        help="A JSON file of this command's options, each named as on the command line without its leading "
        'dashes: {"seed": 1, "seconds": 5}. Options given on the command line win over it.',
        is_eager=True,
        callback=_use_options_file,
    ),
]


def parse_overrides(overrides: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items -> (model changes, training changes); values are JSON when they parse, else strings."""
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        scope, dot, name = key.strip().partition(".")
        target, name = (
            (model, name)
            if dot and scope == "model"
            else (train, name)
            if dot and scope == "train"
            else (train, key.strip())
        )
        try:
            target[name] = json.loads(raw)
        except json.JSONDecodeError:
            target[name] = raw
    return model, train


def setting_changes(
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    overrides: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A train command's options as (model changes, training changes): the ``--set model.FIELD=VALUE``
    items, and ``--steps``, ``--batch-size``, ``--lr`` and ``--device`` with the training ``--set`` items."""
    model, train = parse_overrides(overrides)
    given = {"steps": steps, "batch_size": batch_size, "lr": lr}
    return model, {"device": device, **{k: v for k, v in given.items() if v is not None}, **train}


def shown_as_refusal(err: BaseException) -> bool:
    """Whether the command line shows ``err`` as one ``error:`` line: an error about the user's input, unless
    MUSICLM_DEBUG asks for the traceback of every error."""
    return not os.environ.get("MUSICLM_DEBUG") and raised_on_purpose(err)


@contextlib.contextmanager
def refusing_bad_input() -> Iterator[None]:
    """The library's errors about the user's input, raised in the block, as the command's own refusals: the
    entry point prints either as one line, but a caller in the same process (typer's test runner) reads the
    message of a refusal only."""
    try:
        yield
    except Exception as err:
        if not shown_as_refusal(err):
            raise
        raise typer.BadParameter(str(err)) from err
