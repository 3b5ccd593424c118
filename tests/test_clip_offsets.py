"""Every reader of a manifest honours a clip's ``offset`` and ``duration``.

The file holds 3 s of a 220 Hz tone, then 5 s of a 440 Hz tone; the clip is the second part
(``offset`` 3 s, ``duration`` 5 s). A reader that starts at t = 0 or reads the whole file hears 220 Hz
or gives other tokens / embeddings than the same reader on a file holding only the second part.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from musiclm.audio import AudioError, read_clip
from musiclm.data.manifest import Clip, write_manifest
from musiclm.pipeline import SHIPPED_MODEL

RATE = 24000
ATTRS = {"families": ["strings"], "tempo_class": "slow", "mode": "major", "style": "chorale"}


def tone(freq: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def dominant_hz(wav: torch.Tensor, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    return float(np.argmax(spectrum) * rate / len(wav))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("offsets")
    sf.write(root / "two_tones.wav", np.concatenate([tone(220, 3), tone(440, 5)]), RATE)
    sf.write(root / "second_part.wav", tone(440, 5), RATE)
    clip = Clip(root / "two_tones.wav", duration=5.0, offset=3.0, captions=["a high tone"], attributes=ATTRS)
    alone = Clip(root / "second_part.wav", duration=5.0, captions=["a high tone"], attributes=ATTRS)
    return {
        "root": root,
        "clip": clip,
        "alone": alone,
        "manifest": write_manifest(root / "clip.jsonl", [clip]),
        "alone_manifest": write_manifest(root / "alone.jsonl", [alone]),
    }


def test_read_clip_reads_the_clip_and_never_past_its_end(files):
    wav = read_clip(files["clip"], RATE)
    assert wav.shape == (5 * RATE,) and dominant_hz(wav) == pytest.approx(440, abs=1)
    assert read_clip(files["clip"], RATE, start=4.0, seconds=3.0).shape == (RATE,)  # clamped to the clip
    with pytest.raises(AudioError, match="give times >= 0"):
        read_clip(files["clip"], RATE, start=-1.0)


def test_audio_crop_dataset(files):
    from musiclm.data.datasets import AudioCropDataset

    data = AudioCropDataset(files["manifest"], RATE, 1.0)
    assert all(dominant_hz(data[k]["audio"]) == pytest.approx(440, abs=2) for k in range(6))


def test_melody_pairs(files):
    from musiclm.mulan.melody import MelodyPairs

    clips = [Clip(files["clip"].path, 5.0, offset=3.0, attributes={"melody_group": g}) for g in "aabb"]
    pairs = MelodyPairs(clips, RATE, 4.0)
    item = pairs[3]
    assert dominant_hz(item["anchor"]) == pytest.approx(440, abs=1)
    assert dominant_hz(item["positive"]) == pytest.approx(440, abs=1)


def test_classifier_dataset(files):
    from musiclm.evaluation.classifier import ClassifierConfig, ClassifierDataset, labels_from_clips

    config = ClassifierConfig.preset("tiny", **labels_from_clips([files["clip"]]))
    wav = ClassifierDataset([files["clip"]], config, random=False)[0]["wav"]
    assert dominant_hz(wav, config.sample_rate) == pytest.approx(440, abs=1)


def test_evaluation_suite_reference_loading(files):
    from musiclm.data.skips import SkipLog
    from musiclm.evaluation import suite
    from musiclm.evaluation.prompts import Prompt, prompts_from_manifest

    assert dominant_hz(suite.load_clip(files["clip"], RATE, 2.0)) == pytest.approx(440, abs=1)
    skips = SkipLog(files["root"] / "s.jsonl")
    given = [
        suite.usable_clip(c, RATE, 2.0, skips)
        for c in suite.given_audio_paths(files["manifest"], [Prompt("x")])
    ]
    assert dominant_hz(given[0]) == pytest.approx(440, abs=1)
    prompt = prompts_from_manifest([files["clip"]], caption_set=None)[0]
    assert (prompt.reference, prompt.reference_offset) == (files["clip"].path, 3.0)


@pytest.fixture(scope="module")
def shipped():
    from musiclm.interfaces import load_component

    return {name: load_component(SHIPPED_MODEL / name) for name in ("codec", "semantic", "mulan", "melody")}


def test_mulan_eval_embeddings(files, shipped):
    from musiclm.mulan.evaluate import embed_clips

    clip = embed_clips(shipped["mulan"], [files["clip"]], 5.0)
    assert torch.allclose(clip, embed_clips(shipped["mulan"], [files["alone"]], 5.0), atol=1e-5)


def test_tokenize_job(files, shipped, tmp_path):
    from musiclm.stages.tokenize import tokenize_clips

    parts = [shipped[n] for n in ("codec", "semantic", "mulan", "melody")]
    tokenize_clips([files["clip"]], tmp_path / "clip", *parts, progress=False)
    tokenize_clips([files["alone"]], tmp_path / "alone", *parts, progress=False)
    got, want = (load_file(str(tmp_path / d / "shard-00000.safetensors")) for d in ("clip", "alone"))
    assert sorted(got) == sorted(want) and "0/melody" in got
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert got["0/semantic"].shape[-1] == 125  # 5 s at 25 Hz, not the file's 8 s


def test_semantic_fit_kmeans(files, tmp_path):
    from musiclm.cli.main import app
    from musiclm.semantic.w2vbert import W2VBert, W2VBertConfig

    torch.manual_seed(0)
    W2VBert(W2VBertConfig.preset("tiny")).save_pretrained(tmp_path / "w2v")
    result = CliRunner().invoke(
        app,
        [
            "semantic",
            "fit-kmeans",
            "--model",
            str(tmp_path / "w2v"),
            "--data",
            str(files["manifest"]),
            "--out",
            str(tmp_path / "km"),
            "--clusters",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    frames = int(re.search(r"\((\d+) frames", result.output).group(1))
    assert 120 <= frames <= 125  # the clip's 5 s at 25 Hz; the whole file would give 200
    assert json.loads((tmp_path / "km" / "config.json").read_text())["model_type"]
