"""The part registry: for every trainable part, its config class, its training defaults per preset and its
recipe (the library function that builds its model and dataset and trains it), so that the train commands,
``musiclm config show``, ``--config RUN.json`` and ``musiclm train all`` resolve a part's settings one way.

A run folder's ``run.json`` (written by the engine) records the part, the recipe's own options, and the whole
model and training config; :func:`read_run` reads it back, so that a run replays from its folder. The shipped
parts' ``recipe.json`` files have the same format.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musiclm.config import Config, ConfigError

if TYPE_CHECKING:  # the engine imports torch; `musiclm --help` reads the part names from here
    from musiclm.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    # "module:attribute", imported when first used, so that naming a part imports no model code
    config: str
    defaults: str
    recipe: str
    stage: str | None = None  # a token stage's config is scaled to its stage (StageConfig.for_stage)

    def config_class(self) -> type[Config]:
        return _attribute(self.config)

    def model_config(self, preset: str, changes: Mapping[str, Any] | None = None) -> Config:
        """The preset's config of this part with ``changes``; a stage's with its stage's windows."""
        changes = dict(changes or {})
        if self.stage is None:
            return self.config_class().preset(preset, **changes)
        # a run.json's model config names its stage: replaying it on another stage is a mistake
        named = changes.pop("stage", self.stage)
        if named != self.stage:
            raise ConfigError(f"the config is the {named} stage's, not the {self.stage} stage's")
        return self.config_class().for_stage(self.stage, preset, **changes)

    def train_config(self, preset: str, changes: Mapping[str, Any] | None = None) -> TrainConfig:
        """The preset's training settings of this part with ``changes``."""
        from musiclm.training import TrainConfig

        defaults = _attribute(self.defaults)
        if preset not in defaults:
            raise ConfigError(f"unknown preset {preset!r} for {self.name}; choose one of {sorted(defaults)}")
        return TrainConfig.from_dict({**defaults[preset], **(changes or {})})

    def train(self, **arguments: Any) -> Any:
        """Run the part's recipe (``musiclm.<part>.recipe``) with its keyword arguments."""
        if self.stage is not None:
            arguments = {"stage": self.stage, **arguments}
        return _attribute(self.recipe)(**arguments)


_STAGE = (
    "musiclm.stages.stages:StageConfig",
    "musiclm.stages.stages:TRAIN_DEFAULTS",
    "musiclm.stages.recipe:train_stage",
)
PARTS: dict[str, Part] = {
    part.name: part
    for part in (
        Part(
            "codec",
            "musiclm.codec.soundstream:SoundStreamConfig",
            "musiclm.codec.soundstream:TRAIN_DEFAULTS",
            "musiclm.codec.recipe:train_codec",
        ),
        Part(
            "w2vbert",
            "musiclm.semantic.w2vbert:W2VBertConfig",
            "musiclm.semantic.w2vbert:TRAIN_DEFAULTS",
            "musiclm.semantic.recipe:train_w2vbert",
        ),
        Part(
            "mulan",
            "musiclm.mulan.model:MuLanConfig",
            "musiclm.mulan.model:TRAIN_DEFAULTS",
            "musiclm.mulan.recipe:train_mulan",
        ),
        Part(
            "melody",
            "musiclm.mulan.melody:MelodyConfig",
            "musiclm.mulan.melody:TRAIN_DEFAULTS",
            "musiclm.mulan.recipe:train_melody",
        ),
        *(Part(f"{s}_stage", *_STAGE, s) for s in ("semantic", "coarse", "fine")),
        Part(
            "classifier",
            "musiclm.evaluation.classifier:ClassifierConfig",
            "musiclm.evaluation.classifier:TRAIN_DEFAULTS",
            "musiclm.evaluation.classifier:train_classifier",
        ),
    )
}


def part(name: str) -> Part:
    if name not in PARTS:
        raise ConfigError(f"unknown part {name!r}; choose one of {', '.join(PARTS)}")
    return PARTS[name]


def _attribute(where: str) -> Any:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass
class RunRecipe:
    """What a run.json (or a shipped part's recipe.json) says: the part, the recipe's own options (preset,
    crop seconds, RVQ points, stage: never a data path), and the whole model and training config."""

    path: Path
    part: str | None
    options: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]

    def changes(
        self, model: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's model and training settings with the command line's changes on top."""
        return {**self.model, **(model or {})}, {**self.train, **(train or {})}


def run_record(part_name: str, **options: Any) -> dict[str, Any]:
    """What a recipe tells the engine to write into run.json beside the configs, so that the run replays."""
    return {"part": part(part_name).name, "options": options}


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing or unreadable file is a ConfigError naming it and ``what`` to
    give instead."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path} as JSON ({err}); {what}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no JSON object; {what}")
    return data


def read_run(path: Path, configs: bool = True) -> RunRecipe:
    """The recipe a run.json or a recipe.json holds; an unusable file is a ConfigError naming it and the
    fix. ``configs`` False: a recipe of options only (the k-means tokenizer's, which trains no model)."""
    path = Path(path)
    what = "give the run.json of a training run folder (musiclm train writes OUT/run.json) or a recipe.json"
    data = read_json_object(path, what)
    wanted = ("model", "train") if configs else ()
    shapes = all(isinstance(data.get(k), dict) for k in wanted)
    if not shapes or not isinstance(data.get("options", {}), dict):
        raise ConfigError(f"{path} has no 'model' and 'train' objects as a run.json has; {what}")
    name = data.get("part")
    if configs and name is not None and name not in PARTS:
        raise ConfigError(f"{path} names part {name!r}; a recipe names one of {', '.join(PARTS)}")
    return RunRecipe(path, name, dict(data.get("options", {})), data.get("model", {}), data.get("train", {}))


def recipe_arguments(
    name: str,
    options: Mapping[str, Any],
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    run: Path | None = None,
) -> dict[str, Any]:
    """The keyword arguments of part ``name``'s recipe: the ``options`` given (None: not given) and the
    ``model`` and ``train`` changes, over what the run file ``run`` (a run.json or recipe.json) recorded."""
    given = {k: v for k, v in options.items() if v is not None}
    if run is None:
        return {**given, "model": dict(model or {}), "train": dict(train or {})}
    recipe = read_run(run)
    if recipe.part not in (None, name):
        raise ConfigError(
            f"{run} is a run of the {recipe.part}, not of the {name}; replay it with its own command"
        )
    from musiclm.training import TrainConfig

    accepted = {
        "options": set(inspect.signature(_attribute(part(name).recipe)).parameters),
        "model": {f.name for f in dataclasses.fields(part(name).config_class())},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
    }
    for key, recorded in (("options", recipe.options), ("model", recipe.model), ("train", recipe.train)):
        unknown = sorted(set(recorded) - accepted[key])
        if unknown:  # a run of an older version, whose fields have since been removed
            raise ConfigError(
                f"{run}: the {name}'s {key} have no field(s) {unknown} (known: {sorted(accepted[key])}); "
                "remove them from the file"
            )
    model, train = recipe.changes(model, train)
    return {**recipe.options, **given, "model": model, "train": train}
