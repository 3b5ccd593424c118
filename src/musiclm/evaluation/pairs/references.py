"""Reference rows of the paired adherence: real renders made to match each side of a pair (the ceiling),
and those renders sent through the back of the model, to find the link that loses the asked direction."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musiclm.attributes import TEMPO_BANDS
from musiclm.audio import save_audio
from musiclm.data import corpus
from musiclm.data.arrange import change_mode, window_midi
from musiclm.data.render import available_soundfonts, render_midi
from musiclm.evaluation.pairs.audio import side_paths
from musiclm.evaluation.pairs.file import Pair, PairsError
from musiclm.progress import tqdm

# mean sounding pitch a "low" / "high" render is moved to (the dataset calls < 55 low and >= 72 high)
REGISTER_TARGET = {"low": 48, "high": 79}
# MuseScore's .sf3 takes seconds to load per render; the two .sf2 fonts give two timbres per instrument
REFERENCE_FONTS = ("FluidR3_GM", "TimGM6mb")


def _collection_of(style: str) -> str:
    for coll in corpus.COLLECTIONS:
        if coll.style == style:
            return coll.name
    styles = [c.style for c in corpus.COLLECTIONS]
    raise PairsError(f"no corpus collection has style {style!r}; styles: {styles}")


def _bpm(tempo_class: str, u: float) -> float:
    lo, hi = TEMPO_BANDS[tempo_class]
    return lo + u * (hi - lo)


@functools.cache
def _works(collection: str) -> list:
    return corpus.list_works([collection])[collection]  # lists a book's tunes by reading it: once per run


def _choose_work(pair: Pair, rng: np.random.Generator, seconds: float, tries: int = 40):
    """A work of the pair's style with enough parts for both sides and long enough at the faster tempo,
    and a start on one of its notes; the same for both sides."""
    works = _works(_collection_of(pair.attributes_a["style"]))
    voices = max(pair.attributes_a["voices"], pair.attributes_b["voices"])
    fastest = max(_bpm(attrs["tempo_class"], 1.0) for attrs in (pair.attributes_a, pair.attributes_b))
    span_q = seconds * fastest / 60
    for i in rng.permutation(len(works))[:tries]:
        try:
            notes = corpus.parse_work(works[i])
        except Exception:  # music21 raises many kinds; any of them means "take another work"
            continue
        onsets = sorted({on for on, _, _ in notes.parts[0] if on <= notes.length - span_q})
        if len(notes.parts) >= voices and onsets:
            return notes, float(onsets[int(rng.integers(len(onsets)))])
    style = pair.attributes_a["style"]
    raise PairsError(
        f"no work of style {style!r} among {tries} tried has {voices} parts and {span_q:.0f} "
        "quarters; give the pair another style"
    )


def _render_side(
    notes,
    attrs: dict,
    start_q: float,
    seconds: float,
    u: float,
    velocity_seed: list[int],
    soundfont: str,
    sample_rate: int,
    work_dir: Path,
) -> np.ndarray:
    notes = change_mode(notes, attrs["mode"])
    spq = 60.0 / _bpm(attrs["tempo_class"], u)
    end_q = min(start_q + seconds / spq, notes.length)
    parts = notes.parts[: attrs["voices"]]
    programs = [attrs["instruments"][i % len(attrs["instruments"])] for i in range(len(parts))]

    def window(transpose: int):
        # every call draws the velocities from the same seed: both sides of a pair are played alike
        rng = np.random.default_rng(velocity_seed)
        return window_midi(parts, programs, start_q, end_q, spq, transpose, rng)

    pm = window(0)
    if attrs["register"] in REGISTER_TARGET:
        mean = np.mean([n.pitch for inst in pm.instruments for n in inst.notes])
        pm = window(12 * int(round((REGISTER_TARGET[attrs["register"]] - mean) / 12)))
    midi = work_dir / "side.mid"
    pm.write(str(midi))
    return render_midi(midi, soundfont, sample_rate, 0.3, False, seconds)[0]


def render_reference_pairs(
    pairs: Sequence[Pair],
    out_dir: str | Path,
    seconds: float = 10.0,
    seed: int = 0,
    sample_rate: int = 24000,
    soundfonts: Sequence[str] = REFERENCE_FONTS,
) -> Path:
    """Render both sides of every pair from a music21 corpus work with the dataset builder's own parts:
    the same work, window, soundfont and velocities, only the pair's attribute changed (tempo band,
    mode, octave, program, number of parts). Writes ``NNN-a.wav`` / ``NNN-b.wav`` to ``out_dir``,
    skipping pairs already there; deterministic for a seed."""
    fonts = available_soundfonts(list(soundfonts))
    names = sorted(fonts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index, pair in enumerate(tqdm(pairs, desc="rendering reference pairs", unit="pair")):
            paths = side_paths(out_dir, index)
            if all(p.is_file() for p in paths):
                continue
            rng = np.random.default_rng([seed, index])
            notes, start_q = _choose_work(pair, rng, seconds)
            u, font = float(rng.random()), fonts[names[int(rng.integers(len(names)))]][0]
            for attrs, path in zip((pair.attributes_a, pair.attributes_b), paths):
                wav = _render_side(
                    notes, attrs, start_q, seconds, u, [seed, index, 1], font, sample_rate, Path(tmp)
                )
                save_audio(path, wav, sample_rate)
    return out_dir
