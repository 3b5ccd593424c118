"""General MIDI instruments grouped into the families that captions and MuLan probes talk about."""

from __future__ import annotations

import numpy as np

# family -> [(GM program, plain name, lowest comfortable MIDI pitch, highest)]
FAMILIES: dict[str, list[tuple[int, str, int, int]]] = {
    "piano": [(0, "piano", 21, 108), (1, "bright piano", 21, 108), (4, "electric piano", 28, 103)],
    "strings": [
        (40, "violin", 55, 100),
        (41, "viola", 48, 88),
        (42, "cello", 36, 76),
        (43, "double bass", 28, 60),
        (48, "string ensemble", 28, 96),
        (45, "pizzicato strings", 28, 96),
        (46, "harp", 24, 103),
    ],
    "brass": [
        (56, "trumpet", 55, 84),
        (60, "french horn", 41, 77),
        (57, "trombone", 40, 72),
        (58, "tuba", 28, 58),
        (61, "brass section", 36, 84),
    ],
    "woodwinds": [
        (73, "flute", 60, 96),
        (68, "oboe", 58, 91),
        (71, "clarinet", 50, 91),
        (70, "bassoon", 34, 72),
        (72, "piccolo", 74, 108),
        (74, "recorder", 60, 96),
    ],
    "reed": [
        (21, "accordion", 53, 89),
        (22, "harmonica", 60, 84),
        (65, "alto saxophone", 49, 81),
        (66, "tenor saxophone", 44, 76),
        (64, "soprano saxophone", 56, 88),
        (67, "baritone saxophone", 36, 69),
    ],
    "guitar": [(24, "nylon guitar", 40, 84), (25, "steel guitar", 40, 84), (26, "jazz guitar", 40, 86)],
    "organ": [(19, "church organ", 24, 96), (16, "drawbar organ", 24, 96), (20, "reed organ", 36, 96)],
    "mallets": [
        (11, "vibraphone", 53, 89),
        (12, "marimba", 45, 96),
        (13, "xylophone", 65, 108),
        (8, "celesta", 60, 108),
    ],
    "voice": [(52, "choir", 40, 81), (53, "voice oohs", 40, 81)],
    "synth": [
        (80, "square lead", 36, 96),
        (81, "sawtooth lead", 36, 96),
        (88, "new age pad", 36, 96),
        (89, "warm pad", 36, 96),
        (62, "synth brass", 36, 84),
    ],
    "bass": [(32, "acoustic bass", 28, 60), (33, "electric bass", 28, 60)],
}
FAMILY_OF = {prog: fam for fam, items in FAMILIES.items() for prog, *_ in items}
NAME_OF = {prog: name for items in FAMILIES.values() for prog, name, *_ in items}
RANGE_OF = {prog: (lo, hi) for items in FAMILIES.values() for prog, _, lo, hi in items}

# Timbres for the hummed/whistled melody-only renders (melody conditioning pairs).
MELODY_TIMBRES = {78: "whistle", 79: "ocarina", 53: "voice oohs", 85: "voice lead", 75: "pan flute"}
NAME_OF.update(MELODY_TIMBRES)
FAMILY_OF.update({78: "voice", 79: "woodwinds", 85: "voice", 75: "woodwinds"})

# Sections that sound like a real ensemble, parts ordered top voice first.
ENSEMBLES: dict[str, list[int]] = {
    "string quartet": [40, 40, 41, 42],
    "brass quartet": [56, 56, 60, 57, 58],
    "woodwind quintet": [73, 68, 71, 60, 70],
    "saxophone quartet": [64, 65, 66, 67],
    "choir": [52, 52, 52, 52],
    "organ": [19, 19, 19, 19],
}
SOLO_POLYPHONIC = [0, 1, 4, 19, 16, 24, 46, 12, 11, 21, 48, 89]
FOLK_LEADS = [40, 73, 21, 22, 74, 24, 25, 0, 68, 71, 11, 12, 65, 80, 56, 72, 26]
ACCOMPANIMENT = [0, 24, 25, 21, 19, 48, 46, 89, 16, 4]

# Plucked or struck: the note decays on its own (what "plucked"/"percussive" in a caption means).
PLUCKED = {0, 1, 4, 8, 11, 12, 13, 24, 25, 26, 32, 33, 45, 46}


def articulation(programs: list[int]) -> str:
    """A line-up's articulation (:data:`musiclm.attributes.ARTICULATIONS`): plucked when every program is,
    sustained when none is, else mixed."""
    plucked = [p in PLUCKED for p in programs]
    return "plucked" if all(plucked) else "sustained" if not any(plucked) else "mixed"


def gm_name(program: int) -> str:
    """The General MIDI name, e.g. 'Acoustic Grand Piano' (what the manifests' `instruments` hold)."""
    import pretty_midi  # with mido and fluidsynth, which importing the pipeline never needs

    return pretty_midi.program_to_instrument_name(program)


def caption_name(program: int) -> str:
    """What a caption calls the instrument: its plain name, e.g. 'piano', else its lower-cased GM name."""
    return NAME_OF.get(program, gm_name(program).lower())


def choose_instruments(n_parts: int, rng: np.random.Generator) -> tuple[list[int], str]:
    """Programs for ``n_parts`` parts (top first) and the kind of line-up: solo, ensemble or mixed."""
    if n_parts == 1:
        return [int(rng.choice(FOLK_LEADS))], "solo"
    kind = rng.choice(["solo", "ensemble", "mixed"], p=[0.35, 0.35, 0.3])
    if kind == "solo":
        return [int(rng.choice(SOLO_POLYPHONIC))] * n_parts, "solo"
    if kind == "ensemble":
        name = str(rng.choice(list(ENSEMBLES)))
        section = ENSEMBLES[name]
        # spread the section over the parts by register: top part -> first instrument, bass -> last
        idx = np.linspace(0, len(section) - 1, n_parts).round().astype(int) if n_parts > 1 else [0]
        return [section[i] for i in idx], name
    pool = [
        p
        for fam in ("strings", "brass", "woodwinds", "reed", "guitar", "mallets", "piano", "organ")
        for p, *_ in FAMILIES[fam]
    ]
    return [int(rng.choice(pool)) for _ in range(n_parts)], "mixed"
