"""Typed configs with presets and HF-style save_pretrained / from_pretrained."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from torch import nn

from musiclm.config import Config, ConfigError
from musiclm.pretrained import PretrainedMixin


@dataclasses.dataclass
class InnerConfig(Config):
    width: int = 4


@dataclasses.dataclass
class TiedConfig(Config):
    vocab: int = 10
    dim: int = 4
    kernel: tuple[int, int] = (3, 1)
    inner: InnerConfig = dataclasses.field(default_factory=InnerConfig)
    PRESETS = {"tiny": {"dim": 4}, "small": {"dim": 8, "inner": {"width": 16}}}


class TiedModel(nn.Module, PretrainedMixin):
    config_class = TiedConfig
    model_type = "tied-test"

    def __init__(self, config: TiedConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, as in the token Transformers


def test_presets_roundtrip_and_diff():
    small = TiedConfig.preset("small")
    assert small.dim == 8 and small.inner.width == 16
    assert TiedConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    assert TiedConfig.preset("tiny").diff(small) == ["dim: 4 != 8", "inner.width: 4 != 16"]
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*'small', 'tiny'"):
        TiedConfig.preset("huge")
    with pytest.raises(ConfigError, match=r"no field\(s\) \['depth'\]"):
        TiedConfig.from_dict({"depth": 3})


def test_save_and_load_pretrained_with_tied_weights(tmp_path):
    model = TiedModel(TiedConfig.preset("small"))
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = TiedModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    assert loaded.head.weight.data_ptr() == loaded.embed.weight.data_ptr()

    half = tmp_path / "fp16"
    model.save_pretrained(half, dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < (tmp_path / "model.safetensors").stat().st_size
    restored = TiedModel.from_pretrained(half)
    assert restored.embed.weight.dtype == torch.float32
    torch.testing.assert_close(restored.embed.weight, model.embed.weight, atol=1e-3, rtol=1e-3)


def test_mismatched_weights_and_folders_are_clear_errors(tmp_path):
    TiedModel(TiedConfig.preset("small")).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["dim"] = 6
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"shape mismatches embed.weight: \(10, 8\) .* vs \(10, 6\)"):
        TiedModel.from_pretrained(tmp_path)
    meta["model_type"] = "codec"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="holds a 'codec' model"):
        TiedModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved tied-test model"):
        TiedModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    meta["model_type"] = "tied-test"
    meta["config"]["dim"] = 8
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        TiedModel.from_pretrained(tmp_path)


def test_values_are_type_checked_with_the_field_named():
    assert TiedConfig.from_dict({"dim": 6, "kernel": [5, 1]}).kernel == (5, 1)
    with pytest.raises(ConfigError, match=r"dim='wide' \(expected int\)"):
        TiedConfig.from_dict({"dim": "wide"})
    with pytest.raises(ConfigError, match="no field"):
        TiedConfig.from_dict({"depth": 3})


def test_a_field_removed_since_a_folder_was_saved_is_refused_with_why_and_the_fix():
    from musiclm.stages.stages import StageConfig

    with pytest.raises(
        ConfigError, match=r"no longer has \['direction_weight'\] \(direction_weight: the direction"
    ):
        StageConfig.from_dict({"stage": "coarse", "direction_weight": 0.0})
    with pytest.raises(ConfigError, match="delete them from the config.json"):
        StageConfig.from_dict({"direction_margin": 0.05, "direction_weight": 0.0})
    with pytest.raises(ConfigError, match=r"has no field\(s\) \['widht'\]"):  # a typo is no retired field
        StageConfig.from_dict({"widht": 3})


def test_config_show_resolves_every_part_with_set_changes():
    from typer.testing import CliRunner

    from musiclm.cli.config import PARTS
    from musiclm.cli.main import app

    runner = CliRunner()
    for part in PARTS:
        result = runner.invoke(app, ["config", "show", part, "--preset", "tiny", "--set", "train.lr=0.002"])
        assert result.exit_code == 0, (part, result.output)
        resolved = json.loads(result.output)
        assert resolved["train"]["lr"] == 0.002 and resolved["model"], part
    result = runner.invoke(
        app,
        [
            "config",
            "show",
            "coarse_stage",
            "--set",
            "model.layout=prefix",
            "--set",
            "model.semantic_lookahead=0",  # small's coarse lookahead is for the interleaved layout
            "--set",
            "model.mulan_levels=2",
            "--set",
            "steps=7",
        ],
    )
    resolved = json.loads(result.output)
    assert resolved["model"]["layout"] == "prefix" and resolved["model"]["mulan_levels"] == 2
    assert resolved["train"]["steps"] == 7  # a bare name is a training setting
    result = runner.invoke(app, ["config", "show", "mulan", "--set", "model.widht=3"])
    assert (
        result.exit_code != 0 and "widht" in result.output and "widths" in result.output
    )  # the valid ones named
    result = runner.invoke(app, ["train", "all", "--data", "x.jsonl", "--out", "o", "--set", "model.dim=3"])
    assert result.exit_code != 0 and "PART.model.FIELD" in result.output


def test_importing_the_library_leaves_the_process_alone():
    """No environment or logging changes on import; offline mode is the CLI's default, not the package's."""
    import subprocess
    import sys

    code = (
        "import os, logging, json; before = dict(os.environ); "
        "level = logging.getLogger('vector_quantize_pytorch').level; "
        "import musiclm.pipeline, musiclm.mulan.model, musiclm.mulan.clap, musiclm.codec.soundstream; "
        "import musiclm.web; "
        "from musiclm.mulan.model import resolve_text_model; "
        "print(json.dumps([sorted(k for k in os.environ if os.environ.get(k) != before.get(k)), "
        "logging.getLogger('vector_quantize_pytorch').level == level, "
        "resolve_text_model('someone/a-model')]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    changed, logging_untouched, resolved = json.loads(out.stdout.strip().splitlines()[-1])
    assert changed == [] and logging_untouched
    assert resolved == "someone/a-model"  # a hub name goes to the HF loaders as given, no local fallback
