"""Works of the music21 corpus: which ones we use, and reading one into plain note lists.

Only collections that parse quickly are used (single ABC tunes are pulled out of their books by
reference number, so a 400-tune book is never parsed whole). String quartets and other large
scores parse in seconds each and are left out.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

LICENSE = "music21 corpus (BSD-3-Clause); the compositions are in the public domain"


@dataclasses.dataclass(frozen=True)
class Collection:
    name: str
    folder: str
    suffixes: tuple[str, ...]
    composer: str
    style: str
    weight: float  # share of works drawn from it


COLLECTIONS = [
    Collection("essen", "essenFolksong", (".abc",), "traditional", "folk song", 0.3),
    Collection("oneills1850", "oneills1850", (".abc",), "traditional", "irish folk dance", 0.2),
    Collection("ryans_mammoth", "ryansMammoth", (".abc",), "traditional", "fiddle tune", 0.1),
    Collection("bach", "bach", (".mxl",), "Johann Sebastian Bach", "chorale", 0.2),
    Collection(
        "palestrina",
        "palestrina",
        (".krn",),
        "Giovanni Pierluigi da Palestrina",
        "renaissance polyphony",
        0.1,
    ),
    Collection("monteverdi", "monteverdi", (".mxl",), "Claudio Monteverdi", "madrigal", 0.05),
    Collection("trecento", "trecento", (".mxl", ".xml"), "various", "medieval polyphony", 0.05),
]
BY_NAME = {c.name: c for c in COLLECTIONS}


@dataclasses.dataclass(frozen=True)
class Work:
    collection: str
    path: str  # relative to the music21 corpus folder
    number: int | None = None  # reference number of a tune inside an ABC book

    @property
    def work_id(self) -> str:
        return f"{self.collection}/{Path(self.path).stem}" + (
            f"#{self.number}" if self.number is not None else ""
        )


@dataclasses.dataclass
class Notes:
    """A parsed work: per part (top voice first) a list of (onset, duration, midi pitch) in quarters."""

    parts: list[list[tuple[float, float, int]]]
    title: str
    tonic_pc: int
    mode: str  # "major" or "minor"
    time_signature: str
    bpm: float | None  # from the score's metronome mark, if any
    length: float  # quarters


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def list_works(collections: list[str] | None = None) -> dict[str, list[Work]]:
    """Every usable work per collection (ABC books are split into their tunes)."""
    root = corpus_root()
    out: dict[str, list[Work]] = {}
    for coll in COLLECTIONS:
        if collections is not None and coll.name not in collections:
            continue
        works: list[Work] = []
        for path in sorted((root / coll.folder).rglob("*")):
            if path.suffix not in coll.suffixes:
                continue
            rel = str(path.relative_to(root))
            if path.suffix == ".abc":
                numbers = re.findall(r"^X:\s*(\d+)", path.read_text(encoding="utf-8", errors="replace"), re.M)
                works += [Work(coll.name, rel, int(n)) for n in dict.fromkeys(numbers)]
            elif coll.name != "bach" or "bwv" in path.name:
                works.append(Work(coll.name, rel))
        out[coll.name] = works
    return out


_MINOR_MODES = {"minor", "dorian", "phrygian", "aeolian", "locrian"}


def parse_work(work: Work) -> Notes:
    """Parse with music21 and flatten to notes; raises on unparsable or empty works."""
    from music21 import converter, key, meter, tempo

    score = converter.parse(corpus_root() / work.path, number=work.number, forceSource=True)
    if hasattr(score, "scores"):  # an Opus
        score = score.scores[0]
    parts = []
    for part in score.parts:
        notes = []
        part.stripTies(inPlace=True)  # the parsed score is ours: a copy would cost most of the parse
        for n in part.flatten().notes:
            for p in getattr(n, "pitches", ()):
                if n.duration.quarterLength > 0:
                    notes.append((float(n.offset), float(n.duration.quarterLength), int(p.midi)))
        if notes:
            parts.append(sorted(notes))
    if not parts:
        raise ValueError("no pitched notes")
    # top voice first: parts are usually listed high to low already, but sort by mean pitch to be sure
    parts.sort(key=lambda notes: -np.mean([p for _, _, p in notes]))
    flat = score.flatten()
    k = next(iter(flat.getElementsByClass(key.Key)), None)
    if k is None:
        k = score.analyze("key")
    ts = next(iter(flat.getElementsByClass(meter.TimeSignature)), None)
    mm = next(iter(flat.getElementsByClass(tempo.MetronomeMark)), None)
    bpm = mm.getQuarterBPM() if mm is not None and mm.number else None
    title = (score.metadata.title if score.metadata and score.metadata.title else Path(work.path).stem) or ""
    return Notes(
        parts=parts,
        title=str(title),
        tonic_pc=k.tonic.pitchClass,
        mode="minor" if k.mode in _MINOR_MODES else "major",
        time_signature=ts.ratioString if ts is not None else "4/4",
        bpm=float(bpm) if bpm else None,
        length=max(on + d for notes in parts for on, d, _ in notes),
    )
