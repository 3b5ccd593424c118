"""Training datasets over manifests: fixed-length mono crops, optionally with a caption.

Follows the engine's convention: ``ds[key]`` uses ``key % len(ds)`` as the item and seeds its
randomness with ``key``, so a resumed run sees exactly the crops it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from musiclm.attribute_heads import encode_targets
from musiclm.audio import audio_info, crop_or_pad, loudness_normalize, read_clip
from musiclm.data.augment import Augment
from musiclm.data.captions import FAMILY_SHARE, caption_from_attributes, counterfactual_caption
from musiclm.data.manifest import Clip, ManifestError, read_manifest
from musiclm.mulan.notes import read_cached


class AudioCropDataset(Dataset):
    """Crops of ``crop_seconds`` from the clips of one or more manifests.

    ``split`` keeps only clips of that split (None keeps all). ``weights`` (one per manifest) make
    random sampling draw manifest ``i`` with probability ``weights[i] / sum(weights)`` whatever its
    size; without them every clip is equally likely. With ``random_crop=False`` (validation) item
    ``i`` is always clip ``i`` and its middle crop. ``with_text`` adds one of the clip's captions,
    drawn with the key's rng; clips without captions are then left out. ``gain_db`` ``(low, high)``
    scales each loudness-normalised crop by a random gain in that range (dB), so that a model trained
    on it works at any level (a codec trained at one level alone failed on quieter files).
    ``hard_negatives`` (with ``with_text``) adds ``negative_text``: the clip's caption with its tempo,
    mode or instrument family changed (:func:`musiclm.data.captions.counterfactual_caption`), or, for a
    clip without those attributes, another clip's caption. ``fresh_captions`` draws each caption anew from
    a rendered clip's attributes (:func:`musiclm.data.captions.caption_from_attributes`), with a
    share naming instrument families, instead of picking one the build stored. ``augment`` changes each
    crop (reverb, band limit, codec; :class:`musiclm.data.augment.Augment`) before the gain.
    ``with_labels`` adds ``labels``, the clip's attribute targets
    (:func:`musiclm.attribute_heads.encode_targets`; all unknown for a clip without attributes).
    ``with_notes`` adds ``notes``, the crop's note posteriors from the cache beside its manifest
    (:func:`musiclm.mulan.notes.write_note_cache`).
    """

    def __init__(
        self,
        manifests: str | Path | Sequence[str | Path],
        sample_rate: int,
        crop_seconds: float,
        split: str | None = "train",
        weights: Sequence[float] | None = None,
        random_crop: bool = True,
        with_text: bool = False,
        skip_bad: bool = False,
        gain_db: tuple[float, float] | None = None,
        hard_negatives: bool = False,
        fresh_captions: bool = False,
        augment: Augment | None = None,
        with_labels: bool = False,
        with_notes: bool = False,
    ):
        if hard_negatives and not with_text:
            raise ValueError("hard_negatives needs with_text=True: they are captions")
        if isinstance(manifests, (str, Path)):
            manifests = [manifests]
        manifests = [Path(m) for m in manifests]
        if not manifests:
            raise ManifestError("AudioCropDataset needs at least one manifest")
        if weights is not None and (
            len(weights) != len(manifests) or any(w < 0 for w in weights) or sum(weights) <= 0
        ):
            raise ValueError(
                f"weights must be {len(manifests)} non-negative numbers with a positive sum, got "
                f"{list(weights)}"
            )
        if crop_seconds <= 0 or sample_rate <= 0:
            raise ValueError(
                f"crop_seconds and sample_rate must be positive, got {crop_seconds} and {sample_rate}"
            )
        self.sample_rate, self.crop_seconds = sample_rate, crop_seconds
        self.length = int(round(crop_seconds * sample_rate))
        self.random_crop, self.with_text, self.gain_db = random_crop, with_text, gain_db
        self.hard_negatives, self.fresh_captions, self.augment = hard_negatives, fresh_captions, augment
        self.with_labels, self.with_notes = with_labels, with_notes
        self.clips: list[Clip] = []
        self.manifest_of: list[Path] = []  # each clip's manifest, where its cached note posteriors live
        self.groups: list[np.ndarray] = []  # clip indices of each manifest
        for manifest in manifests:
            clips = [
                c
                for c in read_manifest(manifest, skip_bad=skip_bad)
                if (split is None or c.split == split) and (c.captions or not with_text)
            ]
            if not clips:
                what = f"split {split!r}" if split else "any split"
                raise ManifestError(
                    f"manifest {manifest} has no clips of {what}" + (" with captions" if with_text else "")
                )
            self.groups.append(np.arange(len(self.clips), len(self.clips) + len(clips)))
            self.clips += clips
            self.manifest_of += [manifest] * len(clips)
        self.weights = None if weights is None else np.asarray(weights, dtype=float) / float(sum(weights))

    def __len__(self) -> int:
        return len(self.clips)

    def _duration(self, clip: Clip) -> float:
        if clip.duration is None:
            clip.duration = audio_info(clip.path).duration - (clip.offset or 0.0)
        return clip.duration

    def __getitem__(self, key: int) -> dict:
        rng = np.random.default_rng(key)
        index = int(key) % len(self)
        if self.weights is not None and self.random_crop:
            group = self.groups[rng.choice(len(self.groups), p=self.weights)]
            index = int(group[rng.integers(len(group))])
        clip = self.clips[index]
        slack = max(0.0, self._duration(clip) - self.crop_seconds)
        start = float(rng.uniform(0, slack)) if self.random_crop else slack / 2
        # read a little more than needed: the file's own rate may round the crop down by a sample
        wav = read_clip(clip, self.sample_rate, start=start, seconds=self.crop_seconds + 0.01)
        wav = loudness_normalize(crop_or_pad(wav, self.length), self.sample_rate)
        if self.augment is not None:
            wav = self.augment(wav, self.sample_rate, rng)
        if self.gain_db is not None:
            wav = wav * 10 ** (float(rng.uniform(*self.gain_db)) / 20)
        item = {"audio": wav, "clip": index}
        attrs, family_share = clip.attributes or {}, FAMILY_SHARE if self.fresh_captions else 0.0
        if self.with_text:
            fresh = caption_from_attributes(attrs, rng, family_share) if self.fresh_captions else None
            item["text"] = fresh or _any_caption(clip, rng)
        if self.hard_negatives:
            negative = counterfactual_caption(attrs, rng, family_share)
            if negative is None:
                other = self.clips[(index + 1 + int(rng.integers(len(self) - 1 or 1))) % len(self)]
                negative = _any_caption(other, rng)
            item["negative_text"] = negative
        if self.with_labels:
            item["labels"] = encode_targets(attrs)
        if self.with_notes:
            item["notes"] = read_cached(clip, self.manifest_of[index], start, self.crop_seconds)
        return item


def _any_caption(clip: Clip, rng: np.random.Generator) -> str:
    return clip.captions[int(rng.integers(len(clip.captions)))]
