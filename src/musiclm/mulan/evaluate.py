"""MuLan and melody-embedding evaluation on held-out clips (works never seen in training).

* retrieval both ways (text->audio, audio->text): R@1/5/10 and median rank;
* zero-shot classification per attribute by ranking label prompts, against chance and the majority class,
  once with the wording of the training captions and once with the held-out synonyms (never trained on);
* cosine between embeddings and their RVQ reconstruction;
* melody: retrieving a melody's arrangement from its hummed version among N candidates.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musiclm.attributes import HEAD_ATTRIBUTE
from musiclm.audio import centre_crop, loudness_normalize, read_clip
from musiclm.data.manifest import Clip, read_manifest
from musiclm.mulan.melody import clip_attr
from musiclm.progress import tqdm

# Label prompts: "train" wording matches the training captions' synonyms, "heldout" wording never occurs
# in training captions (musiclm.data.captions keeps the two vocabularies disjoint).
FAMILY_TEMPLATES = {"train": "music played on {}", "heldout": "a recording featuring {}"}


def held_out_clips(manifests: list[Path], split: str) -> list[Clip]:
    clips = [c for m in manifests for c in read_manifest(m) if c.split == split]
    if not clips:
        raise ValueError(
            f"no clips of split {split!r} in {[str(m) for m in manifests]}; try --split valid or test"
        )
    return clips


@torch.no_grad()
def embed_clips(model: Any, clips: list[Clip], max_seconds: float, batch_size: int = 8) -> torch.Tensor:
    """MuLan audio embeddings of the first ``max_seconds`` of each clip (windows averaged)."""
    out = []
    for i in tqdm(range(0, len(clips), batch_size), desc="embed audio", leave=False):
        wavs = [read_clip(c, model.sample_rate, seconds=max_seconds) for c in clips[i : i + batch_size]]
        length = max(w.shape[-1] for w in wavs)
        batch = torch.stack([F.pad(w, (0, length - w.shape[-1])) for w in wavs])
        out.append(model.embed_audio(batch).cpu())
    return torch.cat(out)


def retrieval(query: torch.Tensor, keys: torch.Tensor) -> dict[str, float]:
    """The i-th query's match is the i-th key; ranks start at 1."""
    sims = query @ keys.T
    ranks = (sims > sims.diag()[:, None]).sum(1) + 1
    return {
        **{f"R@{k}": float((ranks <= k).float().mean()) for k in (1, 5, 10)},
        "median_rank": float(ranks.float().median()),
        "candidates": len(keys),
    }


def _prompts(attribute: str, label: str, wording: str) -> list[str]:
    from musiclm.data.captions import STYLE_WORDS, WORDS

    if attribute == "families":
        return [FAMILY_TEMPLATES[wording].format(label)]
    words = STYLE_WORDS[wording] if attribute == "style" else WORDS[wording]
    return [f"{w} music" if attribute != "style" else f"a {w}" for w in words.get(label, [label])]


@torch.no_grad()
def zero_shot(
    model: Any, audio: torch.Tensor, clips: list[Clip], wording: str
) -> dict[str, dict[str, float]]:
    results = {}
    for attribute in HEAD_ATTRIBUTE.values():
        truths = [clip_attr(c, attribute) for c in clips]
        truths = [set(t) if isinstance(t, list) else ({t} if t is not None else set()) for t in truths]
        labels = sorted(set().union(*truths))
        if len(labels) < 2:
            continue
        prompts = torch.stack(
            [
                F.normalize(model.embed_text(_prompts(attribute, lab, wording)).mean(0), dim=-1)
                for lab in labels
            ]
        )
        pred = (audio @ prompts.cpu().T).argmax(1)
        keep = [i for i, t in enumerate(truths) if t]
        correct = [labels[int(pred[i])] in truths[i] for i in keep]
        counts = Counter(lab for i in keep for lab in truths[i])
        results[attribute] = {
            "accuracy": float(np.mean(correct)),
            # a random label is right with probability |true labels| / |labels| (several families per clip)
            "chance": float(np.mean([len(truths[i]) / len(labels) for i in keep])),
            "majority": counts.most_common(1)[0][1] / len(keep),
            "labels": len(labels),
            "clips": len(keep),
        }
    return results


def quantization_cosine(model: Any, embeddings: torch.Tensor) -> dict[str, float]:
    recon = model.dequantize(model.quantize(embeddings)).cpu()
    cos = F.cosine_similarity(embeddings, recon, dim=-1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


@torch.no_grad()
def evaluate_mulan(
    model: Any, manifests: list[Path], split: str = "test", max_seconds: float = 30.0
) -> dict[str, Any]:
    clips = [c for c in held_out_clips(manifests, split) if c.captions]
    audio = embed_clips(model, clips, max_seconds)
    text = torch.cat(
        [model.embed_text([c.captions[0]]).cpu() for c in tqdm(clips, desc="embed text", leave=False)]
    )
    result: dict[str, Any] = {
        "split": split,
        "clips": len(clips),
        "text_to_audio": retrieval(text, audio),
        "audio_to_text": retrieval(audio, text),
        "zero_shot_train_wording": zero_shot(model, audio, clips, "train"),
        "zero_shot_heldout_wording": zero_shot(model, audio, clips, "heldout"),
    }
    if bool(model.rvq.fitted):
        result["rvq_cosine_audio"] = quantization_cosine(model, audio)
        result["rvq_cosine_text"] = quantization_cosine(model, text)
        result["token_agreement"] = token_agreement(model, centre_windows(model, clips), text)
    return result


def centre_windows(model: Any, clips: list[Clip], batch_size: int = 16) -> torch.Tensor:
    """MuLan audio embeddings of each clip's middle window alone, loudness-normalised: audio as the stages'
    training tokens are taken (one window, not the average over a clip's windows, whose mean embedding lies
    about twice as far from the origin)."""
    length = round(model.window_seconds * model.sample_rate)
    out = []
    for i in range(0, len(clips), batch_size):
        windows = []
        for clip in clips[i : i + batch_size]:
            middle = centre_crop(read_clip(clip, model.sample_rate), length)
            windows.append(loudness_normalize(middle, model.sample_rate))
        out.append(model.embed_audio(torch.stack(windows)).cpu())
    return torch.cat(out)


def token_agreement(model: Any, window_audio: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """How often a caption's first-level token is its own clip's window token (``own``) or the next clip's
    (``other``, the chance level): the stages learn from window audio tokens what a token means, and
    inference gives them text tokens."""
    audio_tokens, text_tokens = model.quantize(window_audio)[:, 0].cpu(), model.quantize(text)[:, 0].cpu()
    return {
        "own": float((text_tokens == audio_tokens).float().mean()),
        "other": float((text_tokens == audio_tokens.roll(1)).float().mean()),
    }


@torch.no_grad()
def evaluate_melody(
    embedder: Any, manifests: list[Path], split: str = "test", seconds: float = 12.0, seed: int = 0
) -> dict[str, Any]:
    """Each hummed clip is a query; the candidates are the arrangements of every held-out melody group.
    A clip's embedding is the mean of its window embeddings over its first ``seconds``."""
    clips = held_out_clips(manifests, split)
    hummed: dict[Any, Clip] = {}
    arranged: dict[Any, Clip] = {}
    for c in clips:
        group = clip_attr(c, "melody_group")
        if group is not None:
            (hummed if clip_attr(c, "is_melody") else arranged).setdefault(group, c)
    groups = sorted(set(hummed) & set(arranged), key=str)
    if len(groups) < 2:
        raise ValueError(
            f"split {split!r} has {len(groups)} melody group(s) with both a hummed and an arranged clip; "
            "need 2+"
        )

    def embed(c: Clip) -> torch.Tensor:
        wav = read_clip(c, embedder.sample_rate, seconds=seconds)
        return F.normalize(embedder.embed(wav[None])[0].mean(0), dim=-1).cpu()

    queries = torch.stack([embed(hummed[g]) for g in tqdm(groups, desc="melody", leave=False)])
    keys = torch.stack([embed(arranged[g]) for g in groups])
    full = retrieval(queries, keys)
    # Among N = 10 candidates (the true one and 9 random others), as a fixed-difficulty figure.
    rng = np.random.default_rng(seed)
    n = min(10, len(groups))
    hits = []
    sims = queries @ keys.T
    for i in range(len(groups)):
        others = rng.choice([j for j in range(len(groups)) if j != i], n - 1, replace=False)
        hits.append(bool(sims[i, i] > sims[i, others].max()))
    return {
        "split": split,
        "groups": len(groups),
        f"accuracy_among_{n}": float(np.mean(hits)),
        "chance": 1 / n,
        f"accuracy_among_all_{len(groups)}": full["R@1"],
        "median_rank": full["median_rank"],
    }
