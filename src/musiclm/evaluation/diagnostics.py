"""Teacher-forced diagnostics of the token stages on held-out token shards: does each link listen?

For every stage, the mean negative log-likelihood per target token (nats) of one window per held-out
clip under each conditioning: the window's own MuLan *audio* tokens, its captions' MuLan *text* tokens
(what inference feeds), another clip's audio tokens, and NULL. A stage that uses its conditioning has a
lower NLL with the right tokens than with NULL or another clip's; ``gain`` is NULL minus that.

For the coarse stage also the cost of misaligned semantic tokens (the window's S taken 0.5 s later in the
same clip) and of another clip's S; a stage that follows its semantic tokens in time pays for both.

``real_semantic``: held-out clips' *real* semantic tokens decoded through the coarse and fine stages and
the codec; the onset rate of the result against the real clip's (mean ratio and correlation over clips),
the correlations over clips of its median pitch (pYIN) and its polyphony (chroma bins sounding at once),
and the mel distance of codec decodes of real levels 1..Qc, of those plus the fine stage's levels, and of
all real levels (what the fine stage adds).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import librosa
import numpy as np
import torch

from musiclm.audio import load_audio
from musiclm.codec.evaluate import mel_distance
from musiclm.pipeline import PAPER_TEMPERATURES, MusicLM
from musiclm.progress import tqdm
from musiclm.stages.data import StageDataset
from musiclm.stages.sampling import Sampling, generate_stage
from musiclm.stages.stages import StageLM

SHIFT_SECONDS = 0.5
EARLY_SECONDS = 1.0  # the gains are also reported over the window's first second alone


@torch.no_grad()
def nll_all_and_early(
    model: StageLM, items: Sequence[dict[str, torch.Tensor]], early_frames: int, batch_size: int = 16
) -> tuple[float, float]:
    """Mean teacher-forced NLL per target token over ``items`` (StageDataset items of equal shapes, so the
    mean of the items' means): over the whole window, and over its first ``early_frames`` target frames
    alone (0 with none)."""
    whole, early, device = [], [], model.output_heads.device
    for i in range(0, len(items), batch_size):
        batch = {k: torch.stack([it[k] for it in items[i : i + batch_size]]).to(device) for k in items[0]}
        nll = model.token_nll(model(batch["prefix"], batch["codes"], batch.get("aligned")), batch["codes"])
        whole.append(nll.flatten(1).mean(1).cpu())
        early.append(
            nll[:, :early_frames].flatten(1).mean(1).cpu() if early_frames else torch.zeros(len(nll))
        )
    return float(torch.cat(whole).numpy().mean()), float(torch.cat(early).numpy().mean())


def mean_nll(model: StageLM, items: Sequence[dict[str, torch.Tensor]], batch_size: int = 16) -> float:
    """Mean teacher-forced NLL per target token over ``items`` (StageDataset items of equal shapes)."""
    return nll_all_and_early(model, items, 0, batch_size)[0]


def _null(model: StageLM, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**item, "prefix": model.drop_condition(item["prefix"][None])[0]}


def conditioning_nll(model: StageLM, data: StageDataset, clips: int) -> dict[str, Any]:
    """NLL of one window per clip (its start, plus 0.5 s room for the shift) under each conditioning."""
    c = model.config
    shift = round(SHIFT_SECONDS * c.semantic_rate)
    # a generator, so that no more clips than needed are read from the shards
    usable = list(
        islice((clip for clip in data.clips if clip["semantic"].shape[-1] >= data.sem_frames + shift), clips)
    )
    if len(usable) < 2:
        raise ValueError(
            f"the {c.stage} stage needs held-out clips of at least {c.window_seconds + SHIFT_SECONDS:.1f} s "
            f"for this diagnostic; {len(usable)} of {len(data.clips)} are (tokenize more held-out clips)"
        )
    n = len(usable)
    other = [
        usable[(i + n // 2) % n] for i in range(n)
    ]  # far in manifest order: not a variant of the same work
    own = [data.audio_tokens(clip, 0.0) for clip in usable]
    rows: dict[str, list[dict[str, torch.Tensor]]] = {"own_audio": [], "other_audio": [], "null": []}
    for i, clip in enumerate(usable):
        item = data.window(clip, 0, own[i])
        rows["own_audio"].append(item)
        rows["other_audio"].append(data.window(clip, 0, own[(i + n // 2) % n]))
        rows["null"].append(_null(model, item))
    out: dict[str, Any] = {"clips": n, "window_seconds": c.window_seconds}
    if model.droppable:
        captioned = [i for i, clip in enumerate(usable) if "text" in clip]
        if captioned:  # every caption of each captioned clip, against the same clips' audio and NULL rows
            text = [
                data.window(usable[i], 0, usable[i]["text"][j][None])
                for i in captioned
                for j in range(usable[i]["text"].shape[0])
            ]
            out["text_clips"] = len(captioned)
            rows["text"], rows["null_captioned"] = text, [rows["null"][i] for i in captioned]
        # the gains over the first second too: a window's own tokens soon reveal what the conditioning
        # tells, so conditioning earns most of its gain early, as at the start of generation
        early = round(EARLY_SECONDS * model.frame_rate)
        nll = {name: nll_all_and_early(model, items, early) for name, items in rows.items()}
        for name, (whole, first) in nll.items():
            out[f"nll_{name}"], out[f"nll_{name}_first_second"] = whole, first
        for gain, (cond, base) in {
            "text": ("text", "null_captioned"),
            "own_audio": ("own_audio", "null"),
            "other_audio": ("other_audio", "null"),
        }.items():
            if cond in nll:
                out[f"gain_{gain}"] = nll[base][0] - nll[cond][0]
                out[f"gain_{gain}_first_second"] = nll[base][1] - nll[cond][1]
    else:
        out["nll_own"] = mean_nll(model, rows["own_audio"])
    if c.stage == "coarse":
        shifted = [
            data.window(clip, 0, own[i], semantic=clip["semantic"][shift : shift + data.sem_frames])
            for i, clip in enumerate(usable)
        ]
        swapped = [
            data.window(clip, 0, own[i], semantic=other[i]["semantic"][: data.sem_frames])
            for i, clip in enumerate(usable)
        ]
        base = out["nll_own_audio"]
        out["cost_shift_semantic"] = mean_nll(model, shifted) - base
        out["cost_other_semantic"] = mean_nll(model, swapped) - base
    return out


def onset_rate(wav: torch.Tensor, sample_rate: int) -> float:
    """Note onsets per second (librosa's onset detector)."""
    onsets = librosa.onset.onset_detect(y=wav.numpy().astype(np.float32), sr=sample_rate, units="time")
    return len(onsets) / (wav.shape[-1] / sample_rate)


def median_pitch(wav: torch.Tensor, sample_rate: int) -> float:
    """Median MIDI pitch of the frames where pYIN hears one (NaN where it hears none): the register."""
    f0, voiced, _ = librosa.pyin(
        wav.numpy().astype(np.float32),
        fmin=librosa.note_to_hz("C2"),
        fmax=librosa.note_to_hz("C7"),
        sr=sample_rate,
        frame_length=2048,
    )
    return float(np.median(librosa.hz_to_midi(f0[voiced]))) if voiced.any() else float("nan")


def polyphony(wav: torch.Tensor, sample_rate: int) -> float:
    """Pitch classes sounding at once: the mean count of CQT chroma bins at half the frame's maximum or more,
    over frames with sound."""
    chroma = librosa.feature.chroma_cqt(y=wav.numpy().astype(np.float32), sr=sample_rate)
    loud = chroma.max(axis=0) > 0
    return (
        float((chroma[:, loud] >= 0.5 * chroma[:, loud].max(axis=0)).sum(axis=0).mean())
        if loud.any()
        else 0.0
    )


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation over the pairs where both are finite (NaN with fewer than 3 or no spread)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() > 0 and y.std() > 0 else float("nan")


@torch.no_grad()
def real_semantic(
    pipeline: MusicLM,
    data: StageDataset,
    shards: Sequence[dict[str, torch.Tensor]],
    paths: Sequence[str],
    clips: int,
    seconds: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Decode real semantic tokens of held-out clips (``shards``, their audio ``paths``) through coarse +
    fine + codec (see the module doc); ``data`` is the coarse stage's dataset (which MuLan window a clip's
    start has)."""
    coarse = pipeline.stages.coarse
    sem_frames = round(seconds * coarse.config.semantic_rate)
    chosen = list(
        islice(((c, p) for c, p in zip(shards, paths) if c["semantic"].shape[-1] >= sem_frames), clips)
    )
    if not chosen:
        raise ValueError(f"no held-out clip is {seconds} s long; use --seconds below the clips' length")
    generator = torch.Generator(coarse.output_heads.device).manual_seed(seed)
    rates, distances = [], []
    for clip, path in tqdm(chosen, desc="real semantic -> coarse -> fine", unit="clip"):
        clip_rates, clip_distances = _decode_real_semantic(pipeline, data, clip, path, seconds, generator)
        rates.append(clip_rates)
        distances.append(clip_distances)
    generated_rates, real_rates, generated_pitch, real_pitch, generated_voices, real_voices = np.array(
        rates
    ).T
    ratio = generated_rates / np.maximum(real_rates, 1e-6)
    return {
        "clips": len(rates),
        "seconds": seconds,
        "onset_rate_generated": float(generated_rates.mean()),
        "onset_rate_real": float(real_rates.mean()),
        "onset_rate_ratio_mean": float(ratio.mean()),
        "onset_rate_correlation": correlation(generated_rates, real_rates),
        "median_pitch_correlation": correlation(generated_pitch, real_pitch),
        "polyphony_correlation": correlation(generated_voices, real_voices),
        **{f"mel_distance_{k}": float(np.mean([d[k] for d in distances])) for k in distances[0]},
    }


def _decode_real_semantic(
    pipeline: MusicLM,
    data: StageDataset,
    clip: dict[str, torch.Tensor],
    path: str,
    seconds: float,
    generator: torch.Generator,
) -> tuple[list[float], dict[str, float]]:
    """One clip of :func:`real_semantic`: its first ``seconds`` of real semantic tokens through the coarse
    (and fine) stage and the codec. Returns the onset rate, median pitch and polyphony of the generated
    audio and of the real clip (in that order, generated first in each pair), and the mel distance to the
    real clip of each codec decode of real acoustic levels."""
    coarse, fine, codec = pipeline.stages.coarse, pipeline.stages.fine, pipeline.codec
    sem_frames, ac_frames = round(seconds * coarse.config.semantic_rate), round(seconds * coarse.frame_rate)
    device = coarse.output_heads.device
    semantic = clip["semantic"][None, :sem_frames].long().to(device)
    mulan = data.audio_tokens(clip, 0.0).to(device)
    coarse_codes = generate_stage(
        coarse,
        lambda s, n, e: coarse.condition(mulan=mulan, semantic=semantic[:, s // 2 : (e + 1) // 2]),
        ac_frames,
        1,
        # the pipeline's guidance, as generation samples: a stage that guides its semantic tokens plays
        # them under guidance only
        Sampling(PAPER_TEMPERATURES[1], guidance=pipeline.guidance),
        generator=generator,
        aligned=lambda s, e: coarse.aligned(s, e, semantic=semantic),
    )
    codes = _with_fine_codes(fine, coarse_codes, ac_frames, generator)
    generated = codec.decode(codes)[0].cpu()  # librosa reads NumPy
    real = load_audio(path, codec.sample_rate)[: generated.shape[-1]]
    rates = [
        measure(wav, codec.sample_rate)
        for measure in (onset_rate, median_pitch, polyphony)
        for wav in (generated, real)
    ]
    real_codes = clip["acoustic"][None, :, :ac_frames].long().to(device)
    length = min(real.shape[-1], generated.shape[-1])
    decodes = {
        "real_coarse": codec.decode(real_codes[:, : coarse.levels]),
        "real_all_levels": codec.decode(real_codes),
    }
    if fine is not None:
        decodes["real_coarse_fine_stage"] = codec.decode(
            _with_fine_codes(fine, real_codes[:, : coarse.levels], ac_frames, generator)
        )
    return rates, {
        name: mel_distance(wav[0, :length].cpu(), real[:length], codec.sample_rate)
        for name, wav in decodes.items()
    }


def _with_fine_codes(
    fine: StageLM | None, coarse_codes: torch.Tensor, frames: int, generator: torch.Generator
) -> torch.Tensor:
    """``coarse_codes [1, Qc, F]`` and, with a fine stage, the ``frames`` fine codes it samples for them."""
    if fine is None:
        return coarse_codes
    fine_codes = generate_stage(
        fine,
        lambda s, n, e: fine.condition(coarse=coarse_codes[..., s:e]),
        frames,
        1,
        Sampling(PAPER_TEMPERATURES[2]),
        generator=generator,
        aligned=lambda s, e: fine.aligned(s, e, coarse=coarse_codes),
    )
    return torch.cat([coarse_codes, fine_codes], dim=1)
