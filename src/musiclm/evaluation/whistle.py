"""Melodies the model never heard, for the suite's melody measure: the tunes of test-split clips, whistled.

The builder assigns whole works to a split, so the tune of a test-split clip is in no training clip. A
clip's MIDI gives it: the top line of its first part (parts are written top voice first, so that is the
tune or the soprano). It is whistled in plain numpy, a timbre the model never trained on either (the
dataset's melody-only clips are soundfont instruments): a sine that glides briefly between notes, with a
light vibrato and breath noise, the same for the same seed. Each prompt gets the tune of the very clip it
describes, so the ground-truth row is the ceiling of the melody agreement.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pretty_midi

from musiclm.audio import save_audio
from musiclm.data.manifest import Clip
from musiclm.evaluation.prompts import Prompt

RATE = 24000
# the line's highest note goes to C5..B5: whistled, yet under the 1 kHz ceiling of the melody pitch tracker
TOP = 84
VIBRATO_CENTS = 20.0  # light: well inside the 50 cents the agreement allows
VIBRATO_HZ = (5.0, 6.5)
GLIDE_SECONDS = 0.03
ATTACK_SECONDS, RELEASE_SECONDS = 0.02, 0.04
BREATH = 0.03  # breath noise against the tone, about -24 dB
LEVEL = 0.3

Note = tuple[float, float, int]  # start and end in seconds, MIDI pitch


def tune(midi_path: str | Path) -> list[Note]:
    """The top line of the file's first part: of notes struck together the highest, each cut off where
    the next one starts."""
    instruments = pretty_midi.PrettyMIDI(str(midi_path)).instruments
    notes = sorted(instruments[0].notes, key=lambda n: (n.start, -n.pitch)) if instruments else []
    line: list[Note] = []
    for note in notes:
        if line and note.start - line[-1][0] < 1e-3:  # a lower note of the same chord
            continue
        if line:
            start, end, pitch = line[-1]
            line[-1] = (start, min(end, note.start), pitch)
        line.append((note.start, note.end, note.pitch))
    return line


def whistle_register(notes: list[Note]) -> list[Note]:
    """``notes`` moved by whole octaves so that the highest lies in C5..B5."""
    if not notes:
        return []
    shift = 12 * ((TOP - 1 - max(p for _, _, p in notes)) // 12)
    return [(s, e, p + shift) for s, e, p in notes]


def whistle(notes: list[Note], seconds: float, sample_rate: int = RATE, seed: int = 0) -> np.ndarray:
    """``[T]`` float32 audio of monophonic ``notes`` whistled; silent between them."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    pitch, gain = np.full(n, np.nan), np.zeros(n)
    attack, release = ATTACK_SECONDS * sample_rate, RELEASE_SECONDS * sample_rate
    for start, end, midi in notes:
        a, b = round(start * sample_rate), min(round(end * sample_rate), n)
        if b <= a:
            continue
        k = np.arange(b - a)
        pitch[a:b] = midi
        gain[a:b] = np.minimum(1.0, np.minimum((k + 1) / attack, (b - a - k) / release))
    if not gain.any():
        raise ValueError(f"no notes to whistle in {seconds:g} s")
    # hold each pitch through the rest after it (and the first before it), so the phase never jumps
    held = np.maximum.accumulate(np.where(np.isnan(pitch), 0, np.arange(n)))
    pitch = pitch[held]
    pitch[np.isnan(pitch)] = pitch[~np.isnan(pitch)][0]
    width = max(1, round(GLIDE_SECONDS * sample_rate))
    padded = np.pad(pitch, (width // 2, width - 1 - width // 2), mode="edge")
    pitch = np.convolve(padded, np.ones(width) / width, mode="valid")
    t = np.arange(n) / sample_rate
    rate, phase = rng.uniform(*VIBRATO_HZ), rng.uniform(0, 2 * np.pi)
    vibrato = VIBRATO_CENTS / 100 * np.sin(2 * np.pi * rate * t + phase)
    hz = 440.0 * 2 ** ((pitch + vibrato - 69) / 12)
    tone = np.sin(2 * np.pi * np.cumsum(hz) / sample_rate + rng.uniform(0, 2 * np.pi))
    breath = np.diff(rng.standard_normal(n + 1))  # differenced: a hiss, not a rumble
    return (LEVEL * gain * (tone + BREATH * breath)).astype(np.float32)


def whistled_melodies(
    prompts: list[Prompt], clips: list[Clip], folder: str | Path, count: int, seed: int = 0
) -> list[Prompt]:
    """``prompts``, of which the first ``count`` whose reference is a test-split clip with a MIDI file
    carry that clip's tune whistled (written as ``folder/NNN.wav``, NNN the prompt's index)."""
    heldout = {
        c.path.resolve(): c for c in clips if c.split == "test" and c.midi is not None and c.midi.is_file()
    }
    out, given = [], 0
    for i, prompt in enumerate(prompts):
        clip = heldout.get(prompt.reference.resolve()) if prompt.reference is not None else None
        notes = whistle_register(tune(clip.midi)) if given < count and clip is not None else []
        if notes:
            seconds = clip.duration or max(e for _, e, _ in notes)
            path = save_audio(Path(folder) / f"{i:03d}.wav", whistle(notes, seconds, RATE, seed + i), RATE)
            prompt = dataclasses.replace(prompt, melody=path.resolve())
            given += 1
        out.append(prompt)
    return out
