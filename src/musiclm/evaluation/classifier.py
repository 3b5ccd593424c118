"""An evaluation-only audio classifier: a small CNN on log-mel with one head per attribute.

It gives KLD its label distributions, prompt adherence its instrument-family and style detectors,
and FAD a third embedding. It is trained on the rendered dataset's attributes and is never used to
train the generator, so the generator cannot have learned to fool it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import MelSpectrogram, crop_or_pad, load_audio, random_crop
from musiclm.config import Config
from musiclm.data.manifest import Clip
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable

FAMILIES = ["piano", "strings", "brass", "woodwinds", "reed", "guitar", "organ", "mallets", "voice", "synth", "bass",
            "choir"]
TEMPOS = ["slow", "medium", "fast"]
MODES = ["major", "minor"]
STYLES = ["folk song", "irish folk dance", "fiddle tune", "chorale", "renaissance polyphony", "madrigal",
          "medieval polyphony"]


class ClassifierError(ValueError):
    """Data or input the classifier cannot use."""


@dataclasses.dataclass
class ClassifierConfig(Config):
    sample_rate: int = 24000
    crop_seconds: float = 5.0
    n_mels: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 128)
    embed_dim: int = 128
    dropout: float = 0.2
    families: list[str] = dataclasses.field(default_factory=lambda: list(FAMILIES))
    tempos: list[str] = dataclasses.field(default_factory=lambda: list(TEMPOS))
    modes: list[str] = dataclasses.field(default_factory=lambda: list(MODES))
    styles: list[str] = dataclasses.field(default_factory=lambda: list(STYLES))
    PRESETS = {
        "tiny": {"crop_seconds": 2.0, "n_mels": 32, "channels": (8, 16), "embed_dim": 16},
        "small": {},
        "paper": {"channels": (64, 128, 256, 256), "embed_dim": 256},
    }

    @property
    def heads(self) -> dict[str, list[str]]:
        """Head name -> labels; ``family`` is multi-label (sigmoid), the others single-label (softmax)."""
        return {"family": self.families, "tempo": self.tempos, "mode": self.modes, "style": self.styles}


class EvalClassifier(Trainable, PretrainedMixin):
    config_class = ClassifierConfig
    model_type = "eval_classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.mel = MelSpectrogram(config.sample_rate, n_fft=1024, hop_length=config.sample_rate // 50,
                                  n_mels=config.n_mels)
        layers, c_in = [], 1
        for c in config.channels:
            # pool frequency only, so a frame sequence (for FAD) survives at 50/4 ... frames per second
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.GELU(), nn.MaxPool2d((2, 2))]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(config.embed_dim, len(labels))
                                    for name, labels in config.heads.items()})

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> frame embeddings ``[B, F, D]`` (the FAD embedding)."""
        if wav.ndim != 2:
            raise ClassifierError(f"expected audio [B, T], got shape {tuple(wav.shape)}")
        x = self.mel(wav)[:, None]  # [B, 1, M, F]
        x = (x + 5.0) / 5.0  # log-mel of music sits around -5; centre it for the first conv
        x = self.cnn(x).mean(2)  # [B, C, F']
        return self.proj(x.transpose(1, 2))

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head ``{name: [B, n_labels]}``."""
        pooled = self.drop(self.frames(wav).mean(1))
        return {name: head(pooled) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities per head: sigmoid for ``family``, softmax for the rest."""
        was = self.training
        self.eval()
        logits = self(wav)
        self.train(was)
        return {k: torch.sigmoid(v) if k == "family" else v.softmax(-1) for k, v in logits.items()}

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self(batch["wav"])
        out = {"family": F.binary_cross_entropy_with_logits(logits["family"], batch["family"])}
        for name in ("tempo", "mode", "style"):
            out[name] = F.cross_entropy(logits[name], batch[name], ignore_index=-1)
            known = batch[name] >= 0
            if known.any():
                hit = logits[name].argmax(-1) == batch[name]
                out[f"{name}_acc"] = hit[known].float().mean()
        out["family_acc"] = ((logits["family"] > 0).float() == batch["family"]).all(-1).float().mean()
        out["loss"] = sum(out[k] for k in ("family", "tempo", "mode", "style"))
        return out

    def training_step(self, batch, *, step: int, group: str) -> dict[str, torch.Tensor]:
        return self._losses(batch)

    def validation_step(self, batch) -> dict[str, torch.Tensor]:
        return self._losses(batch)


def labels_from_clips(clips: Sequence[Clip]) -> dict[str, list[str]]:
    """The label sets that occur in a manifest (config overrides for a classifier trained on it)."""
    def seen(key: str) -> list[str]:
        values = set()
        for c in clips:
            v = c.attributes.get(key)
            values.update(v if isinstance(v, list) else [] if v is None else [v])
        return sorted(values)

    tempos = [t for t in TEMPOS if t in seen("tempo_class")]
    return {"families": seen("families"), "tempos": tempos, "modes": seen("mode"), "styles": seen("style")}


def encode_labels(attributes: dict, config: ClassifierConfig) -> dict[str, torch.Tensor]:
    """Attribute dict of a manifest clip -> targets (``-1``: unknown, ignored by the loss)."""
    fams = torch.zeros(len(config.families))
    for fam in attributes.get("families", []):
        if fam in config.families:
            fams[config.families.index(fam)] = 1.0
    out = {"family": fams}
    for head, key in (("tempo", "tempo_class"), ("mode", "mode"), ("style", "style")):
        labels = config.heads[head]
        value = attributes.get(key)
        out[head] = torch.tensor(labels.index(value) if value in labels else -1)
    return out


class ClassifierDataset(torch.utils.data.Dataset):
    """Random crops of manifest clips with their attribute labels (engine convention: keys, not indices)."""

    def __init__(self, clips: Sequence[Clip], config: ClassifierConfig, random: bool = True):
        clips = [c for c in clips if c.attributes]
        if not clips:
            raise ClassifierError("no clip has attributes: train the classifier on a rendered dataset manifest")
        self.clips, self.config, self.random = list(clips), config, random

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int) -> dict:
        clip = self.clips[key % len(self)]
        length = round(self.config.crop_seconds * self.config.sample_rate)
        wav = load_audio(clip.path, self.config.sample_rate)
        if self.random:
            wav = random_crop(wav, length, np.random.default_rng(key))
        else:
            wav = crop_or_pad(wav, length, offset=max(0, (wav.shape[-1] - length) // 2))
        return {"wav": wav, **encode_labels(clip.attributes, self.config)}


def accuracy(model: EvalClassifier, clips: Sequence[Clip], batch_size: int = 16) -> dict[str, float]:
    """Held-out accuracy per head on centre crops (family: every family right; ``family_f1`` per label)."""
    data = ClassifierDataset(clips, model.config, random=False)
    hits: dict[str, list] = {"family": [], "tempo": [], "mode": [], "style": []}
    tp = fp = fn = 0.0
    for i in range(0, len(data), batch_size):
        items = [data[j] for j in range(i, min(i + batch_size, len(data)))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        probs = model.predict(batch["wav"])
        pred_f = (probs["family"] > 0.5).float()
        hits["family"] += (pred_f == batch["family"]).all(-1).tolist()
        tp += float((pred_f * batch["family"]).sum())
        fp += float((pred_f * (1 - batch["family"])).sum())
        fn += float(((1 - pred_f) * batch["family"]).sum())
        for head in ("tempo", "mode", "style"):
            known = batch[head] >= 0
            hits[head] += (probs[head].argmax(-1) == batch[head])[known].tolist()
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    out["family_f1"] = 2 * tp / max(2 * tp + fp + fn, 1.0)
    out["n"] = len(data)
    return out
