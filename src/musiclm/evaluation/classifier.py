"""An evaluation-only audio classifier: a CNN on log-mel with one head per attribute.

It gives KLD its label distributions, prompt adherence its instrument-family, style, tempo-class and
mode detectors, and FAD a third embedding. It is trained on the rendered dataset's attributes and is
never used to train the generator, so the generator cannot have learned to fool it.

A CNN that pools log-mel over time hears timbre well and rhythm and harmony badly, so beside it
(``rhythm_and_key``) fixed onset-autocorrelation and key-profile measurements feed the heads
(:class:`musiclm.audio.RhythmAndKey`). Training audio is augmented as generated audio will differ from
clean renders (:class:`musiclm.data.augment.Augment`: level, reverb, band limit, resynthesis through a codec).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.attribute_heads import attribute_losses, encode_targets
from musiclm.attributes import FAMILIES, MODES, STYLES, TEMPOS
from musiclm.audio import (
    MelSpectrogram,
    RhythmAndKey,
    centre_crop,
    random_crop,
    read_clip,
)
from musiclm.config import Config
from musiclm.data.augment import Augment
from musiclm.data.manifest import Clip, read_manifest
from musiclm.files import write_text_atomic
from musiclm.interfaces import load_component
from musiclm.parts import PARTS, run_record
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable, Trainer, seed_everything


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
    rhythm_and_key: bool = (
        False  # onset autocorrelation and key-profile features beside the CNN (see module doc)
    )
    chroma: str = "stft"  # the key features' chroma (RhythmAndKey): "stft" or "semitone"
    hidden: int = 0  # width of a hidden layer before the heads (0: heads on the embedding directly)
    time_pool: int = 1  # mel frames averaged before the CNN: 2 halves its cost (timbre needs no 50 Hz)
    families: list[str] = dataclasses.field(default_factory=lambda: list(FAMILIES))
    tempos: list[str] = dataclasses.field(default_factory=lambda: list(TEMPOS))
    modes: list[str] = dataclasses.field(default_factory=lambda: list(MODES))
    styles: list[str] = dataclasses.field(default_factory=lambda: list(STYLES))
    PRESETS = {
        "tiny": {"crop_seconds": 2.0, "n_mels": 32, "channels": (8, 16), "embed_dim": 16},
        "small": {
            "n_mels": 80,
            "channels": (32, 64, 128, 256),
            "embed_dim": 192,
            "rhythm_and_key": True,
            "chroma": "semitone",
            "hidden": 256,
            "time_pool": 2,
        },
        "paper": {
            "n_mels": 128,
            "channels": (64, 128, 256, 256),
            "embed_dim": 256,
            "rhythm_and_key": True,
            "chroma": "semitone",
            "hidden": 512,
        },
    }

    @property
    def heads(self) -> dict[str, list[str]]:
        """Head name -> labels; ``family`` is multi-label (sigmoid), the others single-label (softmax)."""
        return {"family": self.families, "tempo": self.tempos, "mode": self.modes, "style": self.styles}


# What `musiclm train classifier` trains with per preset (TrainConfig fields), before --set changes.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 300, "batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "ckpt_every": 100},
    "small": {
        "steps": 4000,
        "batch_size": 32,
        "lr": 1e-3,
        "warmup_steps": 200,
        "ema_decay": 0.998,
        "ckpt_every": 250,
        "val_every": 500,
        "val_batches": 8,
    },
    "paper": {
        "steps": 20000,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup_steps": 500,
        "ema_decay": 0.999,
        "ckpt_every": 1000,
        "val_every": 1000,
        "val_batches": 16,
    },
}


class EvalClassifier(Trainable, PretrainedMixin):
    config_class = ClassifierConfig
    model_type = "eval_classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.mel = MelSpectrogram(
            config.sample_rate, n_fft=1024, hop_length=config.sample_rate // 50, n_mels=config.n_mels
        )
        layers, c_in = [], 1
        for c in config.channels:
            # pool frequency only, so a frame sequence (for FAD) survives at 50/4 ... frames per second
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.GELU(), nn.MaxPool2d((2, 2))]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        width = config.embed_dim
        if config.rhythm_and_key:
            self.rhythm_and_key = RhythmAndKey(config.sample_rate, frame_rate=50.0, chroma=config.chroma)
            width += self.rhythm_and_key.dim
        self.mlp = (
            nn.Sequential(nn.Linear(width, config.hidden), nn.GELU(), nn.Dropout(config.dropout))
            if config.hidden
            else nn.Identity()
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(config.hidden or width, len(labels)) for name, labels in config.heads.items()}
        )

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> frame embeddings ``[B, F, D]`` (the FAD embedding)."""
        return self._frames(self._mel(wav))

    def _mel(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2:
            raise ClassifierError(f"expected audio [B, T], got shape {tuple(wav.shape)}")
        return self.mel(wav)

    def _frames(self, mel: torch.Tensor) -> torch.Tensor:
        x = (mel[:, None] + 5.0) / 5.0  # log-mel of music sits around -5; centre it for the first conv
        if self.config.time_pool > 1:
            x = F.avg_pool2d(x, (1, self.config.time_pool))
        x = self.cnn(x).mean(2)  # [B, C, F']
        return self.proj(x.transpose(1, 2))

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head ``{name: [B, n_labels]}``."""
        mel = self._mel(wav)
        pooled = self._frames(mel).mean(1)
        if self.config.rhythm_and_key:
            pooled = torch.cat([pooled, self.rhythm_and_key(wav, mel)], dim=1)
        hidden = self.mlp(self.drop(pooled))
        return {name: head(hidden) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities per head: sigmoid for ``family``, softmax for the rest."""
        was = self.training
        self.eval()
        logits = self(wav)
        self.train(was)
        return {k: torch.sigmoid(v) if k == "family" else v.softmax(-1) for k, v in logits.items()}

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return attribute_losses(self(batch["wav"]), batch)

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


class ClassifierDataset(torch.utils.data.Dataset):
    """Crops of manifest clips with their attribute labels (engine convention: keys, not indices): random
    crops (changed by ``augment`` when given) for training, centre crops otherwise."""

    def __init__(
        self,
        clips: Sequence[Clip],
        config: ClassifierConfig,
        random: bool = True,
        augment: Augment | None = None,
    ):
        clips = [c for c in clips if c.attributes]
        if not clips:
            raise ClassifierError(
                "no clip has attributes: train the classifier on a rendered dataset manifest"
            )
        self.clips, self.config, self.random, self.augment = list(clips), config, random, augment

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int) -> dict:
        clip = self.clips[key % len(self)]
        rate = self.config.sample_rate
        length = round(self.config.crop_seconds * rate)
        wav = read_clip(clip, rate)
        rng = np.random.default_rng(key)
        if self.random:
            wav = random_crop(wav, length, rng)
        else:
            wav = centre_crop(wav, length)
        if self.augment is not None:
            wav = self.augment(wav, rate, rng)
        return {"wav": wav, **encode_targets(clip.attributes, self.config.heads)}


def accuracy(model: EvalClassifier, clips: Sequence[Clip], batch_size: int = 16) -> dict[str, Any]:
    """Held-out figures on centre crops: accuracy per head (family: the exact set), family micro-F1 and F1 per
    family, and confusion tables (``confusion_HEAD[true][predicted]`` counts) of the single-label heads."""
    config = model.config
    data = ClassifierDataset(clips, config, random=False)
    hits: dict[str, list] = {"family": [], "tempo": [], "mode": [], "style": []}
    counts = {
        "tp": torch.zeros(len(config.families)),
        "fp": torch.zeros(len(config.families)),
        "fn": torch.zeros(len(config.families)),
    }
    heads = ("tempo", "mode", "style")
    confusion = {
        head: torch.zeros(len(config.heads[head]), len(config.heads[head]), dtype=torch.long)
        for head in heads
    }
    for i in range(0, len(data), batch_size):
        items = [data[j] for j in range(i, min(i + batch_size, len(data)))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        probs = model.predict(batch["wav"])
        pred_f, true_f = (probs["family"] > 0.5).float(), batch["family"]
        hits["family"] += (pred_f == true_f).all(-1).tolist()
        counts["tp"] += (pred_f * true_f).sum(0)
        counts["fp"] += (pred_f * (1 - true_f)).sum(0)
        counts["fn"] += ((1 - pred_f) * true_f).sum(0)
        for head in heads:
            known = batch[head] >= 0
            predicted = probs[head].argmax(-1)
            hits[head] += (predicted == batch[head])[known].tolist()
            for t, p in zip(batch[head][known].tolist(), predicted[known].tolist()):
                confusion[head][t, p] += 1
    out: dict[str, Any] = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    tp, fp, fn = (float(counts[k].sum()) for k in ("tp", "fp", "fn"))
    out["family_f1"] = 2 * tp / max(2 * tp + fp + fn, 1.0)
    per_family = 2 * counts["tp"] / (2 * counts["tp"] + counts["fp"] + counts["fn"]).clamp(min=1.0)
    out["family_f1_per_family"] = {f: round(float(v), 4) for f, v in zip(config.families, per_family)}
    out["family_support"] = {f: int(v) for f, v in zip(config.families, counts["tp"] + counts["fn"])}
    for head in heads:
        labels = config.heads[head]
        out[f"confusion_{head}"] = {
            t: {p: int(confusion[head][i, j]) for j, p in enumerate(labels)} for i, t in enumerate(labels)
        }
    out["n"] = len(data)
    return out


def train_classifier(
    data: Sequence[Path],
    out: Path,
    preset: str = "small",
    *,
    augment_codec: Path | None = None,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the classifier on the manifests' train clips into ``out`` (resumable), keeping the step that does
    best on the valid split, and write its :func:`accuracy` on every held-out clip to
    ``out/heldout_accuracy.json``. ``augment_codec``: a codec whose resynthesis, with level, reverb and band
    limit, changes the training crops (None: no augmentation). ``model`` and ``train``: changes to the
    preset's config (its label sets: those of the train clips) and training settings. Returns the
    accuracy."""
    clips = [c for m in data for c in read_manifest(m)]
    train_clips = [c for c in clips if c.split == "train"]
    heldout = [c for c in clips if c.split != "train"]
    if not train_clips or not heldout:
        raise ClassifierError(f"need train and held-out clips; got {len(train_clips)} and {len(heldout)}")
    config = PARTS["classifier"].model_config(preset, {**labels_from_clips(train_clips), **(model or {})})
    settings = PARTS["classifier"].train_config(preset, train)
    seed_everything(settings.seed)
    classifier = EvalClassifier(config)
    augmenter = None if augment_codec is None else Augment(codec=load_component(augment_codec).eval())
    Trainer(
        classifier,
        ClassifierDataset(train_clips, config, augment=augmenter),
        settings,
        out,
        record=run_record("classifier", preset=preset),
        # the kept step is chosen on the valid split alone, so the test split's figures stay unselected
        val_data=ClassifierDataset(
            [c for c in heldout if c.split == "valid"] or heldout, config, random=False
        ),
    ).fit()
    acc = accuracy(EvalClassifier.from_pretrained(out).eval(), heldout)
    write_text_atomic(Path(out) / "heldout_accuracy.json", json.dumps(acc, indent=2) + "\n")
    return acc
