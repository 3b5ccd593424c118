"""The tokenization job: audio clips -> token shards that the three stages train on.

Each shard ``shard-NNNNN.safetensors`` holds, per clip ``i`` of the shard, ``i/acoustic [Q, Fa]``,
``i/semantic [Fs]``, ``i/mulan [Wm, Qm]`` (MuLan *audio* tokens of windows every ``mulan_hop`` seconds: at
training time the audio embedding of the window around a training crop stands in for the text),
``i/text [C, Qm]`` (MuLan *text* tokens of each of the clip's captions, when it has any: what inference
feeds) and ``i/melody [W, Qmel]`` when a melody embedder is given; the clip paths are in the shard's metadata.
``meta.json`` holds the vocabularies and rates. Shard ``s``
belongs to rank ``s % world_size`` under ``torchrun``; a shard that exists is done, so a killed job
resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from musiclm.audio import AudioError, crop_or_pad, loudness_normalize, read_clip, resample
from musiclm.data.manifest import Clip
from musiclm.data.skips import SKIPPED_FILE, SkipLog
from musiclm.interfaces import AcousticCodec, Conditioner, MelodyEmbedder, SemanticTokenizer

META_FILE = "meta.json"
MULAN_HOP = 2.0  # seconds between the MuLan windows of a clip


def mulan_window_tokens(
    mulan: Conditioner, wav: torch.Tensor, hop: float = MULAN_HOP, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """MuLan audio tokens ``[W, Qm]`` of windows every ``hop`` s of ``[T]`` audio at ``mulan.sample_rate``.

    Each window is prepared as MuLan's training crops are (its window length, zero-padded when the clip is
    shorter, loudness-normalised), so the tokens a stage learns from are those MuLan would give that audio.
    """
    rate = mulan.sample_rate
    length = round(mulan.window_seconds * rate)
    starts = range(0, max(wav.shape[-1] - length, 0) + 1, round(hop * rate))
    windows = torch.stack([loudness_normalize(crop_or_pad(wav, length, offset=s), rate) for s in starts])
    return mulan.quantize(mulan.embed_audio(windows.to(device))).cpu()


def encode_aligned(
    wav: torch.Tensor,
    sample_rate: int,
    codec: AcousticCodec,
    semantic: SemanticTokenizer,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T]`` CPU audio at ``sample_rate`` -> semantic ``[Fs]`` and acoustic ``[Q, Fa]`` covering the same
    time."""
    acoustic = codec.encode(resample(wav, sample_rate, codec.sample_rate)[None].to(device))[0].cpu()
    tokens = semantic.tokenize(resample(wav, sample_rate, semantic.sample_rate)[None].to(device))[0].cpu()
    seconds = min(acoustic.shape[-1] / codec.frame_rate, tokens.shape[-1] / semantic.frame_rate)
    # whole semantic frames only, so that both streams cut at the same instant
    seconds = int(seconds * semantic.frame_rate) / semantic.frame_rate
    return tokens[: round(seconds * semantic.frame_rate)], acoustic[:, : round(seconds * codec.frame_rate)]


def vocab_meta(
    codec: AcousticCodec, semantic: SemanticTokenizer, mulan: Conditioner, melody: MelodyEmbedder | None
) -> dict:
    return {
        "num_quantizers": codec.num_quantizers,
        "codebook_size": codec.codebook_size,
        "acoustic_rate": float(codec.frame_rate),
        "semantic_vocab": semantic.vocab_size,
        "semantic_rate": float(semantic.frame_rate),
        "mulan_quantizers": mulan.num_quantizers,
        "mulan_codebook": mulan.codebook_size,
        "melody_quantizers": melody.num_quantizers if melody is not None else 0,
        "melody_codebook": melody.codebook_size if melody is not None else 512,
        "melody_hop": melody.hop_seconds if melody is not None else 3.0,
        "mulan_hop": MULAN_HOP,
        "mulan_window": mulan.window_seconds,
    }


@torch.no_grad()
def tokenize_clips(
    clips: list[Clip],
    out: str | Path,
    codec: AcousticCodec,
    semantic: SemanticTokenizer,
    mulan: Conditioner,
    melody: MelodyEmbedder | None = None,
    shard_size: int = 64,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    strict: bool = False,
) -> list[Path]:
    """Write this rank's shards (skipping finished ones); returns the shard paths written or found.

    A clip that cannot be used (unreadable, silent, too short) is skipped and its reason kept in
    ``skipped.jsonl``; ``strict`` makes it an error instead."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    meta = vocab_meta(codec, semantic, mulan, melody)
    meta_path = out / META_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"{out} holds tokens of other parts ({meta_path} differs); use another --out")
    if rank == 0:
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    shards = [s for s in range((len(clips) + shard_size - 1) // shard_size) if s % world_size == rank]
    todo = [s for s in shards if not _shard_path(out, s).is_file()]
    done = [_shard_path(out, s) for s in shards]
    skipped = SKIPPED_FILE if world_size == 1 else f"skipped-rank{rank}.jsonl"
    skips = SkipLog(out / skipped, strict, resume=True)
    with tqdm(
        total=sum(len(clips[s * shard_size : (s + 1) * shard_size]) for s in todo),
        unit="clip",
        desc=f"tokenize (rank {rank})",
        disable=not progress,
    ) as bar:
        for s in todo:
            tensors, paths = {}, []
            for clip in clips[s * shard_size : (s + 1) * shard_size]:
                bar.update(1)
                i = len(paths)
                try:
                    wav = read_clip(clip, codec.sample_rate)
                    if wav.shape[-1] < codec.sample_rate / semantic.frame_rate * 2:
                        raise AudioError("shorter than two semantic frames")
                    tensors[f"{i}/semantic"], tensors[f"{i}/acoustic"] = encode_aligned(
                        wav, codec.sample_rate, codec, semantic, device
                    )
                    mulan_wav = read_clip(clip, mulan.sample_rate)
                    tensors[f"{i}/mulan"] = mulan_window_tokens(mulan, mulan_wav, device=device)
                    if clip.captions:
                        tensors[f"{i}/text"] = mulan.quantize(mulan.embed_text(list(clip.captions))).cpu()
                    if melody is not None:
                        mel_wav = resample(wav, codec.sample_rate, melody.sample_rate)
                        if mel_wav.shape[-1] >= melody.window_seconds * melody.sample_rate:
                            tensors[f"{i}/melody"] = melody.quantize(melody.embed(mel_wav[None].to(device)))[
                                0
                            ].cpu()
                except AudioError as err:  # unreadable, NaN, short, silent (the tokenizer refuses it)
                    skips.skip(clip.path, str(err))
                    for key in [k for k in tensors if k.startswith(f"{i}/")]:
                        del tensors[key]
                    continue
                paths.append(str(clip.path))
            tensors = {k: v.to(torch.int32).contiguous() for k, v in tensors.items()}
            tmp = _shard_path(out, s).with_suffix(".tmp")
            save_file(tensors, str(tmp), metadata={"paths": json.dumps(paths)})
            tmp.replace(_shard_path(out, s))
    summary = skips.finish()
    if summary:
        tqdm.write(summary)
    return done


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard-{shard:05d}.safetensors"
