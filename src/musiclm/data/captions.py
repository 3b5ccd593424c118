"""Natural-language captions from what we know about a render.

Two disjoint sets of templates and synonyms: ``train`` for training clips and ``heldout`` for
validation/test clips, so evaluation can measure robustness to wording never seen in training.
Word choices follow how MusicCaps annotators describe music (tempo words, moods, instruments, genre).
The training set is the larger, with many ways to say each attribute and many sentence shapes, so that a
text tower learns the attribute rather than one phrasing of it. Its words and templates take none of the
held-out set's, nor the attribute words of the paired-adherence prompts (``evaluation/pairs.jsonl``) and
of the zero-shot label prompts (``musiclm.mulan.evaluate``): ``tests/test_data.py`` lists and checks them.
"""

from __future__ import annotations

import re

import numpy as np

from musiclm.attributes import MODES, TEMPO_BANDS
from musiclm.data import instruments

# The vocabularies are tables of phrases, laid out by hand (one line per attribute value where it fits).
# fmt: off
WORDS = {
    "train": {
        # every tempo and mood word reads as an adjective: "a {tempo} {style}", "it sounds {mood}"
        "slow": [
            "slow", "calm", "gentle", "relaxed", "slow-paced", "soothing", "peaceful", "laid-back",
            "tranquil", "serene", "mellow", "sleepy", "dreamy", "slow-moving", "restful", "placid",
            "sluggish", "adagio", "largo", "lento", "downtempo",
        ],
        "medium": [
            "moderate-tempo", "mid-tempo", "steady", "easy-going", "medium-tempo", "moderately paced",
            "moderate", "moderato", "medium-paced", "mid-paced", "steady-going", "comfortable",
        ],
        "fast": [
            "fast", "lively", "upbeat", "energetic", "fast-paced", "up-tempo", "uptempo", "fast-moving",
            "swift", "nimble", "peppy", "sprightly", "vigorous", "animated", "bustling", "allegro", "presto",
            "vivace",
        ],
        "major": [
            "happy", "bright", "cheerful", "joyful", "optimistic", "playful", "triumphant", "jolly",
            "festive", "jubilant", "radiant", "contented", "exuberant", "gleeful", "buoyant", "positive",
        ],
        "minor": [
            "sad", "melancholic", "somber", "emotional", "sorrowful", "plaintive", "melancholy",
            "bittersweet", "doleful", "forlorn", "downcast", "dejected", "moody", "poignant", "tragic",
            "pensive", "heartbroken", "desolate", "anguished", "yearning",
        ],
        "solo": ["solo", "a single", "a solitary"],
        "reverb": [
            "with a roomy reverb", "in a reverberant hall", "with plenty of reverb", "in a big resonant room",
            "with a spacious sound", "drenched in reverb",
        ],
        "dry": [
            "with a dry, close sound", "recorded dry", "without reverb", "in a dry studio", "dry and direct",
        ],
        "melody": ["whistled", "hummed", "vocalized", "intoned"],  # "a {melody} melody"
        "low": [
            "low-pitched", "deep", "in a low register", "in the lower register", "low-register",
            "pitched low", "deep and resonant",
        ],
        "high": [
            "high-pitched", "high-register", "in a high register", "soaring", "in the upper register",
            "upper-register", "pitched high",
        ],
        "plucked": [
            "plucked", "percussive", "short and detached", "detached", "crisp", "choppy", "spiky", "punchy",
        ],
        "sustained": ["sustained", "legato", "flowing", "lingering", "seamless", "gliding", "unbroken"],
        "one line": [
            "a single melodic line", "one line on its own", "a monophonic line", "a single line",
            "a melody without chords", "an unharmonized tune", "a solo line",
        ],
        "many voices": [
            "many voices in harmony", "full chords", "rich harmony", "layered polyphonic parts",
            "several independent lines", "counterpoint", "lush chords", "harmonized parts", "multiple voices",
            "polyphonic writing",
        ],
    },
    "heldout": {
        "slow": ["unhurried", "languid", "leisurely"],
        "medium": ["walking-pace", "measured"],
        "fast": ["brisk", "spirited", "rapid"],
        "major": ["sunny", "carefree", "uplifting"],
        "minor": ["mournful", "gloomy", "wistful"],
        "solo": ["unaccompanied", "lone"],
        "reverb": ["with lots of ambience", "echoing as in a church"],
        "dry": ["with an intimate, close-miked sound"],
        "melody": ["crooned", "softly voiced", "wordlessly sung"],
        "low": ["bass-heavy", "low-lying"],
        "high": ["treble", "lofty, high"],
        "plucked": ["struck", "staccato"],
        "sustained": ["long-held", "smoothly bowed or blown"],
        "one line": ["just one voice at a time"],
        "many voices": ["a dense, many-voiced texture"],
    },
}
STYLE_WORDS = {
    "train": {
        "folk song": ["folk song", "traditional folk melody", "traditional song", "folk ballad", "folk air"],
        "irish folk dance": [
            "Irish folk dance", "Celtic jig or reel", "Irish reel", "Celtic reel", "Irish hornpipe",
            "Irish traditional dance",
        ],
        "fiddle tune": [
            "fiddle tune", "old-time dance tune", "hoedown", "old-time fiddle piece",
            "Appalachian fiddle tune",
        ],
        "chorale": [
            "chorale", "hymn", "hymn tune", "Baroque chorale", "chorale harmonization", "sacred hymn",
        ],
        "renaissance polyphony": [
            "Renaissance polyphony", "sacred Renaissance piece", "Renaissance vocal polyphony",
            "polyphonic Renaissance composition", "piece of Renaissance counterpoint",
        ],
        "madrigal": ["madrigal", "early Baroque vocal piece", "secular madrigal", "English madrigal"],
        "medieval polyphony": [
            "medieval piece", "medieval polyphonic song", "piece of medieval music",
            "early medieval polyphony", "Gothic-era polyphony",
        ],
    },
    "heldout": {
        "folk song": ["rustic village song"],
        "irish folk dance": ["pub session tune from Ireland"],
        "fiddle tune": ["country dance number"],
        "chorale": ["church hymn in four parts"],
        "renaissance polyphony": ["16th-century choral work"],
        "madrigal": ["Italian part-song"],
        "medieval polyphony": ["piece from the Middle Ages"],
    },
}
# What a caption may call a family instead of naming its instruments (a share of captions drawn during
# training, see ``caption_from_attributes``), so that "strings" or "brass" mean something to MuLan.
FAMILY_WORDS = {
    "train": {
        "piano": ["piano", "keyboard", "pianoforte", "keyboard instruments"],
        "strings": ["strings", "a string section", "bowed strings", "string instruments", "string players"],
        "brass": ["brass", "a brass section", "brass instruments", "brass players"],
        "woodwinds": ["woodwinds", "wind instruments", "woodwind instruments", "woodwind players"],
        "reed": ["reeds", "reed instruments", "reed players"],
        "guitar": ["guitar", "guitars", "guitar players"],
        "organ": ["organ", "an organ", "organ tones"],
        "mallets": ["mallets", "tuned percussion", "mallet instruments", "pitched percussion"],
        "voice": ["voices", "vocals", "vocalists", "human voices"],
        "synth": ["synth", "synthesizers", "synth sounds"],
        "bass": ["bass", "a bass line", "bass players"],
    },
    "heldout": {
        "piano": ["the ivories"],
        "strings": ["a fiddle section"],
        "brass": ["horns and trumpets"],
        "woodwinds": ["the winds"],
        "reed": ["reedy winds"],
        "guitar": ["six-string"],
        "organ": ["pipes"],
        "mallets": ["bells and chimes"],
        "voice": ["singers"],
        "synth": ["electronic keys"],
        "bass": ["low end"],
    },
}
FAMILY_SHARE = 0.3
# Sentence shapes as annotators write them: tempo, mood, style or instruments first, tag lists, two
# sentences. {Tempo}, {Mood}, {Style} and {Instruments} are the capitalised fields.
TEMPLATES = {
    "train": [
        "A {tempo} {style} played on {instruments} at about {bpm} BPM in {key} {mode}.",
        "This is a {mood} {style} performed by {instruments}. The tempo is {tempo}, around {bpm} BPM.",
        "{Instruments} {play} a {mood}, {tempo} {style} in {key} {mode} {room}.",
        "An instrumental {style} with {instruments}. It sounds {mood} and {tempo}.",
        "{Tempo} {style} in {time_signature} time featuring {instruments}; the mood is {mood}.",
        "{Tempo}, {mood} {style} on {instruments}.",
        "A {mood} piece for {instruments}, {tempo}, in {key} {mode}.",
        "{Mood} and {tempo}, this {style} is played on {instruments} in {key} {mode}.",
        "{tempo}, {mood}, {instruments}, {style}.",
        "{Style}; {instruments}; {tempo}; {mood}; {key} {mode}; {bpm} BPM.",
        "A {style} for {instruments}. The tempo is {tempo} and the mood is {mood}.",
        "The song is a {mood} {style} with {instruments} {room}. It is {tempo}, at about {bpm} BPM.",
        "{Mood} music for {instruments}: a {tempo} {style} in {time_signature} time.",
        "{Instruments} {play} a {tempo} {style}. The melody sounds {mood}.",
        "A {mood} {style}, {tempo}, with {instruments} {room}.",
        "{Tempo} {instruments} in {key} {mode}, a {mood} {style}.",
        "This {style} moves at about {bpm} BPM; it is {tempo} and {mood}, played on {instruments}.",
        "{Instruments} in {key} {mode}. A {tempo}, {mood} {style}.",
        "Instrumental {style}. {Instruments}. {Tempo} and {mood}.",
        "Mood: {mood}. Tempo: {tempo}. Instruments: {instruments}. Style: {style}.",
        "{Mood} {style} in {key} {mode} for {instruments}, {tempo} at {bpm} BPM.",
        "The {style} is {tempo} and {mood}; {instruments} {play} it {room}.",
    ],
    "heldout": [
        "Listen to {instruments} performing a {tempo} {style}; it feels {mood}, key of {key} {mode}.",
        "Here {instruments} carry a {mood} {style} {room}, roughly {bpm} beats per minute.",
        "A {style} arranged for {instruments}, {tempo} and {mood}.",
    ],
}
MELODY_TEMPLATES = {
    "train": [
        "A simple melody {melody} by one person, {tempo} and {mood}.",
        "Someone has {melody} the tune of a {style} at about {bpm} BPM.",
        "A {melody} melody on its own in {key} {mode}.",
        "{Tempo} and {mood}: a {style} melody {melody} by one person.",
        "A tune {melody} without instruments, {tempo} and {mood}, in {key} {mode}.",
        "One person has {melody} a {mood} {style} tune at about {bpm} BPM.",
        "{melody} melody, {tempo}, {mood}, {style}.",
        "The tune of a {style}, {melody} in {key} {mode}. It is {tempo} and {mood}.",
    ],
    "heldout": [
        "Only a {melody} tune, no accompaniment, {tempo}.",
        "The bare melody of a {style}, {melody}, feeling {mood}.",
    ],
}


# The sentence that names register, articulation and texture, added to a share of captions; its wording
# differs between the two caption sets as the templates do. Each set: its sentences for adjectives alone,
# for a texture alone, and for both.
TEXTURE_SENTENCES = {
    "train": (
        ("The music is {adjectives}.", "It is {adjectives} throughout.", "The playing is {adjectives}.",
         "The sound is {adjectives}."),
        ("The music has {texture}.", "It features {texture}.", "{texture}."),
        ("The music is {adjectives}, with {texture}.", "It is {adjectives} and has {texture}.",
         "{adjectives}, with {texture}."),
    ),
    "heldout": (
        ("Overall it sounds {adjectives}.",),
        ("You hear {texture}.",),
        ("Overall it sounds {adjectives}, {texture}.",),
    ),
}
# fmt: on
TEXTURE_SHARE = 0.6


def texture_sentence(attrs: dict, words: dict, rng: np.random.Generator, which: str) -> str:
    """Register, articulation and number of voices in words, or "" when the clip is middling in all three."""
    adjectives = [
        str(rng.choice(words[attrs[k]])) for k in ("register", "articulation") if attrs.get(k) in words
    ]
    voices = attrs.get("voices", 0)
    density = "one line" if voices == 1 else "many voices" if voices >= 3 else None
    texture = str(rng.choice(words[density])) if density else ""
    short, long_, both = TEXTURE_SENTENCES[which]
    templates = both if adjectives and texture else short if adjectives else long_ if texture else ("",)
    # a set with one sentence of a kind draws nothing, so its captions are what they were before a choice
    template = templates[0] if len(templates) == 1 else str(rng.choice(templates))
    return _capital(template.format(adjectives=_join(adjectives) if adjectives else "", texture=texture))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(names: list[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def make_captions(
    attrs: dict,
    instrument_names: list[str],
    rng: np.random.Generator,
    n: int,
    family_share: float = 0.0,
    texture_share: float = TEXTURE_SHARE,
) -> list[str]:
    """``n`` different captions for a clip from its attributes (set by ``attrs['caption_set']``); a
    ``family_share`` of them name the instruments' families ("strings and brass") instead, and a
    ``texture_share`` add a sentence on register, articulation and voices."""
    which = attrs["caption_set"]
    words, styles = WORDS[which], STYLE_WORDS[which]
    templates = (MELODY_TEMPLATES if attrs["is_melody"] else TEMPLATES)[which]
    order = rng.permutation(len(templates))[: min(n, len(templates))]
    families = [f for f in dict.fromkeys(attrs.get("families") or []) if f in FAMILY_WORDS[which]]
    captions = []
    for i in order:
        names = list(dict.fromkeys(instrument_names))
        # no draw at a share of 0, so builds make the captions they made before family words existed
        if family_share and families and rng.random() < family_share:
            names = [str(rng.choice(FAMILY_WORDS[which][f])) for f in families]
        if len(names) == 1 and attrs["voices"] == 1 and rng.random() < 0.5:
            instruments = f"{rng.choice(words['solo'])} {names[0]}"
        else:
            instruments = _join(names)
        tempo = str(rng.choice(words[attrs["tempo_class"]]))
        mood, style = str(rng.choice(words[attrs["mode"]])), str(rng.choice(styles[attrs["style"]]))
        fields = {
            "tempo": tempo,
            "Tempo": _capital(tempo),
            "mood": mood,
            "Mood": _capital(mood),
            "style": style,
            "Style": _capital(style),
            "instruments": instruments,
            "Instruments": _capital(instruments),
            "play": "play" if " and " in instruments or instruments.endswith("s") else "plays",
            "bpm": attrs["bpm"],
            "key": attrs["key"],
            "mode": attrs["mode"],
            "time_signature": attrs["time_signature"],
            "room": str(rng.choice(words["reverb" if attrs["reverb"] else "dry"])),
            "melody": str(rng.choice(words["melody"])),
        }
        text = templates[i].format(**fields)
        if rng.random() < texture_share:
            text = f"{text} {texture_sentence(attrs, words, rng, which)}".strip()
        text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)
        captions.append(_capital(text))
    return captions


# What a rendered clip's attributes hold and a real recording's lack: a caption can be made from them.
CAPTION_ATTRIBUTES = ("caption_set", "tempo_class", "mode", "programs", "is_melody", "voices", "bpm", "key")


def caption_from_attributes(
    attrs: dict, rng: np.random.Generator, family_share: float = FAMILY_SHARE
) -> str | None:
    """A new caption of a rendered clip drawn from its attributes (None: it lacks them, e.g. a real
    recording): training on a fresh draw each time shows MuLan every wording of the clip's caption set
    rather than the one to three the build stored."""
    needed = (*CAPTION_ATTRIBUTES, "style", "time_signature", "reverb")
    if not all(attrs.get(k) is not None for k in needed):
        return None
    names = [instruments.caption_name(p) for p in attrs["programs"]]
    return make_captions(attrs, names, rng, 1, family_share)[0]


# A clip's attributes with one changed, for hard negatives: its caption then differs from the true one in
# that attribute alone.
COUNTERFACTUAL_KINDS = ("tempo", "mode", "family")


def _captionable(attrs: dict) -> bool:
    return all(attrs.get(k) is not None for k in CAPTION_ATTRIBUTES) and attrs["mode"] in MODES


def _changed(attrs: dict, kind: str, rng: np.random.Generator) -> tuple[dict, list[int]]:
    """``attrs`` with ``kind`` (one of :data:`COUNTERFACTUAL_KINDS`) changed, and the programs its caption
    names."""
    changed, programs = dict(attrs), list(dict.fromkeys(attrs["programs"]))
    if kind == "tempo":
        tempo = str(rng.choice([t for t in TEMPO_BANDS if t != attrs["tempo_class"]]))
        changed["tempo_class"], changed["bpm"] = tempo, int(rng.integers(*TEMPO_BANDS[tempo]))
    elif kind == "mode":
        changed["mode"] = "minor" if attrs["mode"] == "major" else "major"
    else:  # family
        own = {instruments.FAMILY_OF.get(p) for p in programs}
        others = [f for f in instruments.FAMILIES if f not in own]
        family = instruments.FAMILIES[str(rng.choice(others))]
        programs = [int(family[int(rng.integers(len(family)))][0]) for _ in programs]
        changed["families"] = list(dict.fromkeys(instruments.FAMILY_OF[p] for p in programs))
    return changed, programs


def counterfactual_caption(attrs: dict, rng: np.random.Generator, family_share: float = 0.0) -> str | None:
    """A caption of the clip with its tempo class, mode or instrument family changed (None: the clip
    lacks the attributes, e.g. a real recording); ``family_share`` as in :func:`make_captions`."""
    if not _captionable(attrs):
        return None
    kind = COUNTERFACTUAL_KINDS[int(rng.integers(2 if attrs["is_melody"] else 3))]
    changed, programs = _changed(attrs, kind, rng)
    return make_captions(changed, [instruments.caption_name(p) for p in programs], rng, 1, family_share)[0]
