"""The shared training engine: learning, exact resume after SIGKILL, DDP, checkpoints, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_training import ToyConfig, ToyData, ToyModel, run

from musiclm.training import CheckpointError, TrainConfig, Trainer, TrainingError
from musiclm.training.checkpoint import list_checkpoints
from musiclm.training.engine import largest_batch

TOY = str(Path(__file__).with_name("toy_training.py"))
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


def test_loss_goes_down_and_logs_are_written(tmp_path):
    trainer = run(tmp_path, steps=150, val=True)
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert "val/loss" in trainer.history[-1]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 1
    assert list((tmp_path / "logs").iterdir()), "TensorBoard events written"
    run_file = json.loads((tmp_path / "run.json").read_text())  # the run's settings, for reproducing it
    assert run_file["model"] == {"dim": 8, "hidden": 32} and run_file["train"]["steps"] == 150
    reloaded = ToyModel.from_pretrained(tmp_path)  # the engine exports the trained model
    torch.testing.assert_close(reloaded.state_dict(), trainer.model.state_dict())


def test_exact_resume_after_sigkill(tmp_path):
    args = ["--accum", "2", "--ema", "0.9", "--ckpt-every", "3"]
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, TOY, str(reference), "24", *args], env=ENV, check=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, TOY, str(killed), "24", "--slow", "0.05", *args], env=ENV)
    deadline = time.time() + 60
    while not (killed / "checkpoints" / "step_00000009.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.safetensors").exists()
    step_at_kill = len((killed / "metrics.jsonl").read_text().splitlines())
    assert step_at_kill < 24

    subprocess.run([sys.executable, TOY, str(killed), "24", *args], env=ENV, check=True)
    assert_same_weights(reference / "final.safetensors", killed / "final.safetensors")


def test_ddp_two_processes_match_single_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, TOY, str(single), "6", "--batch", "8"], env=ENV, check=True)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
    ]
    subprocess.run([*torchrun, TOY, str(ddp), "6", "--batch", "8"], env=ENV, check=True, timeout=120)

    assert_same_weights(ddp / "final.safetensors", ddp / "final_rank1.safetensors", atol=0)
    assert_same_weights(single / "final.safetensors", ddp / "final.safetensors", atol=1e-5)
    loss = lambda d: [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert loss(ddp) == pytest.approx(loss(single), rel=1e-5)


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    run(tmp_path, steps=6, ckpt_every=2)
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000004.pt", "step_00000006.pt"]  # keep_checkpoints=2

    # A write that dies half-way leaves the previous checkpoint as it was and no file under the final name.
    def dying_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    trainer = Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=8, progress=False), tmp_path)
    trainer.step = 8
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == names
    # The next run cleans the partial file and resumes from the intact checkpoint.
    resumed = Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=8, progress=False), tmp_path)
    assert resumed.step == 6
    assert not list((tmp_path / "checkpoints").glob("*.partial"))


def test_an_interrupted_run_file_keeps_the_earlier_one(tmp_path, request):
    run(tmp_path, steps=2)
    files = {name: (tmp_path / name).read_bytes() for name in ("run.json", "summary.json")}
    request.getfixturevalue("dying_text_writes")
    with pytest.raises(OSError, match="No space left"):  # run.json, written as the trainer starts
        Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=4, progress=False), tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
    assert not list(tmp_path.rglob("*.partial"))


def test_corrupt_checkpoint_is_a_clear_error_and_keeps_the_previous(tmp_path):
    run(tmp_path, steps=4, ckpt_every=2)
    latest = tmp_path / "checkpoints" / "step_00000004.pt"
    latest.write_bytes(latest.read_bytes()[:200])
    with pytest.raises(
        CheckpointError, match=r"step_00000004.pt is truncated or corrupt.*step_00000002.pt is intact"
    ):
        Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=8, progress=False), tmp_path)
    assert (tmp_path / "checkpoints" / "step_00000002.pt").exists()


def test_checkpoint_from_another_config_names_the_fields(tmp_path):
    run(tmp_path, steps=2, ckpt_every=2, hidden=32)
    with pytest.raises(CheckpointError, match=r"hidden: 32 != 64"):
        Trainer(ToyModel(ToyConfig(hidden=64)), ToyData(), TrainConfig(steps=4, progress=False), tmp_path)


def test_output_directory_is_created_or_refused_before_training(tmp_path):
    nested = tmp_path / "a" / "b" / "run"
    Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=1, progress=False), nested)
    assert nested.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="not writable"):
        Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(steps=1, progress=False), blocker / "run")


def test_bad_settings_and_diverging_loss_are_clear_errors(tmp_path):
    with pytest.raises(TrainingError, match="divisible"):
        Trainer(ToyModel(ToyConfig()), ToyData(), TrainConfig(batch_size=6, grad_accum=4), tmp_path / "a")
    model = ToyModel(ToyConfig())
    with torch.no_grad():
        model.net[0].weight.fill_(float("nan"))
    trainer = Trainer(model, ToyData(), TrainConfig(steps=3, progress=False), tmp_path / "b")
    with pytest.raises(TrainingError, match="loss is nan at step 0"):
        trainer.fit()


class Opposite(ToyData):
    """Held-out data that the training data misleads: the more a model fits ToyData, the worse it does."""

    def __getitem__(self, key):
        item = super().__getitem__(key)
        return {**item, "y": -item["y"]}


def test_keep_best_exports_the_lowest_validation_loss(tmp_path):
    config = TrainConfig(
        steps=60,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        log_every=1,
        val_every=5,
        progress=False,
        keep_best="loss",
    )
    trainer = Trainer(ToyModel(ToyConfig()), ToyData(), config, tmp_path / "run", val_data=Opposite())
    trainer.fit()
    curve = [(h["step"], h["val/loss"]) for h in trainer.history if "val/loss" in h]
    best_step, best_loss = min(curve, key=lambda c: c[1])
    assert best_step < 60 and best_loss < curve[-1][1]  # it overfits, so the best weights are not the last
    record = json.loads((tmp_path / "run" / "best.json").read_text())
    assert record["step"] == best_step and record["value"] == pytest.approx(best_loss)
    assert_same_weights(
        tmp_path / "run" / "model.safetensors", tmp_path / "run" / "best" / "model.safetensors"
    )
    with pytest.raises(TrainingError, match="keep_best='acc' is not a validation metric"):
        Trainer(
            ToyModel(ToyConfig()),
            ToyData(),
            config.replace(keep_best="acc"),
            tmp_path / "b",
            val_data=Opposite(),
        ).fit()


def test_warm_start_from_a_model_folder_continues_training(tmp_path):
    first = run(tmp_path / "a", steps=60)
    trained = first.model.state_dict()
    seed_config = dict(
        steps=5, batch_size=8, lr=1e-9, warmup_steps=1, log_every=1, progress=False, ema_decay=0.9
    )
    model = ToyModel(ToyConfig(hidden=32))
    warm = Trainer(model, ToyData(), TrainConfig(**seed_config, init=str(tmp_path / "a")), tmp_path / "b")
    for key, value in trained.items():  # the weights of the folder, in the model and its EMA copy
        torch.testing.assert_close(warm.model.state_dict()[key], value)
        torch.testing.assert_close(warm.ema.module.state_dict()[key], value)
    warm.fit()
    losses = [h["loss"] for h in warm.history if "loss" in h]
    assert (
        max(losses) < first.history[0]["loss"] * 0.5
    )  # continues where the first run ended, not from scratch
    # a resumable checkpoint of its own wins over init; a folder of another model is refused by name
    again = Trainer(
        ToyModel(ToyConfig(hidden=32)),
        ToyData(),
        TrainConfig(**{**seed_config, "steps": 6}, init=str(tmp_path / "nowhere")),
        tmp_path / "b",
    )
    assert again.step == 5
    with pytest.raises(TrainingError, match="not a model folder"):
        Trainer(
            ToyModel(ToyConfig(hidden=32)),
            ToyData(),
            TrainConfig(init=str(tmp_path / "nowhere")),
            tmp_path / "c",
        )
    with pytest.raises(TrainingError, match="cannot start from"):
        Trainer(
            ToyModel(ToyConfig(hidden=64)), ToyData(), TrainConfig(init=str(tmp_path / "a")), tmp_path / "d"
        )


def test_max_minutes_ends_the_run_on_time_as_at_a_last_step(tmp_path):
    model = ToyModel(ToyConfig())
    model.slow = 0.01
    config = TrainConfig(steps=10**6, batch_size=8, log_every=1000, ckpt_every=1000, progress=False)
    trainer = Trainer(model, ToyData(), config.replace(max_minutes=0.02), tmp_path)
    started = time.perf_counter()
    trainer.fit()
    assert 1.2 <= time.perf_counter() - started < 10 and 10 < trainer.step < 10**6
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [f"step_{trainer.step:08d}.pt"]
    assert (tmp_path / "model.safetensors").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == trainer.step and summary["stopped"] == "max_minutes"
    assert summary["loss"][-1][0] == trainer.step and summary["samples_per_s"] > 0
    assert "tokens_per_s" not in summary  # the toy model counts no tokens (Trainable.batch_cost)
    again = Trainer(ToyModel(ToyConfig()), ToyData(), config.replace(steps=trainer.step + 2), tmp_path)
    assert again.step == trainer.step  # the checkpoint resumes


def test_largest_batch_doubles_while_it_fits_and_pays():
    def rate(fits: int, saturates: int):
        tried = []

        def samples_per_s(batch: int) -> float | None:
            tried.append(batch)
            return None if batch > fits else 100.0 * min(batch, saturates)

        return samples_per_s, tried

    speed, tried = rate(fits=64, saturates=16)
    assert largest_batch(speed, 4) == 16 and tried == [4, 8, 16, 32]  # 32 is no faster than 16
    speed, tried = rate(fits=64, saturates=1024)
    assert largest_batch(speed, 4) == 64 and tried == [4, 8, 16, 32, 64, 128]  # 128 does not fit
    speed, tried = rate(fits=20, saturates=1024)
    assert largest_batch(speed, 64) == 16 and tried == [64, 32, 16]  # the configured batch does not fit
