"""w2v-BERT (Chung et al., 2021): a self-supervised speech/music model whose middle MLM layers give
the features that MusicLM's semantic tokens are k-means clusters of.

log-mel (100 Hz) -> conv feature encoder (stride 4 -> 25 Hz) -> contrastive Conformer blocks ->
MLM Conformer blocks. Training masks spans of encoder frames; the contrastive module must pick the
quantized target of each masked frame out of distractors (InfoNCE, plus a diversity loss that keeps
the codebook in use), and the MLM module predicts the codebook *ids* of the masked frames.
The 25 Hz frame rate is built in (hop 160 at 16 kHz, then stride 4), so tokens need no resampling.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import MelSpectrogram, check_finite
from musiclm.config import Config
from musiclm.pretrained import PretrainedMixin
from musiclm.training import Trainable

# What `musiclm train w2vbert` trains with per preset (TrainConfig fields), before --set changes.
TRAIN_DEFAULTS = {
    "tiny": {"steps": 50, "batch_size": 4, "lr": 1e-3, "warmup_steps": 5, "log_every": 5, "ckpt_every": 25},
    "small": {"steps": 2000, "batch_size": 8, "lr": 5e-4, "warmup_steps": 200, "ckpt_every": 100},
    "paper": {"steps": 400_000, "batch_size": 256, "lr": 2e-3, "warmup_steps": 25_000, "ckpt_every": 5000},
}


@dataclasses.dataclass
class W2VBertConfig(Config):
    sample_rate: int = 16000
    hop_length: int = 160  # 100 Hz mel frames; the encoder's stride 4 makes 25 Hz
    n_fft: int = 400
    n_mels: int = 80
    dim: int = 256
    heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    contrastive_layers: int = 2
    mlm_layers: int = 2
    dropout: float = 0.1
    codebook_size: int = 320  # learned quantizer of the contrastive targets (and MLM classes)
    codebook_dim: int = 128
    num_distractors: int = 50
    mask_prob: float = 0.065  # chance that a frame starts a masked span (wav2vec 2.0 / w2v-BERT)
    mask_span: int = 10
    diversity_weight: float = 0.1
    mlm_weight: float = 1.0
    temperature: float = 0.1  # InfoNCE cosine temperature
    code_tau: tuple[float, float, float] = (
        2.0,
        0.5,
        0.999995,
    )  # softmax temperature of the codebook gradient: start, floor, decay per step

    PRESETS = {
        "tiny": {
            "dim": 32,
            "heads": 2,
            "ff_mult": 2,
            "conv_kernel": 5,
            "contrastive_layers": 1,
            "mlm_layers": 2,
            "codebook_size": 32,
            "codebook_dim": 16,
            "num_distractors": 10,
            "mask_prob": 0.2,
            "mask_span": 3,
            "n_mels": 40,
        },
        "small": {
            "dim": 192,
            "heads": 4,
            "ff_mult": 4,
            "conv_kernel": 15,
            "contrastive_layers": 3,
            "mlm_layers": 4,
            "codebook_size": 256,
            "codebook_dim": 128,
            "num_distractors": 30,
            "mask_prob": 0.1,
            "mask_span": 5,
            "code_tau": (2.0, 0.5, 0.997),
        },
        # w2v-BERT XL: 24 Conformer layers of width 1024 (12 contrastive + 12 MLM), ~600M parameters.
        "paper": {
            "dim": 1024,
            "heads": 8,
            "ff_mult": 4,
            "conv_kernel": 5,
            "contrastive_layers": 12,
            "mlm_layers": 12,
            "codebook_size": 1024,
            "codebook_dim": 768,
            "num_distractors": 100,
        },
    }

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / (self.hop_length * 4)

    @property
    def samples_per_frame(self) -> int:
        return self.hop_length * 4


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
            nn.Dropout(dropout),
        )


class ConvModule(nn.Module):
    """Conformer convolution: pointwise GLU, depthwise conv over time, pointwise."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        # GroupNorm(1) instead of BatchNorm: padded batches and tiny CPU batches keep it stable.
        self.norm_conv = nn.GroupNorm(1, dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        y = self.pointwise_out(F.silu(self.norm_conv(self.depthwise(y))))
        return self.dropout(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        self.ff1 = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.attn = nn.MultiheadAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.conv = ConvModule(cfg.dim, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class FeatureEncoder(nn.Module):
    """Two stride-2 convolutions over log-mel frames: 100 Hz -> 25 Hz, then a projection to ``dim``."""

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        self.mel = MelSpectrogram(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels)
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.proj = nn.Linear(32 * math.ceil(math.ceil(cfg.n_mels / 2) / 2), cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, wav: torch.Tensor, num_frames: int) -> torch.Tensor:
        mel = self.mel(wav)[..., : 4 * num_frames]  # [B, M, 4F]: center=True gives one extra frame
        mel = (mel - mel.mean(dim=(1, 2), keepdim=True)) / (mel.std(dim=(1, 2), keepdim=True) + 1e-5)
        x = self.convs(mel.transpose(1, 2).unsqueeze(1))  # [B, 32, F, M/4]
        return self.norm(self.proj(x.permute(0, 2, 1, 3).flatten(2)))


class CodebookQuantizer(nn.Module):
    """The learned codebook of the contrastive targets (as wav2vec 2.0's, without the Gumbel noise): one code
    per frame."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.logits = nn.Linear(dim, codebook_size)
        self.codebook = nn.Parameter(torch.randn(codebook_size, codebook_dim))

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, dim]`` -> (quantized ``[N, codebook_dim]``, ids ``[N]``, diversity loss)."""
        logits = self.logits(x).float()
        ids = logits.argmax(-1)
        onehot = F.one_hot(ids, logits.shape[-1]).to(logits.dtype)
        if self.training:
            # Straight-through: the forward picks the argmax code, the gradient is the softmax's.
            # Unlike Gumbel sampling, the pick is a deterministic function of the features, so the
            # targets are predictable from the first step (Gumbel noise over near-uniform logits made
            # them random: the contrastive loss stayed at chance for hundreds of CPU steps).
            soft = (logits / tau).softmax(-1)
            onehot = onehot - soft.detach() + soft
        # Diversity: maximise the entropy of the batch-averaged code distribution (0 when all are used).
        avg = logits.softmax(-1).mean(0)
        perplexity = torch.exp(-(avg * torch.log(avg + 1e-7)).sum())
        diversity = (logits.shape[-1] - perplexity) / logits.shape[-1]
        return onehot @ self.codebook, ids, diversity


class W2VBert(Trainable, PretrainedMixin):
    config_class = W2VBertConfig
    model_type = "w2vbert"

    def __init__(self, config: W2VBertConfig):
        super().__init__()
        self.config = cfg = config
        self.encoder = FeatureEncoder(cfg)
        self.pos_conv = nn.Conv1d(cfg.dim, cfg.dim, 31, padding=15, groups=max(1, cfg.dim // 16))
        self.mask_embedding = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.contrastive = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.contrastive_layers))
        self.mlm = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.mlm_layers))
        self.quantizer = CodebookQuantizer(cfg.dim, cfg.codebook_size, cfg.codebook_dim)
        self.context_proj = nn.Linear(cfg.dim, cfg.codebook_dim)
        self.mlm_head = nn.Linear(cfg.dim, cfg.codebook_size)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_layers(self) -> int:
        return self.config.contrastive_layers + self.config.mlm_layers

    def num_frames(self, num_samples: int) -> int:
        return round(num_samples * self.frame_rate / self.sample_rate)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        check_finite(wav)
        frames = self.num_frames(wav.shape[-1])
        if frames < 1:
            raise ValueError(
                f"audio of {wav.shape[-1]} samples gives no {self.frame_rate:g} Hz token frame "
                f"(one frame is {self.config.samples_per_frame} samples at {self.sample_rate} Hz): give "
                "longer audio"
            )
        wav = F.pad(wav, (0, max(0, frames * self.config.samples_per_frame - wav.shape[-1])))
        return self.encoder(wav, frames)

    def hidden_states(self, wav: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]:
        """Outputs of the feature encoder (index 0) and of each Conformer block (1..L), ``[B, F, dim]``.

        Layer ``contrastive_layers + k`` is the k-th MLM layer (MusicLM takes the 7th MLM layer).
        """
        x = self._encode(wav)
        states = [x]
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        for block in [*self.contrastive, *self.mlm][
            : num_layers if num_layers is not None else self.num_layers
        ]:
            x = block(x)
            states.append(x)
        return states

    def _mask(self, batch: int, frames: int, device: torch.device) -> torch.Tensor:
        cfg = self.config
        starts = torch.rand(batch, frames, device=device) < cfg.mask_prob
        starts[:, 0] |= ~starts.any(1)  # every clip has at least one masked span
        # A span covers its start frame and the mask_span - 1 frames after it.
        spans = F.max_pool1d(F.pad(starts.float()[:, None], (cfg.mask_span - 1, 0)), cfg.mask_span, stride=1)
        return spans[:, 0].bool()

    def _distractors(self, mask: torch.Tensor) -> torch.Tensor:
        """For each masked frame, indices (into the flattened masked frames) of K other masked frames of the
        same clip."""
        k = self.config.num_distractors
        counts = mask.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        clip = torch.repeat_interleave(torch.arange(len(counts), device=mask.device), counts)
        n = counts[clip]
        own = torch.arange(len(clip), device=mask.device) - offsets[clip]
        draw = (torch.rand(len(clip), k, device=mask.device) * (n[:, None] - 1).clamp_min(1)).long()
        draw = draw + (draw >= own[:, None]).long()  # skip the positive itself
        return offsets[clip, None] + draw.clamp_max(n[:, None] - 1)

    def code_tau(self, step: int) -> float:
        start, floor, decay = self.config.code_tau
        return max(floor, start * decay ** max(step, 0))

    def training_step(self, batch, *, step: int, group: str) -> dict[str, torch.Tensor]:
        cfg = self.config
        wav = batch["audio"] if isinstance(batch, dict) else batch
        feats = self._encode(wav)
        mask = self._mask(feats.shape[0], feats.shape[1], feats.device)
        targets, ids, diversity = self.quantizer(feats[mask], self.code_tau(step))

        x = torch.where(mask[..., None], self.mask_embedding.to(feats.dtype), feats)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        for block in self.contrastive:
            x = block(x)
        context = self.context_proj(x[mask])

        # InfoNCE: the true quantized target against K quantized targets of other masked frames.
        candidates = torch.cat([targets[:, None], targets[self._distractors(mask)]], 1)  # [N, 1+K, D]
        sims = F.cosine_similarity(context[:, None].float(), candidates.float(), dim=-1) / cfg.temperature
        same = (candidates == targets[:, None]).all(-1)
        same[:, 0] = False
        sims = sims.masked_fill(same, float("-inf"))  # a distractor equal to the target is no distractor
        contrastive = F.cross_entropy(sims, torch.zeros(len(sims), dtype=torch.long, device=sims.device))

        for block in self.mlm:
            x = block(x)
        logits = self.mlm_head(x[mask]).float()
        mlm = F.cross_entropy(logits, ids)
        loss = contrastive + cfg.diversity_weight * diversity + cfg.mlm_weight * mlm
        return {
            "loss": loss,
            "contrastive": contrastive.detach(),
            "mlm": mlm.detach(),
            "diversity": diversity.detach(),
            "mlm_acc": (logits.argmax(-1) == ids).float().mean(),
        }

    # The feature-backbone interface of musiclm.semantic.tokenizer (shared with the HF adapters).
    @property
    def feature_dim(self) -> int:
        return self.config.dim

    def layer_features(self, wav: torch.Tensor, layer: int) -> torch.Tensor:
        """``[B, T]`` -> ``[B, F, dim]`` at 25 Hz: the output of Conformer block ``layer`` (0: the
        encoder)."""
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer {layer} out of range: this w2v-BERT has layers 0..{self.num_layers}")
        return self.hidden_states(wav, layer)[layer]

    def config_dict(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_config_dict(cls, data: dict) -> W2VBert:
        return cls(W2VBertConfig.from_dict(data))
