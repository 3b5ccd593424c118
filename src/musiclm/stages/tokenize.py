"""The tokenization job: audio clips -> token shards that the three stages train on.

Each shard ``shard-NNNNN.safetensors`` holds, per clip ``i`` of the shard, ``i/acoustic [Q, Fa]``,
``i/semantic [Fs]``, ``i/mulan [Wm, Qm]`` (MuLan *audio* tokens of windows every ``mulan_hop`` seconds: at
training time the audio embedding of the window around a training crop stands in for the text),
``i/text [C, Qm]`` (MuLan *text* tokens of each of the clip's captions, when it has any: what inference
feeds; a rendered clip adds ``fresh_captions`` more drawn from its attributes, so that a stage cannot learn
a training clip's one to three stored captions as its name), and ``i/melody [W, Qmel]`` when a melody
embedder is given; the clip paths are in the shard's metadata. ``meta.json`` holds the
vocabularies and rates (the folder's files: :mod:`musiclm.stages.shards`). Shard ``s`` belongs to rank
``s % world_size`` under ``torchrun``; a shard that exists is done, so a killed job resumes where it stopped.

A clip longer than two windows of ``window_seconds`` (30 s) goes through the models a window at a time, so
the job's memory is that of one window's activations plus the clip's audio, whatever the clip's length
(see :func:`encode_aligned` for what windowing changes in the tokens).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from musiclm.audio import AudioError, crop_or_pad, loudness_normalize, read_clip, resample
from musiclm.data.captions import caption_from_attributes
from musiclm.data.manifest import Clip
from musiclm.data.skips import SKIPPED_FILE, SkipLog
from musiclm.files import atomic_write, write_text_atomic
from musiclm.interfaces import AcousticCodec, Conditioner, MelodyEmbedder, SemanticTokenizer
from musiclm.mulan.notes import note_posteriors, window_frames
from musiclm.progress import tqdm
from musiclm.stages.shards import CODEBOOKS_FILE, META_FILE, PACKED_LEVELS, read_meta, write_shard

MULAN_HOP = 2.0  # seconds between the MuLan windows of a clip
FRESH_CAPTIONS = 16  # captions drawn from a rendered clip's attributes beside its stored ones
WINDOW_SECONDS = 30.0  # audio a model sees at once when a clip is longer than two of these
# Seconds of audio either side of a semantic window, tokenized and dropped: with them, tokens of 30 s windows
# placed 15 s apart agree on 59 % of frames, without on 51 % (shipped model, 3 minutes of music).
SEMANTIC_CONTEXT = 5.0
MULAN_TENSORS = ("/mulan", "/text")  # what `refresh_mulan_tokens` recomputes


def mulan_window_tokens(
    mulan: Conditioner,
    wav: torch.Tensor,
    hop: float = MULAN_HOP,
    device: str | torch.device = "cpu",
    batch: int = 16,
) -> torch.Tensor:
    """MuLan audio tokens ``[W, Qm]`` of windows every ``hop`` s of ``[T]`` audio at ``mulan.sample_rate``:
    the quantized :func:`mulan_window_embeddings`."""
    return mulan.quantize(mulan_window_embeddings(mulan, wav, hop, device, batch).to(device)).cpu()


def mulan_window_embeddings(
    mulan: Conditioner,
    wav: torch.Tensor,
    hop: float = MULAN_HOP,
    device: str | torch.device = "cpu",
    batch: int = 16,
) -> torch.Tensor:
    """Unit MuLan audio embeddings ``[W, D]`` of windows every ``hop`` s of ``[T]`` audio at
    ``mulan.sample_rate``.

    Each window is prepared as MuLan's training crops are (its window length, zero-padded when the clip is
    shorter, loudness-normalised), so the tokens a stage learns from are those MuLan would give that audio.
    The windows go through MuLan ``batch`` at a time: a long clip has hundreds of them.
    """
    rate = mulan.sample_rate
    length = round(mulan.window_seconds * rate)
    starts = range(0, max(wav.shape[-1] - length, 0) + 1, round(hop * rate))
    # a MuLan that reads notes gets the clip transcribed once, not each of its overlapping windows again
    posteriors = (
        note_posteriors(loudness_normalize(wav, rate)[None], rate)
        if getattr(mulan, "note_features", None) is not None
        else None
    )
    embeddings = []
    for first in range(0, len(starts), batch):
        chosen = starts[first : first + batch]
        windows = torch.stack([loudness_normalize(crop_or_pad(wav, length, offset=s), rate) for s in chosen])
        notes = None
        if posteriors is not None:
            notes = window_frames(posteriors, chosen, rate, length / rate)[0]
        embeddings.append(mulan.embed_audio(windows.to(device), notes).cpu())
    return torch.cat(embeddings)


def encode_aligned(
    wav: torch.Tensor,
    sample_rate: int,
    codec: AcousticCodec,
    semantic: SemanticTokenizer,
    device: str | torch.device = "cpu",
    window_seconds: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T]`` CPU audio at ``sample_rate`` -> semantic ``[Fs]`` and acoustic ``[Q, Fa]`` covering the same
    time.

    With ``window_seconds``, audio longer than two windows is encoded a window at a time. A codec that
    streams (``encode_stream``: the causal SoundStream carries its context across chunks) gives the whole
    clip's codes, up to float rounding in its latents (~1e-6, which moves a code only at a near-tie between
    codewords: none of the 360,000 of a 10-minute file with the shipped codec); a codec without
    ``encode_stream`` encodes the whole clip. The semantic tokens are as many as the whole clip's but cannot
    be the same: w2v-BERT attends over all of its input and normalises its mel features over it, so a token
    depends on tens of seconds around it. Each window is tokenized with ``SEMANTIC_CONTEXT`` s of audio
    either side, then dropped. On the shipped model 51 % of a 10-minute file's tokens agree with its
    whole-file tokens, within what the whole-file tokens of its 30-60 s excerpts share with them (34-68 %;
    ``benchmarks/results/streaming.json``): whole-file tokens of minutes of audio, far longer than anything
    the tokenizer was trained or used on, are no truer reference.
    """
    codec_wav = resample(wav, sample_rate, codec.sample_rate)
    semantic_wav = resample(wav, sample_rate, semantic.sample_rate)
    if window_seconds is None or wav.shape[-1] <= 2 * window_seconds * sample_rate:
        acoustic = codec.encode(codec_wav[None].to(device))[0].cpu()
    else:
        acoustic = _acoustic_windows(codec_wav, codec, device, window_seconds)
    tokens = _semantic_tokens(semantic_wav, semantic, device, window_seconds)
    return _shared_frames(tokens, acoustic, semantic.frame_rate, codec.frame_rate)


def _shared_frames(
    semantic: torch.Tensor, acoustic: torch.Tensor, semantic_rate: float, acoustic_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic ``[Fs]`` and acoustic ``[Q, Fa]`` tokens cut to the time both cover, in whole semantic frames
    so that both streams end at the same instant."""
    seconds = min(acoustic.shape[-1] / acoustic_rate, semantic.shape[-1] / semantic_rate)
    seconds = int(seconds * semantic_rate) / semantic_rate
    return semantic[: round(seconds * semantic_rate)], acoustic[:, : round(seconds * acoustic_rate)]


def _acoustic_windows(
    wav: torch.Tensor, codec: AcousticCodec, device: str | torch.device, window_seconds: float
) -> torch.Tensor:
    """``[Q, Fa]`` codes of ``[T]`` audio at the codec's rate, streamed in windows when the codec can."""
    stream = getattr(codec, "encode_stream", None)
    if stream is None:
        return codec.encode(wav[None].to(device))[0].cpu()
    step = round(window_seconds * codec.sample_rate)
    chunks = (wav[None, s : s + step].to(device) for s in range(0, wav.shape[-1], step))
    return torch.cat([codes[0].cpu() for codes in stream(chunks)], dim=-1)


def _semantic_tokens(
    wav: torch.Tensor, semantic: SemanticTokenizer, device: str | torch.device, window_seconds: float | None
) -> torch.Tensor:
    """``[Fs]`` tokens of ``[T]`` audio at the tokenizer's rate: whole, or a window at a time when it is
    longer than two ``window_seconds``."""
    if window_seconds is None or wav.shape[-1] <= 2 * window_seconds * semantic.sample_rate:
        return semantic.tokenize(wav[None].to(device))[0].cpu()
    return semantic_windows(wav, semantic, device, window_seconds)


def semantic_windows(
    wav: torch.Tensor,
    semantic: SemanticTokenizer,
    device: str | torch.device,
    window_seconds: float,
    context_seconds: float = SEMANTIC_CONTEXT,
) -> torch.Tensor:
    """``[Fs]`` tokens of ``[T]`` audio at the tokenizer's rate, a window of frames at a time, each tokenized
    with ``context_seconds`` of audio either side (see :func:`encode_aligned`).

    A window that is silent with its context is refused by the tokenizer although the whole clip is not;
    such a clip is tokenized whole."""
    rate, per_second = semantic.sample_rate, semantic.frame_rate
    frames = round(per_second * wav.shape[-1] / rate)  # the whole clip's count (SemanticTokenizer.tokenize)
    step, context = round(window_seconds * per_second), round(context_seconds * per_second)
    tokens = []
    for first in range(0, frames, step):
        before = min(context, first)
        begin = round((first - before) * rate / per_second)
        end = round((first + step + context) * rate / per_second)
        try:
            window = semantic.tokenize(wav[None, begin:end].to(device))[0].cpu()
        except AudioError:
            return semantic.tokenize(wav[None].to(device))[0].cpu()
        tokens.append(window[before : before + step])
    return torch.cat(tokens)


def melody_tokens(
    melody: MelodyEmbedder, wav: torch.Tensor, device: str | torch.device, window_seconds: float | None
) -> torch.Tensor:
    """Melody tokens ``[W, Qmel]`` of ``[T]`` audio at ``melody.sample_rate`` (at least one window long).

    With ``window_seconds``, the audio goes to the embedder in pieces of about that length that start on its
    window hops and overlap by a window less a hop, so each piece holds whole windows of the clip's own
    and the pieces' windows are the clip's (the last piece is zero-padded as the whole clip would be)."""
    if window_seconds is None:
        return melody.quantize(melody.embed(wav[None].to(device)))[0].cpu()
    rate = melody.sample_rate
    length, hop = round(melody.window_seconds * rate), round(melody.hop_seconds * rate)
    count = 1 + max(0, -(-(wav.shape[-1] - length) // hop))  # the clip's windows, as MelodyEmbedder.windows
    per_piece = max(1, round(window_seconds / melody.hop_seconds))
    tokens = []
    for first in range(0, count, per_piece):
        piece = wav[None, first * hop : (first + per_piece - 1) * hop + length].to(device)
        tokens.append(melody.quantize(melody.embed(piece))[0].cpu())
    return torch.cat(tokens)


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
    window_seconds: float | None = WINDOW_SECONDS,
    fresh_captions: int = FRESH_CAPTIONS,
) -> list[Path]:
    """Write this rank's shards (skipping finished ones); returns the shard paths written or found.

    A clip that cannot be used (unreadable, silent, too short) is skipped and its reason kept in
    ``skipped.jsonl``; ``strict`` makes it an error instead. Clips longer than two ``window_seconds``
    are encoded a window at a time (None: every clip whole; see :func:`encode_aligned`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    meta, mulan_digest = vocab_meta(codec, semantic, mulan, melody), fingerprint(mulan)
    semantic_digest = fingerprint(semantic)
    meta_path = out / META_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"{out} holds tokens of other parts ({meta_path} differs); use another --out")
    if rank == 0:
        write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
        save_codebooks(out, mulan, mulan_digest)
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
                        wav, codec.sample_rate, codec, semantic, device, window_seconds
                    )
                    tensors.update(_mulan_tensors(i, clip, mulan, device, fresh_captions))
                    if melody is not None:
                        mel_wav = resample(wav, codec.sample_rate, melody.sample_rate)
                        if mel_wav.shape[-1] >= melody.window_seconds * melody.sample_rate:
                            tensors[f"{i}/melody"] = melody_tokens(melody, mel_wav, device, window_seconds)
                except AudioError as err:  # unreadable, NaN, short, silent (the tokenizer refuses it)
                    skips.skip(clip.path, str(err))
                    for key in [k for k in tensors if k.startswith(f"{i}/")]:
                        del tensors[key]
                    continue
                paths.append(str(clip.path))
            metadata = _shard_metadata(paths, mulan_digest, fresh_captions, semantic_digest)
            write_shard(_shard_path(out, s), tensors, metadata)
    summary = skips.finish()
    if summary:
        tqdm.write(summary)
    return done


def _mulan_tensors(
    i: int,
    clip: Clip,
    mulan: Conditioner,
    device: str | torch.device,
    fresh_captions: int,
) -> dict[str, torch.Tensor]:
    """Clip ``i``'s MuLan audio tokens per window and, when it has captions, their text tokens: the
    stored captions', then ``fresh_captions`` drawn from its attributes (the same for a clip in every run
    and on every machine)."""
    out = {f"{i}/mulan": mulan_window_tokens(mulan, read_clip(clip, mulan.sample_rate), device=device)}
    captions = list(clip.captions)
    # seeded by the file's name, not its folder: a build writes the same names on every machine
    rng = np.random.default_rng(zlib.crc32(Path(clip.path).name.encode()))
    for _ in range(fresh_captions):
        caption = caption_from_attributes(clip.attributes, rng)
        if caption is None:  # not a render (no attributes to draw from)
            break
        captions.append(caption)
    if captions:
        out[f"{i}/text"] = mulan.quantize(mulan.embed_text(captions)).cpu()
    return out


def fingerprint(part: torch.nn.Module) -> str:
    """A digest of a part's weights: which MuLan (or semantic tokenizer) a shard's tokens came from. Weights
    that only shape training are left out: they are drawn afresh at each load, so the same folder must give
    the same digest in every process."""
    digest = hashlib.sha1()
    training_only = getattr(part, "TRAINING_ONLY_PREFIXES", ())
    for name, tensor in sorted(part.state_dict().items()):
        if name.startswith(training_only):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def refresh_mulan_tokens(
    out: str | Path,
    clips: list[Clip],
    mulan: Conditioner,
    progress: bool = True,
    device: str | torch.device = "cpu",
    fresh_captions: int = FRESH_CAPTIONS,
) -> int:
    """Recompute the MuLan audio and text tokens of every shard in ``out`` with ``mulan``, keeping the
    acoustic, semantic and melody tokens: after MuLan improves, the stages retrain on its tokens without
    encoding the audio again. Shards already holding this MuLan's tokens with ``fresh_captions`` drawn
    captions are left as they are, so a killed job resumes; under ``torchrun``
    each rank takes every ``world_size``-th shard. ``clips`` must include every clip of the shards. Returns
    the number of shards this rank rewrote."""
    out = Path(out)
    meta_path = out / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{out} has no {META_FILE}: tokenize the clips first (musiclm tokenize)")
    meta = json.loads(meta_path.read_text())
    wanted = {
        "mulan_quantizers": mulan.num_quantizers,
        "mulan_codebook": mulan.codebook_size,
        "mulan_window": mulan.window_seconds,
    }
    changed = {k: (meta.get(k), v) for k, v in wanted.items() if meta.get(k) != v}
    if changed:
        raise ValueError(
            f"this MuLan changes the token layout of {out} ({changed}, shards vs MuLan): tokenize again into "
            "a new folder"
        )
    mulan_digest = fingerprint(mulan)
    if _rank_and_world_size()[0] == 0:
        save_codebooks(out, mulan, mulan_digest)
    return _refresh_shards(
        out,
        clips,
        "refresh MuLan tokens",
        progress,
        done=lambda info: (
            info.get("mulan") == mulan_digest and int(info.get("fresh_captions", 0)) == fresh_captions
        ),
        dropped=MULAN_TENSORS,
        refresh_clip=lambda i, clip, tensors: tensors.update(
            _mulan_tensors(i, clip, mulan, device, fresh_captions)
        ),
        metadata=lambda info, paths: _shard_metadata(
            paths, mulan_digest, fresh_captions, info.get("semantic")
        ),
    )


@torch.no_grad()
def refresh_semantic_tokens(
    out: str | Path,
    clips: list[Clip],
    semantic: SemanticTokenizer,
    progress: bool = True,
    device: str | torch.device = "cpu",
    window_seconds: float | None = WINDOW_SECONDS,
) -> int:
    """Replace the semantic tokens of every shard in ``out`` by ``semantic``'s, keeping the acoustic, MuLan
    and melody tokens: a new semantic tokenizer is tried on the stages without encoding the audio with the
    codec and MuLan again. Both streams are cut to the whole semantic frames they share, as
    :func:`encode_aligned` cuts them. ``meta.json`` takes the new vocabulary and rate. Shards that already
    hold this tokenizer's tokens are left as they are, so a killed job resumes; under ``torchrun`` each rank
    takes every ``world_size``-th shard. Returns the number of shards this rank rewrote."""
    out = Path(out)
    meta = read_meta(out)
    if PACKED_LEVELS in meta:
        raise ValueError(f"{out} is a packed copy; refresh the folder it was packed from, then pack it again")
    semantic_digest = fingerprint(semantic)

    def replace_semantic(i: int, clip: Clip, tensors: dict[str, torch.Tensor]) -> None:
        tokens = _semantic_tokens(read_clip(clip, semantic.sample_rate), semantic, device, window_seconds)
        tensors[f"{i}/semantic"], tensors[f"{i}/acoustic"] = _shared_frames(
            tokens, tensors[f"{i}/acoustic"], semantic.frame_rate, meta["acoustic_rate"]
        )

    rewritten = _refresh_shards(
        out,
        clips,
        "refresh semantic tokens",
        progress,
        done=lambda info: info.get("semantic") == semantic_digest,
        dropped=(),
        refresh_clip=replace_semantic,
        metadata=lambda info, paths: {**info, "semantic": semantic_digest},
    )
    if _rank_and_world_size()[0] == 0:
        meta.update(semantic_vocab=semantic.vocab_size, semantic_rate=float(semantic.frame_rate))
        write_text_atomic(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return rewritten


def _refresh_shards(
    out: Path,
    clips: list[Clip],
    desc: str,
    progress: bool,
    *,
    done: Callable[[dict[str, str]], bool],
    dropped: tuple[str, ...],
    refresh_clip: Callable[[int, Clip, dict[str, torch.Tensor]], None],
    metadata: Callable[[dict[str, str], list[str]], dict[str, str]],
) -> int:
    """The shard loop of the refresh jobs, over this rank's shards of ``out`` (every ``world_size``-th under
    ``torchrun``). A shard whose metadata says it is ``done`` is passed over, so a killed job resumes; any
    other is read without its tensors whose names end in ``dropped``, ``refresh_clip(i, clip, tensors)``
    puts each of its clips' new tokens into ``tensors``, and it is written back with ``metadata(info,
    paths)`` (``info``: its old metadata). Returns the number of shards rewritten."""
    by_path = {str(c.path): c for c in clips}
    rank, world_size = _rank_and_world_size()
    shards = sorted(out.glob("shard-*.safetensors"))[rank::world_size]
    rewritten = 0
    for shard in tqdm(shards, unit="shard", desc=desc, disable=not progress):
        with safe_open(str(shard), "pt") as f:
            info = f.metadata() or {}
            if done(info):
                continue
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.endswith(dropped)}
        paths = _listed_paths(shard, info, by_path)
        for i, path in enumerate(paths):
            refresh_clip(i, by_path[path], tensors)
        write_shard(shard, tensors, metadata(info, paths))
        rewritten += 1
    return rewritten


def _rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of ranks under ``torchrun`` (0 and 1 outside it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _listed_paths(shard: Path, info: dict[str, str], by_path: dict[str, Clip]) -> list[str]:
    """The clip paths a shard's metadata names, each of which the manifests must list."""
    paths = json.loads(info["paths"])
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise ValueError(
            f"{shard.name} holds {len(missing)} clip(s) the manifests do not list (e.g. {missing[0]}): "
            "pass the manifest the shards were tokenized from"
        )
    return paths


def save_codebooks(out: Path, mulan: Conditioner, mulan_digest: str) -> None:
    codebooks = mulan.code_vectors().detach().float().cpu().contiguous()
    with atomic_write(out / CODEBOOKS_FILE) as tmp:
        save_file({"codebooks": codebooks}, str(tmp), metadata={"mulan": mulan_digest})


def _shard_metadata(
    paths: list[str], mulan_digest: str, fresh_captions: int, semantic_digest: str | None
) -> dict[str, str]:
    metadata = {"paths": json.dumps(paths), "mulan": mulan_digest, "fresh_captions": str(fresh_captions)}
    if semantic_digest is not None:  # shards written before it was kept lack it
        metadata["semantic"] = semantic_digest
    return metadata


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard-{shard:05d}.safetensors"
