"""Do the semantic tokens mean something? The trained tokenizer vs k-means on log-mel frames.

On held-out renders (split valid: probe training, split test: probe evaluation) of the embedded data:
- content: a linear probe (logistic regression on one-hot tokens) to each frame's pitch classes, from
  the MIDI that made the render: accuracy on the loudest pitch class (12-way) and micro-F1 of the
  set of sounding pitch classes, against chance and against the log-mel baseline;
- timbre invariance: token-histogram distance (1 - overlap) of melody pairs (the arrangement and its
  melody-only render, same ``melody_group``) vs different melodies on the same melody instrument;
- usage: perplexity of the token distribution and the fraction of clusters used;
- CPU time of training (from the ``/usr/bin/time -v`` log of the training run, if given).

Environment: SEMANTIC_TOKENIZER (tokenizer folder; default: the shipped model's), SEMANTIC_DATA (manifest;
default: a 1.5 h build made for the benchmarks in ``benchmarks/data``), SEMANTIC_TRAIN_LOG (optional),
SEMANTIC_RESULT (result name).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.common import embedded_manifest, record
from musiclm.pipeline import SHIPPED_MODEL

TOKENIZER = Path(os.environ.get("SEMANTIC_TOKENIZER", SHIPPED_MODEL / "semantic"))
TRAIN_LOG = Path(os.environ["SEMANTIC_TRAIN_LOG"]) if os.environ.get("SEMANTIC_TRAIN_LOG") else None
MAX_CLIPS = int(os.environ.get("SEMANTIC_MAX_CLIPS", "400"))
RESULT = os.environ.get("SEMANTIC_RESULT", "semantic")  # e.g. semantic_untrained for a control run


class MelKMeans:
    """The baseline: k-means on standardised 80-bin log-mel frames at 25 Hz, same cluster count."""

    def __init__(self, sample_rate: int, clusters: int):
        from musiclm.audio import MelSpectrogram

        self.sample_rate, self.clusters = sample_rate, clusters
        self.mel = MelSpectrogram(sample_rate, n_fft=2048, hop_length=sample_rate // 25, n_mels=80)

    def features(self, wav: torch.Tensor) -> np.ndarray:
        frames = round(25 * len(wav) / self.sample_rate)
        return self.mel(wav)[:, :frames].T.numpy()

    def fit(self, clips: list[torch.Tensor]) -> None:
        import faiss

        data = np.concatenate([self.features(w) for w in clips])
        self.mean, self.std = data.mean(0), data.std(0) + 1e-5
        self.kmeans = faiss.Kmeans(data.shape[1], self.clusters, niter=50, seed=0)
        self.kmeans.train(((data - self.mean) / self.std).astype(np.float32))

    def tokenize(self, wav: torch.Tensor) -> np.ndarray:
        feats = ((self.features(wav) - self.mean) / self.std).astype(np.float32)
        return self.kmeans.index.search(feats, 1)[1][:, 0]


def pitch_classes(midi_path: Path, frames: int) -> np.ndarray:
    """``[frames, 12]`` velocity-weighted chroma at 25 Hz of the pitched instruments."""
    import pretty_midi

    pretty_midi.pretty_midi.MAX_TICK = 1e10
    pm = pretty_midi.PrettyMIDI(str(midi_path))
    chroma = pm.get_chroma(fs=25).T[:frames]
    return np.pad(chroma, ((0, frames - len(chroma)), (0, 0)))


def probe(train_tokens, train_chroma, test_tokens, test_chroma, vocab: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def onehot(tokens):
        out = np.zeros((len(tokens), vocab), np.float32)
        out[np.arange(len(tokens)), tokens] = 1
        return out

    x_tr, x_te = onehot(train_tokens), onehot(test_tokens)
    y_tr, y_te = train_chroma.argmax(1), test_chroma.argmax(1)
    top = LogisticRegression(max_iter=300).fit(x_tr, y_tr)
    result = {"top_pc_accuracy": float((top.predict(x_te) == y_te).mean())}
    on_tr, on_te = train_chroma > 0, test_chroma > 0
    pred = np.stack(
        [
            LogisticRegression(max_iter=300).fit(x_tr, on_tr[:, k]).predict(x_te)
            if 0 < on_tr[:, k].mean() < 1
            else np.full(len(x_te), on_tr[0, k])
            for k in range(12)
        ],
        1,
    )
    result["pc_micro_f1"] = float(f1_score(on_te, pred, average="micro"))
    return result


def usage(tokens: np.ndarray, vocab: int) -> dict[str, float]:
    p = np.bincount(tokens, minlength=vocab) / len(tokens)
    nz = p[p > 0]
    return {"perplexity": float(np.exp(-(nz * np.log(nz)).sum())), "fraction_used": float((p > 0).mean())}


def histogram_distance(a: np.ndarray, b: np.ndarray, vocab: int) -> float:
    ha, hb = np.bincount(a, minlength=vocab) / len(a), np.bincount(b, minlength=vocab) / len(b)
    return float(1 - np.minimum(ha, hb).sum())


def timbre_gap(clips, tokens: dict[int, np.ndarray], vocab: int) -> dict[str, float]:
    by_group: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        if c.attributes.get("melody_group"):
            by_group.setdefault(c.attributes["melody_group"], []).append(i)
    same = [
        histogram_distance(tokens[a], tokens[b], vocab)
        for g in by_group.values()
        for a, b in itertools.combinations(g, 2)
    ]
    melody_only = [i for i, c in enumerate(clips) if c.attributes.get("is_melody")]
    diff = [
        histogram_distance(tokens[a], tokens[b], vocab)
        for a, b in itertools.combinations(melody_only, 2)
        if clips[a].attributes["programs"] == clips[b].attributes["programs"]
        and clips[a].attributes["melody_group"] != clips[b].attributes["melody_group"]
    ]
    if not same or not diff:
        return {"pairs_same_melody": len(same), "pairs_different_melody": len(diff)}
    return {
        "same_melody_distance": float(np.mean(same)),
        "different_melody_same_instrument_distance": float(np.mean(diff)),
        "gap": float(np.mean(diff) - np.mean(same)),
        "pairs_same_melody": len(same),
        "pairs_different_melody": len(diff),
    }


def training_cpu_seconds() -> float | None:
    if TRAIN_LOG is None or not TRAIN_LOG.is_file():
        return None
    text = TRAIN_LOG.read_text(errors="replace")
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    return float(user.group(1)) + float(system.group(1)) if user and system else None


def main() -> None:
    from musiclm.audio import load_audio
    from musiclm.data.manifest import read_manifest
    from musiclm.interfaces import load_component

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = load_component(TOKENIZER)
    sr, vocab = tokenizer.sample_rate, tokenizer.vocab_size
    data = embedded_manifest("SEMANTIC_DATA")
    clips = read_manifest(data)
    held = [c for c in clips if c.split in ("valid", "test") and c.midi is not None][:MAX_CLIPS]
    train = [c for c in clips if c.split == "train"]
    rng = np.random.default_rng(0)
    fit_clips = [load_audio(train[i].path, sr) for i in rng.permutation(len(train))[:100]]
    baseline = MelKMeans(sr, vocab)
    baseline.fit(fit_clips)

    audio = [load_audio(c.path, sr) for c in tqdm(held, desc="loading")]
    start = time.process_time()
    ours = {i: tokenizer.tokenize(w[None])[0].numpy() for i, w in enumerate(tqdm(audio, desc="tokenizing"))}
    tokenize_cpu = time.process_time() - start
    mel = {i: baseline.tokenize(w) for i, w in enumerate(audio)}
    chroma = {i: pitch_classes(c.midi, len(ours[i])) for i, c in enumerate(held)}

    def split_frames(tokens, split):
        idx = [i for i, c in enumerate(held) if c.split == split]
        t, y = np.concatenate([tokens[i] for i in idx]), np.concatenate([chroma[i] for i in idx])
        sounding = y.sum(1) > 0  # silent frames have no pitch class to predict
        return t[sounding], y[sounding]

    results: dict[str, object] = {
        "tokenizer": str(TOKENIZER),
        "data": str(data),
        "vocab_size": vocab,
        "held_out_clips": len(held),
        "layer": tokenizer.config.layer,
    }
    y_tr = split_frames(ours, "valid")[1]
    y_te = split_frames(ours, "test")[1]
    prior = np.bincount(y_tr.argmax(1), minlength=12) / len(y_tr)
    on_rate = (y_tr > 0).mean(0)
    # Chance: the majority pitch class; for F1, guessing each pitch class with its training rate.
    guess = rng.random(y_te.shape) < on_rate
    from sklearn.metrics import f1_score

    results["chance"] = {
        "top_pc_accuracy": float((y_te.argmax(1) == prior.argmax()).mean()),
        "pc_micro_f1": float(f1_score(y_te > 0, guess, average="micro")),
    }
    for name, tokens in (("w2vbert_kmeans", ours), ("logmel_kmeans", mel)):
        t_tr, c_tr = split_frames(tokens, "valid")
        t_te, c_te = split_frames(tokens, "test")
        all_tokens = np.concatenate(list(tokens.values()))
        results[name] = {
            **probe(t_tr, c_tr, t_te, c_te, vocab),
            **usage(all_tokens, vocab),
            **timbre_gap(held, tokens, vocab),
        }
    results["probe_frames"] = {"valid": int(len(y_tr)), "test": int(len(y_te))}
    results["tokenize_cpu_s_per_audio_s"] = tokenize_cpu / sum(len(w) / sr for w in audio)
    results["training_cpu_seconds"] = training_cpu_seconds()
    record(RESULT, results)


if __name__ == "__main__":
    main()
