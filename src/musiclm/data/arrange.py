"""Arranging a parsed work (:class:`musiclm.data.corpus.Notes`): its mode changed, an accompaniment
under a lone tune, and a window of its parts written as MIDI for given instruments.

The dataset builder arranges every clip with these, and the paired-adherence reference renders arrange
both sides of a pair with them, so that a reference sounds like the data.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pretty_midi

from musiclm.data import corpus, instruments

# Scale degrees (semitones above the tonic) that change with the mode: major <-> harmonic minor keeps the
# dominant chord and the leading tone, so cadences stay idiomatic in both modes.
MODE_DEGREES = {"minor": {4: 3, 9: 8}, "major": {3: 4, 8: 9, 10: 11}}


def change_mode(notes: corpus.Notes, mode: str) -> corpus.Notes:
    """The same work in ``mode``: its third and sixth (and, into major, seventh) degrees moved by a
    semitone."""
    if mode == notes.mode:
        return notes
    shift = MODE_DEGREES[mode]

    def move(pitch: int) -> int:
        degree = (pitch - notes.tonic_pc) % 12
        return pitch + shift.get(degree, degree) - degree

    parts = [[(on, dur, move(p)) for on, dur, p in part] for part in notes.parts]
    return dataclasses.replace(notes, parts=parts, mode=mode)


def _fit_octave(notes: list[tuple[float, float, int]], program: int, octave_bias: int = 0) -> int:
    """Octave shift that puts the part's mean pitch inside the instrument's range, then ``octave_bias``
    octaves further where the mean stays 6 semitones inside the range (so register varies within an
    instrument)."""
    lo, hi = instruments.RANGE_OF.get(program, (36, 96))
    mean = float(np.mean([p for _, _, p in notes]))
    shift = 0
    while mean + shift < lo and shift < 48:
        shift += 12
    while mean + shift > hi and shift > -48:
        shift -= 12
    biased = shift + 12 * octave_bias
    return biased if lo + 6 <= mean + biased <= hi - 6 else shift


def accompaniment(notes: corpus.Notes, shift: int) -> list[tuple[float, float, int]]:
    """A plain tonic-and-fifth chord on each bar, under a single-line tune."""
    num, den = (int(x) for x in notes.time_signature.split("/")) if "/" in notes.time_signature else (4, 4)
    bar = num * 4 / den
    root = 48 + (notes.tonic_pc + shift) % 12
    chord = [root - 12, root, root + 7, root + (3 if notes.mode == "minor" else 4) + 12]
    return [(t, bar, p) for t in np.arange(0.0, notes.length, bar) for p in chord]


def window_midi(parts, programs, start_q, end_q, spq, transpose, rng, bend_cents=0.0, octave_bias=0):
    """The notes of ``parts`` sounding from quarter ``start_q`` to ``end_q`` as MIDI, one instrument per part
    with its ``programs`` entry, ``spq`` seconds a quarter, transposed by ``transpose`` semitones and each
    part moved by octaves into its instrument's range; one velocity per part drawn from ``rng``."""
    # note times are in seconds; the file's tempo meta stays MIDI's default 120 BPM (the clip's bpm is an
    # attribute)
    pm = pretty_midi.PrettyMIDI()
    for part, program in zip(parts, programs):
        inst = pretty_midi.Instrument(program=program)
        octave = _fit_octave(part, program, octave_bias) if part else 0
        velocity = int(rng.integers(65, 105))
        sounding: dict[int, pretty_midi.Note] = {}
        for on, dur, pitch in part:  # sorted by onset
            if start_q <= on < end_q:
                p = int(np.clip(pitch + transpose + octave, 0, 127))
                note = pretty_midi.Note(
                    velocity, p, (on - start_q) * spq, (min(on + dur, end_q) - start_q) * spq
                )
                if p in sounding and sounding[p].end > note.start:
                    # same pitch re-struck while sounding (unison voices on one instrument): end the first
                    # note there, since overlapping note-ons of one key on one channel are ambiguous in MIDI
                    sounding[p].end = note.start
                    if sounding[p].end <= sounding[p].start:
                        inst.notes.remove(sounding[p])
                sounding[p] = note
                inst.notes.append(note)
        end = (end_q - start_q) * spq  # release pedal and all notes at the clip's end
        inst.control_changes += [
            pretty_midi.ControlChange(64, 0, end),
            pretty_midi.ControlChange(123, 0, end),
        ]
        if bend_cents:  # small detuning of a hummed line; default bend range is +-2 semitones
            inst.pitch_bends.append(pretty_midi.PitchBend(int(8191 * bend_cents / 200), 0.0))
        if inst.notes:
            pm.instruments.append(inst)
    return pm
