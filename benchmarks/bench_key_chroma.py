"""Mode from key profiles alone, by chroma front end: the evidence for ``RhythmAndKey``'s ``chroma``.

On the held-out (valid + test) clips of an embedded build, each front end's mean chroma picks the best
Krumhansl-Kessler profile (24 keys), and its mode is compared with the clip's label, on centre crops of
5 s (the classifier's and MuLan's training crops) and 10 s (what the suite judges). librosa's
``chroma_cqt`` is the reference. KEY_CHROMA_DATA names a manifest (e.g. the 20 h build); without it the
benchmarks' own 1.5 h build is used.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch

from benchmarks.common import embedded_manifest, record, repo_relative

SECONDS = (5, 10)
RATE = 24000


def profile_mode(chroma: torch.Tensor) -> str:
    """The mode of the key whose profile correlates best with a mean chroma ``[12]``."""
    from musiclm.audio import KEY_PROFILES

    x = chroma - chroma.mean()
    rotations = torch.stack([KEY_PROFILES.roll(t, dims=-1) for t in range(12)], dim=1)  # [2, 12, 12]
    r = rotations - rotations.mean(-1, keepdim=True)
    corr = (r @ x) / (r.norm(dim=-1) * x.norm() + 1e-8)
    return ("major", "minor")[int(corr.amax(1).argmax())]


def main() -> None:
    from musiclm.audio import CHROMAS, RhythmAndKey, centre_crop, read_clip
    from musiclm.data.manifest import read_manifest

    manifest = embedded_manifest("KEY_CHROMA_DATA")
    clips = [c for c in read_manifest(manifest) if c.split != "train" and c.attributes.get("mode")]
    features = {name: RhythmAndKey(RATE, 50.0, chroma=name) for name in CHROMAS}

    def front_ends(wav: torch.Tensor) -> dict[str, torch.Tensor]:
        # the key features end with the chroma rotated to the best tonic; rotation leaves the mode alone
        out = {name: f.key(wav[None])[0, 24:] for name, f in features.items()}
        cqt = librosa.feature.chroma_cqt(y=wav.numpy(), sr=RATE)
        out["librosa chroma_cqt"] = torch.from_numpy(cqt.mean(1))
        return out

    hits: dict[str, dict[int, list[bool]]] = {}
    for clip in clips:
        wav = read_clip(clip, RATE)
        for seconds in SECONDS:
            crop = centre_crop(wav, seconds * RATE)
            for name, chroma in front_ends(crop).items():
                hits.setdefault(name, {s: [] for s in SECONDS})[seconds].append(
                    profile_mode(chroma.float()) == clip.attributes["mode"]
                )
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
