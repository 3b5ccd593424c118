"""Training windows for the stages, cut from token shards (see :mod:`musiclm.stages.tokenize` and
:mod:`musiclm.stages.shards`)."""

from __future__ import annotations

import copy
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from musiclm.stages.stages import StageLM

OPEN_SHARDS = 32  # shard files a process keeps open between reads (a folder may hold thousands)


def shard_paths(directory: str | Path) -> list[str]:
    """The audio file of each clip, in :func:`load_shards`' order."""
    paths: list[str] = []
    for path in sorted(Path(directory).glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            paths += json.loads(f.metadata()["paths"])
    return paths


class TokenShards(Sequence[dict[str, torch.Tensor]]):
    """The clips of a token folder, read one at a time from the memory-mapped shards.

    ``shards[i]`` is clip ``i``'s ``{"semantic" [Fs], "acoustic" [Q, Fa], "mulan" [Wm, Qm], ["text"
    [C, Qm]], ["melody" [W, Qmel]]}`` as int32 (half of int64; the stored dtype, or int16 in a folder of
    :func:`~musiclm.stages.shards.pack_tokens`, which keeps the first acoustic levels only), read from its
    shard when asked; ``shapes[i]`` gives the same shapes from the shard headers alone, which is what
    choosing clips by length needs. Shards of older versions held one MuLan row per clip, ``[Qm]``: it reads
    as ``[1, Qm]``.

    A process keeps up to ``OPEN_SHARDS`` shard files open and opens its own after a fork or when pickled
    (DataLoader workers). Under ``torchrun`` every rank opens the whole folder, but that reads headers
    only: the Trainer's sampler gives each rank its own items, so a rank reads just the clips it trains on.
    """

    def __init__(self, directory: str | Path):
        files = sorted(Path(directory).glob("shard-*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no shard-*.safetensors in {directory}; run `musiclm tokenize` first")
        self.files = [str(path) for path in files]
        self.clips: list[tuple[int, str]] = []  # (file, key prefix) of each clip
        self.shapes: list[dict[str, tuple[int, ...]]] = []
        for n, path in enumerate(self.files):
            with safe_open(path, framework="pt") as f:
                shapes: dict[str, dict[str, tuple[int, ...]]] = {}
                for key in f.keys():
                    index, name = key.split("/")
                    shapes.setdefault(index, {})[name] = tuple(f.get_slice(key).get_shape())
            for index in sorted(shapes, key=int):
                mulan = shapes[index]["mulan"]
                shapes[index]["mulan"] = (math.prod(mulan[:-1]), mulan[-1])
                self.clips.append((n, index))
                self.shapes.append(shapes[index])
        self._open: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n, index = self.clips[i]
        f = self._file(n)
        clip = {name: f.get_tensor(f"{index}/{name}").to(torch.int32) for name in self.shapes[i]}
        clip["mulan"] = clip["mulan"].reshape(self.shapes[i]["mulan"])
        return clip

    def select(self, indices: Sequence[int]) -> TokenShards:
        """These clips only (a view on the same files)."""
        picked = copy.copy(self)
        picked.clips = [self.clips[i] for i in indices]
        picked.shapes = [self.shapes[i] for i in indices]
        picked._open = OrderedDict()
        return picked

    def _file(self, n: int):
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not its own
            self._open, self._pid = OrderedDict(), os.getpid()
        f = self._open.pop(n, None) or safe_open(self.files[n], framework="pt")
        self._open[n] = f  # most recently used last
        if len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)
        return f

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}


def load_shards(directory: str | Path) -> TokenShards:
    """Every clip of every shard in ``directory``, read lazily (see :class:`TokenShards`)."""
    return TokenShards(directory)


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
    ``clips`` is best a :class:`TokenShards`: clips are then chosen from the shard headers and an item
    reads its clip only, keeping it in int32 until the window is cut (items are int64). A stage that models
    more acoustic levels than the clips hold (a packed folder, for the fine stage) is refused.
    """

    def __init__(
        self,
        clips: TokenShards | Sequence[dict[str, torch.Tensor]],
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
        self.needs_melody = needs_melody = model.reads("melody")
        lazy = isinstance(clips, TokenShards)
        shapes = clips.shapes if lazy else [{k: tuple(v.shape) for k, v in clip.items()} for clip in clips]
        keep = [
            i
            for i, shape in enumerate(shapes)
            if shape["semantic"][-1] >= self.sem_frames
            and shape["acoustic"][-1] >= self.ac_frames
            and (not needs_melody or "melody" in shape)
        ]
        self.clips = clips.select(keep) if lazy else [clips[i] for i in keep]
        if not self.clips:
            raise ValueError(
                f"none of the {len(clips)} clips is as long as the {c.stage} stage's window of "
                f"{c.window_seconds} s{' with melody tokens' if needs_melody else ''}; "
                "use longer clips or a shorter window (--set model.window_seconds=...)"
            )
        levels = model.target.acoustic_levels
        held = min(shapes[i]["acoustic"][0] for i in keep)
        if held < levels:
            raise ValueError(
                f"the {c.stage} stage models acoustic levels 1-{levels}, and these clips hold "
                f"{held} (a folder packed by `musiclm pack-tokens --levels N` keeps the first N): train it "
                "from the folder they were packed from"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def audio_tokens(self, clip: dict[str, torch.Tensor], start_seconds: float) -> torch.Tensor:
        """``[1, Qm]`` int64: audio tokens of the MuLan window (they start every mulan_hop s) centred nearest
        the stage window that starts at ``start_seconds``."""
        centre = start_seconds + self.model.config.window_seconds / 2
        index = round(max(centre - self.mulan_window / 2, 0.0) / self.mulan_hop)
        return clip["mulan"][min(index, clip["mulan"].shape[0] - 1)][None].long()

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
        MuLan tokens ``mulan [1, Qm]``; ``semantic [Fs]`` stands in for the clip's own S of the window.
        The tokens are cut from the clip in its stored dtype, then made int64 (the window's alone)."""
        c, model = self.model.config, self.model
        a0 = round(start * c.acoustic_rate / c.semantic_rate)
        own_semantic = semantic is None
        if own_semantic:
            semantic = clip["semantic"][start : start + self.sem_frames]
        semantic, mulan = semantic.long(), mulan.long()
        acoustic = clip["acoustic"][:, a0 : a0 + self.ac_frames].long()
        coarse = acoustic[None, : c.coarse_quantizers]
        melody = None
        if self.needs_melody:
            melody = model.melody_windows(clip["melody"][None], start, self.melody_hop).long()
        prefix = model.condition(mulan=mulan, melody=melody, semantic=semantic[None], coarse=coarse)
        codes = model.target.cut({"semantic": semantic[None], "acoustic": acoustic})
        item = {"prefix": prefix[0], "codes": codes}
        if model.given:
            # the window's last frames look past it, as in generation (a stand-in S ends where it ends)
            if c.semantic_lookahead and own_semantic:
                semantic = clip["semantic"][start : start + self.sem_frames + c.semantic_lookahead].long()
            item["aligned"] = model.aligned(0, codes.shape[-1], semantic=semantic[None], coarse=coarse)[0]
        return item
