"""The attribute schema of the rendered dataset: the attributes a clip carries, the values each can take,
and where a tempo or a pitch falls into a class.

The dataset builder writes these attributes, the captions word them, MuLan's attribute heads and the
evaluation classifier predict them, and the paired-adherence evaluation asks for a change in one of them.
This module imports nothing, so that each of those can import it without pulling in the others.
"""

from __future__ import annotations

# The builder draws a tempo class, then a tempo inside its band: tempo is then independent of the style (the
# corpus' own tempi are mostly medium), and the bands stay clear of the class borders (90, 130) so that a
# class is a tempo a listener can tell apart, not a coin flip at 89 vs 91 BPM.
TEMPO_BANDS = {"slow": (50, 82), "medium": (98, 122), "fast": (138, 184)}


def tempo_class(bpm: float) -> str:
    """slow < 90 <= medium < 130 <= fast."""
    return "slow" if bpm < 90 else "medium" if bpm < 130 else "fast"


def register(pitches: list[int]) -> str:
    """Low / middle / high from the mean sounding pitch (MIDI 55 = G3, 72 = C5)."""
    mean = sum(pitches) / len(pitches)
    return "low" if mean < 55 else "high" if mean >= 72 else "middle"


# The label sets of the attribute heads. A trained head's outputs follow its list's order, so new labels go
# at the end. ``choir`` is a label no render has: choir programs belong to the ``voice`` family.
FAMILIES = [
    "piano",
    "strings",
    "brass",
    "woodwinds",
    "reed",
    "guitar",
    "organ",
    "mallets",
    "voice",
    "synth",
    "bass",
    "choir",
]
TEMPOS = ["slow", "medium", "fast"]
MODES = ["major", "minor"]
REGISTERS = ["low", "middle", "high"]
ARTICULATIONS = ["sustained", "mixed", "plucked"]
STYLES = [
    "folk song",
    "irish folk dance",
    "fiddle tune",
    "chorale",
    "renaissance polyphony",
    "madrigal",
    "medieval polyphony",
]
# head name -> labels; ``family`` is multi-label (a clip may combine families), the others single-label
HEADS = {"family": FAMILIES, "tempo": TEMPOS, "mode": MODES, "style": STYLES}
# head name -> the clip attribute it predicts
HEAD_ATTRIBUTE = {"family": "families", "tempo": "tempo_class", "mode": "mode", "style": "style"}

# Pair kinds: one attribute changed between two prompts. Kind -> the attribute the two sides set apart, in
# the order reports list the kinds.
KIND_ATTRIBUTE = {
    "tempo": "tempo_class",
    "mode": "mode",
    "register": "register",
    "articulation": "articulation",
    "density": "voices",
    "family": "families",
}
# the ordered values of each ordered attribute: the B side of a pair stands above its A side
ORDER = {
    "tempo_class": TEMPOS,
    "mode": ["minor", "major"],
    "register": REGISTERS,
    "articulation": ARTICULATIONS,
}
# the kinds whose change of attribute is made by changing the instrument
CHANGES_INSTRUMENT = {"articulation", "family"}
