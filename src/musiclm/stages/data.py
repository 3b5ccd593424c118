"""Training windows for the stages, cut from token shards (see :mod:`musiclm.stages.tokenize`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from musiclm.stages.stages import StageLM
from musiclm.stages.tokenize import META_FILE


def read_meta(directory: str | Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a token folder written by `musiclm tokenize`"
        )
    return json.loads(path.read_text())


def shard_paths(directory: str | Path) -> list[str]:
    """The audio file of each clip, in :func:`load_shards`' order."""
    paths: list[str] = []
    for path in sorted(Path(directory).glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            paths += json.loads(f.metadata()["paths"])
    return paths


def load_shards(directory: str | Path) -> list[dict[str, torch.Tensor]]:
    """Every clip of every shard in ``directory``: ``[{"semantic", "acoustic", "mulan", ["text"],
    ["melody"]}, ...]`` (``mulan [Wm, Qm]``: shards of older versions held one row per clip, ``[Qm]``, read
    as ``[1, Qm]``)."""
    shards = sorted(Path(directory).glob("shard-*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no shard-*.safetensors in {directory}; run `musiclm tokenize` first")
    clips: list[dict[str, torch.Tensor]] = []
    for path in shards:
        with safe_open(str(path), framework="pt") as f:
            items: dict[str, dict[str, torch.Tensor]] = {}
            for key in f.keys():
                index, name = key.split("/")
                items.setdefault(index, {})[name] = f.get_tensor(key).long()
        clips.extend(items[k] for k in sorted(items, key=int))
    for clip in clips:
        clip["mulan"] = clip["mulan"].reshape(-1, clip["mulan"].shape[-1])
    return clips


def dataset_options(meta: dict) -> dict:
    """The StageDataset settings a token folder's ``meta.json`` fixes (folders of older versions lack the
    MuLan window settings: they stored one MuLan row per clip)."""
    return {
        "melody_hop": meta["melody_hop"],
        "mulan_hop": meta.get("mulan_hop", 2.0),
        "mulan_window": meta.get("mulan_window", 10.0),
    }


class StageDataset(torch.utils.data.Dataset):
    """Random windows of ``model.config.window_seconds`` laid out for ``model``'s stage.

    Clips shorter than a window are left out (a window is never padded, so every position a stage
    learns from is real). The window start is drawn from ``np.random.default_rng(key)``. The MuLan
    conditioning is the audio tokens of the MuLan window centred nearest the training window or, in
    ``config.text_share`` of the windows of captioned clips, the text tokens of one of its captions.
    """

    def __init__(
        self,
        clips: list[dict[str, torch.Tensor]],
        model: StageLM,
        melody_hop: float = 3.0,
        mulan_hop: float = 2.0,
        mulan_window: float = 10.0,
    ):
        c = model.config
        self.model, self.melody_hop = model, melody_hop
        self.mulan_hop, self.mulan_window = mulan_hop, mulan_window
        self.sem_frames = round(c.window_seconds * c.semantic_rate)
        self.ac_frames = round(c.window_seconds * c.acoustic_rate)
        needs_melody = c.stage == "semantic" and c.melody_quantizers > 0
        self.clips = [
            clip
            for clip in clips
            if clip["semantic"].shape[-1] >= self.sem_frames
            and clip["acoustic"].shape[-1] >= self.ac_frames
            and (not needs_melody or "melody" in clip)
        ]
        if not self.clips:
            raise ValueError(
                f"none of the {len(clips)} clips is as long as the {c.stage} stage's window of "
                f"{c.window_seconds} s{' with melody tokens' if needs_melody else ''}; "
                "use longer clips or a shorter window (--set model.window_seconds=...)"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def audio_tokens(self, clip: dict[str, torch.Tensor], start_seconds: float) -> torch.Tensor:
        """``[1, Qm]``: audio tokens of the MuLan window (they start every mulan_hop s) centred nearest the
        stage window that starts at ``start_seconds``."""
        centre = start_seconds + self.model.config.window_seconds / 2
        index = round(max(centre - self.mulan_window / 2, 0.0) / self.mulan_hop)
        return clip["mulan"][min(index, clip["mulan"].shape[0] - 1)][None]

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        clip, c = self.clips[key % len(self.clips)], self.model.config
        rng = np.random.default_rng(key)
        start = int(rng.integers(clip["semantic"].shape[-1] - self.sem_frames + 1))  # in semantic frames
        if "text" in clip and rng.random() < c.text_share:
            mulan = clip["text"][int(rng.integers(clip["text"].shape[0]))][None]
        else:
            mulan = self.audio_tokens(clip, start / c.semantic_rate)
        return self.window(clip, start, mulan)

    def window(
        self,
        clip: dict[str, torch.Tensor],
        start: int,
        mulan: torch.Tensor,
        semantic: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The item of the window from semantic frame ``start`` (both streams align), conditioned on
        MuLan tokens ``mulan [1, Qm]``; ``semantic [Fs]`` stands in for the clip's own S of the window."""
        c, model = self.model.config, self.model
        a0 = round(start * c.acoustic_rate / c.semantic_rate)
        if semantic is None:
            semantic = clip["semantic"][start : start + self.sem_frames]
        acoustic = clip["acoustic"][:, a0 : a0 + self.ac_frames]
        coarse, fine = (
            acoustic[: c.coarse_quantizers],
            acoustic[c.coarse_quantizers : c.coarse_quantizers + c.fine_quantizers],
        )
        if c.stage == "semantic":
            melody = None
            if c.melody_quantizers:
                melody = model.melody_windows(clip["melody"][None], start, self.melody_hop)
            prefix, codes = model.condition(mulan=mulan, melody=melody), semantic[None]
        elif c.stage == "coarse":
            prefix, codes = model.condition(mulan=mulan, semantic=semantic[None]), coarse
        else:
            prefix, codes = model.condition(coarse=coarse[None]), fine
        item = {"prefix": prefix[0], "codes": codes}
        if model.given:
            frames = codes.shape[-1]
            item["aligned"] = model.aligned(0, frames, semantic=semantic[None], coarse=coarse[None])[0]
        return item
