"""How far MuLan's text side carries an attribute from the training wording to the held-out wording.

The stages are conditioned on text at inference, and a caption in the training wording conditions them
well while a held-out wording does not (``checkpoints/musiclm_small/mulan/README.md``). This measures
where the loss happens, with text alone (no audio, about two minutes on 2 cores):

- **sentence probes**: logistic regressions trained on training-wording captions of train clips and tested
  on held-out-wording captions of test clips, on the frozen text encoder's mean-pooled features and on
  MuLan's projected text embedding;
- **word probes**: each held-out word of an attribute (``musiclm.data.captions.WORDS``), embedded alone,
  given the value whose training words' mean embedding is nearest.

TEXT_WORDING_DATA names a manifest (its rendered clips' attributes draw the captions; default: the
benchmarks' own build); TEXT_WORDING_MULAN a MuLan folder (default: the shipped one).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from benchmarks.common import embedded_manifest, record, repo_relative

ATTRIBUTES = ("mode", "tempo_class")
# each group: the values of one attribute as the caption word tables name them
WORD_GROUPS = {
    "tempo": ("slow", "medium", "fast"),
    "mode": ("major", "minor"),
    "register": ("low", "high"),
    "articulation": ("plucked", "sustained"),
    "density": ("one line", "many voices"),
}


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from musiclm.data.captions import WORDS, caption_from_attributes
    from musiclm.data.manifest import read_manifest
    from musiclm.mulan.model import MuLan
    from musiclm.pipeline import SHIPPED_MODEL

    manifest = embedded_manifest("TEXT_WORDING_DATA")
    folder = os.environ.get("TEXT_WORDING_MULAN") or SHIPPED_MODEL / "mulan"
    mulan = MuLan.from_pretrained(folder).eval()
    clips = [c for c in read_manifest(manifest, check_files=False) if c.attributes]
    rng = np.random.default_rng(0)

    def captions(split: str, per_clip: int) -> list[tuple[str, dict]]:
        drawn = [
            (caption_from_attributes(c.attributes, rng), c.attributes) for c in clips if c.split == split
        ]
        return [(text, attrs) for _ in range(per_clip) for text, attrs in drawn if text]

    @torch.no_grad()
    def features(texts: list[str], projected: bool) -> np.ndarray:
        embed = mulan.embed_text if projected else mulan.pooled_text
        return torch.cat([embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]).numpy()

    train, test = captions("train", 2), captions("test", 4)
    sentence = {}
    for name, projected in (("text encoder (frozen, mean-pooled)", False), ("MuLan text embedding", True)):
        x_train, x_test = (features([t for t, _ in rows], projected) for rows in (train, test))
        sentence[name] = {}
        for attribute in ATTRIBUTES:
            y_train, y_test = ([a[attribute] for _, a in rows] for rows in (train, test))
            probe = LogisticRegression(max_iter=2000).fit(x_train, y_train)
            sentence[name][attribute] = {
                "training wording": round(probe.score(x_train, y_train), 3),
                "held-out wording": round(probe.score(x_test, y_test), 3),
            }

    @torch.no_grad()
    def pooled(words: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(mulan.pooled_text(words), dim=-1)

    words = {}
    for group, values in WORD_GROUPS.items():
        centroids = torch.stack([pooled(WORDS["train"][v]).mean(0) for v in values])
        nearest = {v: (pooled(WORDS["heldout"][v]) @ centroids.T).argmax(-1).tolist() for v in values}
        right = [values[p] == v for v, picks in nearest.items() for p in picks]
        words[group] = {"right": int(sum(right)), "words": len(right), "chance": round(1 / len(values), 3)}
    record(
        "text_wording",
        {
            "manifest": repo_relative(manifest),
            "mulan": repo_relative(folder),
            "captions": {"train (training wording)": len(train), "test (held-out wording)": len(test)},
            "sentence_probes": sentence,
            "word_probes": words,
        },
    )
