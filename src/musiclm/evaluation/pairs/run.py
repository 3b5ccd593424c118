"""One paired-adherence run: generate (or read) both sides of each pair, render the references and send
them down the model's chain where asked, score every row with the detectors and write ``pairs.json`` and
``pairs.md``. ``musiclm eval-pairs`` parses its options into :func:`evaluate_pairs`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from musiclm.evaluation import suite
from musiclm.evaluation.pairs.audio import generate_pairs, load_pair_audio, side_paths
from musiclm.evaluation.pairs.detectors import score_pairs
from musiclm.evaluation.pairs.file import PAIRS_FILE, Pair, read_pairs
from musiclm.evaluation.pairs.references import render_reference_pairs
from musiclm.evaluation.pairs.report import write_pairs_report
from musiclm.evaluation.pairs.statistics import swapped
from musiclm.interfaces import load_component
from musiclm.pipeline import SHIPPED_MODEL


def evaluate_pairs(
    out: Path,
    *,
    checkpoint: Path | None = None,
    audio: Path | None = None,
    pairs_file: Path | None = None,
    reference: bool = False,
    chain: bool = False,
    classifier: Path | None = None,
    seconds: float = 10.0,
    limit: int | None = None,
    seed: int = 0,
    batch: int = 4,
    guidance: float | None = None,
    candidates: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score the pairs of ``pairs_file`` (default: the shipped one) into ``out`` and return the report's
    result. Rows: ``generated`` (by ``checkpoint``, or the saved ``audio``), ``reference renders`` (the
    ceiling, with ``reference`` or ``chain``), the chain's rows (``chain``: the renders through the codec,
    the acoustic stages and every stage of ``checkpoint``) and ``shuffled`` (A and B swapped at random)."""
    if checkpoint is not None and audio is not None:
        raise ValueError("pass --checkpoint (generate) or --audio (already generated), not both")
    if chain and checkpoint is None:
        raise ValueError("--chain needs --checkpoint (the model to send renders through)")
    if checkpoint is None and audio is None and not reference:
        raise ValueError("nothing to score: pass --checkpoint, --audio or --reference")
    reference = reference or chain
    pairs = read_pairs(pairs_file or PAIRS_FILE)[:limit]
    clf, clf_dir = _classifier(classifier, pairs)
    info = {
        "pairs_file": str(pairs_file or PAIRS_FILE),
        "pairs": len(pairs),
        "seconds_per_clip": seconds,
        "seed": seed,
        "classifier": str(clf_dir),
    }
    rows, rate, t0 = {}, 24000, time.perf_counter()
    pipeline = settings = None
    if checkpoint is not None:
        from musiclm.pipeline import MusicLM
        from musiclm.training.distributed import pick_device

        pipeline = MusicLM.from_pretrained(checkpoint, map_location=pick_device(device))
        rate = pipeline.sample_rate
        scale, count = pipeline.guidance_for(guidance), pipeline.candidates_for(candidates)
        settings = {"checkpoint": str(checkpoint.resolve()), "guidance": scale, "seed": seed}
        settings.update(candidates=count, seconds=seconds, batch=batch, pairs=[(p.a, p.b) for p in pairs])
        suite.claim_audio_folder(out / "audio", settings)
        with torch.no_grad():
            audio = generate_pairs(
                pipeline, pairs, out / "audio", seconds, seed, batch, guidance=guidance, candidates=candidates
            )
        info.update(checkpoint=str(checkpoint), guidance=scale, candidates=count)
        info["generation_wall_s"] = round(time.perf_counter() - t0, 1)
    if audio is not None:
        if checkpoint is None:  # saved audio is scored at its own rate: resampling it moves the detectors
            rate = _saved_rate(audio, rate)
        info["audio"] = str(audio)
        rows["generated"] = score_pairs(pairs, load_pair_audio(audio, len(pairs), rate, seconds), rate, clf)
    if reference:
        folder = render_reference_pairs(pairs, out / "reference", seconds, seed)
        wavs = load_pair_audio(folder, len(pairs), rate, seconds)
        rows["reference renders"] = score_pairs(pairs, wavs, rate, clf)
    if chain:
        from musiclm.evaluation.pairs.chain import chain_pairs

        suite.claim_audio_folder(out / "chain", settings)
        with torch.no_grad():
            folders = chain_pairs(pipeline, pairs, wavs, rate, out / "chain", seed, guidance)
        for name, folder in folders.items():
            rows[name] = score_pairs(pairs, load_pair_audio(folder, len(pairs), rate, seconds), rate, clf)
    source = "reference renders" if reference else "generated"
    rows["shuffled"] = swapped(rows[source], seed)
    info.update(shuffled_from=source, sample_rate=rate, wall_s=round(time.perf_counter() - t0, 1))
    return write_pairs_report(out, rows, pairs, info)


def _classifier(given: Path | None, pairs: list[Pair]):
    """The evaluation classifier (given, else the shipped one when present) and its folder; without one the
    family pairs cannot be scored, which is said on stderr."""
    shipped = SHIPPED_MODEL.parent / "eval_classifier"
    folder = given or (shipped if (shipped / "config.json").is_file() else None)
    clf = load_component(folder).eval() if folder is not None else None
    if clf is None and any(p.kind == "family" for p in pairs):
        print("no evaluation classifier: family pairs are left out (pass --classifier)", file=sys.stderr)
    return clf, folder


def _saved_rate(audio: Path, default: int) -> int:
    from musiclm.audio import audio_info

    first = side_paths(audio, 0)[0]
    # a missing file is load_pair_audio's to name, with the others missing
    return audio_info(first).samplerate if first.is_file() else default
