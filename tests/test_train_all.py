"""`musiclm train all --preset tiny`: every part trained in order on real renders, one pipeline folder
that generates audio from text, and a rerun that skips what is finished."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from musiclm.cli.main import app
from musiclm.pipeline import MusicLM


def test_train_all_tiny_end_to_end_then_resume(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "all",
        "--preset",
        "tiny",
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--steps-scale",
        "0.4",
    ]
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


@pytest.mark.slow
def test_train_all_under_torchrun_with_two_processes(tiny_dataset, tmp_path):
    """`torchrun --nproc_per_node 2 musiclm train all`: every part trains data-parallel; rank 0 alone writes
    the k-means, the MuLan and melody folders and the pipeline (each says so once), and the ranks meet
    after each part, so the stages read the finished token shards."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "musiclm.cli.main",
        "train",
        "all",
        "--preset",
        "tiny",
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--steps-scale",
        "0.2",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in (
        "k-means of 32 clusters",
        "MuLan saved to",
        "melody embedder saved to",
        "pipeline saved to",
        "[10/10] pipeline ...",
        "pipeline ready in",
    ):
        assert result.stdout.count(line) == 1, line
    assert len(list((out / "parts").glob("*/.done"))) == 9 and (out / "pipeline" / ".done").is_file()

    model = MusicLM.from_pretrained(out / "pipeline")
    wav = model.generate(["a calm chorale for organ"], 1.0, seed=0)
    assert wav.shape == (1, model.codec.sample_rate) and torch.isfinite(wav).all()
