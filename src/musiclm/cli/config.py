"""``musiclm config show PART``: the model and training settings a ``musiclm train PART`` run would use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import app
from musiclm.cli.common import Overrides, RunFile, TrainPreset, parse_overrides, refusing_bad_input
from musiclm.parts import PARTS

config_app = typer.Typer(help="Resolved configs: a preset plus --set changes.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def resolve(
    name: str,
    preset: str | None = None,
    overrides: list[str] | None = None,
    tokens: Path | None = None,
    run: Path | None = None,
) -> dict:
    """``{"model": ..., "train": ...}`` of part ``name`` as its train command builds them: from the registry,
    over the run file ``run``'s settings where given; a stage's vocabularies from the token folder
    ``tokens`` (without one, the preset's defaults)."""
    from musiclm.parts import part, recipe_arguments
    from musiclm.stages.recipe import stage_config

    found = part(name)
    arguments = recipe_arguments(name, {"preset": preset}, *parse_overrides(overrides), run)
    preset = arguments.get("preset", "small")
    if tokens is not None and found.stage is not None:
        model = stage_config(found.stage, tokens, preset, model=arguments["model"])[0]
    elif tokens is not None:
        raise typer.BadParameter(f"--tokens is for the token stages, not the {name}", param_hint="--tokens")
    else:
        model = found.model_config(preset, arguments["model"])
    return {"model": model.to_dict(), "train": found.train_config(preset, arguments["train"]).to_dict()}


@config_app.command("show")
def show(
    part: Annotated[str, typer.Argument(help=f"One of {', '.join(PARTS)}.")],
    preset: TrainPreset = None,
    overrides: Overrides = None,
    tokens: Annotated[
        Path | None,
        typer.Option(help="A stage's token folder: its vocabularies, as `musiclm train stage` takes them."),
    ] = None,
    config: RunFile = None,
) -> None:
    """Print the resolved model and training config of PART (JSON), --set changes applied and checked."""
    if part not in PARTS:
        raise typer.BadParameter(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    with refusing_bad_input():
        resolved = resolve(part, preset, overrides, tokens, config)
    typer.echo(json.dumps(resolved, indent=2, default=str))
