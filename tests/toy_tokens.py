"""A token folder of random tokens, laid out as `musiclm tokenize` writes one, for the tests that train a
stage from tokens without tokenizing audio (it imports only what the GPU machines have)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from musiclm.stages.shards import write_shard

META = {
    "num_quantizers": 6,
    "codebook_size": 32,
    "acoustic_rate": 50.0,
    "semantic_vocab": 16,
    "semantic_rate": 25.0,
    "mulan_quantizers": 3,
    "mulan_codebook": 16,
    "melody_quantizers": 0,
    "melody_codebook": 8,
    "melody_hop": 3.0,
    "mulan_hop": 2.0,
    "mulan_window": 10.0,
}


def token_folder(folder: Path, clips: int = 4, seconds: int = 3) -> Path:
    """A token folder laid out as `musiclm tokenize` writes one (two shards), of random tokens."""
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    for shard in range(2):
        tensors, paths = {}, []
        for i in range(clips // 2):
            tensors[f"{i}/semantic"] = torch.randint(0, 16, (25 * seconds,), generator=g)
            tensors[f"{i}/acoustic"] = torch.randint(0, 32, (6, 50 * seconds), generator=g)
            tensors[f"{i}/mulan"] = torch.randint(0, 16, (1, 3), generator=g)
            tensors[f"{i}/text"] = torch.randint(0, 16, (2, 3), generator=g)
            paths.append(f"clip{shard}-{i}.wav")
        write_shard(folder / f"shard-{shard:05d}.safetensors", tensors, {"paths": json.dumps(paths)})
    (folder / "meta.json").write_text(json.dumps(META))
    return folder
