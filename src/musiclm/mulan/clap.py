"""An adapter that makes HF ``transformers``' ``ClapModel`` (LAION CLAP) a MusicLM conditioner.

CLAP is a contrastive text/audio model much like MuLan, so a user with CLAP weights can condition
MusicLM on it: ``ClapConditioner.from_hf(folder)`` wraps a local HF CLAP folder (model, feature
extractor and tokenizer), a residual k-means is fitted on audio embeddings exactly as for MuLan, and
the result saves and loads as one musiclm folder (``load_component``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import sliding_windows
from musiclm.config import Config
from musiclm.mulan.quantizer import ResidualKMeans, RVQTokens
from musiclm.pretrained import PretrainedMixin, load_weights


@dataclasses.dataclass
class ClapAdapterConfig(Config):
    hf_model: str = ""  # a local HF CLAP folder (or hub name where the hub is reachable)
    window_seconds: float = 10.0  # CLAP's input length; longer audio is averaged over windows, as MuLan
    stride_seconds: float = 1.0
    num_quantizers: int = 12
    codebook_size: int = 1024
    PRESETS = {
        "tiny": {"num_quantizers": 4, "codebook_size": 16},
        "small": {"codebook_size": 256},
        "paper": {},
    }


class ClapConditioner(RVQTokens, nn.Module, PretrainedMixin):
    """``interfaces.Conditioner`` over a ``ClapModel``; audio at CLAP's rate (48 kHz for LAION weights)."""

    config_class = ClapAdapterConfig
    model_type = "clap_conditioner"

    def __init__(self, config: ClapAdapterConfig):
        super().__init__()
        from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

        if not config.hf_model:
            raise ValueError("ClapAdapterConfig.hf_model is empty: give the folder of an HF ClapModel")
        self.config = config
        path = Path(config.hf_model)
        has_weights = not path.is_dir() or any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        self.clap = (
            ClapModel.from_pretrained(config.hf_model)
            if has_weights
            else ClapModel(ClapConfig.from_pretrained(path))
        )
        self.features = ClapFeatureExtractor.from_pretrained(config.hf_model)
        self.tokenizer = AutoTokenizer.from_pretrained(config.hf_model)
        self.sample_rate = self.features.sampling_rate
        self.embed_dim = self.clap.config.projection_dim
        self.num_quantizers, self.codebook_size = config.num_quantizers, config.codebook_size
        self.rvq = ResidualKMeans(self.embed_dim, config.num_quantizers, config.codebook_size)
        self.max_text_tokens = min(
            self.tokenizer.model_max_length, self.clap.config.text_config.max_position_embeddings - 2
        )

    @classmethod
    def from_hf(cls, hf_model: str | Path, **overrides) -> "ClapConditioner":
        return cls(ClapAdapterConfig(hf_model=str(hf_model), **overrides)).eval()

    @property
    def window_seconds(self) -> float:
        return self.config.window_seconds

    @property
    def device(self) -> torch.device:
        return self.rvq.codebooks.device

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        return (
            out.pooler_output if hasattr(out, "pooler_output") else out
        )  # transformers 5 returns an output object

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` at ``sample_rate`` -> ``[B, D]``; windows every ``stride_seconds``, averaged; short
        audio padded."""
        if wav.ndim == 1:
            wav = wav[None]
        win = round(self.config.window_seconds * self.sample_rate)
        windows = sliding_windows(
            wav.float().cpu(), win, round(self.config.stride_seconds * self.sample_rate)
        )
        chunks = [chunk.numpy() for chunk in windows.flatten(0, 1)]
        inputs = self.features(
            chunks,
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            truncation="rand_trunc",
            padding="repeatpad",
            max_length=win,
        )
        features = inputs["input_features"].to(self.device)  # the extractor works in numpy, on the CPU
        emb = F.normalize(self._pooled(self.clap.get_audio_features(input_features=features)), dim=-1)
        return F.normalize(emb.unflatten(0, windows.shape[:2]).mean(1), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"text #{i} is empty or only whitespace ({text!r}): describe the music in words"
                )
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        out = self.clap.get_text_features(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=batch["attention_mask"].to(self.device),
        )
        return F.normalize(self._pooled(out), dim=-1)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Weights (CLAP + codebooks) in ``model.safetensors``; CLAP's config, tokenizer and features in
        ``clap/``."""
        directory = super().save_pretrained(directory, dtype)
        self.clap.config.save_pretrained(directory / "clap")
        self.features.save_pretrained(directory / "clap")
        self.tokenizer.save_pretrained(directory / "clap")
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> "ClapConditioner":
        directory = Path(directory)
        config = cls.read_config(directory).replace(hf_model=str(directory / "clap"))
        model = cls(config)
        load_weights(model, directory / "model.safetensors", map_location)
        return model.eval()


def tiny_clap_folder(directory: str | Path, tokenizer_from: str) -> Path:
    """Write a tiny, randomly initialised HF CLAP folder (for tests and demos; no download needed).

    The text side borrows a local tokenizer (e.g. MuLan's MiniLM folder): CLAP only needs token ids."""
    from transformers import (
        AutoTokenizer,
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    audio = ClapAudioConfig(
        num_mel_bins=64,
        spec_size=256,
        window_size=8,
        hidden_size=32,
        patch_embeds_hidden_size=16,
        depths=(1, 1),
        num_attention_heads=(2, 2),
        projection_dim=16,
    )
    text = ClapTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        projection_dim=16,
        max_position_embeddings=66,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    directory = Path(directory)
    model.save_pretrained(directory)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=2).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
