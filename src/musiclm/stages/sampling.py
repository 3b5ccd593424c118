"""Sampling from a stage: temperature / top-k / top-p, classifier-free guidance, sliding windows.

Guidance runs the conditional and the unconditional sequence as one batch of 2B rows (the
unconditional rows have their text/melody tokens replaced by NULL), so it costs one forward pass
of twice the batch, not two passes. Long outputs are decoded window by window as in the paper:
a window of ``window_frames`` is generated, then the next window starts ``prefix_frames`` before the
end of what exists, is re-encoded in one pass (KV cache prefill) and continues from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from musiclm.stages.stages import StageLM


@dataclasses.dataclass
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    guidance: float | None = None  # classifier-free guidance scale; None or 1: off (the paper)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.guidance is not None and self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")


def sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, V]`` logits -> ``[B]`` token ids."""
    if s.temperature == 0:
        return logits.argmax(-1)
    logits = logits / s.temperature
    if s.top_k is not None and s.top_k < logits.shape[-1]:
        kth = logits.topk(s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p is not None and s.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the ones before it already reach top_p; the first always stays
        remove = (cumulative - sorted_logits.softmax(-1)) >= s.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(remove, float("-inf")))
    # exponential race: argmax(p / E), E ~ Exp(1), draws from p; a third of torch.multinomial's overhead
    probs = logits.softmax(-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(-1)


@torch.inference_mode()  # not no_grad: less bookkeeping per op, 10% of decoding time here
def generate_stage(
    model: StageLM,
    condition: Callable[[int, int, int], torch.Tensor],
    num_frames: int,
    batch: int,
    sampling: Sampling,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_frame: Callable[[int], None] | None = None,
    use_cache: bool = True,
    aligned: Callable[[int, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample ``num_frames`` frames of the stage's targets; returns codes ``[B, L, num_frames]``.

    ``condition(start, new, end)`` gives the conditioning prefix ``[B, P]`` of the window of frames
    ``start..end`` (the stage's own frame rate) whose frames from ``new`` on are to be generated. ``prompt``
    ``[B, L, F0]`` are known first frames (continuation); they are kept in the output. ``use_cache=False``
    re-encodes the whole window for every token (for tests and benchmarks of the cache). An interleaved
    stage needs ``aligned(start, end)``: its given ids ``[B, end - start, given]`` of frames ``start..end``
    (:meth:`StageLM.aligned`).
    """
    levels, window, keep = model.levels, model.window_frames, model.prefix_frames
    device = model.output_heads.device
    out = torch.zeros(batch, levels, num_frames, dtype=torch.long, device=device)
    have = 0
    if prompt is not None:
        have = min(prompt.shape[-1], num_frames)
        out[..., :have] = prompt[..., :have]
    guided = sampling.guidance is not None and sampling.guidance != 1 and model.droppable > 0
    if model.given and aligned is None:
        raise ValueError(f"an interleaved {model.config.stage} stage needs aligned=...; see StageLM.aligned")
    level_offset = torch.arange(levels, device=device) * model.codebook + model.target.offset

    def rows(ids: torch.Tensor) -> torch.Tensor:  # guidance: the same ids for the unconditional rows
        return torch.cat([ids, ids]) if guided else ids

    def known_inputs(given: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The window's frames so far, then the first new frame's given ids (before its first target), and
        the vectors added to them (:meth:`StageLM.frame_inputs`)."""
        ids, added = model.frame_inputs(
            out[..., start:have], None if given is None else given[:, : have - start]
        )
        if given is None:
            return ids, added
        return _joined((ids, added), _given_at(model, given, have - start))

    while have < num_frames:
        start = max(0, have - keep)
        end = min(start + window, num_frames)
        prefix = condition(start, have, end)
        given = aligned(start, end) if model.given else None
        known = known_inputs(given)
        if guided:  # the unconditional rows: no text, and the semantic tokens too where the stage drops them
            prefix = torch.cat([prefix, model.drop_condition(prefix)])
            given = None if given is None else torch.cat([given, model.drop_aligned(given)])
            known = _stacked(known, known_inputs(None if given is None else given[batch:]))
        inputs = _joined((prefix, None), known)
        total = inputs[0].shape[1] + (end - have) * (levels + model.given)
        cache = model.transformer.new_cache(inputs[0].shape[0], total) if use_cache else None
        hidden = model.transformer(inputs[0], cache, added=inputs[1])[:, -1]
        for frame in range(have, end):
            for level in range(levels):
                logits = model.level_logits(hidden, level)
                token = sample(_guided(logits, sampling.guidance) if guided else logits, sampling, generator)
                out[:, level, frame] = token
                if frame == end - 1 and level == levels - 1:
                    break
                step = (rows((token + level_offset[level])[:, None]), None)
                if given is not None and level == levels - 1:  # the next frame's given ids in the same pass
                    step = _joined(step, _given_at(model, given, frame + 1 - start))
                if use_cache:
                    hidden = model.transformer(step[0], cache, added=step[1])[:, -1]
                else:
                    inputs = _joined(inputs, step)
                    hidden = model.transformer(inputs[0], added=inputs[1])[:, -1]
            if on_frame is not None:
                on_frame(1)
        have = end
    return out


Inputs = tuple[torch.Tensor, "torch.Tensor | None"]  # ids [B, T] and the vectors added to them [B, T, D]


def _guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of the conditional rows' logits by the unconditional rows after them."""
    cond, uncond = logits.chunk(2)
    return uncond + scale * (cond - uncond)


def _given_at(model: StageLM, given: torch.Tensor, index: int) -> Inputs:
    """The given ids of the window's frame ``index`` and the vectors added to them."""
    ids, added = model.given_inputs(given[:, index : index + 1])
    return ids.flatten(1), None if added is None else added.flatten(1, 2)


def _joined(first: Inputs, second: Inputs) -> Inputs:
    """Two stretches of input in time order (positions without vectors get zeros where the other has some)."""
    ids = torch.cat([first[0], second[0]], dim=1)
    if first[1] is None and second[1] is None:
        return ids, None
    vectors = first[1] if first[1] is not None else second[1]
    parts = [
        added if added is not None else vectors.new_zeros(*ids_part.shape, vectors.shape[-1])
        for ids_part, added in (first, second)
    ]
    return ids, torch.cat(parts, dim=1)


def _stacked(first: Inputs, second: Inputs) -> Inputs:
    """The conditional and the unconditional rows of guidance, one batch."""
    added = None if first[1] is None else torch.cat([first[1], second[1]])
    return torch.cat([first[0], second[0]]), added
