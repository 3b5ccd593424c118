"""Run every metric on rows of audio paired with prompts: the generated row and the reference rows
(held-out ground truth = ceiling, its codec resynthesis = the codec's ceiling, random training clips
that ignore the prompt = floor), all computed the same way."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musiclm.attributes import HEAD_ATTRIBUTE
from musiclm.audio import AudioError, resample, save_audio
from musiclm.data.manifest import Clip
from musiclm.data.skips import SKIPPED_FILE, SkipLog
from musiclm.evaluation import adherence as adh
from musiclm.evaluation.asked import asked_scores
from musiclm.evaluation.fad import EmbedFn, FADError, fad, fad_infinity, frame_embeddings
from musiclm.evaluation.kld import kld
from musiclm.evaluation.mcc import mcc_scores
from musiclm.evaluation.melodies import note_change_rate, note_rate_ratios
from musiclm.evaluation.melody import melody_agreement
from musiclm.evaluation.prompts import Prompt
from musiclm.files import write_text_atomic
from musiclm.progress import tqdm


@dataclasses.dataclass
class Evaluators:
    """The models that judge; any may be None, and its metrics are then left out."""

    conditioner: Any = None  # Conditioner protocol (MCC)
    classifier: Any = None  # EvalClassifier (KLD, family/style adherence, FAD embedding)
    embedders: dict[str, tuple[EmbedFn, int]] = dataclasses.field(
        default_factory=dict
    )  # FAD: name -> (fn, rate)


def _at(wavs: list[torch.Tensor], rate: int, target: int) -> torch.Tensor:
    length = min(w.shape[-1] for w in wavs)
    return resample(torch.stack([w[:length] for w in wavs]), rate, target)


def evaluate_row(
    wavs: list[torch.Tensor],
    prompts: list[Prompt],
    sample_rate: int,
    ev: Evaluators,
    fad_reference: dict[str, np.ndarray],
    paired_reference: list[torch.Tensor] | None = None,
    fad_inf: bool = True,
) -> dict[str, Any]:
    """Metrics of one row: ``wavs[i]`` is the audio for ``prompts[i]``; ``fad_reference`` holds the
    held-out frame embeddings per embedder; ``paired_reference[i]`` a real clip of prompt i's description
    (KLD)."""
    out: dict[str, Any] = {"n": len(wavs)}
    timings: dict[str, float] = {}
    for name, (fn, rate) in ev.embedders.items():
        t0 = time.perf_counter()
        emb = frame_embeddings(fn, [resample(w, sample_rate, rate) for w in wavs])
        out[f"fad_{name}"] = fad(emb, fad_reference[name])
        if fad_inf:
            try:
                out[f"fad_inf_{name}"] = fad_infinity(emb, fad_reference[name])["fad_inf"]
            except FADError:
                pass
        timings[f"fad_{name}"] = time.perf_counter() - t0
    if ev.conditioner is not None:
        t0 = time.perf_counter()
        scores = mcc_scores(
            ev.conditioner, [p.text for p in prompts], _at(wavs, sample_rate, ev.conditioner.sample_rate)
        )
        out["mcc"] = float(scores.mean())
        timings["mcc"] = time.perf_counter() - t0
    if ev.classifier is not None and paired_reference is not None:
        t0 = time.perf_counter()
        rate = ev.classifier.config.sample_rate
        length = min(min(w.shape[-1] for w in wavs), min(w.shape[-1] for w in paired_reference))
        out.update(
            kld(
                ev.classifier,
                _at([w[:length] for w in paired_reference], sample_rate, rate),
                _at([w[:length] for w in wavs], sample_rate, rate),
            )
        )
        timings["kld"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = adh.adherence(wavs, sample_rate, [p.attributes for p in prompts], ev.classifier)
    keys = sorted({k for r in rows for k in r})
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        out[f"adherence_{k}" if k != "bpm_estimate" else "bpm_estimate_mean"] = float(np.mean(vals))
    out["per_clip_adherence"] = rows
    timings["adherence"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out.update(asked_scores(wavs, sample_rate, [p.text for p in prompts]))
    timings["asked"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["per_clip_note_rate"] = [note_change_rate(w, sample_rate) for w in wavs]
    out["note_rate_median"] = float(np.median(out["per_clip_note_rate"]))
    timings["note_rate"] = time.perf_counter() - t0
    if any(p.melody is not None for p in prompts):
        t0 = time.perf_counter()
        agree = melody_agreements(prompts, wavs, sample_rate)
        for k in ("chroma", "contour"):
            vals = [a[k] for a in agree if a is not None and np.isfinite(a[k])]
            out[f"melody_{k}"] = float(np.mean(vals)) if vals else float("nan")
        out["per_clip_melody_chroma"] = [None if a is None else a["chroma"] for a in agree]
        timings["melody"] = time.perf_counter() - t0
    out["seconds"] = timings
    return out


def melody_agreements(
    prompts: list[Prompt], wavs: list[torch.Tensor | None], sample_rate: int
) -> list[dict[str, float] | None]:
    """Per prompt, :func:`melody_agreement` of its melody with ``wavs[i]`` (None without either)."""
    from musiclm.audio import load_audio

    return [
        melody_agreement(load_audio(p.melody, sample_rate), w, sample_rate)
        if p.melody is not None and w is not None
        else None
        for p, w in zip(prompts, wavs)
    ]


def melody_baseline(
    prompts: list[Prompt],
    with_melody: list[float | None],
    without: list[torch.Tensor | None],
    sample_rate: int,
) -> dict[str, Any]:
    """Pitch-class agreement with the melody of the clips made with it (``with_melody``, per prompt, as
    ``per_clip_melody_chroma``) against that of the clips made from the same text and seed without it
    (``without``), both over the prompts where both are defined, and their difference."""
    alone = [None if a is None else a["chroma"] for a in melody_agreements(prompts, without, sample_rate)]
    pairs = [
        (a, b)
        for a, b in zip(with_melody, alone)
        if a is not None and b is not None and np.isfinite(a) and np.isfinite(b)
    ]
    with_mean = float(np.mean([a for a, _ in pairs])) if pairs else float("nan")
    without_mean = float(np.mean([b for _, b in pairs])) if pairs else float("nan")
    return {
        "melody_with": with_mean,
        "melody_without": without_mean,
        "melody_gain": with_mean - without_mean,
        "melody_n": len(pairs),
        "per_clip_melody_without": alone,
    }


def fad_reference_embeddings(
    wavs: list[torch.Tensor], sample_rate: int, ev: Evaluators
) -> dict[str, np.ndarray]:
    return {
        name: frame_embeddings(fn, [resample(w, sample_rate, rate) for w in wavs])
        for name, (fn, rate) in ev.embedders.items()
    }


def evaluate_rows(
    rows: dict[str, list[torch.Tensor]],
    prompts: list[Prompt],
    sample_rate: int,
    ev: Evaluators,
    fad_reference_wavs: list[torch.Tensor],
    paired_reference: list[torch.Tensor] | None = None,
    fad_inf: bool = True,
) -> dict[str, dict[str, Any]]:
    """``{row name: metrics}`` for every row of audio aligned with ``prompts``."""
    reference = fad_reference_embeddings(fad_reference_wavs, sample_rate, ev)
    return {
        name: evaluate_row(wavs, prompts, sample_rate, ev, reference, paired_reference, fad_inf)
        for name, wavs in tqdm(rows.items(), desc="evaluating rows", unit="row")
    }


# ---------------------------------------------------------------- the whole evaluation, as `musiclm eval`
# runs it
class EvalError(ValueError):
    """Inputs of an evaluation that do not fit together."""


def _key(clip) -> str:
    return str(Path(getattr(clip, "path", clip)).resolve())


def load_clip(clip, sample_rate: int, seconds: float) -> torch.Tensor:
    """The first ``seconds`` of a manifest clip (its offset honoured) or of an audio file, padded."""
    from musiclm.audio import crop_or_pad, read_clip

    clip = clip if isinstance(clip, Clip) else Clip(Path(clip))
    return crop_or_pad(read_clip(clip, sample_rate, seconds=seconds), round(seconds * sample_rate))


def usable_clip(clip, sample_rate: int, seconds: float, skips: SkipLog) -> torch.Tensor | None:
    """``load_clip``, or None for a clip that is unreadable or silent, skipped with its reason."""
    try:
        wav = load_clip(clip, sample_rate, seconds)
        if not bool(wav.abs().amax() > 0):
            raise AudioError(f"silent (or empty) in its first {seconds:g} s")
    except AudioError as err:
        skips.skip(getattr(clip, "path", clip), str(err))
        return None
    return wav


GENERATION_FILE = "generation.json"


def claim_audio_folder(folder: Path, settings: dict[str, Any]) -> None:
    """Record what the audio in ``folder`` is generated with, or check that a resumed run asks for the
    same: audio of another checkpoint, guidance, seed or prompt list must never be mixed into a result."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / GENERATION_FILE
    settings = json.loads(json.dumps(settings))  # compared as they read back (tuples become lists)
    if path.is_file():
        before = json.loads(path.read_text())
        differ = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
        if differ:
            shown = ", ".join(f"{k}: {before.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
            raise EvalError(
                f"{folder} holds audio generated with other settings ({shown}); pass another --out, "
                "or delete that folder to generate afresh"
            )
        return
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


def generate_audio(
    pipeline,
    prompts: list[Prompt],
    seconds: float,
    seed: int = 0,
    batch_size: int = 4,
    out_dir: str | Path | None = None,
    melody: bool = True,
    **generate_kwargs,
) -> list[torch.Tensor | None]:
    """One clip per prompt from a MusicLM pipeline (melody prompts one at a time, the rest in batches).

    ``melody=False`` makes the baseline of the melody measure instead: only the prompts that carry a
    melody, each from its text alone with the seed its melody clip has (None for the other prompts).

    With ``out_dir`` each clip is also written there as ``NNN.wav`` (``NNN-no-melody.wav`` for the
    baseline; prompt order), and a batch whose files all exist is read back instead of generated: an
    interrupted evaluation rerun with the same settings resumes, and gives the audio an uninterrupted one
    would (batches have fixed bounds)."""
    folder = Path(out_dir) if out_dir is not None else None
    rate = pipeline.sample_rate
    out: list[torch.Tensor | None] = [None] * len(prompts)
    suffix = "" if melody else "-no-melody"

    def batch(idx: list[int], make) -> None:
        paths = [folder / f"{i:03d}{suffix}.wav" for i in idx] if folder is not None else []
        if paths and all(p.is_file() for p in paths):
            for i, path in zip(idx, paths):
                out[i] = load_clip(path, rate, seconds)
            return
        for k, (i, w) in enumerate(zip(idx, make())):
            out[i] = w.float().cpu()
            if paths:
                save_audio(paths[k], out[i], rate)

    plain = [i for i, p in enumerate(prompts) if p.melody is None] if melody else []
    for start in tqdm(range(0, len(plain), batch_size), desc="generating", unit="batch"):
        idx = plain[start : start + batch_size]
        texts = [prompts[i].text for i in idx]
        batch(idx, lambda: pipeline.generate(texts, duration=seconds, seed=seed + start, **generate_kwargs))
    for i, p in enumerate(prompts):
        if p.melody is not None:
            batch(
                [i],
                lambda: pipeline.generate(
                    [p.text],
                    duration=seconds,
                    melody=p.melody if melody else None,
                    seed=seed + i,
                    **generate_kwargs,
                ),
            )
    length = round(seconds * rate)
    from musiclm.audio import crop_or_pad

    return [None if w is None else crop_or_pad(w, length) for w in out]


def given_audio_paths(source, prompts: list[Prompt]) -> list:
    """The already generated audio: the prompts' own ``audio`` fields, a folder (files in sorted order) or
    a manifest (its clips, offsets honoured, in order), one per prompt."""
    from musiclm.data.manifest import read_manifest

    if source is None:
        paths = [p.audio for p in prompts]
        if any(p is None for p in paths):
            raise EvalError(
                "no audio to evaluate: pass --checkpoint (generate), --audio, or give every prompt "
                'an "audio" field'
            )
        return paths
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    else:
        paths = read_manifest(source)
    if len(paths) != len(prompts):
        raise EvalError(
            f"{source} holds {len(paths)} audio files but there are {len(prompts)} prompts; "
            "they pair up in order, so the counts must match"
        )
    return paths


def spare_reference(prompts: list[Prompt], heldout: list, under_test: list = (), minimum: int = 16) -> list:
    """The held-out clips that FAD and KLD may measure against: none of them a prompt's own reference or
    a file of ``under_test`` (already generated audio), so that no row matches its reference by
    construction. Fewer than ``minimum`` is an error that says how many there are."""
    if minimum < 2:
        raise EvalError(f"the FAD reference needs at least 2 clips; got a minimum of {minimum}")
    tested = {_key(p.reference) for p in prompts if p.reference is not None} | {_key(p) for p in under_test}
    spare = [c for c in heldout if _key(c.path) not in tested]
    if len(spare) < minimum:
        raise EvalError(
            f"the FAD/KLD reference needs {minimum} held-out clips (split != 'train') that are not under "
            f"test, but {len(spare)} of the manifest's {len(heldout)} held-out clips are spare "
            f"({len(heldout) - len(spare)} are the prompts' references or the audio evaluated, or unusable): "
            "evaluate fewer prompts (--limit), build more held-out data, or lower --reference-clips"
        )
    return spare


# the attributes the classifier predicts, whose distributions KLD compares
KLD_KEYS = tuple(HEAD_ATTRIBUTE.values())


def matched_references(prompts: list[Prompt], spare: list, seed: int = 0) -> list:
    """Per prompt, the spare real clip whose attributes agree with the prompt's on most of the
    classifier's heads (ties broken by a seeded shuffle): KLD then compares audio under test with a real clip
    of the same description that is not itself under test, so no row scores 0 by construction."""
    order = np.random.default_rng(seed).permutation(len(spare))

    def agreement(prompt: Prompt, clip) -> int:
        attrs = clip.attributes or {}
        return sum(
            prompt.attributes.get(k) is not None and prompt.attributes.get(k) == attrs.get(k)
            for k in KLD_KEYS
        )

    return [spare[max(order, key=lambda i: agreement(p, spare[i]))] for p in prompts]


def run_evaluation(
    prompts: list[Prompt],
    reference_clips: list,
    out_dir,
    ev: Evaluators,
    *,
    sample_rate: int,
    seconds: float,
    generated: list[torch.Tensor | None],
    codec=None,
    seed: int = 0,
    fad_inf: bool = True,
    extra_info: dict | None = None,
    under_test: list = (),
    reference_clips_min: int = 16,
    skips: SkipLog | None = None,
    without_melody: list[torch.Tensor | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``generated`` (one clip per prompt) with the reference rows and write the report.
    ``without_melody[i]``: prompt i's clip made from the same text and seed without its melody (the
    baseline of the melody measure; None for prompts without a melody).

    The FAD reference is every usable held-out clip that is not under test (not a prompt's own reference,
    not a file of ``under_test``: already generated audio given by path), and each prompt's KLD reference
    the one of them that best matches its description. Fewer than ``reference_clips_min`` such clips is an
    error, never a fallback to the clips under test. ``generated[i]`` None (audio that could not be used)
    drops prompt i; so does an unusable paired reference. Each skip and its reason go to
    ``out_dir/skipped.jsonl`` (``skips`` strict: the first one is an error)."""
    from musiclm.evaluation.report import write_report

    t0 = time.perf_counter()
    skips = skips if skips is not None else SkipLog(Path(out_dir) / SKIPPED_FILE)
    paired = _paired_references(prompts, generated, sample_rate, seconds, skips)
    keep = [i for i, w in enumerate(generated) if w is not None and (paired is None or paired[i] is not None)]
    if not keep:
        raise EvalError(f"none of the {len(prompts)} prompts has usable audio; see {skips.path}")
    prompts, generated = [prompts[i] for i in keep], [generated[i] for i in keep]
    without_melody = None if without_melody is None else [without_melody[i] for i in keep]
    paired = None if paired is None else [paired[i] for i in keep]
    heldout = [c for c in reference_clips if c.split != "train"]
    train = [c for c in reference_clips if c.split == "train"]
    spare, fad_ref = _fad_reference(
        prompts, heldout, under_test, reference_clips_min, sample_rate, seconds, skips
    )
    rows: dict[str, list[torch.Tensor]] = {"generated": generated}
    if paired is not None:
        rows["ground truth"] = paired
        if codec is not None:
            rows["codec resynthesis"] = _codec_resynthesis(codec, paired, sample_rate)
    kld_ref = _kld_reference(prompts, spare, fad_ref, seed)
    floor = _random_training(train, len(prompts), sample_rate, seconds, skips, seed)
    if floor:
        rows["random training"] = [floor[i % len(floor)] for i in range(len(prompts))]
    metrics = evaluate_rows(rows, prompts, sample_rate, ev, fad_ref, kld_ref, fad_inf)
    _add_baseline_figures(metrics, prompts, without_melody, sample_rate)
    info = {
        "prompts": len(prompts),
        "seconds_per_clip": seconds,
        "sample_rate": sample_rate,
        "fad_reference_clips": len(fad_ref),
        "kld_reference": "best-matching spare held-out clip" if kld_ref else None,
        "fad_embeddings": list(ev.embedders),
        "skipped_inputs": len(skips.entries),
        "evaluation_wall_s": round(time.perf_counter() - t0, 1),
        **(extra_info or {}),
    }
    samples = {f"{name} 0: {prompts[0].text[:80]}": wavs[0] for name, wavs in rows.items()}
    samples.update(
        {f"generated {i}: {prompts[i].text[:80]}": generated[i] for i in range(1, min(3, len(prompts)))}
    )
    write_report(out_dir, metrics, info, samples, sample_rate, [p.text for p in prompts])
    summary = skips.finish()
    if summary:
        tqdm.write(summary)
    return metrics


def _paired_references(
    prompts: list[Prompt], generated: list, sample_rate: int, seconds: float, skips: SkipLog
) -> list[torch.Tensor | None] | None:
    """Each prompt's own reference clip (None where it or the prompt's audio is unusable); None unless
    every prompt has a reference."""
    if not all(p.reference is not None for p in prompts):
        return None
    return [
        usable_clip(Clip(p.reference, p.duration, offset=p.reference_offset), sample_rate, seconds, skips)
        if generated[i] is not None
        else None
        for i, p in enumerate(prompts)
    ]


def _fad_reference(
    prompts: list[Prompt],
    heldout: list,
    under_test: list,
    minimum: int,
    sample_rate: int,
    seconds: float,
    skips: SkipLog,
) -> tuple[list, list[torch.Tensor]]:
    """The usable spare held-out clips (see :func:`spare_reference`) and their audio; an error with fewer
    than ``minimum``."""
    spare, audio = [], []
    for clip in spare_reference(prompts, heldout, under_test, minimum):
        wav = usable_clip(clip, sample_rate, seconds, skips)
        if wav is not None:
            spare.append(clip)
            audio.append(wav)
    if len(audio) < minimum:
        raise EvalError(f"{len(audio)} usable spare held-out clips, {minimum} needed (see {skips.path})")
    return spare, audio


@torch.no_grad()
def _codec_resynthesis(codec, wavs: list[torch.Tensor], sample_rate: int) -> list[torch.Tensor]:
    """Each clip through the codec and back, at ``sample_rate`` and its own length."""
    return [
        resample(
            codec.decode(codec.encode(resample(w, sample_rate, codec.sample_rate)[None]))[0],
            codec.sample_rate,
            sample_rate,
        )[: w.shape[-1]]
        for w in wavs
    ]


def _kld_reference(
    prompts: list[Prompt], spare: list, spare_audio: list[torch.Tensor], seed: int
) -> list[torch.Tensor] | None:
    """Each prompt's best-matching spare clip's audio (:func:`matched_references`); None unless every prompt
    names an attribute the KLD classifier judges."""
    if not all(any(p.attributes.get(k) for k in KLD_KEYS) for p in prompts):
        return None
    loaded = {id(clip): wav for clip, wav in zip(spare, spare_audio)}
    return [loaded[id(clip)] for clip in matched_references(prompts, spare, seed)]


def _random_training(
    train: list, count: int, sample_rate: int, seconds: float, skips: SkipLog, seed: int
) -> list[torch.Tensor]:
    """Up to ``count`` usable training clips drawn at random (the floor row; unusable ones passed over)."""
    floor: list[torch.Tensor] = []
    for i in np.random.default_rng(seed).permutation(len(train)):
        if len(floor) == count:
            break
        wav = usable_clip(train[i], sample_rate, seconds, skips)
        if wav is not None:
            floor.append(wav)
    return floor


def _add_baseline_figures(
    metrics: dict[str, dict[str, Any]],
    prompts: list[Prompt],
    without_melody: list[torch.Tensor | None] | None,
    sample_rate: int,
) -> None:
    """Add the figures read against a baseline: the melody measure against the same prompts generated
    without their melody, and each row's note-change rate against the ground truth's."""
    if without_melody is not None and "per_clip_melody_chroma" in metrics["generated"]:
        with_melody = metrics["generated"]["per_clip_melody_chroma"]
        metrics["generated"].update(melody_baseline(prompts, with_melody, without_melody, sample_rate))
    if "ground truth" in metrics:
        real = metrics["ground truth"]["per_clip_note_rate"]
        for name, m in metrics.items():
            if name != "ground truth":
                m.update(note_rate_ratios(m["per_clip_note_rate"], real))
