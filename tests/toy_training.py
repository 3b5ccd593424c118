"""A toy model and dataset for the training-engine tests, runnable as a script for subprocess runs.

``python tests/toy_training.py OUT STEPS [--slow S] [--accum N] [--batch B] [--ema D]`` trains
and writes ``OUT/final.safetensors`` (rank r > 0 of a DDP run: ``final_rank{r}.safetensors``); tests start it
under torchrun (DDP) or kill it (resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from musiclm.config import Config
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable, TrainConfig, Trainer, seed_everything


@dataclasses.dataclass
class ToyConfig(Config):
    dim: int = 8
    hidden: int = 32
    PRESETS = {"tiny": {"dim": 8, "hidden": 32}, "wide": {"dim": 8, "hidden": 64}}


class ToyModel(Trainable, PretrainedMixin):
    config_class = ToyConfig
    model_type = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))
        self.slow = 0.0

    def training_step(self, batch, *, step, group):
        if self.slow:
            time.sleep(self.slow)
        pred = self.net(batch["x"]).squeeze(-1)
        return {"loss": nn.functional.mse_loss(pred, batch["y"])}


class ToyData(torch.utils.data.Dataset):
    """y = tanh(w.x) plus key-seeded noise: the item and its noise depend only on the key."""

    def __init__(self, n: int = 64, dim: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = torch.tanh(self.x @ torch.randn(dim, generator=g) / dim**0.5)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        i = key % len(self)
        noise = np.random.default_rng(key).normal(0, 0.01)
        return {"x": self.x[i], "y": self.y[i] + torch.tensor(noise, dtype=torch.float32)}


def run(out, steps, batch=8, accum=1, ema=None, slow=0.0, ckpt_every=2, hidden=32, val=False):
    torch.use_deterministic_algorithms(True)
    seed_everything(3)  # the same initial weights in every process, as a training command does
    model = ToyModel(ToyConfig(hidden=hidden))
    model.slow = slow
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        grad_accum=accum,
        lr=1e-2,
        warmup_steps=2,
        ema_decay=ema,
        log_every=1,
        ckpt_every=ckpt_every,
        seed=3,
        progress=False,
    )
    trainer = Trainer(model, ToyData(), config, out, val_data=ToyData(16) if val else None)
    final = trainer.fit()
    # Every rank writes its own copy so the DDP test can check that the ranks agree.
    name = "final.safetensors" if trainer.dist.is_main else f"final_rank{trainer.dist.rank}.safetensors"
    save_file({k: v.contiguous() for k, v in final.state_dict().items()}, f"{out}/{name}")
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("steps", type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--ema", type=float, default=None)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--ckpt-every", type=int, default=2)
    args = parser.parse_args()
    run(args.out, args.steps, args.batch, args.accum, args.ema, args.slow, args.ckpt_every)
