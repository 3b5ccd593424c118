"""Detectors of the pair kinds: audio -> a scalar that grows in the asked direction, independent of the
generator (librosa signal measures; the evaluation classifier only for instrument families); and the
scoring of pairs with them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import librosa
import numpy as np
import torch

from musiclm.audio import resample
from musiclm.evaluation.adherence import key_scores
from musiclm.evaluation.pairs.file import Pair, PairsError
from musiclm.progress import tqdm


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
