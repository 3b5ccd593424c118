"""The three MusicLM stages: one Transformer, each stage's parts laid out in one sequence.

================  ==========================================  ==========================
stage             conditioning prefix                          targets
================  ==========================================  ==========================
semantic          MuLan tokens (+ melody tokens)  SEP          semantic tokens S, 25 Hz
coarse            MuLan tokens, S of the window   SEP          RVQ levels 1..Qc, 50 Hz
fine              levels 1..Qc of the window      SEP          RVQ levels Qc+1..Q, 50 Hz
================  ==========================================  ==========================

Multi-level targets are flattened frame by frame (``a[f,0], a[f,1], ..., a[f+1,0], ...``); every
level has its own slice of the input vocabulary (per-level offsets) and its own output head, so a
level's logits are computed only over that level's codebook. The MuLan and melody tokens are the
*droppable* conditioning: in training they are replaced by a learned NULL token with probability
``cond_dropout``, which is what classifier-free guidance needs at inference; a coarse stage with
``guide_semantic`` drops its semantic tokens with them, so that guidance contrasts it with its history alone.
A MuLan token enters either as a learned vector of its id (``mulan_embedding="learned"``, the paper's) or
as its code vector in MuLan's space through one learned projection (``"codebook"``, see
:class:`MuLanCodeEmbedding`), so that a caption's text tokens, which rarely equal the audio tokens the stage
learned from, still mean what MuLan means by them.

``layout`` places the time-aligned stream (S for coarse, levels 1..Qc for fine): ``"prefix"`` (the paper's)
in the prefix, ``"interleaved"`` in front of each target frame of its time. The parts and the layouts are
the small objects of :mod:`musiclm.stages.layout`; the shipped coarse stage, on the prefix layout, ignored
the timing of its semantic tokens (shifting them by 0.5 s cost 0.001 nats/token).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.config import Config, ConfigError
from musiclm.pretrained import PretrainedMixin
from musiclm.stages.layout import (
    LAYOUTS,
    NULL,
    SEP,
    CoarseStream,
    Condition,
    MelodyTokens,
    MuLanTokens,
    SemanticLookahead,
    SemanticStream,
    Stream,
    Targets,
    assign_offsets,
)
from musiclm.stages.transformer import NORMS, Transformer, TransformerSpec
from musiclm.training import Trainable

STAGES = ("semantic", "coarse", "fine")
MULAN_EMBEDDINGS = ("learned", "codebook")
__all__ = ["NULL", "SEP", "STAGES", "StageConfig", "StageLM", "count_parameters"]


@dataclasses.dataclass
class StageConfig(Config):
    RETIRED: ClassVar[dict[str, str]] = {
        "direction_weight": "the direction loss, measured and not kept, was removed on 2026-12-08",
        "direction_margin": "the direction loss, measured and not kept, was removed on 2026-12-08",
    }
    stage: str = "semantic"
    # network
    dim: int = 256
    layers: int = 4
    heads: int = 4
    ff: int = 1024
    dropout: float = 0.1
    rel_buckets: int = 32
    rel_max_distance: int = 256
    # CPU-speed choices whose paper values are T5's (see stages/transformer.py)
    attention_dropout: float = 0.0
    norm: str = "layernorm"
    layout: str = "prefix"  # where the time-aligned stream goes: "prefix" (the paper's) or "interleaved"
    # MuLan RVQ levels that condition the stage (None: all). The deep levels of one clip's audio tokens
    # name the clip more than describe it, and a caption's text tokens share almost none of them.
    mulan_levels: int | None = None
    # how a MuLan token enters the stage: "learned" (the paper's: each token id its own learned vector) or
    # "codebook" (its code vector in MuLan's space, a frozen copy of MuLan's RVQ codebooks, through one
    # learned projection). Learned ids name training clips: a held-out caption's text tokens rarely equal
    # its music's audio tokens, but they lie near them, and near codes condition alike only via codebook.
    mulan_embedding: str = "learned"
    # vocabularies; the pipeline builders copy these from the trained parts
    mulan_quantizers: int = 12
    mulan_codebook: int = 1024
    mulan_dim: int = 128
    melody_quantizers: int = 0  # 0: no melody conditioning
    melody_codebook: int = 512
    melody_windows: int = 3  # melody windows in the prefix (paper: 3 per 10 s)
    semantic_vocab: int = 1024
    semantic_rate: float = 25.0
    codebook_size: int = 1024
    coarse_quantizers: int = 4
    fine_quantizers: int = 8
    acoustic_rate: float = 50.0
    # training crop = generation window; long generation advances by window - prefix
    window_seconds: float = 10.0
    prefix_seconds: float = 5.0
    cond_dropout: float = 0.1
    # share of training windows of captioned clips conditioned on a caption's MuLan *text* tokens instead of
    # the audio tokens of the window: text tokens are what the stage is given at inference
    text_share: float = 0.5
    # the melody tokens alone are NULL in this share of training windows, so that a melody-conditioned
    # model still generates from text alone (melody conditioning is optional at inference)
    melody_dropout: float = 0.5
    # Interleaved coarse stage: each acoustic frame also sees the next `semantic_lookahead` semantic tokens
    # after its own (40 ms each at 25 Hz). A note's steady semantic token comes 150-250 ms after its attack,
    # so without them the stage must guess the pitch of an attack and then follows its own guess. They enter
    # as vectors (one learned table per step ahead) added to the frame's own semantic position, so a frame
    # stays 1 + levels positions long.
    semantic_lookahead: int = 0
    # Share of the acoustic tokens the stage reads as its history that training replaces by random codes
    # (the targets stay): a stage that can continue its own past plays drones when it runs free, and a
    # noisy past makes it read the semantic tokens instead.
    history_noise: float = 0.0
    # Coarse stage: the windows whose MuLan tokens `cond_dropout` drops lose their semantic tokens too (NULL),
    # so the unconditional half of classifier-free guidance is the stage continuing its own past alone, and
    # guidance amplifies what the semantic tokens say beyond it: a stage that leans on its history plays
    # drones, and guidance against that history makes it play the notes it is given.
    guide_semantic: bool = False

    PRESETS = {
        "tiny": {
            "dim": 64,
            "layers": 2,
            "heads": 4,
            "ff": 128,
            "dropout": 0.0,
            "rel_max_distance": 128,
            "window_seconds": 2.0,
            "prefix_seconds": 1.0,
            "layout": "interleaved",
        },
        # sized for 2 CPU cores: decoding one token reads every weight, and at d=256 / 4 layers the
        # weights no longer fit the caches (10 s with guidance took 18 s; at this size 8.6 s)
        "small": {
            "dim": 192,
            "layers": 3,
            "heads": 4,
            "ff": 576,
            "dropout": 0.1,
            "window_seconds": 5.0,
            "prefix_seconds": 2.5,
            "layout": "interleaved",
            "mulan_embedding": "codebook",
        },
        "paper": {
            "dim": 1024,
            "layers": 24,
            "heads": 16,
            "ff": 4096,
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "norm": "rmsnorm",
            "rel_max_distance": 1024,
            "window_seconds": 30.0,
            "prefix_seconds": 15.0,
        },
    }
    # Settings of one stage within a preset, over the preset's own (`for_stage` applies them): the shipped
    # small coarse stage's. It plays its semantic tokens under guidance only with `guide_semantic` (melodies
    # with a known score: pitch 0.28 -> 0.78 at 1-2 notes/s, docs/experiments.md). It conditions on all MuLan
    # levels as code vectors, as the preset does: note tokens say nothing of the instrument, and a coarse
    # stage on one learned MuLan level ignored it (family pairs 0.855 -> 0.673).
    STAGE_PRESETS = {
        ("small", "coarse"): {"guide_semantic": True, "semantic_lookahead": 4, "history_noise": 0.3},
    }
    # The paper's crops differ per stage (30 / 10 / 3 s); `for_stage` applies them scaled to the preset.
    WINDOW_SCALE = {"semantic": 1.0, "coarse": 1 / 3, "fine": 1 / 10}
    # Floors of the scaled windows below `paper`. Attention cost grows with the square of a window, and a
    # fine window of small's 5 s / 2 = 2.5 s (1,500 tokens a row) took 15.6 s a training step at batch 16.
    MIN_ACOUSTIC_WINDOW = {"window_seconds": 1.0, "prefix_seconds": 0.5}

    @classmethod
    def for_stage(cls, stage: str, preset: str = "small", **overrides) -> StageConfig:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; choose one of {STAGES}")
        base = cls.PRESETS.get(preset, {})
        scale = cls.WINDOW_SCALE[stage]
        windows = {k: base.get(k, getattr(cls, k)) * scale for k in ("window_seconds", "prefix_seconds")}
        if preset != "paper":  # small presets keep acoustic windows long enough to carry context
            windows = {k: max(v, cls.MIN_ACOUSTIC_WINDOW[k]) for k, v in windows.items()}
        own = cls.STAGE_PRESETS.get((preset, stage), {})
        return cls.preset(preset, stage=stage, **{**windows, **own, **overrides})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; choose one of {STAGES}")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose one of {NORMS}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; choose one of {tuple(LAYOUTS)}")
        if self.mulan_embedding not in MULAN_EMBEDDINGS:
            raise ConfigError(
                f"unknown mulan_embedding {self.mulan_embedding!r}; choose one of {MULAN_EMBEDDINGS}"
            )
        if self.mulan_levels is not None and not 1 <= self.mulan_levels <= self.mulan_quantizers:
            raise ConfigError(
                f"mulan_levels must be in 1..{self.mulan_quantizers} (mulan_quantizers), "
                f"got {self.mulan_levels}"
            )
        if self.semantic_lookahead and (self.stage != "coarse" or self.layout != "interleaved"):
            raise ConfigError(
                "semantic_lookahead is for the coarse stage's interleaved layout (the prefix layout gives "
                f"the whole window's semantic tokens already), not the {self.layout} {self.stage} stage"
            )
        if self.guide_semantic and self.stage != "coarse":
            raise ConfigError(f"guide_semantic is for the coarse stage, not the {self.stage} stage")
        if self.semantic_lookahead < 0 or not 0 <= self.history_noise < 1:
            raise ConfigError(
                f"semantic_lookahead must be >= 0 and history_noise in [0, 1), got {self.semantic_lookahead} "
                f"and {self.history_noise}"
            )
        if not 0 <= self.prefix_seconds < self.window_seconds:
            raise ConfigError(
                f"prefix_seconds {self.prefix_seconds} must be >= 0 and below window_seconds "
                f"{self.window_seconds}"
            )


def stage_parts(c: StageConfig) -> tuple[list[Condition], Stream | None, Targets]:
    """The droppable conditioning, the stream aligned with the targets, and the targets of ``c.stage``: the
    one place that knows what each stage reads and predicts."""
    mulan = MuLanTokens(c.mulan_levels or c.mulan_quantizers, c.mulan_codebook)
    if c.stage == "semantic":
        melody = MelodyTokens(c.melody_quantizers, c.melody_codebook, c.melody_windows, c.melody_dropout)
        conditions = [mulan, melody] if c.melody_quantizers else [mulan]
        return conditions, None, Targets("semantic", 1, c.semantic_vocab, c.semantic_rate, source="semantic")
    if c.stage == "coarse":
        window = round(c.window_seconds * c.semantic_rate)
        semantic = SemanticStream(
            c.semantic_vocab, c.semantic_rate, c.acoustic_rate, window, c.guide_semantic, c.semantic_lookahead
        )
        coarse = Targets("coarse", c.coarse_quantizers, c.codebook_size, c.acoustic_rate, source="acoustic")
        return [mulan], semantic, coarse
    coarse = CoarseStream(c.coarse_quantizers, c.codebook_size)
    fine = Targets("fine", c.fine_quantizers, c.codebook_size, c.acoustic_rate, "acoustic", coarse.levels)
    return [], coarse, fine


class StageLM(Trainable, PretrainedMixin):
    """One MusicLM stage: a prefix of conditioning, then target frames (each led by its ``given`` aligned ids
    in the interleaved layout), through one Transformer with an output head per target level."""

    config_class = StageConfig
    model_type = "musiclm_stage"
    renamed_keys = {"heads": "output_heads"}  # folders saved before the rename still load
    # a "codebook" stage's MuLan codebooks are those of the tokens it trains on: a warm start from a stage of
    # an earlier MuLan keeps its Transformer and learns the projection onto the new MuLan's codes
    warm_start_keeps = ("transformer.embed.codebooks",)
    # a stage warm-started with more `semantic_lookahead` than the one it continues learns the table anew
    warm_start_adds = ("lookahead.",)

    def __init__(self, config: StageConfig):
        super().__init__()
        self.config = c = config
        self.conditions, self.stream, self.target = stage_parts(c)
        self.layout = LAYOUTS[c.layout](self.stream)
        parts = [*self.conditions, *([self.stream] if self.stream else []), self.target]
        self.embeds_codebooks = c.mulan_embedding == "codebook" and self.reads("mulan")
        rows = assign_offsets(parts, self.embeds_codebooks)
        self.offsets = {part.name: part.offset for part in parts}
        self.levels, self.codebook = self.target.levels, self.target.codebook
        self.frame_rate, self.given = self.target.rate, self.layout.given
        self.transformer = Transformer(
            TransformerSpec(
                vocab_size=rows,
                dim=c.dim,
                layers=c.layers,
                heads=c.heads,
                ff=c.ff,
                dropout=c.dropout,
                rel_buckets=c.rel_buckets,
                rel_max_distance=c.rel_max_distance,
                attention_dropout=c.attention_dropout,
                norm=c.norm,
            )
        )
        if self.embeds_codebooks:
            count = self.mulan_levels * c.mulan_codebook
            self.transformer.embed = MuLanCodeEmbedding(self.transformer.embed, count, c.mulan_dim)
        self.output_heads = nn.Parameter(torch.randn(self.levels, self.codebook, c.dim) * 0.02)
        self.lookahead = SemanticLookahead(self.stream, c.dim) if c.semantic_lookahead else None

    def set_mulan_codebooks(self, codebooks: torch.Tensor) -> None:
        """Copy MuLan's RVQ codebooks ``[Q, K, D]`` (``Conditioner.code_vectors()``) into a "codebook" stage:
        the MuLan it is trained on or generates with."""
        c = self.config
        expected = (c.mulan_quantizers, c.mulan_codebook, c.mulan_dim)
        if tuple(codebooks.shape) != expected:
            raise ValueError(
                f"MuLan codebooks of shape {tuple(codebooks.shape)} do not fit this stage's {expected} "
                "(mulan_quantizers, mulan_codebook, mulan_dim)"
            )
        self.transformer.embed.codebooks.copy_(codebooks[: self.mulan_levels].flatten(0, 1))

    def mulan_codebooks_match(self, codebooks: torch.Tensor) -> bool:
        """Whether a "codebook" stage holds these MuLan codebooks (to fp16 precision); True for "learned"."""
        if not self.embeds_codebooks:
            return True
        ours = self.transformer.embed.codebooks.float()
        theirs = codebooks[: self.mulan_levels].flatten(0, 1).to(ours)
        if ours.is_meta:  # loaded without values (map_location="meta"): nothing to compare
            return ours.shape == theirs.shape
        return ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=2e-3)

    # ------------------------------------------------------------ sequence
    @property
    def window_frames(self) -> int:
        return round(self.config.window_seconds * self.frame_rate)

    @property
    def prefix_frames(self) -> int:
        return round(self.config.prefix_seconds * self.frame_rate)

    @property
    def mulan_levels(self) -> int:
        return self.config.mulan_levels or self.config.mulan_quantizers

    def reads(self, name: str) -> bool:
        """Whether the stage is conditioned on ``name`` tokens ("mulan", "melody", "semantic", "coarse")."""
        return any(part.name == name for part in [*self.conditions, self.stream] if part is not None)

    def condition(self, **tokens: torch.Tensor | None) -> torch.Tensor:
        """The conditioning prefix (ending in SEP) of one window, from the tokens the stage reads (others are
        ignored): mulan ``[B, Qm]``; melody ``[B, W, Qmel]`` (None: NULL melody); the window's semantic
        ``[B, Fs]`` or coarse ``[B, Qc, Fa]`` stream (prefix layout)."""
        given = next((t for t in tokens.values() if t is not None), None)
        if given is None:
            raise ValueError(f"pass the tokens the {self.config.stage} stage is conditioned on")
        batch, device = given.shape[0], given.device
        parts = [part.prefix_ids(tokens.get(part.name), batch, device) for part in self.conditions]
        parts += self.layout.prefix_ids(tokens)
        parts.append(torch.full((batch, 1), SEP, dtype=torch.long, device=device))
        return torch.cat(parts, dim=1)

    def aligned(self, start: int, end: int, **streams: torch.Tensor | None) -> torch.Tensor | None:
        """Given ids ``[B, end - start, given + semantic_lookahead]`` of target frames ``start..end``
        (interleaved layout; None otherwise): the ``given`` ids in front of each frame, then the semantic
        tokens it sees ahead. ``semantic [B, Fs]`` / ``coarse [B, Qc, Fa]``: the streams from frame 0."""
        return self.layout.aligned(start, end, streams)

    def melody_windows(self, melody: torch.Tensor, start: int, hop_seconds: float) -> torch.Tensor:
        """Melody tokens ``[B, Wm, Q]`` of windows every ``hop_seconds`` -> the ``melody_windows`` of them
        from the one at semantic frame ``start`` on (the last one repeated past the melody's end)."""
        first = min(round(start / self.config.semantic_rate / hop_seconds), melody.shape[1] - 1)
        index = torch.arange(first, first + self.config.melody_windows, device=melody.device)
        return melody[:, index.clamp(max=melody.shape[1] - 1)]

    @property
    def droppable(self) -> int:
        """How many leading prefix positions are droppable conditioning (replaced by NULL to drop it): text
        and melody, and with ``guide_semantic`` a prefix-layout coarse stage's semantic tokens after them."""
        return sum(part.positions for part in self.conditions) + self.layout.dropped_positions

    def drop_aligned(self, aligned: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The ids of :meth:`aligned` with the stream of the rows where ``drop`` is True (all rows if None)
        replaced by NULL, where guidance drops the stream with the text; unchanged otherwise."""
        rows = torch.ones(aligned.shape[0], dtype=torch.bool, device=aligned.device) if drop is None else drop
        return self.layout.drop_aligned(aligned, rows)

    def drop_condition(
        self, prefix: torch.Tensor, drop: torch.Tensor | None = None, positions: slice | None = None
    ) -> torch.Tensor:
        """Replace the text/melody part (or its ``positions``) of the rows where ``drop`` is True (all rows
        if None) by NULL."""
        out = prefix.clone()
        rows = slice(None) if drop is None else drop
        # a prefix-layout stage's last window may hold fewer semantic tokens than a whole one: never its SEP
        out[rows, positions or slice(0, min(self.droppable, prefix.shape[1] - 1))] = NULL
        return out

    def given_inputs(self, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ids in front of each frame ``[B, F, given]`` of :meth:`aligned` ids, and the vectors added to
        them ``[B, F, given, D]`` (the lookahead, on the frame's own semantic position), or None."""
        ids = aligned[..., : self.given]
        if self.lookahead is None:
            return ids, None
        vectors = self.lookahead.vectors(aligned[..., self.given :])
        return ids, F.pad(vectors[:, :, None], (0, 0, self.given - 1, 0))

    def frame_inputs(
        self, codes: torch.Tensor, aligned: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input ids of whole target frames ``[B, F * (given + L)]`` (each frame's given ids, then its
        targets) and the vectors added to their embeddings ``[B, F * (given + L), D]``, or None."""
        targets = self.target.ids(codes)
        if not self.given:
            return targets, None
        b, frames = targets.shape[0], codes.shape[-1]
        if aligned is None or aligned.shape[1] != frames:
            raise ValueError(
                f"an interleaved {self.config.stage} stage needs aligned ids for all {frames} frames"
            )
        given, added = self.given_inputs(aligned)
        ids = torch.cat([given, targets.view(b, frames, self.levels)], dim=2).flatten(1)
        return ids, None if added is None else F.pad(added, (0, 0, 0, self.levels)).flatten(1, 2)

    # ------------------------------------------------------------ network
    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        return hidden @ self.output_heads[level].T

    def forward(
        self, prefix: torch.Tensor, codes: torch.Tensor, aligned: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits ``[B, F, L, codebook]`` of target codes ``[B, L, F]`` given the prefix
        (and, interleaved, the aligned ids of :meth:`aligned`)."""
        frames, added = self.frame_inputs(codes, aligned)
        ids = torch.cat([prefix, frames[:, :-1]], dim=1)
        if added is not None:
            added = F.pad(added[:, :-1], (0, 0, prefix.shape[1], 0))
        hidden = self.transformer(ids, added=added)[:, prefix.shape[1] - 1 :]
        b, n, d = hidden.shape
        # the state before each target: per frame, the positions from its last given id to its last target but
        # one
        hidden = hidden.view(b, codes.shape[-1], self.given + self.levels, d)[:, :, self.given :]
        return torch.einsum("bfld,lcd->bflc", hidden, self.output_heads)

    def training_step(self, batch: dict, *, step: int, group: str) -> dict[str, torch.Tensor]:
        """``batch``: conditioning prefix ``[B, P]`` and target codes ``[B, L, F]`` of one window (and
        ``aligned`` ids of :meth:`aligned` for an interleaved stage)."""
        prefix, codes, aligned = batch["prefix"], batch["codes"], batch.get("aligned")
        if self.training and self.droppable and self.config.cond_dropout > 0:
            drop = torch.rand(prefix.shape[0], device=prefix.device) < self.config.cond_dropout
            prefix = self.drop_condition(prefix, drop)
            if aligned is not None:
                aligned = self.drop_aligned(aligned, drop)
        start = 0
        for part in self.conditions:  # a part dropped on its own (the melody: optional at inference)
            if self.training and part.dropout > 0:
                drop = torch.rand(prefix.shape[0], device=prefix.device) < part.dropout
                prefix = self.drop_condition(prefix, drop, slice(start, start + part.positions))
            start += part.positions
        history = codes
        if self.training and self.config.history_noise > 0:
            noisy = torch.rand(codes.shape, device=codes.device) < self.config.history_noise
            history = torch.where(noisy, torch.randint_like(codes, self.codebook), codes)
        loss = self.window_nll(self(prefix, history, aligned), codes).mean()
        return {"loss": loss, "ppl": loss.detach().exp().clamp(max=math.exp(20))}

    def batch_cost(self, batch: dict) -> tuple[int, float]:
        """Tokens of a batch's sequences and the FLOPs of its training step, counted as PaLM's appendix B
        does: 6 a token per weight it passes through (the embeddings are lookups; a target's output head
        alone), plus attention's 12 * layers * dim * length a token, causality not taken off."""
        c = self.config
        rows, frames = batch["codes"].shape[0], batch["codes"].shape[-1]
        length = batch["prefix"].shape[1] + frames * (self.given + self.levels) - 1
        weights = c.layers * (4 * c.dim**2 + 3 * c.dim * c.ff)  # qkv and out projections, gated feed-forward
        heads = frames * self.levels * self.codebook * c.dim
        forward = 2 * rows * (length * weights + heads) + 4 * rows * c.layers * c.dim * length**2
        return rows * length, 3.0 * forward

    @staticmethod
    def token_nll(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``[B, F, L]``: the NLL of each target of ``codes [B, L, F]`` under ``logits [B, F, L, C]``."""
        targets = codes.transpose(1, 2)
        return F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none").view(targets.shape)

    @classmethod
    def window_nll(cls, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``[B]``: each row's mean NLL per token of ``codes [B, L, F]`` under ``logits [B, F, L, C]``."""
        return cls.token_nll(logits, codes).flatten(1).mean(1)


class MuLanCodeEmbedding(nn.Embedding):
    """Input embeddings of a "codebook" stage: the ``count`` ids past the learned table's rows are MuLan
    tokens, embedded as their MuLan code vectors (a buffer ``[count, mulan_dim]``, filled by
    :meth:`StageLM.set_mulan_codebooks`) through one learned projection."""

    def __init__(self, table: nn.Embedding, count: int, mulan_dim: int):
        super().__init__(table.num_embeddings, table.embedding_dim)
        self.load_state_dict(table.state_dict())
        self.count = count
        self.register_buffer("codebooks", torch.zeros(count, mulan_dim))
        # a first-level code vector (near MuLan's unit sphere) lands at the scale of a learned row: 0.02 a dim
        self.projection = nn.Linear(mulan_dim, table.embedding_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = super().forward(ids.clamp(max=self.num_embeddings - 1))
        local = ids - self.num_embeddings
        is_mulan = local >= 0
        if not is_mulan.any():  # decoding steps: target tokens only
            return rows
        codes = self.projection(self.codebooks[local.clamp(0, self.count - 1)])
        return torch.where(is_mulan[..., None], codes, rows)


def count_parameters(config: StageConfig) -> int:
    """Parameters of a stage, built on the meta device (no memory) — how the paper sizes are checked."""
    with torch.device("meta"):
        return sum(p.numel() for p in StageLM(config).parameters())


# Training settings of each preset (TrainConfig fields); the command line can override any of them.
TRAIN_DEFAULTS = {
    "tiny": {"steps": 300, "batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "ckpt_every": 100},
    # what the shipped small stages were trained with (semantic --steps 2000, fine --steps 1500; 0.35-1.07
    # CPU-h each)
    "small": {"steps": 2500, "batch_size": 16, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.998},
    "paper": {
        "steps": 500000,
        "batch_size": 64,
        "lr": 1e-4,
        "warmup_steps": 5000,
        "ema_decay": 0.9999,
        "ckpt_every": 5000,
    },
}
