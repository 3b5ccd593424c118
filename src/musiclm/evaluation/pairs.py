"""Paired adherence: two prompts that differ in one attribute, generated with the same seed; does the
output move the asked way?

Each kind has a detector that is independent of the generator (librosa signal measures; the evaluation
classifier only for instrument families) and returns a scalar that grows in the asked direction, so a
pair "moves right" when ``detector(B) > detector(A)`` (a tie, such as two silent clips, does not):

=============  ==============================  ==========================================================
kind           A -> B                          detector (larger = more B)
=============  ==============================  ==========================================================
tempo          slow -> fast                    onsets per second
mode           minor -> major                  best major minus best minor key-profile correlation
register       low -> high                     mean pitch (MIDI) of the harmonic-salience peaks of a CQT
articulation   sustained -> plucked            dB per second the level falls after each note's attack
density        one line -> many voices         pitches sounding at once (salience peaks per frame)
family         family A -> family B            classifier P(family B) - P(family A)
=============  ==============================  ==========================================================

Reference rows go through the same code: real renders made to match each side of a pair (the ceiling,
:func:`render_reference_pairs`) and the same pairs with A and B swapped at random (about 50 %).
:func:`chain_pairs` sends the renders through the back of the model (codec; acoustic stages; every
stage, conditioned on the renders' MuLan audio tokens), so that the rows between ceiling and model say
which link loses the direction.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from musiclm.audio import save_audio
from musiclm.evaluation.adherence import key_scores
from musiclm.progress import tqdm

PAIRS_FILE = Path(__file__).with_name("pairs.jsonl")

# kind -> the dataset attribute (musiclm.data.build) that the two prompts of a pair set apart
KIND_ATTRIBUTE = {
    "tempo": "tempo_class",
    "mode": "mode",
    "register": "register",
    "articulation": "articulation",
    "density": "voices",
    "family": "families",
}
COMPARED = ("tempo_class", "mode", "register", "articulation", "voices", "families", "style")
# the ordered values of each kind's attribute: B must stand above A
ORDER = {
    "tempo_class": ["slow", "medium", "fast"],
    "mode": ["minor", "major"],
    "register": ["low", "middle", "high"],
    "articulation": ["sustained", "mixed", "plucked"],
}
# the kinds whose change of attribute is made by changing the instrument
CHANGES_INSTRUMENT = {"articulation", "family"}


class PairsError(ValueError):
    """A pairs file or pair audio that cannot be used: names the file, line or pair."""


@dataclasses.dataclass
class Pair:
    kind: str
    a: str
    b: str
    attributes_a: dict[str, Any]
    attributes_b: dict[str, Any]

    def changed(self) -> set[str]:
        """The compared attributes that differ between the sides (``instruments`` aside)."""
        return {k for k in COMPARED if self.attributes_a.get(k) != self.attributes_b.get(k)}

    def check(self) -> None:
        """Raise ``ValueError`` unless the pair asks for exactly one change, of its kind, the right way."""
        if self.kind not in KIND_ATTRIBUTE:
            raise ValueError(f"unknown kind {self.kind!r}; choose from {list(KIND_ATTRIBUTE)}")
        for side, text, attrs in (("a", self.a, self.attributes_a), ("b", self.b, self.attributes_b)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f'"{side}" must be a non-empty prompt')
            missing = [k for k in (*COMPARED, "instruments") if k not in attrs]
            if missing:
                raise ValueError(f"attributes_{side} lacks {missing}")
        name = KIND_ATTRIBUTE[self.kind]
        if self.changed() != {name}:
            raise ValueError(
                f"a {self.kind} pair must differ in {name} only; its sides differ in "
                f"{sorted(self.changed()) or 'nothing'}"
            )
        same_instruments = self.attributes_a["instruments"] == self.attributes_b["instruments"]
        if self.kind not in CHANGES_INSTRUMENT and not same_instruments:
            raise ValueError(f"a {self.kind} pair must keep the instruments; they differ")
        va, vb = self.attributes_a[name], self.attributes_b[name]
        if name in ORDER and not ORDER[name].index(va) < ORDER[name].index(vb):
            raise ValueError(f"{name} must go up from A to B along {ORDER[name]}; got {va!r} -> {vb!r}")
        if name == "voices" and not va < vb:
            raise ValueError(f"voices must grow from A to B; got {va} -> {vb}")
        if name == "families" and (not set(va) - set(vb) or not set(vb) - set(va)):
            raise ValueError(f"each side of a family pair needs a family the other lacks; got {va} -> {vb}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_pairs(path: str | Path = PAIRS_FILE) -> list[Pair]:
    """The pairs of a JSONL file (default: the shipped one), each checked by :meth:`Pair.check`."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"pairs file {path} not found")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            pair = Pair(**data)
            pair.check()
        except (ValueError, TypeError, KeyError) as err:
            raise PairsError(
                f'{path}:{number}: {err} (each line: {{"kind", "a", "b", "attributes_a", "attributes_b"}})'
            ) from err
        pairs.append(pair)
    if not pairs:
        raise PairsError(f"pairs file {path} has no pairs")
    return pairs


# ---------------------------------------------------------------- detectors: audio -> scalar, larger = more B
def onset_rate(y: np.ndarray, sr: int) -> float:
    """Note onsets per second: the same music played faster has more of them in the same time."""
    onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
    return len(onsets) / (len(y) / sr)


def majorness(y: np.ndarray, sr: int) -> float:
    """How much better the best major key profile fits the chroma than the best minor one."""
    scores = key_scores(y, sr)
    return float(scores[0].max() - scores[1].max())


LOWEST_MIDI, OCTAVES = 24, 7  # CQT from C1 over 7 octaves: bass notes to the top of a piccolo
HARMONICS, WEIGHTS = [1, 2, 3, 4, 5], [1.0, 0.5, 0.33, 0.25, 0.2]


def _salience(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic salience of a semitone CQT (``[pitches, frames]``, peaks only) and the MIDI pitch of each row.
    Summing each candidate's harmonics puts the weight on fundamentals, not on the partials above them."""
    fmin, bins = librosa.midi_to_hz(LOWEST_MIDI), 12 * OCTAVES
    cqt = np.abs(librosa.cqt(y, sr=sr, hop_length=512, fmin=fmin, n_bins=bins))
    freqs = librosa.cqt_frequencies(bins, fmin=fmin)
    sal = librosa.salience(cqt, freqs=freqs, harmonics=HARMONICS, weights=WEIGHTS, fill_value=0.0)
    return np.nan_to_num(sal), LOWEST_MIDI + np.arange(12 * OCTAVES)


def pitch_height(y: np.ndarray, sr: int) -> float:
    """Salience-weighted mean MIDI pitch of the sounding notes (0 for silence)."""
    sal, midi = _salience(y, sr)
    total = sal.sum()
    return float((sal * midi[:, None]).sum() / total) if total > 0 else 0.0


def note_decay(y: np.ndarray, sr: int) -> float:
    """Median rate (dB per second) at which the level falls after each note's attack: plucked and struck
    notes die away on their own, bowed, blown and sung ones hold (about 0). The level's slope is fitted
    from the loudest frame in the first third of each inter-onset span to the next onset."""
    hop = sr // 100
    rms = librosa.feature.rms(y=y, hop_length=hop)[0]
    level = librosa.amplitude_to_db(rms, ref=np.max, top_db=60)
    bounds = [*librosa.onset.onset_detect(y=y, sr=sr, hop_length=hop, backtrack=True), len(level)]
    times = np.arange(len(level)) / 100
    slopes = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end - start < 6:  # under 60 ms: no room to see a decay
            continue
        peak = start + int(np.argmax(level[start : start + (end - start) // 3 + 1]))
        if end - peak >= 4 and level[peak] > -40:  # a quiet note under a loud one's tail says nothing
            slopes.append(np.polyfit(times[peak:end], level[peak:end], 1)[0])
    return -float(np.median(slopes)) if slopes else 0.0


def simultaneous_pitches(y: np.ndarray, sr: int, floor_db: float = -30.0) -> float:
    """Mean number of salience peaks per frame within ``floor_db`` of the frame's strongest, over the
    frames that sound (quieter than -50 dB of the loudest frame is silence)."""
    sal, _ = _salience(y, sr)
    peak = sal.max(0)
    sounding = peak > sal.max() * 10 ** (-50 / 20) if sal.max() > 0 else np.zeros(sal.shape[1], bool)
    if not sounding.any():
        return 0.0
    counts = (sal[:, sounding] > peak[sounding] * 10 ** (floor_db / 20)).sum(0)
    return float(counts.mean())


DETECTORS: dict[str, Callable[[np.ndarray, int], float]] = {
    "tempo": onset_rate,
    "mode": majorness,
    "register": pitch_height,
    "articulation": note_decay,
    "density": simultaneous_pitches,
}


def family_detector(classifier, pair: Pair, wavs: Sequence[torch.Tensor], sample_rate: int) -> list[float]:
    """Per clip, the classifier's P(families only B has) - P(families only A has)."""
    from musiclm.audio import resample

    families = classifier.config.families
    only_a = [f for f in pair.attributes_a["families"] if f not in pair.attributes_b["families"]]
    only_b = [f for f in pair.attributes_b["families"] if f not in pair.attributes_a["families"]]
    unknown = [f for f in only_a + only_b if f not in families]
    if unknown:
        raise PairsError(
            f"the classifier has no head for the famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{unknown} (it knows {families}); use a classifier trained on data with them"
        )
    length = min(w.shape[-1] for w in wavs)
    rate = classifier.config.sample_rate
    probs = classifier.predict(torch.stack([resample(w[:length].float(), sample_rate, rate) for w in wavs]))
    mean = {
        side: probs["family"][:, [families.index(f) for f in names]].mean(1)
        for side, names in (("a", only_a), ("b", only_b))
    }
    return (mean["b"] - mean["a"]).tolist()


# ---------------------------------------------------------------- scoring
def score_pairs(
    pairs: Sequence[Pair],
    audio: Sequence[tuple[torch.Tensor, torch.Tensor]],
    sample_rate: int,
    classifier=None,
) -> list[dict[str, Any]]:
    """Per pair: the detector's value on A and on B and whether it moved the asked way (B > A).
    Family pairs need ``classifier``; without one they are left out."""
    rows = []
    todo = list(zip(pairs, audio))
    for index, (pair, (wav_a, wav_b)) in enumerate(tqdm(todo, desc="scoring pairs", unit="pair")):
        if pair.kind == "family":
            if classifier is None:
                continue
            value_a, value_b = family_detector(classifier, pair, [wav_a, wav_b], sample_rate)
        else:
            detect = DETECTORS[pair.kind]
            value_a, value_b = (detect(w.detach().cpu().float().numpy(), sample_rate) for w in (wav_a, wav_b))
        rows.append(
            {"index": index, "kind": pair.kind, "a": value_a, "b": value_b, "moved": bool(value_b > value_a)}
        )
    return rows


def swapped(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The same pairs with A and B exchanged at random (each with probability 1/2): whatever the row it
    comes from, its expected share is 50 %, the level of a generator that ignores the change."""
    flips = np.random.default_rng(seed).random(len(rows)) < 0.5
    out = []
    for row, flip in zip(rows, flips):
        a, b = (row["b"], row["a"]) if flip else (row["a"], row["b"])
        out.append({**row, "a": a, "b": b, "moved": bool(b > a), "swapped": bool(flip)})
    return out


def wilson_interval(moved: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a share ``moved / n``: with 11 pairs a kind, 64 % spans 35-85 %, so
    two models' per-kind shares differ by chance far more than they seem to."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = moved / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 3), round(float(centre + half), 3)]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of pairs that moved the asked way, per kind and over all, with counts and 95 % intervals."""

    def share(moved: list[bool]) -> dict[str, Any]:
        return {
            "share": float(np.mean(moved)) if moved else float("nan"),
            "n": len(moved),
            "ci95": wilson_interval(int(sum(moved)), len(moved)),
        }

    by_kind = {}
    for kind in KIND_ATTRIBUTE:
        moved = [r["moved"] for r in rows if r["kind"] == kind]
        if moved:
            by_kind[kind] = share(moved)
    return {**share([r["moved"] for r in rows]), "by_kind": by_kind}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` against ``losses`` (ties left out)."""
    from scipy.stats import binomtest

    n = wins + losses
    return 1.0 if n == 0 else float(binomtest(wins, n, 0.5).pvalue)


def _moved_by_pair(runs: Sequence[dict[str, Any]], row: str) -> dict[tuple, tuple[str, bool]]:
    """``(seed, A prompt, B prompt) -> (kind, moved)`` over the ``pairs.json`` results ``runs``."""
    out = {}
    for run in runs:
        seed = run["info"].get("seed")
        for pair in run["pairs"]:
            if pair.get(row) is not None:
                out[(seed, pair["a"], pair["b"])] = (pair["kind"], bool(pair[row]["moved"]))
    return out


def compare_runs(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]], row: str = "generated"
) -> dict[str, Any]:
    """Two models' paired adherence on the same pairs and seeds (``pairs.json`` results, several seeds a
    side pooled): each side's share over the pairs both scored, per kind and over all, and the pairs
    where they disagree, with a sign test on those (shares alone hide that most pairs agree)."""
    a, b = _moved_by_pair(first, row), _moved_by_pair(second, row)
    common = sorted(set(a) & set(b), key=str)
    if not common:
        raise ValueError(
            "the two sides share no scored pair: compare runs of the same pairs file with the same seeds"
        )

    def side(moves: dict, kind: str | None) -> list[bool]:
        return [moves[k][1] for k in common if kind is None or a[k][0] == kind]

    def block(kind: str | None) -> dict[str, Any]:
        x, y = side(a, kind), side(b, kind)
        wins = sum(q and not p for p, q in zip(x, y))
        losses = sum(p and not q for p, q in zip(x, y))
        return {
            "n": len(x),
            "first": round(float(np.mean(x)), 3),
            "second": round(float(np.mean(y)), 3),
            "second_only": wins,
            "first_only": losses,
            "p_value": float(f"{sign_test(wins, losses):.3g}"),
        }

    kinds = [k for k in KIND_ATTRIBUTE if any(a[c][0] == k for c in common)]
    return {
        "seeds": sorted({k[0] for k in common}, key=str),
        "all": block(None),
        "by_kind": {k: block(k) for k in kinds},
    }


# ---------------------------------------------------------------- audio of the pairs on disk
def side_paths(folder: str | Path, index: int) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{index:03d}-a.wav", folder / f"{index:03d}-b.wav"


def load_pair_audio(
    folder: str | Path, count: int, sample_rate: int, seconds: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``NNN-a.wav`` / ``NNN-b.wav`` for pairs ``0..count-1`` (the layout :func:`generate_pairs` writes)."""
    from musiclm.evaluation.suite import load_clip

    paths = [side_paths(folder, i) for i in range(count)]
    missing = [str(p) for pair in paths for p in pair if not p.is_file()]
    if missing:
        raise PairsError(
            f"{len(missing)} pair audio file(s) missing in {folder}, e.g. {missing[0]}; a "
            "folder of pair audio holds NNN-a.wav and NNN-b.wav for each pair NNN of the pairs "
            "file"
        )
    return [(load_clip(a, sample_rate, seconds), load_clip(b, sample_rate, seconds)) for a, b in paths]


def generate_pairs(
    pipeline,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    seconds: float,
    seed: int = 0,
    batch_size: int = 4,
    **generate_kwargs,
) -> Path:
    """Generate both sides of every pair into ``out_dir`` (skipping pairs already there) and return it.

    The A sides of a batch of pairs are one call and their B sides another, with the same seed: sampling
    draws its noise per row, so pair i's two prompts are sampled with the same random numbers and differ
    only by the prompt. Batches have fixed bounds, so a resumed run makes the same audio as an
    uninterrupted one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="generating pairs", unit="batch"):
        idx = range(start, min(start + batch_size, len(pairs)))
        if all(p.is_file() for i in idx for p in side_paths(out_dir, i)):
            continue
        for side in ("a", "b"):
            texts = [getattr(pairs[i], side) for i in idx]
            wavs = pipeline.generate(texts, duration=seconds, seed=seed + start, **generate_kwargs)
            for i, wav in zip(idx, wavs):
                save_audio(side_paths(out_dir, i)[side == "b"], wav.float().cpu(), pipeline.sample_rate)
    return out_dir


# ---------------------------------------------------------------- the ceiling: real renders of each side
# mean sounding pitch a "low" / "high" render is moved to (the dataset calls < 55 low and >= 72 high)
REGISTER_TARGET = {"low": 48, "high": 79}
# MuseScore's .sf3 takes seconds to load per render; the two .sf2 fonts give two timbres per instrument
REFERENCE_FONTS = ("FluidR3_GM", "TimGM6mb")


def _collection_of(style: str) -> str:
    from musiclm.data import corpus

    for coll in corpus.COLLECTIONS:
        if coll.style == style:
            return coll.name
    styles = [c.style for c in corpus.COLLECTIONS]
    raise PairsError(f"no corpus collection has style {style!r}; styles: {styles}")


def _bpm(tempo_class: str, u: float) -> float:
    from musiclm.data.build import TEMPO_BANDS

    lo, hi = TEMPO_BANDS[tempo_class]
    return lo + u * (hi - lo)


@functools.cache
def _works(collection: str) -> list:
    from musiclm.data import corpus

    return corpus.list_works([collection])[collection]  # lists a book's tunes by reading it: once per run


def _choose_work(pair: Pair, rng: np.random.Generator, seconds: float, tries: int = 40):
    """A work of the pair's style with enough parts for both sides and long enough at the faster tempo,
    and a start on one of its notes; the same for both sides."""
    from musiclm.data import corpus

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
    from musiclm.data.build import change_mode, window_midi
    from musiclm.data.render import render_midi

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
    import tempfile

    from musiclm.data.render import available_soundfonts

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


# ---------------------------------------------------------------- where along the chain the direction is lost
# row name -> what the reference renders go through (``musiclm eval-pairs --chain``)
CHAIN_LINKS = {
    "renders through the codec": "codec",
    "renders' semantic tokens through the acoustic stages": "acoustic",
    "renders' MuLan audio tokens through every stage": "stages",
}


def chain_pairs(
    pipeline,
    pairs: Sequence[Pair],
    renders: Sequence[tuple[torch.Tensor, torch.Tensor]],
    rate: int,
    out_dir: str | Path,
    seed: int = 0,
    guidance: float | None = None,
) -> dict[str, Path]:
    """The reference renders (pair audio at ``rate``) sent through the back of the chain, one folder of
    pair audio per row of :data:`CHAIN_LINKS`; scored like generated pairs, they say which link loses the
    asked direction:

    - codec: encoded and decoded with only the RVQ levels the stages generate;
    - acoustic: the renders' real semantic tokens (and their MuLan audio tokens) given to the acoustic
      stages, which sample the codes;
    - stages: only the renders' MuLan audio tokens, every stage sampling: the stages conditioned as in
      training, on music that has the attribute, instead of on the prompt's text.

    Sampling uses the pipeline's temperatures and guidance, one seed per pair for both sides (resumable,
    like :func:`generate_pairs`)."""
    from musiclm.evaluation import chain
    from musiclm.pipeline import PAPER_TEMPERATURES
    from musiclm.stages.sampling import Sampling

    scale = pipeline.guidance_for(guidance)
    samplings = [Sampling(t, guidance=scale) for t in PAPER_TEMPERATURES]

    def sampled(index: int, wav: torch.Tensor, link: str) -> torch.Tensor:
        if link == "codec":
            return chain.through_codec(pipeline, wav[None], rate)[0]
        generator = torch.Generator(pipeline.device)
        generator.manual_seed(seed + index)
        real_semantic = link == "acoustic"
        return chain.through_stages(pipeline, wav[None], rate, samplings, generator, real_semantic)[0]

    folders = {}
    for name, link in CHAIN_LINKS.items():
        folder = folders[name] = Path(out_dir) / link
        folder.mkdir(parents=True, exist_ok=True)
        for index, sides in enumerate(tqdm(renders, desc=f"renders through {link}", unit="pair")):
            paths = side_paths(folder, index)
            if all(p.is_file() for p in paths):
                continue
            for wav, path in zip(sides, paths):
                save_audio(path, sampled(index, wav, link).float().cpu(), pipeline.sample_rate)
    return folders


# ---------------------------------------------------------------- report
def write_pairs_report(
    out_dir: str | Path, rows: dict[str, list[dict[str, Any]]], pairs: Sequence[Pair], info: dict[str, Any]
) -> dict[str, Any]:
    """``pairs.json`` (summaries, every pair's detector values per row) and ``pairs.md`` (the table)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {name: summarize(r) for name, r in rows.items()}
    result = {
        "info": info,
        "rows": summaries,
        "pairs": [
            {
                **p.to_json(),
                **{name: next((x for x in r if x["index"] == i), None) for name, r in rows.items()},
            }
            for i, p in enumerate(pairs)
        ],
    }
    (out_dir / "pairs.json").write_text(json.dumps(result, indent=1) + "\n")
    kinds = [k for k in KIND_ATTRIBUTE if any(k in s["by_kind"] for s in summaries.values())]

    def cell(summary: dict, kind: str | None) -> str:
        got = summary if kind is None else summary["by_kind"].get(kind)
        if not got or not got["n"]:
            return "-"
        low, high = got["ci95"]
        return f"{got['share']:.0%} ({got['n']}; {low:.0%}-{high:.0%})"

    lines = [
        "# Paired adherence",
        "",
        "Share of pairs whose output moves the asked way (B's detector value above A's); in brackets n and "
        "the 95 % Wilson interval.",
        "Detectors: tempo = onsets per second, mode = major minus minor key-profile fit, register = "
        "salience-weighted pitch, articulation = decay after each attack (dB/s), "
        "density = pitches at once, "
        "family = classifier P(B) - P(A). Shuffled: A and B swapped at random (about 50 %).",
        "",
        "| row | " + " | ".join(kinds) + " | all |",
        "|" + " --- |" * (len(kinds) + 2),
    ]
    lines += [
        f"| {name} | " + " | ".join(cell(s, k) for k in kinds) + f" | {cell(s, None)} |"
        for name, s in summaries.items()
    ]
    lines += ["", *[f"- {k}: {v}" for k, v in info.items()]]
    (out_dir / "pairs.md").write_text("\n".join(lines) + "\n")
    return result
