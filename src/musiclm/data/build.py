"""The embedded dataset: music21 corpus works rendered to captioned, annotated mono clips.

Each work yields 1-2 arrangements (crop, tempo, transposition, line-up, soundfont, gain, reverb all
drawn from an rng seeded by (seed, work index)) and, for some, a melody-only render with a
whistle/hum-like timbre sharing the arrangement's ``melody_group``. Splits go by work, so no variant
of a validation/test work is in train. Each finished work leaves ``works/<index>.json``; a rerun
reuses those and redoes anything half written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

from musiclm.attributes import TEMPO_BANDS, register, tempo_class
from musiclm.audio import save_audio
from musiclm.data import corpus, instruments
from musiclm.data.arrange import accompaniment, change_mode, window_midi
from musiclm.data.captions import make_captions
from musiclm.data.manifest import Clip, write_manifest
from musiclm.data.render import RenderError, available_soundfonts, render_midi
from musiclm.data.skips import SKIPPED_FILE, SkipLog
from musiclm.files import write_text_atomic
from musiclm.progress import tqdm

KEY_NAMES = {
    "major": ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"],
    "minor": ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"],
}


CHUNK = 8  # works between two checks of whether the build has its hours (see build())


class BuildError(RuntimeError):
    """The build cannot start: bad options or missing tools."""


@dataclasses.dataclass
class BuildOptions:
    out: Path
    hours: float | None = 1.0
    max_works: int | None = None
    sample_rate: int = 24000
    workers: int = 2
    seed: int = 0
    clip_seconds: tuple[float, float] = (10.0, 30.0)
    melody_fraction: float = 0.3
    minor_share: float = (
        0.5  # arrangements moved to the other mode so that minor is this share, whatever the corpus
    )
    collections: list[str] | None = None
    soundfonts: list[str] | None = None
    eval_every: int = 20  # of every 20 works, one goes to valid and one to test
    strict: bool = False  # a skipped work or clip stops the build instead of being counted


def split_of(index: int, every: int) -> str:
    return {1: "test", 2: "valid"}.get(index % every, "train")


def plan_works(opts: BuildOptions) -> list[corpus.Work]:
    """All works in a seeded order that interleaves collections by their weights."""
    by_coll = corpus.list_works(opts.collections)
    if not any(by_coll.values()):
        raise BuildError(
            f"no works found in collections {opts.collections}; choose from {list(corpus.BY_NAME)}"
        )
    rng = np.random.default_rng(opts.seed)
    queues = {
        name: [works[i] for i in rng.permutation(len(works))] for name, works in by_coll.items() if works
    }
    order: list[corpus.Work] = []
    while queues and (opts.max_works is None or len(order) < opts.max_works):
        names = list(queues)
        weights = np.array([corpus.BY_NAME[n].weight for n in names])
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        order.append(queues[name].pop())
        if not queues[name]:
            del queues[name]
    return order


def render_work(job: dict[str, Any]) -> dict[str, Any]:
    """Render all clips of one work; failures become a skip reason, never an exception."""
    opts: BuildOptions = job["opts"]
    work: corpus.Work = job["work"]
    index: int = job["index"]
    marker = opts.out / "works" / f"{index:06d}.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if all((opts.out / c["path"]).is_file() for c in done["clips"]):
            return done
    rng = np.random.default_rng([opts.seed, index])
    split = split_of(index, opts.eval_every)
    result: dict[str, Any] = {
        "index": index,
        "work_id": work.work_id,
        "split": split,
        "clips": [],
        "skipped": [],
    }
    try:
        notes = corpus.parse_work(work)
    except Exception as err:  # music21 raises many kinds; any of them means "skip this work"
        result["skipped"].append(["parse failed", f"{type(err).__name__}: {str(err)[:120]}"])
        return _finish(marker, result)
    soundfonts = available_soundfonts(opts.soundfonts)
    n_variants = 1 if len(notes.parts) == 1 else int(rng.integers(1, 3))
    score_mode = notes.mode
    for variant in range(n_variants):
        notes = change_mode(notes, "minor" if rng.random() < opts.minor_share else "major")
        arrangement = _arrange(notes, score_mode, work, index, variant, rng, opts, result["skipped"])
        for render in arrangement.renders if arrangement else []:
            clip = _render_clip(arrangement, render, split, soundfonts, rng, opts, result["skipped"])
            if clip is not None:
                result["clips"].append(clip)
    return _finish(marker, result)


@dataclasses.dataclass
class _Render:
    clip_id: str
    parts: list[list[tuple[float, float, int]]]
    programs: list[int]
    lineup: str
    bpm: int
    bend_cents: float
    is_melody: bool


@dataclasses.dataclass
class _Arrangement:
    """A window of a work with its transposition and line-up: the full render and, for some, a melody-only
    one, which share the attributes in ``base``."""

    start_q: float
    end_q: float
    transpose: int
    octave_bias: int
    base: dict[str, Any]
    renders: list[_Render]


def _arrange(
    notes: corpus.Notes,
    score_mode: str,
    work: corpus.Work,
    index: int,
    variant: int,
    rng: np.random.Generator,
    opts: BuildOptions,
    skipped: list,
) -> _Arrangement | None:
    """Draw an arrangement of ``notes`` (None, with the reason in ``skipped``, when the work is too short at
    the tempo drawn)."""
    bpm = int(rng.integers(*TEMPO_BANDS[str(rng.choice(list(TEMPO_BANDS)))], endpoint=True))
    spq = 60.0 / bpm
    want = float(rng.uniform(*opts.clip_seconds))
    span_q = min(notes.length, want / spq)
    if span_q * spq < min(opts.clip_seconds[0], 4.0) * 0.75:
        skipped.append(["too short", f"{notes.length * spq:.1f} s at {bpm} BPM"])
        return None
    # begin on a note of the tune: at slow tempi a leading rest would leave seconds of silence
    onsets = sorted({on for on, _, _ in notes.parts[0] if on <= notes.length - span_q + 1e-9}) or [0.0]
    start_q = float(onsets[int(rng.integers(len(onsets)))])
    end_q = min(start_q + span_q, notes.length)
    transpose = int(rng.integers(-5, 7))
    parts = [list(p) for p in notes.parts]
    programs, lineup = instruments.choose_instruments(len(parts), rng)
    if len(parts) == 1 and rng.random() < 0.5:
        parts.append(accompaniment(notes, transpose))
        programs.append(int(rng.choice(instruments.ACCOMPANIMENT)))
        lineup = "melody and accompaniment"
    with_melody = rng.random() < opts.melody_fraction
    octave_bias = int(rng.choice([-1, 0, 0, 1]))
    coll = corpus.BY_NAME[work.collection]
    base = {
        "tonic": (notes.tonic_pc + transpose) % 12,
        "mode": notes.mode,
        "score_mode": score_mode,
        "score_bpm": notes.bpm,
        "time_signature": notes.time_signature,
        "collection": coll.name,
        "composer": coll.composer,
        "style": coll.style,
        "title": notes.title,
        "transpose": transpose,
        "work_id": work.work_id,
        "melody_group": f"{work.work_id}@{variant}" if with_melody else None,
    }
    clip_id = f"{index:06d}_{variant}"
    renders = [_Render(clip_id, parts, programs, lineup, bpm, 0.0, False)]
    if with_melody:
        timbre = int(rng.choice(list(instruments.MELODY_TIMBRES)))
        m_bpm = int(round(bpm * rng.uniform(0.96, 1.04)))
        bend = float(rng.uniform(-30, 30))
        renders.append(_Render(f"{clip_id}m", parts[:1], [timbre], "melody only", m_bpm, bend, True))
    return _Arrangement(start_q, end_q, transpose, octave_bias, base, renders)


@dataclasses.dataclass
class _Mix:
    """How a clip's MIDI is turned into sound: the soundfont (a key of the build's ``soundfonts``), the
    output gain and whether reverb is on."""

    soundfont: str
    gain: float
    reverb: bool


def _render_clip(
    arrangement: _Arrangement,
    render: _Render,
    split: str,
    soundfonts: dict,
    rng: np.random.Generator,
    opts: BuildOptions,
    skipped: list,
) -> dict[str, Any] | None:
    """Render one clip of an arrangement to ``clips/`` (its MIDI to ``midi/``) and return its manifest
    entry; None, with the reason in ``skipped``, for a window without notes or a failed, silent or clipped
    render."""
    spq = 60.0 / render.bpm
    # a hummed or whistled tune stays where a voice sings it (whistles above C6 are silent in TimGM6mb)
    octave_bias = 0 if render.is_melody else arrangement.octave_bias
    pm = window_midi(
        render.parts,
        render.programs,
        arrangement.start_q,
        arrangement.end_q,
        spq,
        arrangement.transpose,
        rng,
        render.bend_cents,
        octave_bias,
    )
    if not pm.instruments:
        skipped.append(["no notes in the window", render.clip_id])
        return None
    mix = _draw_mix(soundfonts, rng)
    seconds = (arrangement.end_q - arrangement.start_q) * spq
    wav = _render_audio(pm, render.clip_id, mix, seconds, soundfonts[mix.soundfont][0], opts, skipped)
    if wav is None:
        return None
    attrs = _clip_attributes(arrangement, render, pm, mix, soundfonts[mix.soundfont][1], split)
    names = [instruments.caption_name(p) for p in attrs["programs"]]
    return {
        "path": f"clips/{render.clip_id}.wav",
        "duration": round(len(wav) / opts.sample_rate, 4),
        "sample_rate": opts.sample_rate,
        "split": split,
        "captions": make_captions(attrs, names, rng, int(rng.integers(1, 4))),
        "attributes": attrs,
        "midi": f"midi/{render.clip_id}.mid",
    }


def _draw_mix(soundfonts: dict, rng: np.random.Generator) -> _Mix:
    """A soundfont drawn by the build's weights, a gain and reverb on or off."""
    names = list(soundfonts)
    weights = np.array([soundfonts[n][2] for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    return _Mix(name, float(rng.uniform(0.25, 0.45)), bool(rng.random() < 0.5))


def _render_audio(
    pm: pretty_midi.PrettyMIDI,
    clip_id: str,
    mix: _Mix,
    seconds: float,
    soundfont_path: str,
    opts: BuildOptions,
    skipped: list,
) -> np.ndarray | None:
    """Write ``pm`` to ``midi/``, render it with ``mix`` and save the audio to ``clips/``; None, with the
    reason in ``skipped``, for a failed, silent or clipped render (nothing is then saved to ``clips/``)."""
    midi_path = opts.out / "midi" / f"{clip_id}.mid"
    wav_path = opts.out / "clips" / f"{clip_id}.wav"
    midi_path.parent.mkdir(parents=True, exist_ok=True)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(midi_path))
    try:
        wav, clipped = render_midi(midi_path, soundfont_path, opts.sample_rate, mix.gain, mix.reverb, seconds)
    except RenderError as err:
        skipped.append(["render failed", f"{clip_id}: {str(err)[:160]}"])
        return None
    rms = float(np.sqrt(np.mean(wav**2))) if wav.size else 0.0
    if rms < 1e-4:
        skipped.append(["silent render", clip_id])
        return None
    if clipped > 1e-3:
        skipped.append(["clipped render", f"{clip_id}: {clipped:.2%} of samples"])
        return None
    save_audio(wav_path, wav, opts.sample_rate)  # atomic: a killed build leaves no half clip
    return wav


def _clip_attributes(
    arrangement: _Arrangement,
    render: _Render,
    pm: pretty_midi.PrettyMIDI,
    mix: _Mix,
    soundfont_license: str,
    split: str,
) -> dict[str, Any]:
    """The manifest attributes of a rendered clip: the arrangement's shared ones and what this render
    used."""
    used = [i.program for i in pm.instruments]
    base = arrangement.base
    return {
        "instruments": list(dict.fromkeys(instruments.gm_name(p) for p in used)),
        "families": list(dict.fromkeys(instruments.FAMILY_OF[p] for p in used)),
        "programs": used,
        "bpm": render.bpm,
        "tempo_class": tempo_class(render.bpm),
        "key": KEY_NAMES[base["mode"]][base["tonic"]],
        **{k: v for k, v in base.items() if k != "tonic"},
        "voices": len(used),
        "register": register([n.pitch for i in pm.instruments for n in i.notes]),
        "articulation": instruments.articulation(used),
        "lineup": render.lineup,
        "soundfont": mix.soundfont,
        "gain": round(mix.gain, 3),
        "reverb": mix.reverb,
        "tuning_cents": round(render.bend_cents, 1),
        "is_melody": render.is_melody,
        "license": f"{corpus.LICENSE}; rendered with {mix.soundfont} ({soundfont_license})",
        "caption_set": "train" if split == "train" else "heldout",
    }


def _finish(marker: Path, result: dict[str, Any]) -> dict[str, Any]:
    write_text_atomic(marker, json.dumps(result))
    return result


def _rendered_in_order(jobs: Iterator[dict[str, Any]], workers: int, out: Path) -> Iterator[dict[str, Any]]:
    """``render_work`` of each job, in the jobs' order, with up to ``2 * workers`` works rendering ahead of
    the one awaited (no worker waits for a slow work to finish). When the caller stops early, the works
    rendered ahead are removed, so the folder holds exactly the works the build kept."""
    if workers <= 1:
        yield from map(render_work, jobs)
        return
    # spawn, not fork: a child forked from a process whose torch thread pool is running (a test session,
    # a notebook) deadlocks in its first torch op
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        ahead: deque = deque()
        try:
            for job in jobs:
                ahead.append(pool.apply_async(render_work, (job,)))
                if len(ahead) > 2 * workers:
                    yield ahead.popleft().get()
            while ahead:
                yield ahead.popleft().get()
        except GeneratorExit:
            for pending in ahead:
                _discard(out, pending.get())
            raise


def _discard(out: Path, result: dict[str, Any]) -> None:
    """Remove what ``render_work`` wrote for one work."""
    for clip in result["clips"]:
        (out / clip["path"]).unlink(missing_ok=True)
        (out / clip["midi"]).unlink(missing_ok=True)
    (out / "works" / f"{result['index']:06d}.json").unlink(missing_ok=True)


def build(opts: BuildOptions) -> Path:
    """Render until ``opts.hours`` of audio (or ``max_works`` works); write the manifest and the card."""
    if opts.hours is None and opts.max_works is None:
        raise BuildError("give --hours or a maximum number of works")
    if opts.hours is not None and opts.hours <= 0:
        raise BuildError(f"--hours must be positive, got {opts.hours}")
    if not 0 < opts.clip_seconds[0] <= opts.clip_seconds[1]:
        raise BuildError(f"clip seconds must satisfy 0 < min <= max, got {opts.clip_seconds}")
    available_soundfonts(opts.soundfonts)  # fail early with the install command
    opts.out = Path(opts.out).resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    for stale in opts.out.glob("clips/*.partial"):
        stale.unlink()  # left by an interrupted run; their works have no marker and are redone
    works = plan_works(opts)
    target = (opts.hours or float("inf")) * 3600
    results: list[dict] = []
    seconds, start = 0.0, time.time()
    # "enough?" is decided only every CHUNK works, in the plan's order, so that the works kept are the same
    # whatever the number of workers and whichever finishes first
    bar = tqdm(
        total=None if opts.hours is None else round(target),
        unit="s audio",
        desc="rendering",
        dynamic_ncols=True,
    )
    jobs = ({"opts": opts, "work": work, "index": index} for index, work in enumerate(works))
    with contextlib.closing(_rendered_in_order(jobs, opts.workers, opts.out)) as rendered:
        for res in rendered:
            if opts.strict and res["skipped"]:
                why, detail = res["skipped"][0]
                raise BuildError(f"work {res['work_id']}: {why} ({detail}); without --strict it is skipped")
            results.append(res)
            got = sum(c["duration"] for c in res["clips"])
            seconds += got
            bar.update(round(got))
            bar.set_postfix(works=len(results), clips=sum(len(r["clips"]) for r in results))
            if seconds >= target and len(results) % CHUNK == 0:
                break
    bar.close()
    clips = []
    for res in results:
        for c in res["clips"]:
            clip = Clip(**{**c, "path": opts.out / c["path"], "midi": opts.out / c["midi"]})
            clips.append(clip)
    if not clips:
        raise BuildError(f"no clip could be rendered; see the skipped works in {opts.out / 'works'}")
    manifest = write_manifest(opts.out / "manifest.jsonl", clips)
    previous = opts.out / "card.json"  # a resumed build adds its time to that of the runs before it
    earlier = json.loads(previous.read_text()).get("build_seconds", 0.0) if previous.is_file() else 0.0
    card = make_card(clips, results, opts, earlier + time.time() - start)
    write_text_atomic(opts.out / "card.json", json.dumps(card, indent=2) + "\n")
    write_text_atomic(opts.out / "card.md", card_markdown(card))
    skips = SkipLog(opts.out / SKIPPED_FILE)
    for entry in card["skipped"]:
        skips.skip(entry["work_id"], f"{entry['reason']} ({entry['detail']})")
    summary = skips.finish()
    if summary:
        print(summary)
    return manifest


COUNTED = [
    "split",
    "families",
    "instruments",
    "tempo_class",
    "key",
    "mode",
    "score_mode",
    "register",
    "articulation",
    "time_signature",
    "voices",
    "collection",
    "style",
    "soundfont",
    "lineup",
    "reverb",
    "is_melody",
    "caption_set",
]


def make_card(clips: list[Clip], results: list[dict], opts: BuildOptions, wall: float) -> dict[str, Any]:
    counts: dict[str, Counter] = {name: Counter() for name in COUNTED}
    for clip in clips:
        for name in COUNTED:
            value = clip.split if name == "split" else clip.attributes.get(name)
            for v in value if isinstance(value, list) else [value]:
                counts[name][str(v)] += 1
    hours = Counter()
    for clip in clips:
        hours[clip.split] += (clip.duration or 0) / 3600
    skipped = [
        {"work_id": r["work_id"], "reason": why, "detail": detail}
        for r in results
        for why, detail in r["skipped"]
    ]
    reasons = Counter(s["reason"] for s in skipped)
    return {
        "hours": round(sum(hours.values()), 4),
        "hours_per_split": {k: round(v, 4) for k, v in sorted(hours.items())},
        "clips": len(clips),
        "works": {
            s: len({r["work_id"] for r in results if r["split"] == s and r["clips"]})
            for s in ("train", "valid", "test")
        },
        "melody_groups": len(
            {c.attributes["melody_group"] for c in clips if c.attributes.get("melody_group")}
        ),
        "counts": {name: dict(counts[name].most_common()) for name in COUNTED},
        "licenses": sorted({c.attributes["license"] for c in clips}),
        "skipped": skipped,
        "skip_reasons": dict(reasons.most_common()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()},
        "build_seconds": round(wall, 1),
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        "# Embedded music dataset",
        "",
        "Works of the music21 corpus rendered with FluidSynth and free General MIDI soundfonts, captioned",
        "from their known attributes. Validation/test captions use held-out templates and synonyms.",
        "",
        f"- hours: {card['hours']} ({', '.join(f'{k} {v}' for k, v in card['hours_per_split'].items())})",
        f"- clips: {card['clips']}; works with clips: {card['works']}; melody groups: "
        f"{card['melody_groups']}",
        f"- build time: {card['build_seconds']} s (all runs of this folder)",
        "",
        "## Licenses",
        *[f"- {lic}" for lic in card["licenses"]],
        "",
        "## Clips per attribute value",
    ]
    for name, values in card["counts"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    lines += ["", f"## Skipped ({len(card['skipped'])})"]
    lines += [f"- {s['work_id']}: {s['reason']} ({s['detail']})" for s in card["skipped"]]
    return "\n".join(lines) + "\n"
