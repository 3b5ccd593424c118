"""Training-engine overhead per step on a toy model: the engine's loop against a bare PyTorch loop.

Both train the same MLP on the same in-memory batches for the same number of steps; the difference
of the median per-step times is what the engine adds (data loading through its sampler, logging,
scheduling, gradient clipping, checkpoint bookkeeping).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
from torch import nn

from benchmarks.common import record
from musiclm.training import Trainable, TrainConfig, Trainer

DIM, STEPS, BATCH = 256, 200, 32


class MLP(Trainable):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, DIM), nn.GELU(), nn.Linear(DIM, 1))

    def training_step(self, batch, *, step, group):
        return {"loss": nn.functional.mse_loss(self.net(batch["x"]).squeeze(-1), batch["y"])}


class Data(torch.utils.data.Dataset):
    def __init__(self, n=4096):
        self.x, self.y = torch.randn(n, DIM), torch.randn(n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        i = key % len(self)
        return {"x": self.x[i], "y": self.y[i]}


def bare_loop() -> float:
    torch.manual_seed(0)
    model, data = MLP(), Data()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(STEPS):
        start = time.perf_counter()
        idx = torch.randint(0, len(data), (BATCH,))
        batch = {"x": data.x[idx], "y": data.y[idx]}
        opt.zero_grad(set_to_none=True)
        model.training_step(batch, step=step, group="model")["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[10:])


def engine_loop() -> tuple[float, float]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(steps=STEPS, batch_size=BATCH, log_every=10, ckpt_every=STEPS, progress=False)
        trainer = Trainer(MLP(), Data(), config, out)
        start = time.perf_counter()
        trainer.fit()
        total = time.perf_counter() - start
    per_step = [BATCH / h["samples_per_s"] for h in trainer.history if "samples_per_s" in h]
    return statistics.median(per_step[1:]), total / STEPS


def main() -> None:
    bare, engine = [], []
    for _ in range(3):  # alternate, so that load from elsewhere hits both alike
        bare.append(bare_loop())
        engine.append(engine_loop())
    bare_ms = statistics.median(bare) * 1e3
    engine_ms = statistics.median(e[0] for e in engine) * 1e3
    engine_wall_ms = statistics.median(e[1] for e in engine) * 1e3
    record(
        "engine",
        {
            "model": f"MLP {DIM}-{DIM}-1, batch {BATCH}, {STEPS} steps, 3 runs each, alternating",
            "bare_loop_ms_per_step_median": round(bare_ms, 3),
            "engine_ms_per_step_median": round(engine_ms, 3),
            "engine_overhead_ms_per_step": round(engine_ms - bare_ms, 3),
            "engine_wall_ms_per_step_incl_setup_checkpoint_export": round(engine_wall_ms, 3),
        },
    )
