"""The contracts between MusicLM's parts, and how a saved part is found again.

Shapes: B batch, T samples, F frames, Q quantizer levels, W windows, D embedding size. Every part
that implements one of these protocols (our own models and the adapters to HF ``transformers``
models) can be swapped into the pipeline.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from musiclm.config import ConfigError


@runtime_checkable
class AcousticCodec(Protocol):
    """SoundStream-like codec: waveform <-> residual-VQ codes (the acoustic tokens)."""

    sample_rate: int
    frame_rate: float
    num_quantizers: int
    codebook_size: int

    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """``[B, T]`` float -> ``[B, Q, F]`` long."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, q <= Q, F]`` long -> ``[B, T]`` float."""
        ...


@runtime_checkable
class SemanticTokenizer(Protocol):
    """Self-supervised features + k-means: waveform -> semantic tokens at ``frame_rate`` (25 Hz)."""

    sample_rate: int
    frame_rate: float
    vocab_size: int

    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` float -> ``[B, F]`` long, F = round(frame_rate * T / sample_rate)."""
        ...


@runtime_checkable
class Conditioner(Protocol):
    """MuLan-like joint text/audio embedding, quantized into conditioning tokens."""

    sample_rate: int
    embed_dim: int
    num_quantizers: int
    codebook_size: int
    window_seconds: float  # the audio length of one embedding window (longer audio: windows averaged)

    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, D]`` (unit norm)."""
        ...

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """``B`` strings -> ``[B, D]`` (unit norm)."""
        ...

    def quantize(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> ``[B, Q]`` long."""
        ...

    def code_vectors(self) -> torch.Tensor:
        """``[Q, K, D]``: the RVQ codebooks ``quantize`` chooses among (what "codebook" stages embed)."""
        ...


@runtime_checkable
class MelodyEmbedder(Protocol):
    """Melody embedding per window (MusicLM section 3.3), quantized into melody tokens."""

    sample_rate: int
    embed_dim: int
    num_quantizers: int
    codebook_size: int
    window_seconds: float
    hop_seconds: float

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, W, D]``."""
        ...

    def quantize(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[B, W, D]`` -> ``[B, W, Q]`` long."""
        ...


# model_type (written in config.json by save_pretrained) -> "module:Class". Each part adds its line.
COMPONENTS: dict[str, str] = {
    "eval_classifier": "musiclm.evaluation.classifier:EvalClassifier",
    "mulan": "musiclm.mulan.model:MuLan",
    "melody": "musiclm.mulan.melody:MelodyEmbedder",
    "clap_conditioner": "musiclm.mulan.clap:ClapConditioner",
    "musiclm_stage": "musiclm.stages.stages:StageLM",
    "w2vbert": "musiclm.semantic.w2vbert:W2VBert",
    "semantic_kmeans": "musiclm.semantic.tokenizer:KMeansTokenizer",
    "soundstream": "musiclm.codec.soundstream:SoundStream",
    "encodec": "musiclm.codec.encodec:HFCodec",  # HF transformers folders, by their own model_type
    "dac": "musiclm.codec.encodec:HFCodec",
}


def load_component(directory: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load any saved part by the ``model_type`` in its ``config.json``."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a saved musiclm model folder")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ConfigError(
            f"{config_path} is not a JSON object ({err}); restore it from the saved model"
        ) from err
    if model_type not in COMPONENTS:
        raise ValueError(f"{directory}: unknown model_type {model_type!r}; known: {sorted(COMPONENTS)}")
    module_name, class_name = COMPONENTS[model_type].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_pretrained(directory, map_location=map_location)
