"""Does the acoustic stage play the notes it is given? A check on rendered music whose score is known.

Melodies (a C-major scale up and down, 1-8 notes a second) and chord progressions (two to four voices, one
or two chords a second) are written as MIDI, rendered with FluidSynth and a GM soundfont on several
instruments, and sent through the pipeline's links (:mod:`musiclm.evaluation.chain`): the codec alone (the
ceiling) and the acoustic stages given the render's *real* semantic tokens and MuLan audio tokens. The
render itself is scored too: it is what the detectors make of the true audio. Every row is read against
the score:

- ``pitch`` (monophonic items): of the frames where pYIN hears a pitch while the score sounds a note, the
  share within 50 cents of it (octave errors count as misses); ``pitch_recall``: the same share of all
  frames where the score sounds a note, so that silence or a held drone cannot score well;
- ``onset_f1``: onsets against the score's, matched one to one within 50 ms: for melodies, where the pitch
  track moves to a new semitone; for chords, librosa's spectral-flux detector;
- ``chroma_f1`` (chords): per frame, pitch classes whose CQT chroma reaches half the frame's maximum
  against those the score sounds, F1 over all frames where it sounds any.

The same pitch track gives the suite's note-change rate of any clip (:func:`note_change_rate`), which
``musiclm eval`` sets against the rate of the real clip each prompt describes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pretty_midi
import torch

from musiclm.audio import resample
from musiclm.files import write_text_atomic

SECONDS = 5.0
RATE = 24000  # renders at the dataset's rate
SOUNDFONT = "FluidR3_GM"
CENTS = 50.0
ONSET_TOLERANCE = 0.05
CHROMA_THRESHOLD = 0.5
PITCH_RANGE = (librosa.note_to_hz("C2"), librosa.note_to_hz("C7"))
CHANGE_RATE = 16000
SCALE = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2]  # up and down, then again
CHORDS = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7], [9, 12, 16], [2, 5, 9], [7, 11, 14], [0, 4, 7]]


@dataclasses.dataclass(frozen=True)
class Item:
    """One rendered test piece: ``voices`` 1 is a scale melody, 2-4 a chord progression."""

    instrument: str
    program: int
    tonic: int  # MIDI pitch of the scale's first note / the chords' root
    notes_per_second: float
    voices: int = 1

    @property
    def name(self) -> str:
        kind = "melody" if self.voices == 1 else f"{self.voices}-voice chords"
        return f"{self.instrument} {kind}, {self.notes_per_second:g}/s"

    def notes(self, seconds: float = SECONDS) -> list[tuple[float, float, int]]:
        """(start, end, pitch) of every note, legato (each sounds 95 % of its slot)."""
        slot = 1.0 / self.notes_per_second
        out = []
        for i in range(int(round(seconds * self.notes_per_second))):
            start, end = i * slot, i * slot + 0.95 * slot
            if self.voices == 1:
                out.append((start, end, self.tonic + SCALE[i % len(SCALE)]))
            else:
                chord = CHORDS[i % len(CHORDS)]
                pitches = [self.tonic + p for p in chord] + [self.tonic - 12 + chord[0]]
                out += [(start, end, p) for p in pitches[: self.voices]]
        return out


MELODIES = [
    Item(name, program, tonic, rate)
    for name, program, tonic in [("flute", 73, 72), ("violin", 40, 67), ("piano", 0, 60), ("trumpet", 56, 60)]
    for rate in (1, 2, 4, 6, 8)
]
CHORD_ITEMS = [
    Item(name, program, 60, rate, voices)
    for name, program in [("piano", 0), ("organ", 19), ("strings", 48)]
    for voices, rate in [(2, 1), (3, 2), (4, 1)]
]
ITEMS = MELODIES + CHORD_ITEMS


def render_items(items: Sequence[Item], seconds: float = SECONDS) -> torch.Tensor:
    """``[N, T]`` renders at :data:`RATE`, each ``seconds`` long."""
    from musiclm.data.render import available_soundfonts, render_midi

    font = available_soundfonts([SOUNDFONT])[SOUNDFONT][0]
    wavs = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in items:
            pm = pretty_midi.PrettyMIDI()
            instrument = pretty_midi.Instrument(program=item.program)
            instrument.notes = [pretty_midi.Note(90, p, s, e) for s, e, p in item.notes(seconds)]
            pm.instruments.append(instrument)
            path = Path(tmp) / "item.mid"
            pm.write(str(path))
            wavs.append(torch.from_numpy(render_midi(path, font, RATE, 0.4, False, seconds)[0]))
    return torch.stack(wavs)


# ---------------------------------------------------------------- scores against the score
def pitch_track(
    wav: np.ndarray, rate: int, hop_seconds: float = 0.01, frame_length: int = 2048, resolution: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(times, MIDI pitch or NaN where unvoiced) by pYIN, every ``hop_seconds``; ``resolution`` is the
    size of pYIN's pitch bins in semitones."""
    hop = round(rate * hop_seconds)
    f0, voiced, _ = librosa.pyin(
        wav,
        fmin=PITCH_RANGE[0],
        fmax=PITCH_RANGE[1],
        sr=rate,
        frame_length=frame_length,
        hop_length=hop,
        resolution=resolution,
    )
    pitch = np.where(voiced, librosa.hz_to_midi(np.nan_to_num(f0, nan=1.0)), np.nan)
    return librosa.times_like(f0, sr=rate, hop_length=hop), pitch


def pitch_agreement(times: np.ndarray, pitch: np.ndarray, notes: Sequence[tuple[float, float, int]]) -> dict:
    """``pitch``: of the frames pYIN hears voiced while the score sounds a note, the share within 50 cents of
    it; ``pitch_recall``: of all frames where the score sounds a note, the share voiced and within 50 cents
    (silence and drones score low on it)."""
    sounding = np.array([next((p for s, e, p in notes if s <= t < e), np.nan) for t in times])
    scored = ~np.isnan(sounding)
    voiced = scored & ~np.isnan(pitch)
    near = voiced & (np.abs(np.nan_to_num(pitch) - sounding) * 100 <= CENTS)
    return {"pitch": near.sum() / max(voiced.sum(), 1), "pitch_recall": near.sum() / max(scored.sum(), 1)}


def note_onsets(times: np.ndarray, pitch: np.ndarray, min_frames: int = 4) -> list[float]:
    """Where a new note begins in a monophonic pitch track: a run of at least ``min_frames`` frames on one
    semitone that differs from the run before it (or follows silence). Energy-based detectors miss most
    legato attacks (a flute's or violin's scale); a change of pitch is what a new note of a line is."""
    semitones = np.round(pitch)
    onsets, previous, run_start = [], None, 0
    for i in range(1, len(semitones) + 1):
        if i < len(semitones) and (
            semitones[i] == semitones[run_start]
            or (np.isnan(semitones[i]) and np.isnan(semitones[run_start]))
        ):
            continue
        value = semitones[run_start]
        if i - run_start >= min_frames and not np.isnan(value):
            if value != previous:
                onsets.append(float(times[run_start]))
            previous = value
        elif i - run_start >= min_frames:  # a rest: the next note is new even on the same pitch
            previous = None
        run_start = i
    return onsets


def note_change_rate(wav: torch.Tensor | np.ndarray, rate: int) -> float:
    """New notes a second of the predominant pitch line: where the pYIN track settles on another semitone
    for at least 60 ms, or resumes after a rest (:func:`note_onsets`). A held tone or drone scores about
    0; chords that change under a held top voice count less than they should.

    At 16 kHz with 64 ms frames, 20 ms hops and quarter-semitone bins pYIN runs about ten times faster
    than with the score check's settings, and a whole-step move no longer glides through a semitone long
    enough to count as a note of its own."""
    y = resample(torch.as_tensor(wav).float(), rate, CHANGE_RATE).numpy()
    times, pitch = pitch_track(y, CHANGE_RATE, hop_seconds=0.02, frame_length=1024, resolution=0.25)
    return len(note_onsets(times, pitch, min_frames=3)) / (len(y) / CHANGE_RATE)


def note_rate_ratios(rates: Sequence[float], real_rates: Sequence[float]) -> dict[str, Any]:
    """Per prompt, a row's note-change rate over the rate of the real clip the prompt describes (NaN where
    the real clip has no note change to compare with), and the median of the defined ratios."""
    ratios = [r / real if real > 0 else float("nan") for r, real in zip(rates, real_rates)]
    defined = [r for r in ratios if np.isfinite(r)]
    return {
        "per_clip_note_rate_ratio": ratios,
        "note_rate_ratio_median": float(np.median(defined)) if defined else float("nan"),
        "note_rate_ratio_n": len(defined),
    }


def onset_f1(found: Sequence[float], notes: Sequence[tuple[float, float, int]]) -> float:
    """Onsets ``found`` against the score's, matched one to one within :data:`ONSET_TOLERANCE`."""
    truth = sorted({round(s, 4) for s, _, _ in notes})
    matched, used = 0, set()
    for t in truth:  # the nearest unused detection within the tolerance
        near = [
            (abs(d - t), i) for i, d in enumerate(found) if i not in used and abs(d - t) <= ONSET_TOLERANCE
        ]
        if near:
            used.add(min(near)[1])
            matched += 1
    if not matched:
        return 0.0
    precision, recall = matched / len(found), matched / len(truth)
    return 2 * precision * recall / (precision + recall)


def chroma_f1(wav: np.ndarray, rate: int, notes: Sequence[tuple[float, float, int]]) -> float:
    hop = 512
    chroma = librosa.feature.chroma_cqt(y=wav, sr=rate, hop_length=hop)
    times = librosa.times_like(chroma, sr=rate, hop_length=hop)
    tp = fp = fn = 0
    for t, frame in zip(times, chroma.T):
        truth = {p % 12 for s, e, p in notes if s <= t < e}
        if not truth:
            continue
        heard = set(np.flatnonzero(frame >= CHROMA_THRESHOLD * frame.max()).tolist())
        tp, fp, fn = tp + len(heard & truth), fp + len(heard - truth), fn + len(truth - heard)
    return 2 * tp / max(2 * tp + fp + fn, 1)


def score_item(item: Item, wav: torch.Tensor, rate: int) -> dict[str, float]:
    """Monophonic items: pitch agreement and onset F1 from the pitch track; chords: onset F1 from librosa's
    spectral-flux detector and the chroma F1."""
    audio = wav.float().numpy()
    notes = item.notes(len(audio) / rate)
    if item.voices == 1:
        times, pitch = pitch_track(audio, rate)
        scores = pitch_agreement(times, pitch, notes)
        scores["onset_f1"] = onset_f1(note_onsets(times, pitch), notes)
    else:
        found = librosa.onset.onset_detect(y=audio, sr=rate, units="time")
        scores = {"onset_f1": onset_f1(found, notes), "chroma_f1": chroma_f1(audio, rate, notes)}
    return {k: round(float(v), 4) for k, v in scores.items()}


# ---------------------------------------------------------------- the check
ROWS = ("render", "codec", "acoustic stages")


@torch.no_grad()
def check_acoustic_stages(
    pipeline,
    items: Sequence[Item] = ITEMS,
    seconds: float = SECONDS,
    seed: int = 0,
    temperatures: Sequence[float] | None = None,
    guidance: float | None = None,
    batch: int = 8,
) -> dict[str, Any]:
    """Every item rendered and sent through the codec and through the acoustic stages (its real semantic
    and MuLan audio tokens given); per row, the scores of each item and their means by kind."""
    from musiclm.evaluation import chain
    from musiclm.pipeline import PAPER_TEMPERATURES
    from musiclm.stages.sampling import Sampling

    scale = pipeline.guidance_for(guidance)
    samplings = [Sampling(t, guidance=scale) for t in (temperatures or PAPER_TEMPERATURES)]
    renders = render_items(items, seconds)
    generator = torch.Generator(pipeline.device)
    generator.manual_seed(seed)
    coded, played = [], []
    for start in range(0, len(items), batch):
        part = renders[start : start + batch]
        coded.append(chain.through_codec(pipeline, part, RATE))
        played.append(chain.through_stages(pipeline, part, RATE, samplings, generator, real_semantic=True))
    audio = {
        "render": (renders, RATE),
        "codec": (torch.cat(coded), pipeline.sample_rate),
        "acoustic stages": (torch.cat(played), pipeline.sample_rate),
    }
    rows = {}
    for row in ROWS:
        wavs, rate = audio[row]
        rows[row] = [{"item": item.name, **score_item(item, wav, rate)} for item, wav in zip(items, wavs)]
    return {"rows": rows, "summary": summarize(items, rows), "audio": audio}


def summarize(items: Sequence[Item], rows: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per row, the mean of each score over items of one kind: melodies at <= 2 notes/s, at >= 4 notes/s,
    and chords."""
    kinds = {
        "slow melodies (<= 2/s)": lambda i: i.voices == 1 and i.notes_per_second <= 2,
        "fast melodies (>= 4/s)": lambda i: i.voices == 1 and i.notes_per_second >= 4,
        "chords": lambda i: i.voices > 1,
    }
    out = {}
    for row, scored in rows.items():
        for kind, belongs in kinds.items():
            chosen = [s for item, s in zip(items, scored) if belongs(item)]
            for metric in ("pitch", "pitch_recall", "onset_f1", "chroma_f1"):
                values = [s[metric] for s in chosen if metric in s]
                if values:
                    out.setdefault(row, {})[f"{kind} {metric}"] = round(float(np.mean(values)), 3)
    return out


def report_markdown(result: dict[str, Any], info: dict[str, Any]) -> str:
    summary = result["summary"]
    columns = list(next(iter(summary.values())))
    lines = [
        "# Acoustic stages on music with a known score",
        "",
        ", ".join(f"{k}: {v}" for k, v in info.items()),
        "",
        "| row | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    lines += [
        f"| {row} | " + " | ".join(f"{s.get(c, '')}" for c in columns) + " |" for row, s in summary.items()
    ]
    lines += ["", "## Per item", "", "| item | " + " | ".join(ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    for n, first in enumerate(result["rows"]["render"]):
        cells = []
        for row in ROWS:
            scored = result["rows"][row][n]
            cells.append(" / ".join(f"{k} {v:.2f}" for k, v in scored.items() if k != "item"))
        lines.append(f"| {first['item']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_check(result: dict[str, Any], out_dir: str | Path, info: dict[str, Any]) -> Path:
    """``melodies.md`` and ``melodies.json`` (scores), and every row's audio as ``audio/ROW/NN.wav``."""
    import json

    from musiclm.audio import save_audio

    out_dir = Path(out_dir)
    for row, (wavs, rate) in result["audio"].items():
        for n, wav in enumerate(wavs):
            save_audio(out_dir / "audio" / row.replace(" ", "_") / f"{n:02d}.wav", wav, rate)
    scores = {"info": info, "summary": result["summary"], "rows": result["rows"]}
    write_text_atomic(out_dir / "melodies.json", json.dumps(scores, indent=1) + "\n")
    return write_text_atomic(out_dir / "melodies.md", report_markdown(result, info))
