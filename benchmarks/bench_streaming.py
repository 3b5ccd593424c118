"""Streaming data: peak memory of tokenizing one long file, and of reading a token folder for `train stage`.

``tokenize``: a 10-minute file (clips of STREAMING_MANIFEST, by default the benchmarks' embedded build,
end to end) through ``tokenize_clips`` with the shipped parts (codec, semantic, MuLan, melody), whole
(``window_seconds=None``: the earlier behaviour) and in 30 s windows; then how the two token sets agree.
``shards``: a coarse ``small`` stage's StageDataset over STREAMING_TOKENS (by default that manifest's train
split, tokenized once into benchmarks/data) and over a folder of 10x its shards (links to them under new
names), drawing a few hundred items; read eagerly as int64 (what ``load_shards`` did before) and lazily
(:class:`~musiclm.stages.data.TokenShards`). Each figure is the peak resident set (VmHWM) of a fresh
process on one thread, which does only that; ``base`` is its peak before the measured step (imports,
parts or model), ``rss`` its resident set at the end.
Set BENCH_CONDITIONS to describe the machine's load (it is recorded with the figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BUILDS, embedded_manifest, record

SHIPPED = Path(__file__).parent.parent / "checkpoints" / "musiclm_small"
LONG_SECONDS = 600.0
RATE = 24000  # the long file's rate (the embedded clips')
ITEMS = 300
COPIES = 10


def memory_mib(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set. Not ru_maxrss: Linux carries the parent's
    peak into a child's at exec, so a child of a big process would report at least that."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child_tokenize(audio: str, out: str, window: str) -> dict:
    from musiclm.data.manifest import Clip
    from musiclm.interfaces import load_component
    from musiclm.stages.tokenize import tokenize_clips

    parts = [load_component(SHIPPED / name) for name in ("codec", "semantic", "mulan", "melody")]
    base = memory_mib()
    start = time.perf_counter()
    window_seconds = None if window == "whole" else float(window)
    tokenize_clips([Clip(path=Path(audio))], out, *parts, progress=False, window_seconds=window_seconds)
    return {"base_mib": base, "peak_mib": memory_mib(), "seconds": round(time.perf_counter() - start, 1)}


def eager_clips(folder: str) -> list[dict[str, torch.Tensor]]:
    """Every clip of every shard in memory as int64: what ``load_shards`` returned before TokenShards."""
    from safetensors import safe_open

    clips: list[dict[str, torch.Tensor]] = []
    for path in sorted(Path(folder).glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            items: dict[str, dict[str, torch.Tensor]] = {}
            for key in f.keys():
                index, name = key.split("/")
                items.setdefault(index, {})[name] = f.get_tensor(key).long()
        clips.extend(items[k] for k in sorted(items, key=int))
    for clip in clips:
        clip["mulan"] = clip["mulan"].reshape(-1, clip["mulan"].shape[-1])
    return clips


def child_shards(folder: str, mode: str) -> dict:
    from musiclm.stages import StageConfig, StageLM
    from musiclm.stages.data import StageDataset, dataset_options, load_shards
    from musiclm.stages.recipe import VOCAB_FIELDS
    from musiclm.stages.shards import read_meta

    meta = read_meta(folder)
    coarse = max(1, meta["num_quantizers"] // 3)
    config = StageConfig.for_stage(
        "coarse",
        "small",
        coarse_quantizers=coarse,
        fine_quantizers=meta["num_quantizers"] - coarse,
        **{k: meta[k] for k in VOCAB_FIELDS},
    )
    model = StageLM(config)
    base = memory_mib()
    start = time.perf_counter()
    data = StageDataset(
        load_shards(folder) if mode == "lazy" else eager_clips(folder), model, **dataset_options(meta)
    )
    opened = time.perf_counter() - start
    start = time.perf_counter()
    for key in np.random.default_rng(0).integers(0, 2**31, ITEMS):
        data[int(key)]
    return {
        "base_mib": base,
        "peak_mib": memory_mib(),
        "rss_mib": memory_mib("VmRSS"),
        "clips": len(data),
        "open_seconds": round(opened, 2),
        "items": ITEMS,
        "items_per_second": round(ITEMS / (time.perf_counter() - start), 1),
    }


def child(*args: str) -> dict:
    """Run one measurement in a fresh interpreter on one thread; its figures are the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_streaming", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def long_file(manifest: Path, path: Path) -> Path:
    """LONG_SECONDS of the manifest's clips, end to end, at RATE."""
    from musiclm.audio import load_audio, save_audio
    from musiclm.data.manifest import read_manifest

    pieces, total = [], 0
    for clip in read_manifest(manifest):
        pieces.append(load_audio(clip.path, RATE))
        total += pieces[-1].shape[-1]
        if total >= LONG_SECONDS * RATE:
            break
    return save_audio(path, torch.cat(pieces)[: round(LONG_SECONDS * RATE)], RATE)


def token_folder(manifest: Path) -> Path:
    if os.environ.get("STREAMING_TOKENS"):
        return Path(os.environ["STREAMING_TOKENS"])
    from musiclm.data.manifest import read_manifest
    from musiclm.interfaces import load_component
    from musiclm.stages.tokenize import tokenize_clips

    out = BUILDS / f"tokens_{manifest.parent.name}"
    clips = [c for c in read_manifest(manifest) if c.split == "train"]
    parts = [load_component(SHIPPED / name) for name in ("codec", "semantic", "mulan", "melody")]
    tokenize_clips(clips, out, *parts, progress=False)  # resumes: finished shards are kept
    return out


def copies(folder: Path, times: int, out: Path) -> Path:
    """A token folder of ``times`` x ``folder``'s shards: links to them under new shard numbers."""
    out.mkdir(parents=True)
    shards = sorted(folder.glob("shard-*.safetensors"))
    (out / "meta.json").write_text((folder / "meta.json").read_text())
    for n in range(times * len(shards)):
        (out / f"shard-{n:05d}.safetensors").symlink_to(shards[n % len(shards)].resolve())
    return out


def agreement(whole: Path, windowed: Path, audio: Path) -> dict:
    """How the windowed tokens of the long file compare with its whole-file tokens, and (for scale) how the
    whole-file tokens of excerpts compare with the long file's whole-file tokens at the same time."""
    from safetensors.torch import load_file

    from musiclm.audio import load_audio
    from musiclm.interfaces import load_component

    a = load_file(str(whole / "shard-00000.safetensors"))
    b = load_file(str(windowed / "shard-00000.safetensors"))
    out: dict = {
        f"{name}_equal": bool(torch.equal(a[f"0/{name}"], b[f"0/{name}"]))
        for name in ("acoustic", "mulan", "melody")
    }
    out["semantic_frames"] = [a["0/semantic"].shape[-1], b["0/semantic"].shape[-1]]
    out["semantic_agree"] = round((a["0/semantic"] == b["0/semantic"]).float().mean().item(), 3)
    semantic = load_component(SHIPPED / "semantic")
    wav, rate = load_audio(audio, semantic.sample_rate), semantic.frame_rate
    excerpts = {}
    for first, last in ((0, 30), (60, 120), (300, 330)):
        tokens = semantic.tokenize(wav[None, first * semantic.sample_rate : last * semantic.sample_rate])[0]
        same = tokens == a["0/semantic"][round(first * rate) : round(last * rate)]
        excerpts[f"{first}-{last}s"] = round(same.float().mean().item(), 3)
    out["semantic_agree_excerpt_whole_vs_file_whole"] = excerpts
    out["semantic_agree_windows_15s_apart"] = window_shift(semantic, wav[: 180 * semantic.sample_rate])
    return out


def window_shift(semantic, wav: torch.Tensor) -> dict:
    """How the windowed semantic tokens of ``wav`` agree with those of windows placed half a window later
    (from one window in, where both have audio on either side), without and with the context either side
    that ``SEMANTIC_CONTEXT`` sets: how much a token depends on where the windows fall."""
    from musiclm.stages.tokenize import SEMANTIC_CONTEXT, WINDOW_SECONDS, semantic_windows

    half = round(WINDOW_SECONDS / 2 * semantic.frame_rate)
    later = wav[round(WINDOW_SECONDS / 2 * semantic.sample_rate) :]
    out = {}
    for context in (0.0, SEMANTIC_CONTEXT):
        a = semantic_windows(wav, semantic, "cpu", WINDOW_SECONDS, context)
        b = semantic_windows(later, semantic, "cpu", WINDOW_SECONDS, context)
        out[f"context_{context:g}s"] = round((a[2 * half :] == b[half:]).float().mean().item(), 3)
    return out


def main() -> None:
    torch.set_num_threads(1)
    results: dict = {
        "conditions": os.environ.get("BENCH_CONDITIONS", ""),
        "niceness": os.nice(0),
        "load_average_before": os.getloadavg()[0],
        "threads": 1,
    }
    manifest = embedded_manifest("STREAMING_MANIFEST")
    tokens = token_folder(manifest)
    results["inputs"] = {"manifest": str(manifest), "tokens": str(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = long_file(manifest, tmp / "long.wav")
        tokenize = {
            "audio_seconds": LONG_SECONDS,
            "whole": child("tokenize", str(audio), str(tmp / "whole"), "whole"),
            "windows_30s": child("tokenize", str(audio), str(tmp / "windows"), "30"),
        }
        tokenize["tokens"] = agreement(tmp / "whole", tmp / "windows", audio)
        results["tokenize_10_min"] = tokenize
        many = copies(tokens, COPIES, tmp / "many")
        shards = {"shards": len(list(tokens.glob("shard-*.safetensors"))), "copies": COPIES}
        for mode in ("eager_int64", "lazy"):
            for name, folder in (("1x", tokens), (f"{COPIES}x", many)):
                shards[f"{mode}_{name}"] = child("shards", str(folder), mode.split("_")[0])
        results["train_stage_shards"] = shards
    results["load_average_after"] = os.getloadavg()[0]
    record("streaming", results)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        torch.set_num_threads(1)
        figures = {"tokenize": child_tokenize, "shards": child_shards}[sys.argv[1]](*sys.argv[2:])
        print(json.dumps(figures))
    else:
        main()
