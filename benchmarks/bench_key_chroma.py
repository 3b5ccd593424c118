"""Mode from key profiles alone, by chroma front end: the evidence for ``RhythmAndKey``'s ``chroma``.

On the held-out (valid + test) clips of an embedded build, each front end's mean chroma picks the best
Krumhansl-Kessler profile (24 keys), and its mode is compared with the clip's label, on centre crops of
5 s (the classifier's and MuLan's training crops) and 10 s (what the suite judges). librosa's
``chroma_cqt`` is the reference; "basic-pitch notes" is the pitch-class profile of the notes basic-pitch
transcribes (``musiclm.mulan.notes.NoteFeatures``, MuLan's ``notes``). KEY_CHROMA_DATA names a
manifest (e.g. the 20 h build); without it the
benchmarks' own 1.5 h build is used.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import embedded_manifest, record, repo_relative

SECONDS = (5, 10)
RATE = 24000


def main() -> None:
    from musiclm.audio import CHROMAS, RhythmAndKey, centre_crop, read_clip
    from musiclm.data.manifest import read_manifest
    from musiclm.evaluation.adherence import estimate_key
    from musiclm.mulan.notes import NoteFeatures, note_posteriors

    manifest = embedded_manifest("KEY_CHROMA_DATA")
    clips = [c for c in read_manifest(manifest) if c.split != "train" and c.attributes.get("mode")]
    features = {name: RhythmAndKey(RATE, 50.0, chroma=name).key for name in CHROMAS}
    note_features = NoteFeatures()
    features["basic-pitch notes"] = lambda wav: note_features(note_posteriors(wav, RATE))

    def modes(wav: torch.Tensor) -> dict[str, str]:
        """Each front end's mode: that of the best of the 24 key profiles its features correlate with
        (the first 24 key features; the suite's chroma key detector for librosa's ``chroma_cqt``)."""
        out = {}
        for name, f in features.items():
            correlations = f(wav[None])[0, :24].view(2, 12)
            out[name] = ("major", "minor")[int(correlations.amax(1).argmax())]
        out["librosa chroma_cqt (the suite's key detector)"] = estimate_key(wav.numpy(), RATE)[1]
        return out

    hits: dict[str, dict[int, list[bool]]] = {}
    for clip in clips:
        wav = read_clip(clip, RATE)
        for seconds in SECONDS:
            for name, mode in modes(centre_crop(wav, seconds * RATE)).items():
                right = mode == clip.attributes["mode"]
                hits.setdefault(name, {s: [] for s in SECONDS})[seconds].append(right)
    record(
        "key_chroma",
        {
            "manifest": repo_relative(manifest),
            "clips": len(clips),
            "minor_share": round(float(np.mean([c.attributes["mode"] == "minor" for c in clips])), 3),
            "mode_accuracy": {
                name: {f"{s}s": round(float(np.mean(v[s])), 3) for s in SECONDS} for name, v in hits.items()
            },
        },
    )
