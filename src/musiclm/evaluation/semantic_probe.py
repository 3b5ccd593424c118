"""What semantic tokens say about the notes: a probe of any tokenizer against the score of rendered clips.

Every rendered clip of a built dataset keeps the MIDI it was rendered from (the manifest's ``midi``,
aligned with the audio from its first sample), so its notes are known frame by frame at the tokens' 25 Hz:
a frame sounds a note if the note covers the frame's centre, and has an onset if a note starts inside it.

The probe learns one thing per token from the train clips: the mean over the frames where the token occurs
of the 12-bin pitch-class roll, of the onset indicator, of the number of notes sounding and of their mean
MIDI pitch. On the test clips each frame is then predicted from its token alone:

- ``pitch_class_f1``: micro F1 over frames and pitch classes of "the token's mean roll >= 0.5" against the
  score; ``pitch_class_f1_shuffled``: the same with each clip's tokens shuffled in time, which keeps what a
  clip's token set says (its key, its instruments) and drops where the notes are: a tokenizer whose tokens
  are local scores well above it;
- ``onset_f1``: micro F1 over frames of "the token's onset rate >= the threshold that maximises onset F1
  on the train clips" (``onset_threshold``), and ``onset_f1_shuffled``;
- ``note_rate_r``, ``median_pitch_r``, ``polyphony_r``: Pearson correlations over test clips of token
  changes per second with score onsets (frames where a note starts) per second; of the median over frames
  of the token's mean pitch with the median over sounding frames of the score's mean sounding pitch; and of
  the mean over frames of the token's mean notes sounding with the score's;
- ``context_agreement``: the share of frames whose token is the same when ``context_seconds`` of a test
  clip's middle are tokenized alone as inside the whole clip (local tokens do not depend on the context).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

from musiclm.audio import read_clip
from musiclm.data.manifest import Clip
from musiclm.evaluation.diagnostics import correlation
from musiclm.progress import tqdm
from musiclm.semantic.tokenizer import SILENCE_PEAK

PITCH_CLASS_THRESHOLD = 0.5
ONSET_THRESHOLDS = np.linspace(0.05, 0.95, 19)


def score_frames(midi: str | Path, frames: int, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """``[F, 128]`` bool: MIDI pitches sounding at each frame's centre (or starting in it), and ``[F]`` bool:
    frames where a note starts; drums left out."""
    roll = np.zeros((frames, 128), bool)
    onsets = np.zeros(frames, bool)
    for instrument in pretty_midi.PrettyMIDI(str(midi)).instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            first = int(np.floor(note.start * frame_rate))
            if first >= frames:
                continue
            # frame f's centre is (f + 0.5) / frame_rate; a note shorter than a frame still marks its own
            last = max(first + 1, int(np.ceil(note.end * frame_rate - 0.5)))
            roll[first:last, note.pitch] = True
            onsets[first] = True
    return roll, onsets


def _f1(tp: float, fp: float, fn: float) -> float:
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


def _counts(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.array([(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()], float)


def _mean_pitch(roll: np.ndarray) -> np.ndarray:
    """Mean MIDI pitch of the notes sounding in each frame of ``roll`` ``[F, 128]`` (NaN in silence)."""
    count = roll.sum(1)
    with np.errstate(invalid="ignore"):
        return (roll * np.arange(128)).sum(1) / np.where(count > 0, count, np.nan)


def _median(values: np.ndarray) -> float:
    """The median of the finite values (NaN if there are none)."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else float("nan")


def _clips_with_scores(clips: Sequence[Clip]) -> list[Clip]:
    usable = [c for c in clips if c.midi is not None and Path(c.midi).is_file()]
    if not usable:
        raise ValueError(
            "no clip has its MIDI file (the manifest's 'midi'): the probe needs rendered clips whose score "
            "is known, such as those of `musiclm data build`"
        )
    return usable


def _tokenized(tokenizer, clips: Sequence[Clip], desc: str):
    """(audio, tokens, roll, onsets) of each clip that is not silent."""
    for clip in tqdm(_clips_with_scores(clips), desc=desc, unit="clip"):
        wav = read_clip(clip, tokenizer.sample_rate)
        if wav.abs().max() < SILENCE_PEAK:
            continue
        tokens = tokenizer.tokenize(wav[None])[0].cpu().numpy()
        yield (wav, tokens, *score_frames(clip.midi, len(tokens), tokenizer.frame_rate))


@dataclasses.dataclass
class _TokenNotes:
    """What the train clips say of each token ``[V]``: the mean of its frames' pitch-class roll ``[V, 12]``,
    onset indicator, notes sounding and mean sounding pitch (NaN for a token never heard over a note); the
    onset threshold that maximises onset F1 on them; how many clips and frames it was learned from."""

    pitch_classes: np.ndarray
    onset_rate: np.ndarray
    polyphony: np.ndarray
    pitch: np.ndarray
    onset_threshold: float
    clips: int
    frames: int


def _learn_token_notes(tokenizer, train: Sequence[Clip]) -> _TokenNotes:
    """What each token plays, averaged over its frames in the ``train`` clips."""
    vocab = tokenizer.vocab_size
    count, onset_sum, poly_sum = np.zeros(vocab), np.zeros(vocab), np.zeros(vocab)
    pc_sum, pitch_sum, pitch_frames = np.zeros((vocab, 12)), np.zeros(vocab), np.zeros(vocab)
    train_tokens, train_onsets = [], []
    for _, tokens, roll, onsets in _tokenized(tokenizer, train, "probe: train clips"):
        np.add.at(count, tokens, 1)
        np.add.at(pc_sum, tokens, _pitch_classes(roll))
        np.add.at(onset_sum, tokens, onsets)
        np.add.at(poly_sum, tokens, roll.sum(1))
        pitch, sounding = _mean_pitch(roll), roll.any(1)
        np.add.at(pitch_sum, tokens[sounding], pitch[sounding])
        np.add.at(pitch_frames, tokens[sounding], 1)
        train_tokens.append(tokens)
        train_onsets.append(onsets)
    if not train_tokens:
        raise ValueError("no usable train clip: the probe learns each token's notes from them")
    seen = np.maximum(count, 1)
    onset_rate = onset_sum / seen
    with np.errstate(invalid="ignore"):
        pitch_mean = pitch_sum / np.where(pitch_frames > 0, pitch_frames, np.nan)
    all_tokens, all_onsets = np.concatenate(train_tokens), np.concatenate(train_onsets)
    onset_threshold = max(
        ONSET_THRESHOLDS, key=lambda t: _f1(*_counts(onset_rate[all_tokens] >= t, all_onsets))
    )
    return _TokenNotes(
        pc_sum / seen[:, None],
        onset_rate,
        poly_sum / seen,
        pitch_mean,
        onset_threshold,
        len(train_tokens),
        len(all_tokens),
    )


def _context_agreement(tokenizer, wav, tokens: np.ndarray, context: int) -> tuple[int, int]:
    """(frames agreeing, frames compared) of ``context`` frames of the clip's middle tokenized alone
    against the same frames of the whole clip's ``tokens``; none compared for a clip no longer than the
    context or a silent middle."""
    if len(tokens) <= context:
        return 0, 0
    rate = tokenizer.frame_rate
    first = (len(tokens) - context) // 2
    start = round(first * tokenizer.sample_rate / rate)
    piece = wav[start : start + round(context * tokenizer.sample_rate / rate)]
    if piece.abs().max() < SILENCE_PEAK:
        return 0, 0
    alone = tokenizer.tokenize(piece[None])[0].cpu().numpy()
    return int((alone == tokens[first : first + context]).sum()), context


def probe(
    tokenizer, train: Sequence[Clip], test: Sequence[Clip], context_seconds: float = 2.0, seed: int = 0
) -> dict[str, Any]:
    """The probe's figures (module doc) for ``tokenizer`` (any :class:`~musiclm.interfaces.SemanticTokenizer`)
    learned on ``train`` clips and read on ``test`` clips; both need their MIDI."""
    notes = _learn_token_notes(tokenizer, train)
    rate = tokenizer.frame_rate
    rng = np.random.default_rng(seed)
    totals = {k: np.zeros(3) for k in ("pc", "pc_shuffled", "onset", "onset_shuffled")}
    per_clip: dict[str, list[float]] = {
        k: [] for k in ("rate", "rate_true", "pitch", "pitch_true", "poly", "poly_true")
    }
    context = round(context_seconds * rate)
    agree = compared = 0
    used: set[int] = set()
    for wav, tokens, roll, onsets in _tokenized(tokenizer, test, "probe: test clips"):
        used.update(tokens.tolist())
        shuffled = rng.permutation(tokens)
        pcs = _pitch_classes(roll)
        for name, toks in (("", tokens), ("_shuffled", shuffled)):
            totals["pc" + name] += _counts(notes.pitch_classes[toks] >= PITCH_CLASS_THRESHOLD, pcs)
            totals["onset" + name] += _counts(notes.onset_rate[toks] >= notes.onset_threshold, onsets)
        seconds = len(tokens) / rate
        per_clip["rate"].append(float((tokens[1:] != tokens[:-1]).sum()) / seconds)
        per_clip["rate_true"].append(float(onsets.sum()) / seconds)
        per_clip["pitch"].append(_median(notes.pitch[tokens]))
        per_clip["pitch_true"].append(_median(_mean_pitch(roll)))
        per_clip["poly"].append(float(notes.polyphony[tokens].mean()))
        per_clip["poly_true"].append(float(roll.sum(1).mean()))
        clip_agree, clip_compared = _context_agreement(tokenizer, wav, tokens, context)
        agree, compared = agree + clip_agree, compared + clip_compared
    if not per_clip["rate"]:
        raise ValueError("no usable test clip")
    return {
        "train_clips": notes.clips,
        "train_frames": notes.frames,
        "test_clips": len(per_clip["rate"]),
        "vocab_size": tokenizer.vocab_size,
        "tokens_used_on_test": len(used),
        "pitch_class_f1": _f1(*totals["pc"]),
        "pitch_class_f1_shuffled": _f1(*totals["pc_shuffled"]),
        "onset_f1": _f1(*totals["onset"]),
        "onset_f1_shuffled": _f1(*totals["onset_shuffled"]),
        "onset_threshold": float(notes.onset_threshold),
        "note_rate_r": correlation(per_clip["rate"], per_clip["rate_true"]),
        "median_pitch_r": correlation(per_clip["pitch"], per_clip["pitch_true"]),
        "polyphony_r": correlation(per_clip["poly"], per_clip["poly_true"]),
        "token_changes_per_second": float(np.mean(per_clip["rate"])),
        "score_onsets_per_second": float(np.mean(per_clip["rate_true"])),
        "context_seconds": context_seconds,
        "context_agreement": agree / compared if compared else float("nan"),
    }


def _pitch_classes(roll: np.ndarray) -> np.ndarray:
    """``[F, 128]`` -> ``[F, 12]`` bool: the pitch classes sounding (MIDI 0 is a C)."""
    return np.pad(roll, ((0, 0), (0, 4))).reshape(len(roll), -1, 12).any(1)
