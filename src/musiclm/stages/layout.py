"""The parts of a stage's sequence: the conditioning it reads, the stream aligned with its targets, the
targets, and the layout that places them (AudioCraft's codebook patterns play this role there).

Every part owns one slice of the stage's input vocabulary (``size`` ids from ``offset``, after SEP and
NULL), so the ids of different parts never collide. :func:`stage_parts` says which parts each stage has;
:class:`~musiclm.stages.stages.StageLM` only composes them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

SEP, NULL = 0, 1  # special input ids; the parts' slices of the vocabulary start at 2


def level_ids(codes: torch.Tensor, size: int, offset: int) -> torch.Tensor:
    """Codes ``[B, L, F]`` (or ``[B, F]``) -> ids ``[B, F*L]``, frame by frame, level ``l``'s codes from
    ``offset + l * size``."""
    if codes.dim() == 2:
        codes = codes.unsqueeze(1)
    levels = torch.arange(codes.shape[1], device=codes.device)[None, :, None] * size
    return (codes + levels + offset).transpose(1, 2).reshape(codes.shape[0], -1)


def rvq_ids(tokens: torch.Tensor, offset: int, codebook: int, quantizers: int) -> torch.Tensor:
    """``[B, n*Q]`` RVQ tokens, quantizer by quantizer -> ids, each quantizer its own ``codebook`` slice."""
    levels = torch.arange(tokens.shape[1], device=tokens.device) % quantizers * codebook
    return tokens + levels + offset


def required(tokens: torch.Tensor | None, name: str) -> torch.Tensor:
    if tokens is None:
        raise ValueError(f"this stage is conditioned on {name} tokens; pass {name}=...")
    return tokens


# ------------------------------------------------------------------ conditioning (the prefix's head)
@dataclasses.dataclass
class MuLanTokens:
    """The MuLan tokens of the first ``levels`` RVQ levels: what the music should be, dropped for guidance."""

    levels: int
    codebook: int
    name = "mulan"
    dropout = 0.0  # dropped with all the droppable conditioning only (cond_dropout)
    offset: int = 0

    @property
    def size(self) -> int:
        return self.levels * self.codebook

    @property
    def positions(self) -> int:
        return self.levels

    def prefix_ids(self, mulan: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """``mulan [B, Qm]`` -> ``[B, levels]``."""
        mulan = required(mulan, self.name)[:, : self.levels]
        return rvq_ids(mulan, self.offset, self.codebook, self.levels)


@dataclasses.dataclass
class MelodyTokens:
    """``windows`` windows of melody tokens after the MuLan tokens. Optional at inference: without a melody
    they are NULL, and training drops them alone in ``dropout`` of the windows so that NULL means "none"."""

    quantizers: int
    codebook: int
    windows: int
    dropout: float
    name = "melody"
    offset: int = 0

    @property
    def size(self) -> int:
        return self.quantizers * self.codebook

    @property
    def positions(self) -> int:
        return self.quantizers * self.windows

    def prefix_ids(self, melody: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """``melody [B, windows, Q]`` (or None) -> ``[B, windows * Q]``."""
        if melody is None:
            return torch.full((batch, self.positions), NULL, dtype=torch.long, device=device)
        if melody.shape[1] != self.windows:
            raise ValueError(
                f"melody tokens have {melody.shape[1]} windows, the stage expects {self.windows}"
            )
        return rvq_ids(melody.flatten(1, 2), self.offset, self.codebook, self.quantizers)


# ------------------------------------------------------------------ streams aligned with the targets
@dataclasses.dataclass
class SemanticStream:
    """The coarse stage's semantic tokens (25 Hz against its 50 Hz frames). ``guided``: dropped with the
    text, so that guidance contrasts the stage with its history alone. ``lookahead``: an interleaved frame
    also sees the next tokens after its own (a note's steady token comes 150-250 ms after its attack)."""

    vocab: int
    rate: float
    frame_rate: float
    window_positions: int  # the tokens of a whole window, in the prefix layout
    guided: bool
    lookahead: int
    name = "semantic"
    per_frame = 1
    offset: int = 0

    @property
    def size(self) -> int:
        return self.vocab

    def window_ids(self, semantic: torch.Tensor | None) -> torch.Tensor:
        """The window's tokens ``[B, Fs]`` -> ids ``[B, Fs]``."""
        return required(semantic, self.name) + self.offset

    def frame_ids(self, start: int, end: int, semantic: torch.Tensor | None) -> torch.Tensor:
        """``[B, end - start, 1 + lookahead]``: each frame's own token, then those ahead (the last token
        repeated past the end), from the stream ``[B, Fs]`` from frame 0."""
        semantic = required(semantic, self.name)
        frames = torch.arange(start, end, device=semantic.device)
        own = (frames * self.rate / self.frame_rate).long()
        index = own[:, None] + torch.arange(1 + self.lookahead, device=own.device)
        return semantic[:, index.clamp(max=semantic.shape[1] - 1)] + self.offset


@dataclasses.dataclass
class CoarseStream:
    """The fine stage's coarse levels, one frame's ``levels`` codes per target frame."""

    levels: int
    codebook: int
    name = "coarse"
    guided = False  # the fine stage has no droppable conditioning
    offset: int = 0

    @property
    def size(self) -> int:
        return self.levels * self.codebook

    @property
    def per_frame(self) -> int:
        return self.levels

    def window_ids(self, coarse: torch.Tensor | None) -> torch.Tensor:
        """The window's codes ``[B, Qc, Fa]`` -> ids ``[B, Fa * Qc]``."""
        return level_ids(required(coarse, self.name), self.codebook, self.offset)

    def frame_ids(self, start: int, end: int, coarse: torch.Tensor | None) -> torch.Tensor:
        """``[B, end - start, Qc]`` of the stream ``[B, Qc, Fa]`` from frame 0."""
        ids = level_ids(required(coarse, self.name)[..., start:end], self.codebook, self.offset)
        return ids.view(ids.shape[0], end - start, self.levels)


Stream = SemanticStream | CoarseStream
Condition = MuLanTokens | MelodyTokens


# ------------------------------------------------------------------ targets
@dataclasses.dataclass
class Targets:
    """What a stage predicts: ``levels`` levels of ``codebook`` codes at ``rate``, levels ``first..`` of the
    clip's ``source`` stream ("semantic" or "acoustic")."""

    name: str
    levels: int
    codebook: int
    rate: float
    source: str
    first: int = 0
    offset: int = 0

    @property
    def size(self) -> int:
        return self.levels * self.codebook

    @property
    def acoustic_levels(self) -> int:
        """The acoustic levels a clip must hold for these targets."""
        return self.first + self.levels if self.source == "acoustic" else 0

    def ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, L, F]`` (or ``[B, F]``) -> ids ``[B, F*L]``."""
        return level_ids(codes, self.codebook, self.offset)

    def cut(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target codes ``[L, F]`` of a window's ``{"semantic": [1, Fs], "acoustic": [Q, Fa]}``."""
        return streams[self.source][self.first : self.first + self.levels]


# ------------------------------------------------------------------ layouts
class PrefixLayout:
    """The paper's: the window's aligned stream sits in the prefix, after the conditioning. With relative
    positions only, an acoustic frame's own semantic token is then 40 to 400 positions back, where T5
    buckets are too coarse to find it."""

    given = 0

    def __init__(self, stream: Stream | None):
        self.stream = stream

    def prefix_ids(self, tokens: dict[str, torch.Tensor | None]) -> list[torch.Tensor]:
        return [] if self.stream is None else [self.stream.window_ids(tokens[self.stream.name])]

    def aligned(self, start: int, end: int, tokens: dict[str, torch.Tensor | None]) -> None:
        return None

    @property
    def dropped_positions(self) -> int:
        """Prefix positions of the stream that guidance drops with the text."""
        return self.stream.window_positions if self.stream is not None and self.stream.guided else 0

    def drop_aligned(self, aligned: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return aligned


class InterleavedLayout:
    """Each target frame is preceded by the aligned stream's tokens of its own time (``s[f//2], a[f,0..3]``
    for coarse; ``a[f,0..3], a[f,4..11]`` for fine), always the same few positions back. They are given,
    never predicted: the loss covers the targets only, and decoding feeds them in with the last token of
    the frame before."""

    dropped_positions = 0

    def __init__(self, stream: Stream | None):
        self.stream = stream
        self.given = 0 if stream is None else stream.per_frame

    def prefix_ids(self, tokens: dict[str, torch.Tensor | None]) -> list[torch.Tensor]:
        return []

    def aligned(self, start: int, end: int, tokens: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """Given ids ``[B, end - start, given + lookahead]`` of target frames ``start..end``."""
        return None if self.stream is None else self.stream.frame_ids(start, end, tokens[self.stream.name])

    def drop_aligned(self, aligned: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """NULL for the stream's ids of ``rows`` where guidance drops it with the text."""
        return aligned.masked_fill(rows[:, None, None], NULL) if self.stream.guided else aligned


LAYOUTS = {"prefix": PrefixLayout, "interleaved": InterleavedLayout}


class SemanticLookahead(nn.Embedding):
    """The vectors of the semantic tokens an interleaved coarse frame sees past its own: one learned table per
    step ahead, summed onto the frame's own semantic position, so that a frame stays 1 + levels positions
    long."""

    def __init__(self, stream: SemanticStream, dim: int):
        super().__init__(stream.lookahead * stream.vocab, dim)
        nn.init.normal_(self.weight, std=0.02)
        self.stream = stream

    def vectors(self, ahead: torch.Tensor) -> torch.Tensor:
        """Ids ``[B, F, lookahead]`` -> ``[B, F, D]``; NULL ids (a dropped stream) add nothing."""
        local = ahead - self.stream.offset
        tables = torch.arange(self.stream.lookahead, device=local.device) * self.stream.vocab
        return (self(local.clamp(min=0) + tables) * (local >= 0)[..., None]).sum(2)


def assign_offsets(parts: list, codebook_mulan: bool) -> int:
    """Give each part its slice of the vocabulary, in order after SEP and NULL; a MuLan embedded through its
    codebooks goes last, past the learned table's rows. Returns the learned table's size."""
    order, start = sorted(parts, key=lambda p: codebook_mulan and p.name == "mulan"), 2
    for part in order:
        part.offset, start = start, start + part.size
    return order[-1].offset if codebook_mulan else start
