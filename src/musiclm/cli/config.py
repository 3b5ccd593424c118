"""``musiclm config show PART``: the model and training settings a ``musiclm train PART`` run would use."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from musiclm.cli.apps import app
from musiclm.cli.common import Overrides, Preset, model_config, train_config

config_app = typer.Typer(help="Resolved configs: a preset plus --set changes.", no_args_is_help=True)
app.add_typer(config_app, name="config")

PARTS = ("codec", "w2vbert", "mulan", "melody", "semantic_stage", "coarse_stage", "fine_stage", "classifier")


def resolve(part: str, preset: str, overrides: list[str] | None = None) -> dict:
    """``{"model": ..., "train": ...}`` of ``part`` as its train command builds them (stages: vocabularies of
    the preset's defaults; ``musiclm train stage`` takes them from the token folder)."""
    from musiclm.training import TrainConfig

    if part == "codec":
        from musiclm.codec.soundstream import TRAIN_DEFAULTS, SoundStreamConfig

        model = model_config(SoundStreamConfig, preset, overrides)
        defaults = TrainConfig.from_dict(TRAIN_DEFAULTS[preset])
    elif part == "w2vbert":
        from musiclm.semantic.w2vbert import TRAIN_DEFAULTS, W2VBertConfig

        model, defaults = (
            model_config(W2VBertConfig, preset, overrides),
            TrainConfig.from_dict(TRAIN_DEFAULTS[preset]),
        )
    elif part in ("mulan", "melody"):
        from musiclm.mulan import melody
        from musiclm.mulan import model as mulan

        module, config_class = (
            (mulan, mulan.MuLanConfig) if part == "mulan" else (melody, melody.MelodyConfig)
        )
        model = model_config(config_class, preset, overrides)
        defaults = TrainConfig.from_dict(module.TRAIN_DEFAULTS[preset])
    elif part.endswith("_stage"):
        from musiclm.cli.common import parse_overrides
        from musiclm.config import ConfigError
        from musiclm.stages.stages import TRAIN_DEFAULTS, StageConfig

        try:
            model = StageConfig.for_stage(
                part.removesuffix("_stage"), preset, **parse_overrides(overrides)[0]
            )
        except ConfigError as err:
            raise typer.BadParameter(str(err)) from err
        defaults = TrainConfig.from_dict(TRAIN_DEFAULTS.get(preset, {}))
    else:
        from musiclm.evaluation.classifier import TRAIN_DEFAULTS, ClassifierConfig

        model = model_config(ClassifierConfig, preset, overrides)
        defaults = TrainConfig.from_dict(TRAIN_DEFAULTS[preset])
    return {"model": model.to_dict(), "train": train_config(defaults, overrides=overrides).to_dict()}


@config_app.command("show")
def show(
    part: Annotated[str, typer.Argument(help=f"One of {', '.join(PARTS)}.")],
    preset: Preset = "small",
    overrides: Overrides = None,
) -> None:
    """Print the resolved model and training config of PART (JSON), --set changes applied and checked."""
    if part not in PARTS:
        raise typer.BadParameter(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    typer.echo(json.dumps(resolve(part, preset, overrides), indent=2, default=str))
