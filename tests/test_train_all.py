"""`musiclm train all --preset tiny`: every part trained in order on real renders, one pipeline folder
that generates audio from text, and a rerun that skips what is finished."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from musiclm.cli.main import app
from musiclm.pipeline import MusicLM


def test_train_all_tiny_end_to_end_then_resume(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train", "all", "--preset", "tiny", "--data", str(tiny_dataset), "--out", str(out), "--steps-scale", "0.4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "pipeline" / "pipeline.json").is_file()

    model = MusicLM.from_pretrained(out / "pipeline")
    wav = model.generate(["a calm chorale for organ"], 2.0, seed=0)
    assert wav.shape == (1, round(2.0 * model.codec.sample_rate))
    assert torch.isfinite(wav).all() and wav.pow(2).mean().sqrt() > 1e-4  # not silent

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, skipped") == 10
