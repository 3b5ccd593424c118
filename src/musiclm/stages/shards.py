"""The token folder that ``musiclm tokenize`` writes and ``musiclm train stage`` reads, and its compact copy.

A folder holds ``meta.json`` (the parts' vocabularies and rates), ``mulan_codebooks.safetensors`` (the code
vectors of the MuLan whose tokens it holds) and ``shard-NNNNN.safetensors`` files (their tensors: see
:mod:`musiclm.stages.tokenize`). :func:`pack_tokens` copies a folder with int16 tensors and only the acoustic
levels the coarse stage models, small enough to travel to a GPU machine with the repository. This module
needs torch and safetensors alone: training from tokens runs where the audio stack is not installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from musiclm.files import atomic_write, write_text_atomic

META_FILE = "meta.json"
# the code vectors of the MuLan whose tokens the shards hold: "codebook" stages embed its tokens by them
CODEBOOKS_FILE = "mulan_codebooks.safetensors"
# meta.json of a packed folder: how many acoustic levels its shards keep (absent: all the codec's)
PACKED_LEVELS = "acoustic_levels"


def read_meta(directory: str | Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a token folder written by `musiclm tokenize`"
        )
    return json.loads(path.read_text())


def same_parts(meta: dict, other: dict) -> bool:
    """Whether two folders' ``meta.json`` name the same parts, however many acoustic levels each keeps."""
    return {k: v for k, v in meta.items() if k != PACKED_LEVELS} == {
        k: v for k, v in other.items() if k != PACKED_LEVELS
    }


def coarse_levels(num_quantizers: int) -> int:
    """The RVQ levels the coarse stage models by default: the first third (the paper's 4 of 12)."""
    return max(1, num_quantizers // 3)


def codebooks_mulan(directory: str | Path) -> str | None:
    """Fingerprint of the MuLan whose tokens a token folder holds (None: a folder made before it was kept)."""
    path = Path(directory) / CODEBOOKS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("mulan")


def read_codebooks(directory: str | Path) -> torch.Tensor:
    """``[Q, K, D]`` code vectors of the MuLan whose tokens a token folder holds."""
    path = Path(directory) / CODEBOOKS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {CODEBOOKS_FILE} (token folders made before it was written lack it): add it "
            "with `musiclm tokenize --refresh-mulan --data MANIFEST --out FOLDER --mulan MULAN`, naming the "
            "MuLan the tokens were made with"
        )
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("codebooks")


def write_shard(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], dtype: torch.dtype = torch.int32
) -> None:
    """Write atomically: a shard that exists is complete."""
    with atomic_write(path) as tmp:
        save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


class Packed(NamedTuple):
    shards: int
    source_bytes: int  # of the shards
    packed_bytes: int


def pack_tokens(source: str | Path, out: str | Path, levels: int | None = None) -> Packed:
    """Copy token folder ``source`` to ``out`` with int16 tensors and the first ``levels`` acoustic levels
    (default: the coarse stage's, :func:`coarse_levels`). The semantic and coarse stages train from the copy
    as from the source, from a fifth of the bytes (20 h of audio: 40 MB); the fine stage needs every level and
    refuses it. A token int16 cannot hold (a vocabulary over 32,768) is an error naming its shard."""
    source, out = Path(source), Path(out)
    meta = read_meta(source)
    stored = meta.get(PACKED_LEVELS, meta["num_quantizers"])
    levels = coarse_levels(meta["num_quantizers"]) if levels is None else levels
    if not 1 <= levels <= stored:
        raise ValueError(f"levels must be in 1..{stored} (the acoustic levels {source} holds), got {levels}")
    if source.resolve() == out.resolve():
        raise ValueError(f"pack {source} into another folder, not into itself")
    # the stages' vocabularies follow the codec's num_quantizers, which stays; the shards say what they keep
    packed_meta = {**meta, PACKED_LEVELS: levels}
    if (out / META_FILE).is_file() and read_meta(out) != packed_meta:
        raise ValueError(f"{out} holds other tokens ({out / META_FILE} differs); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    limit = torch.iinfo(torch.int16).max
    shards = sorted(source.glob("shard-*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            metadata, tensors = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        for key, tensor in tensors.items():
            if tensor.numel() and int(tensor.max()) > limit:
                raise ValueError(
                    f"{shard.name} {key} holds token {int(tensor.max())}, which int16 cannot hold (at most "
                    f"{limit}): keep this folder unpacked"
                )
            if key.endswith("/acoustic"):
                tensors[key] = tensor[:levels]
        write_shard(out / shard.name, tensors, metadata, torch.int16)
    if (source / CODEBOOKS_FILE).is_file():
        shutil.copyfile(source / CODEBOOKS_FILE, out / CODEBOOKS_FILE)
    write_text_atomic(out / META_FILE, json.dumps(packed_meta, indent=2) + "\n")
    return Packed(
        len(shards),
        sum(s.stat().st_size for s in shards),
        sum((out / s.name).stat().st_size for s in shards),
    )
