"""The part registry and recipes: a run replays from its run.json bit for bit, `config show` resolves a part
as its train command does, the shipped parts' recipe files give their configs, and `train all --recipes`
plans the shipped pipeline's rebuild from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_tokens import token_folder
from typer.testing import CliRunner

from musiclm.cli.main import app
from musiclm.parts import PARTS, read_run, recipe_arguments

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "musiclm_small"


@pytest.fixture
def tokens(tmp_path) -> Path:
    return token_folder(tmp_path / "tokens")


def musiclm(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def refusal(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # rich wraps the message in a box


def test_a_run_replays_from_its_run_json_bit_for_bit(tokens, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    musiclm(
        "train", "stage", "--stage", "semantic", "--preset", "tiny", "--tokens", tokens, "--out", first,
        "--steps", 3, "--device", "cpu", "--set", "model.dim=32", "--set", "train.seed=3",
    )  # fmt: skip
    recorded = json.loads((first / "run.json").read_text())
    assert recorded["part"] == "semantic_stage" and recorded["options"] == {
        "preset": "tiny",
        "stage": "semantic",
    }
    assert recorded["model"]["dim"] == 32 and recorded["train"]["seed"] == 3
    # neither stage, preset, steps nor the --set changes: all from run.json
    musiclm(
        "train",
        "stage",
        "--config",
        first / "run.json",
        "--tokens",
        tokens,
        "--out",
        again,
        "--device",
        "cpu",
    )
    replayed = json.loads((again / "run.json").read_text())
    assert replayed == recorded
    weights, replayed_weights = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert weights.keys() == replayed_weights.keys()
    assert all(torch.equal(weights[k], replayed_weights[k]) for k in weights)

    # `config show` resolves the run as the train command did, and the command line still wins over it
    shown = json.loads(
        musiclm("config", "show", "semantic_stage", "--config", first / "run.json", "--tokens", tokens)
    )
    assert shown == {"model": recorded["model"], "train": recorded["train"]}
    changed = recipe_arguments("semantic_stage", {}, {"dropout": 0.2}, {"steps": 1}, first / "run.json")
    assert changed["model"] == {**recorded["model"], "dropout": 0.2} and changed["train"]["steps"] == 1


def test_config_show_takes_a_stages_vocabularies_from_its_token_folder(tokens):
    shown = json.loads(musiclm("config", "show", "coarse_stage", "--preset", "tiny", "--tokens", tokens))
    model = shown["model"]
    assert (model["semantic_vocab"], model["codebook_size"], model["mulan_codebook"]) == (16, 32, 16)
    assert (model["coarse_quantizers"], model["fine_quantizers"]) == (2, 4)  # a third of the codec's 6 levels
    default = json.loads(musiclm("config", "show", "coarse_stage", "--preset", "tiny"))["model"]
    assert default["semantic_vocab"] == 1024  # the preset's, without a folder
    assert "--tokens is for the token stages" in refusal("config", "show", "codec", "--tokens", tokens)
    vocab = refusal("config", "show", "coarse_stage", "--tokens", tokens, "--set", "model.semantic_vocab=8")
    assert "semantic_vocab 8 (the folder's: 16)" in vocab


def test_a_bad_run_file_is_refused_naming_it(tokens, tmp_path):
    def replay(config: Path) -> str:
        return refusal("train", "stage", "--config", config, "--tokens", tokens, "--out", tmp_path / "out")

    assert "missing.json not found; give the run.json of a training run folder" in replay(
        tmp_path / "missing.json"
    )
    (tmp_path / "broken.json").write_text("{not json")
    assert "cannot read" in replay(tmp_path / "broken.json")
    (tmp_path / "empty.json").write_text("{}")
    assert "has no 'model' and 'train' objects" in replay(tmp_path / "empty.json")
    (tmp_path / "codec.json").write_text(json.dumps({"part": "codec", "model": {}, "train": {}}))
    assert "is a run of the codec, not of the semantic_stage" in refusal(
        "train", "stage", "--stage", "semantic", "--config", tmp_path / "codec.json", "--tokens", tokens,
        "--out", tmp_path / "out",
    )  # fmt: skip
    older = {"model": {"stage": "semantic", "direction_weight": 0.0}, "train": {}}
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert "no field(s) ['direction_weight']" in replay(tmp_path / "older.json")


@pytest.mark.parametrize("name", ["codec", "mulan", "melody", "semantic_stage", "coarse_stage"])
def test_each_shipped_part_has_a_recipe_that_gives_its_config(name):
    """The recipe beside each shipped part resolves, through the registry, to the config its weights were
    saved with (a stage's vocabularies are those of the parts it was tokenized with)."""
    recipe = read_run(SHIPPED / name / "recipe.json")
    assert recipe.part == name
    arguments = recipe_arguments(name, {}, run=SHIPPED / name / "recipe.json")
    config = PARTS[name].model_config(arguments["preset"], arguments["model"])
    saved = json.loads((SHIPPED / name / "config.json").read_text())["config"]
    assert config.diff(type(config).from_dict(saved)) == []
    assert PARTS[name].train_config(arguments["preset"], arguments["train"]).steps > 0


def test_train_all_plans_the_shipped_pipelines_rebuild_from_its_recipes(tmp_path):
    """`train all --recipes checkpoints/musiclm_small --dry-run`: the parts in dependency order, each with its
    recipe's settings (no fine stage, no w2v-BERT: the shipped tokenizer clusters basic-pitch's notes); the
    warm starts of the shipped runs are dropped with a note, since their earlier parts are not rebuilt."""
    manifest = tmp_path / "manifest.jsonl"
    clips = [{"path": f"{i}.wav", "split": split} for i, split in enumerate(("train", "train", "valid"))]
    manifest.write_text("".join(json.dumps(c) + "\n" for c in clips))
    output = musiclm(
        "train", "all", "--recipes", SHIPPED, "--data", manifest, "--out", tmp_path / "run", "--dry-run",
        "--set", "coarse_stage.train.steps=7",
    )  # fmt: skip
    steps = {}
    for line in output.splitlines():
        if line.startswith("["):
            name, _, arguments = line.split("] ", 1)[1].partition(": ")
            steps[name] = json.loads(arguments)
    assert list(steps) == [
        "codec", "semantic", "mulan", "melody", "tokens", "tokens_valid", "semantic_stage", "coarse_stage",
        "pipeline",
    ]  # fmt: skip
    for name in ("codec", "mulan", "melody", "semantic_stage", "coarse_stage"):
        recipe = read_run(SHIPPED / name / "recipe.json")
        assert steps[name]["model"] == recipe.model, name
        kept = {k: v for k, v in recipe.train.items() if k not in ("init", "device")}
        assert {k: v for k, v in steps[name]["train"].items() if k != "device"} == {
            **kept,
            **({"steps": 7} if name == "coarse_stage" else {}),
        }, name
    assert "note: coarse_stage's recipe continued an earlier coarse_stage (train.init)" in output
    assert steps["semantic"]["backbone"] == "basic_pitch" and steps["semantic"]["clusters"] == 512
    assert steps["tokens"]["fresh_captions"] == 4 and steps["tokens_valid"]["split"] == "valid"
    assert steps["semantic_stage"]["val_tokens"].endswith("tokens_valid")
    assert steps["pipeline"]["guidance"] == 3.0 and steps["pipeline"]["fp16"] is True
    assert steps["pipeline"]["fine_stage"] is None
