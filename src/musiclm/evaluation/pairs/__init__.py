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
:mod:`.references`) and the same pairs with A and B swapped at random (about 50 %, :mod:`.statistics`).
:mod:`.chain` sends the renders through the back of the model (codec; acoustic stages; every stage,
conditioned on the renders' MuLan audio tokens), so that the rows between ceiling and model say which
link loses the direction.

The modules: :mod:`.file` (the pairs file, its format and checks), :mod:`.audio` (pair audio on disk,
generated), :mod:`.detectors` (the kinds' detectors and the scoring), :mod:`.statistics`,
:mod:`.references`, :mod:`.chain` and :mod:`.report` (``pairs.json`` and ``pairs.md``).
"""
