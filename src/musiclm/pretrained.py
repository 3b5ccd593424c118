"""HF-style persistence: ``save_pretrained(dir)`` / ``from_pretrained(dir)``.

A model folder holds ``config.json`` (the model type and its config) and ``model.safetensors``.
Weights are only ever read with safetensors, so loading a folder a user hands us runs no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors.torch import load_file, save_file

from musiclm.config import Config, ConfigError
from musiclm.files import atomic_write, write_text_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class PretrainedMixin:
    """Mix into an ``nn.Module`` whose ``__init__`` takes its config as the only argument."""

    config_class: ClassVar[type[Config]]
    # Written into config.json so that a folder of one kind of model is never loaded as another.
    model_type: ClassVar[str]
    config: Config

    def rebuilt_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes left out of ``model.safetensors`` and kept as ``__init__`` built them when
        loading: a frozen pretrained tower that ships in a package, or parts that only shape training."""
        return ()

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config and weights; ``dtype=torch.float16`` halves the size of a shipped model."""
        directory = Path(directory)
        rebuilt = self.rebuilt_prefixes()
        state = {k: v for k, v in _unique_state(self, dtype).items() if not k.startswith(rebuilt)}  # type: ignore[arg-type]
        with atomic_write(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        meta = {"model_type": self.model_type, "config": self.config.to_dict()}
        write_text_atomic(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def read_config(cls, directory: str | Path) -> Config:
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {directory} is not a saved {cls.model_type} model "
                f"(expected {CONFIG_NAME} and {WEIGHTS_NAME}, as written by save_pretrained)"
            )
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err})") from err
        if meta.get("model_type") != cls.model_type:
            raise ConfigError(
                f"{directory} holds a {meta.get('model_type')!r} model, not a {cls.model_type!r} model"
            )
        return cls.config_class.from_dict(meta["config"])

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Self:
        directory = Path(directory)
        model = cls.built_for_loading(cls.read_config(directory), directory)
        load_weights(model, directory / WEIGHTS_NAME, map_location)  # type: ignore[arg-type]
        model.eval()  # type: ignore[attr-defined]
        return model

    @classmethod
    def built_for_loading(cls, config: Any, directory: Path) -> Self:
        """The model that a saved folder's weights are loaded into (a part built otherwise for inference
        overrides this, not :meth:`from_pretrained`)."""
        return cls(config)  # type: ignore[call-arg]


def load_weights(
    model: torch.nn.Module,
    path: Path,
    map_location: str | torch.device = "cpu",
    missing_ok: tuple[str, ...] = (),
) -> None:
    """Load a safetensors file into ``model``, casting to the model's dtypes, with errors that name keys;
    every parameter and buffer of ``model`` then lives on ``map_location``. Keys starting with one of
    ``missing_ok`` that the file lacks keep the model's values."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        # read on the CPU: load_state_dict copies into the model's own tensors, wherever they are
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated headers and data
        raise ConfigError(
            f"{path} is not a readable safetensors file ({err}); re-save or re-download it"
        ) from err
    floats = [v for v in state.values() if v.is_floating_point()]
    bad = sum(int((~torch.isfinite(v)).sum()) for v in floats)
    if bad:  # such a part loads and runs, and makes silence or noise that looks like a result
        total = sum(v.numel() for v in floats)
        raise ConfigError(
            f"{path.parent} holds non-finite weights ({bad} of {total} values are NaN/inf); "
            "retrain or restore it"
        )
    load_state_dict_checked(model, state, source=str(path), missing_ok=missing_ok)
    model.to(map_location)


def load_state_dict_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, missing_ok: tuple[str, ...] = ()
) -> None:
    expected = model.state_dict()
    state = dict(state)
    for old, new in getattr(model, "renamed_keys", {}).items():  # weights saved under a former name
        if old in state and new not in state:
            state[new] = state.pop(old)
    rebuilt = getattr(model, "rebuilt_prefixes", tuple)() + missing_ok
    state.update({k: v for k, v in expected.items() if k.startswith(rebuilt) and k not in state})
    for group in _tied_groups(expected):  # tied weights are stored once; give every alias its tensor
        present = [k for k in group if k in state]
        for k in group:
            if present and k not in state:
                state[k] = state[present[0]]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} in {source} vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_head(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_head(shapes)}")
        raise ConfigError(f"weights in {source} do not fit the model: " + "; ".join(parts))
    cast = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def _head(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    by_storage: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for k, v in state.items():
        if v.numel():
            by_storage.setdefault((v.data_ptr(), tuple(v.shape)), []).append(k)
    return [keys for keys in by_storage.values() if len(keys) > 1]


def _unique_state(model: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """State dict with tied tensors kept once, contiguous and optionally cast (safetensors needs both)."""
    state = model.state_dict()
    aliases = {k for group in _tied_groups(state) for k in group[1:]}
    out = {}
    for k, v in state.items():
        if k in aliases:
            continue
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    return out
