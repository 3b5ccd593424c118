"""Real audio sent through the back of a pipeline, one link at a time, to see which link loses what.

- :func:`through_codec`: encoded and decoded with only the RVQ levels the stages generate (the ceiling of
  anything the stages make);
- :func:`through_stages` with ``real_semantic``: the audio's real semantic tokens (and its MuLan audio
  tokens) given to the acoustic stages, which sample the codes: does the coarse stage play the semantic
  tokens it is given?
- :func:`through_stages`: only the audio's MuLan audio tokens, every stage sampling: the stages conditioned
  as in training, on music that has the attribute, instead of on a prompt's text.

Each takes a batch ``[B, T]`` of equal-length audio at ``rate`` and returns ``[B, T']`` at the pipeline's
rate (the acoustic stages cover whole semantic frames only, so ``T'`` may be a frame shorter).
"""

from __future__ import annotations

import torch

from musiclm.audio import resample
from musiclm.pipeline import MusicLM, generate_tokens
from musiclm.stages.sampling import Sampling
from musiclm.stages.tokenize import encode_aligned


def generated_levels(pipeline: MusicLM) -> int:
    """RVQ levels the pipeline's stages generate (coarse, plus fine where it has a fine stage)."""
    stages = pipeline.stages
    return stages.coarse.levels + (stages.fine.levels if stages.fine is not None else 0)


@torch.no_grad()
def through_codec(pipeline: MusicLM, wavs: torch.Tensor, rate: int) -> torch.Tensor:
    codec = pipeline.codec
    codes = codec.encode(resample(wavs, rate, codec.sample_rate).to(pipeline.device))
    return codec.decode(codes[:, : generated_levels(pipeline)]).float().cpu()


@torch.no_grad()
def through_stages(
    pipeline: MusicLM,
    wavs: torch.Tensor,
    rate: int,
    samplings: list[Sampling],
    generator: torch.Generator | None = None,
    real_semantic: bool = False,
) -> torch.Tensor:
    """The stages conditioned on the audio's MuLan audio tokens; with ``real_semantic``, the acoustic stages
    alone, given the audio's real semantic tokens too (all of them: the semantic stage samples nothing)."""
    device = pipeline.device
    tokens = pipeline.mulan.quantize(pipeline.embed_audio(wavs, rate)).to(device)
    seconds, semantic = wavs.shape[-1] / rate, None
    if real_semantic:
        codec = pipeline.codec
        semantic = torch.stack(
            [
                encode_aligned(w, codec.sample_rate, codec, pipeline.semantic, device)[0]
                for w in resample(wavs, rate, codec.sample_rate)
            ]
        ).to(device)
        seconds = semantic.shape[-1] / pipeline.stages.semantic.frame_rate
    out = generate_tokens(
        pipeline.stages, [(0.0, tokens)], seconds, samplings, prompt_semantic=semantic, generator=generator
    )
    return _decode(pipeline, out)


def _decode(pipeline: MusicLM, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    levels = [tokens["coarse"]] + ([tokens["fine"]] if "fine" in tokens else [])
    return pipeline.codec.decode(torch.cat(levels, dim=1)).float().cpu()
