"""The one training loop every trainable part of MusicLM uses.

A model plugs in by implementing :class:`Trainable`: ``training_step`` returns a dict of losses
(``"loss"`` is what is optimised; everything else is logged). A model with several optimisers (the
codec's generator and discriminators) names them in ``optimizer_groups``; the engine then runs one
``training_step`` per group, in order, and steps only that group's parameters. Where the groups share
work (a GAN's discriminators learn from the generator's output), the model writes the whole step
itself in ``train_batch``.

The engine owns everything else: AdamW with warmup + cosine decay, gradient accumulation and
clipping, EMA weights, bf16 autocast where the device has it, validation, TensorBoard + tqdm,
atomic checkpoints with exact resume, and DDP under ``torchrun``. ``batch_size`` is the global batch
of one optimiser step, so a config means the same training whatever the number of processes. For a GPU
lent for minutes, ``max_minutes`` ends a run on time and ``auto_batch`` trains with the largest batch
that pays; ``OUT/summary.json`` gives the run's throughput (tokens/s and model FLOP utilisation for a
model that counts its :meth:`Trainable.batch_cost`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, default_collate

from musiclm.config import Config, ConfigError
from musiclm.files import write_text_atomic
from musiclm.pretrained import WEIGHTS_NAME, load_weights
from musiclm.progress import tqdm
from musiclm.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    remove_partial_writes,
    save_checkpoint,
)
from musiclm.training.distributed import (
    StreamSampler,
    all_ranks,
    all_reduce_mean,
    setup,
)

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
# Dense bf16 tensor-core peaks (FLOP/s) of the GPUs whose model FLOP utilisation is reported, by device name
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass
class TrainConfig(Config):
    steps: int = 1000
    batch_size: int = 8  # global: summed over ranks and accumulation micro-batches
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0
    ema_decay: float | None = None  # e.g. 0.999; validation and the exported model then use EMA weights
    precision: str = "auto"  # "auto" (bf16 on GPUs that have it, else fp32), "fp32" or "bf16"
    log_every: int = 10
    val_every: int = 0  # 0: validate only at the end
    val_batches: int | None = None  # None: the whole validation set
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    # a model folder (config.json + model.safetensors, e.g. a part of a pipeline folder) whose weights start a
    # run that has no checkpoint of its own: training continues across sessions from committed weights
    init: str | None = None
    # a validation metric (e.g. "loss"; MuLan with attribute heads: "contrastive"): the weights of its lowest
    # value are kept in OUT/best/ (OUT/best.json says which step) and the run exports them, not the last
    # ones: held-out loss bottoms out before the last step when a part starts to overfit
    keep_best: str | None = None
    # Minutes of training after which the run stops as at its last step (checkpoint, validation, export). The
    # schedule stays that of `steps`: a run cut short ends mid-schedule, and rerunning it goes on.
    max_minutes: float | None = None
    # CUDA only: before training, double the global batch from batch_size while a training step fits in
    # memory beside the optimiser state and runs 10 % more samples/s; the run trains with the last that did
    # (run.json records it; a resumed run keeps its checkpoint's). Past that point a bigger batch only costs
    # optimiser steps.
    auto_batch: bool = False


BEST_DIR = "best"
Losses = Callable[[int, Any], dict[str, torch.Tensor]]  # (micro-batch index, micro-batch) -> losses


class GroupUpdate(Protocol):
    def __call__(self, group: str, losses: Losses | None) -> None:
        """Accumulate the gradients of ``losses`` over the step's micro-batches (in order; None: no
        forward pass), then clip and step the optimiser of ``group``."""


class Trainable(nn.Module):
    """What the engine needs from a model. Subclass it next to ``PretrainedMixin``."""

    # state a warm start (``train.init``) leaves as the model was built, e.g. what belongs to the data
    # being trained on rather than to the weights being continued
    warm_start_keeps: tuple[str, ...] = ()
    # state an option adds that the weights a warm start reads may lack (they start as built)
    warm_start_adds: tuple[str, ...] = ()

    def train_batch(self, step: int, update: GroupUpdate) -> None:
        """One optimiser step, as calls of ``update``. Default: each group in turn learns from its
        ``training_step``."""
        for group in self.optimizer_groups():
            update(group, lambda _, batch, group=group: self.training_step(batch, step=step, group=group))

    def optimizer_groups(self) -> dict[str, dict[str, Any]]:
        """``{name: {"params": [...], **AdamW overrides}}``; default: one group of every parameter."""
        return {"model": {"params": [p for p in self.parameters() if p.requires_grad]}}

    def training_step(self, batch: Any, *, step: int, group: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Default: the training losses of the first group, without gradients."""
        first = next(iter(self.optimizer_groups()))
        return self.training_step(batch, step=-1, group=first)

    def batch_cost(self, batch: Any) -> tuple[int, float] | None:
        """``(tokens, FLOPs of its training step)`` of a micro-batch, for the logged tokens/s and model FLOP
        utilisation; None (the default): not counted."""
        return None


class _StepRunner(nn.Module):
    """Runs a model's losses as DDP's forward, so DDP sees the graph of every backward."""

    def __init__(self, model: Trainable):
        super().__init__()
        self.model = model

    def forward(self, losses: Losses, index: int, batch: Any) -> dict[str, torch.Tensor]:
        return losses(index, batch)


class Trainer:
    def __init__(
        self,
        model: Trainable,
        train_data: Dataset,
        config: TrainConfig,
        out_dir: str | Path,
        val_data: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        record: dict[str, Any] | None = None,
    ):
        """``record``: what run.json keeps beside the configs so that ``--config RUN.json`` replays the run
        (its part and its recipe's own options, :func:`musiclm.parts.run_record`)."""
        self.config, self.model = config, model
        self.train_data, self.val_data, self.collate_fn = train_data, val_data, collate_fn
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        _check_writable(self.out_dir)
        if len(train_data) == 0:  # type: ignore[arg-type]
            raise TrainingError("the training dataset is empty; check the manifest(s) you passed")

        self.device, self.dist = setup(config.device)
        per_step = self.dist.world_size * config.grad_accum
        if config.batch_size % per_step:
            raise TrainingError(
                f"batch_size {config.batch_size} must be divisible by world_size x grad_accum = {per_step}"
            )
        self.micro_batch = config.batch_size // per_step
        self.autocast_dtype = _autocast_dtype(config.precision, self.device)

        seed_everything(config.seed + self.dist.rank)
        self.model.to(self.device)
        self.groups = model.optimizer_groups()
        self.optimizers = {name: self._make_optimizer(spec) for name, spec in self.groups.items()}
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
            for name, opt in self.optimizers.items()
        }
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay
            else None
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._resume()
        if config.auto_batch and self.step == 0:
            self._grow_batch()
        if self.dist.is_main:  # the run is reproducible from its folder: the model's and training's settings
            model_config = getattr(model, "config", None)
            write_text_atomic(
                self.out_dir / RUN_FILE,
                json.dumps(
                    {
                        "model_type": getattr(model, "model_type", type(model).__name__),
                        **(record or {}),
                        "model": model_config.to_dict() if isinstance(model_config, Config) else None,
                        "train": self.config.to_dict(),
                    },
                    indent=2,
                    default=str,
                )
                + "\n",
            )
        runner = _StepRunner(model)
        self.runner: nn.Module = (
            DistributedDataParallel(
                runner,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.groups) > 1,
            )
            if self.dist.enabled
            else runner
        )

    # ---------------------------------------------------------------- public
    def fit(self) -> nn.Module:
        cfg = self.config
        batches = self._train_batches()
        writer = self._writer()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=f"train {type(self.model).__name__}",
            disable=not (cfg.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        self.model.train()
        throughput = _Throughput(self.device, self.autocast_dtype, self.dist.world_size)
        out_of_time = False
        while self.step < cfg.steps and not out_of_time:
            started = time.perf_counter()
            micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
            logs = self._optimizer_step(micro_batches)
            self.step += 1
            costs = [self.model.batch_cost(b) for b in micro_batches]
            logs.update(throughput.add(time.perf_counter() - started, cfg.batch_size, costs))
            bar.update(1)
            out_of_time = cfg.max_minutes is not None and not all_ranks(
                throughput.minutes() < cfg.max_minutes, self.dist, self.device
            )
            last = self.step == cfg.steps or out_of_time
            if self.step % cfg.log_every == 0 or last:
                self._log(logs, writer, bar)
            if cfg.val_every and self.step % cfg.val_every == 0 and not last:
                self._log(self._validate_and_keep_best(), writer, bar)
            if self.step % cfg.ckpt_every == 0 or last:
                self.save_checkpoint()
        bar.close()
        if self.val_data is not None:
            self._log(self._validate_and_keep_best(), writer, bar)
        if writer is not None:
            writer.close()
        final = self.averaged_model()
        # the other ranks export nothing, and may not see the last best weights written yet
        if cfg.keep_best and self.dist.is_main and (self.out_dir / BEST_DIR / WEIGHTS_NAME).is_file():
            load_weights(final, self.out_dir / BEST_DIR / WEIGHTS_NAME, self.device)
        if self.dist.is_main and hasattr(final, "save_pretrained"):
            final.save_pretrained(self.out_dir)
        if self.dist.is_main:
            summary = {"steps": self.step, "stopped": "max_minutes" if out_of_time else "steps"}
            summary |= {"batch_size": cfg.batch_size, "world_size": self.dist.world_size}
            summary |= throughput.summary()
            for key in ("loss", "val/loss"):  # the curves
                summary[key] = [[h["step"], h[key]] for h in self.history if key in h]
            write_text_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            shown = ("steps", "stopped", "batch_size", "minutes", "samples_per_s", "tokens_per_s", "mfu")
            figures = [(k, summary[k]) for k in shown if k in summary]
            tqdm.write(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures))
        if self.dist.enabled:
            dist.barrier()  # no rank leaves before the exported model is on disk
        return final

    def averaged_model(self) -> nn.Module:
        """The weights to use and export: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_data is None:
            return {}
        model = self.averaged_model()
        was_training = model.training
        model.eval()
        indices = list(range(self.dist.rank, len(self.val_data), self.dist.world_size))  # type: ignore[arg-type]
        loader = DataLoader(
            self.val_data,
            batch_size=self.micro_batch,
            sampler=indices,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
        )
        totals: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(loader):
            if self.config.val_batches is not None and i >= self.config.val_batches:
                break
            with self._autocast():
                out = model.validation_step(_to_device(batch, self.device))
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            count += 1
        model.train(was_training)
        means = {f"val/{k}": v / max(count, 1) for k, v in totals.items()}
        return all_reduce_mean(means, self.dist, self.device)

    def _validate_and_keep_best(self) -> dict[str, float]:
        logs = self.validate()
        metric = self.config.keep_best
        if not metric or not logs or not hasattr(self.model, "save_pretrained"):
            return logs
        if f"val/{metric}" not in logs:
            known = sorted(k.removeprefix("val/") for k in logs)
            raise TrainingError(
                f"keep_best={metric!r} is not a validation metric of this model; choose one of {known}"
            )
        record = self.out_dir / (BEST_DIR + ".json")
        best = json.loads(record.read_text())["value"] if record.is_file() else math.inf
        value = logs[f"val/{metric}"]
        if value < best and self.dist.is_main:
            self.averaged_model().save_pretrained(self.out_dir / BEST_DIR)
            write_text_atomic(
                record, json.dumps({"step": self.step, "metric": metric, "value": value}) + "\n"
            )
        return logs

    def save_checkpoint(self) -> Path | None:
        rng = _rng_state()
        if self.dist.enabled:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        if not self.dist.is_main:
            return None
        model_config = getattr(self.model, "config", None)
        state = {
            "step": self.step,
            "model_type": getattr(self.model, "model_type", type(self.model).__name__),
            "model_config": model_config.to_dict() if isinstance(model_config, Config) else None,
            "train_config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "rng": gathered,
            "samples_seen": self.step * self.config.batch_size,
        }
        return save_checkpoint(
            state, checkpoint_path(self.ckpt_dir, self.step), keep=self.config.keep_checkpoints
        )

    # --------------------------------------------------------------- private
    def _set_batch(self, batch_size: int) -> None:
        self.config = self.config.replace(batch_size=batch_size)
        self.micro_batch = batch_size // (self.dist.world_size * self.config.grad_accum)

    def _grow_batch(self) -> None:
        """``auto_batch``: train with the largest batch that fits and pays (see :class:`TrainConfig`)."""
        if self.device.type != "cuda":
            if self.dist.is_main:
                tqdm.write(f"auto_batch: no CUDA device, so batch_size stays {self.config.batch_size}")
            return
        self.model.train()
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}  # what forward passes update
        micro = largest_batch(self._probe, self.micro_batch)
        self.model.load_state_dict(saved)
        seed_everything(self.config.seed + self.dist.rank)  # the probe's dropout drew from the streams
        self._set_batch(micro * self.dist.world_size * self.config.grad_accum)
        if self.dist.is_main:
            tqdm.write(f"auto_batch: batch_size {self.config.batch_size}")

    def _probe(self, micro: int) -> float | None:
        """Samples/s of a training step of micro-batch ``micro`` (every group's forward and backward, no
        update), or None where it does not fit in memory beside the optimiser state; the ranks agree."""
        collate = self.collate_fn or default_collate
        batch = _to_device(collate([self.train_data[k] for k in range(micro)]), self.device)

        def update(group: str, losses: Losses | None) -> None:
            if losses is not None:
                with self._autocast():
                    loss = losses(0, batch)["loss"]
                loss.backward()

        params = [p for spec in self.groups.values() for p in _tensors(spec)]
        moments = 2 * sum(
            p.numel() * p.element_size() for p in params
        )  # AdamW's, allocated at its first step
        seconds, fits = 0.0, True
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            for _ in range(2):  # the second is timed: the first pays for allocations and kernel choices
                torch.cuda.synchronize(self.device)
                began = time.perf_counter()
                self.model.train_batch(0, update)
                torch.cuda.synchronize(self.device)
                seconds = time.perf_counter() - began
                self.model.zero_grad(set_to_none=True)
            total = torch.cuda.get_device_properties(self.device).total_memory
            fits = torch.cuda.max_memory_allocated(self.device) + moments <= 0.9 * total
        except torch.cuda.OutOfMemoryError:
            fits = False
        self.model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        if not all_ranks(fits, self.dist, self.device):
            return None
        return all_reduce_mean({"rate": micro / seconds}, self.dist, self.device)["rate"]

    def _optimizer_step(self, micro_batches: list[Any]) -> dict[str, float]:
        logs: dict[str, float] = {}
        micro_batches = [_to_device(b, self.device) for b in micro_batches]

        def update(group: str, losses: Losses | None) -> None:
            self._update(group, losses, micro_batches, logs)

        self.model.train_batch(self.step, update)
        self.model.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return logs

    def _update(self, name: str, losses: Losses | None, micro_batches: list, logs: dict[str, float]) -> None:
        if name not in self.optimizers:
            raise TrainingError(f"train_batch updates {name!r}; the groups are {sorted(self.optimizers)}")
        prefix = f"{name}/" if len(self.optimizers) > 1 else ""
        self.model.zero_grad(set_to_none=True)  # another group's backward may have reached these parameters
        for i, batch in enumerate(micro_batches if losses is not None else []):
            sync = i == len(micro_batches) - 1
            # DDP averages gradients across ranks only on the last micro-batch's backward.
            no_sync = self.runner.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    out = self.runner(losses, i, batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{prefix}loss is {loss.item()} at step {self.step}; the last checkpoint in "
                        f"{self.ckpt_dir} is unaffected. Lower the learning rate or check the data."
                    )
                (loss / len(micro_batches)).backward()
            for key, value in out.items():
                logs[prefix + key] = logs.get(prefix + key, 0.0) + float(value.detach()) / len(micro_batches)
        if self.config.grad_clip:
            params = _tensors(self.groups[name])
            logs[prefix + "grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        logs[prefix + "lr"] = self.schedulers[name].get_last_lr()[0]
        self.optimizers[name].step()
        self.schedulers[name].step()

    def _make_optimizer(self, spec: dict[str, Any]) -> torch.optim.Optimizer:
        cfg = self.config
        options = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
        options.update({k: v for k, v in spec.items() if k != "params"})
        # params: tensors, or sets of them as {"params": [...], "lr_scale": s} (a pretrained part fine-tuned
        # slower than the layers trained from scratch)
        sets = list(spec["params"])
        sets = sets if _in_sets(spec) else [{"params": sets}]
        groups = []
        for chosen in sets:
            params, lr = list(chosen["params"]), options["lr"] * chosen.get("lr_scale", 1.0)
            # Biases, norms and gains (tensors under 2-D) are not decayed, as in GPT-2 and most audio models.
            groups += [
                {"params": [p for p in params if p.ndim >= 2], "lr": lr},
                {"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
            ]
        return torch.optim.AdamW([g for g in groups if g["params"]], **options)

    def _lr_factor(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _train_batches(self) -> Iterator[Any]:
        sampler = StreamSampler(
            len(self.train_data),
            self.config.seed,
            self.dist.rank,
            self.dist.world_size,  # type: ignore[arg-type]
            start=self.step * self.config.batch_size,
        )
        loader = DataLoader(
            self.train_data,
            batch_size=self.micro_batch,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.config.num_workers > 0,
        )
        return iter(loader)

    def _warm_start(self, folder: Path) -> None:
        model_type = getattr(self.model, "model_type", None)
        config = folder / "config.json"
        if not config.is_file():
            raise TrainingError(
                f"init {folder} is not a model folder (no config.json); give a folder written by "
                "save_pretrained, e.g. checkpoints/musiclm_small/coarse_stage"
            )
        found = json.loads(config.read_text()).get("model_type")
        if model_type is not None and found != model_type:
            raise TrainingError(
                f"init {folder} holds a {found!r} model; this run trains a {model_type!r} model"
            )
        kept = {k: v.clone() for k, v in self.model.state_dict().items() if k in self.model.warm_start_keeps}
        try:
            load_weights(self.model, folder / WEIGHTS_NAME, self.device, self.model.warm_start_adds)
        except ConfigError as err:
            raise TrainingError(
                f"cannot start from {folder}: {err}; train from scratch or pick a part with the same config"
            ) from err
        self.model.load_state_dict(kept, strict=False)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())
        if self.dist.is_main:
            tqdm.write(f"starting from the weights of {folder}")

    def _resume(self) -> None:
        remove_partial_writes(self.ckpt_dir)
        found = list_checkpoints(self.ckpt_dir)
        if not found:
            if self.config.init:
                self._warm_start(Path(self.config.init))
            return
        path = found[-1]
        state = load_checkpoint(path, map_location=self.device)
        if self.config.auto_batch:  # the batch its probe chose: the data order goes by it
            self._set_batch(state.get("train_config", {}).get("batch_size", self.config.batch_size))
        self._check_compatible(state, path)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        self.step = int(state["step"])
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            _set_rng_state(rng[self.dist.rank])
        else:
            warnings.warn(
                f"{path} was written by {len(rng)} process(es), this run has {self.dist.world_size}: "
                "data order is kept, but random streams (dropout, crops drawn from global RNG) restart",
                stacklevel=2,
            )
        if self.dist.is_main:
            tqdm.write(f"resuming from {path} (step {self.step})")

    def _check_compatible(self, state: dict[str, Any], path: Path) -> None:
        model_type = getattr(self.model, "model_type", type(self.model).__name__)
        if state.get("model_type") != model_type:
            raise CheckpointError(
                f"{path} is a checkpoint of a {state.get('model_type')!r} model, not of {model_type!r}; "
                f"use another output directory"
            )
        config = getattr(self.model, "config", None)
        if isinstance(config, Config) and state.get("model_config") is not None:
            differences = type(config).from_dict(state["model_config"]).diff(config)
            if differences:
                raise CheckpointError(
                    f"{path} was trained with another model config ({'; '.join(differences)}: checkpoint "
                    f"!= this run). Resume with the checkpoint's config, or use a new output directory."
                )
        if set(state["optimizers"]) != set(self.optimizers):
            raise CheckpointError(
                f"{path} has optimizers {sorted(state['optimizers'])}, this model {sorted(self.optimizers)}"
            )
        saved = state.get("train_config", {})
        for key in ("batch_size", "seed", "grad_accum"):
            if key in saved and saved[key] != getattr(self.config, key):
                warnings.warn(
                    f"resuming {path} with {key}={getattr(self.config, key)} (checkpoint: {saved[key]}); "
                    "the run will not match an uninterrupted one",
                    stacklevel=3,
                )

    def _writer(self) -> Any:
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter  # slow import; only rank 0 needs it

        return SummaryWriter(str(self.out_dir / "logs"))

    def _log(self, logs: dict[str, float], writer: Any, bar: tqdm) -> None:
        if not logs:
            return
        logs = all_reduce_mean(logs, self.dist, self.device)
        if not self.dist.is_main:
            return
        record = {"step": self.step, **logs}
        self.history.append(record)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in logs.items():
            writer.add_scalar(key, value, self.step)
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k.endswith("loss") or k.endswith("_per_s")}
        bar.set_postfix(shown, refresh=False)


def largest_batch(rate: Callable[[int], float | None], start: int, gain: float = 1.1) -> int:
    """The batch to train with: ``start`` doubled while ``rate(batch)`` (samples/s of a training step; None
    where it does not fit) gains at least ``gain`` on the batch before, or, where ``start`` does not fit,
    halved until it does."""
    batch, speed = start, rate(start)
    while speed is None and batch > 1:
        batch //= 2
        speed = rate(batch)
    if speed is None or batch < start:
        return batch
    while (faster := rate(2 * batch)) is not None and faster >= gain * speed:
        batch, speed = 2 * batch, faster
    return batch


class _Throughput:
    """What a run's steps do per second: this step's figures for the logs, and the run's (its first step left
    out: it pays for allocations and kernel choices) for ``summary.json``. Tokens and FLOPs come from the
    model's :meth:`Trainable.batch_cost`; the model FLOP utilisation (``mfu``) of a GPU whose bf16 peak is in
    ``PEAK_BF16_FLOPS``, when it trains in bf16."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None, world_size: int):
        self.began, self.world_size = time.perf_counter(), world_size
        self.device = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        self.precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        self.peak = None
        if device.type == "cuda" and dtype == torch.bfloat16:
            self.peak = next((peak for gpu, peak in PEAK_BF16_FLOPS.items() if gpu in self.device), None)
        self.steps, self.seconds, self.samples, self.tokens, self.flops = 0, 0.0, 0, 0, 0.0

    def minutes(self) -> float:
        return (time.perf_counter() - self.began) / 60

    def add(self, seconds: float, samples: int, costs: list[tuple[int, float] | None]) -> dict[str, float]:
        """Count a step of ``samples`` (global) whose micro-batches on this rank cost ``costs``."""
        counted = all(cost is not None for cost in costs)
        tokens = sum(cost[0] for cost in costs if cost) * self.world_size
        flops = sum(cost[1] for cost in costs if cost)  # this rank's: a GPU's utilisation
        self.steps += 1
        if self.steps > 1:
            self.seconds, self.samples = self.seconds + seconds, self.samples + samples
            self.tokens, self.flops = self.tokens + tokens, self.flops + flops
        logs = {"samples_per_s": samples / seconds}
        if counted:
            logs["tokens_per_s"] = tokens / seconds
        if counted and self.peak:
            logs["mfu"] = flops / seconds / self.peak
        return logs

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"minutes": self.minutes(), "device": self.device, "precision": self.precision}
        if self.seconds:
            out["samples_per_s"] = self.samples / self.seconds
        if self.seconds and self.tokens:
            out["tokens_per_s"] = self.tokens / self.seconds
            out["model_tflop_per_s"] = self.flops / self.seconds / 1e12  # per GPU
        if self.seconds and self.tokens and self.peak:
            out["peak_tflop_per_s"] = self.peak / 1e12
            out["mfu"] = self.flops / self.seconds / self.peak
        return out


def probe_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, or raise the OSError that says why not."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"  # one per process: DDP ranks probe the same folder
    probe.write_bytes(b"")
    probe.unlink()


def _check_writable(out_dir: Path) -> None:
    try:
        probe_writable(out_dir)
    except OSError as err:
        raise TrainingError(
            f"output directory {out_dir} is not writable ({err.strerror}); choose another --out"
        ) from err


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise TrainingError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # CPU bf16 autocast is slower than fp32 on most CPUs without AMX


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; call it before building a model so that runs start alike."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _in_sets(spec: dict[str, Any]) -> bool:
    """Whether an optimiser group's ``params`` come as sets (dicts of params and their ``lr_scale``)."""
    return bool(spec["params"]) and isinstance(spec["params"][0], dict)


def _tensors(spec: dict[str, Any]) -> list[torch.Tensor]:
    return (
        [p for chosen in spec["params"] for p in chosen["params"]] if _in_sets(spec) else list(spec["params"])
    )
