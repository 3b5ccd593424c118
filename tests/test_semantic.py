"""Semantic tokens: w2v-BERT (shapes, training, paper size), the k-means tokenizer at exactly 25 Hz,
the HF adapters with tiny hand-made configs, bad input, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from musiclm.audio import AudioError, resample, save_audio
from musiclm.config import ConfigError
from musiclm.interfaces import SemanticTokenizer, load_component
from musiclm.semantic.tokenizer import KMeansTokenizer
from musiclm.semantic.w2vbert import W2VBert, W2VBertConfig
from musiclm.training import TrainConfig, Trainer

SR = 16000


def tone(seconds: float, freq: float, seed: int = 0) -> torch.Tensor:
    """A harmonic note with a little noise: enough structure for features to differ by pitch."""
    t = torch.arange(int(seconds * SR)) / SR
    wav = sum(torch.sin(2 * torch.pi * freq * k * t) / k for k in (1, 2, 3))
    return 0.3 * wav + 0.01 * torch.randn(len(t), generator=torch.Generator().manual_seed(seed))


def melody(seconds: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    notes = [tone(0.25, 220 * 2 ** (rng.integers(0, 12) / 12), seed + i) for i in range(int(seconds * 4))]
    return torch.cat(notes)


class Melodies(torch.utils.data.Dataset):
    def __init__(self, n: int = 8, seconds: float = 2.0):
        self.clips = [melody(seconds, seed) for seed in range(n)]

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, key):
        return {"audio": self.clips[key % len(self)]}


@pytest.fixture(scope="module")
def tiny_model() -> W2VBert:
    torch.manual_seed(0)
    return W2VBert(W2VBertConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> KMeansTokenizer:
    tok = KMeansTokenizer.on(tiny_model, layer=2, num_clusters=16)
    tok.fit_kmeans([melody(3.0, seed) for seed in range(6)], seed=0)
    return tok


def test_paper_preset_has_about_600m_parameters():
    with torch.device("meta"):
        model = W2VBert(W2VBertConfig.preset("paper"))
    count = sum(p.numel() for p in model.parameters())
    assert 550e6 < count < 650e6, count
    assert model.num_layers == 24 and model.frame_rate == 25


def test_hidden_states_are_25hz(tiny_model):
    states = tiny_model.hidden_states(torch.randn(2, SR))
    assert len(states) == tiny_model.num_layers + 1
    assert all(s.shape == (2, 25, tiny_model.config.dim) for s in states)


def test_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = W2VBert(W2VBertConfig.preset("tiny", dropout=0.0))
    config = TrainConfig(
        steps=25,
        batch_size=4,
        lr=3e-3,
        warmup_steps=4,
        log_every=1,
        ckpt_every=1000,
        progress=False,
        device="cpu",
    )
    trainer = Trainer(model, Melodies(seconds=1.5), config, tmp_path)
    trainer.fit()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:2]), losses
    # The contrastive module beats chance: picking the target among 1 + K candidates at random.
    contrastive = [h["contrastive"] for h in trainer.history if "contrastive" in h]
    assert np.mean(contrastive[-5:]) < 0.7 * np.log(model.config.num_distractors + 1), contrastive
    assert {"contrastive", "mlm", "diversity"} <= set(trainer.history[-1])
    reloaded = load_component(tmp_path)
    assert isinstance(reloaded, W2VBert)
    wav = melody(1.0, 99)[None]
    torch.testing.assert_close(reloaded.layer_features(wav, 2), model.eval().layer_features(wav, 2))


@pytest.mark.parametrize("samples", [SR, 12345, 7001, 333, 48000 + 319])
def test_exactly_25_tokens_a_second(tokenizer, samples):
    wav = torch.cat([melody(4.0, 7), melody(4.0, 8)])[:samples]
    tokens = tokenizer.tokenize(torch.stack([wav, 0.5 * wav]))
    assert tokens.shape == (2, round(25 * samples / SR)) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < tokenizer.vocab_size


def test_tokens_follow_the_pitch(tokenizer):
    low, high = tokenizer.tokenize(torch.stack([tone(2.0, 220.0), tone(2.0, 440.0)]))
    louder = tokenizer.tokenize(2 * tone(2.0, 220.0)[None])[0]
    assert set(low.tolist()) != set(high.tolist())
    assert (low == louder).float().mean() > (low == high).float().mean()


def test_tokenizer_is_one_folder(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_component(tmp_path / "tok")
    assert isinstance(loaded, SemanticTokenizer)
    assert (loaded.sample_rate, loaded.frame_rate, loaded.vocab_size) == (SR, 25.0, 16)
    wav = melody(2.0, 42)[None]
    assert torch.equal(loaded.tokenize(wav), tokenizer.tokenize(wav))


def test_bad_input(tokenizer, tmp_path):
    with pytest.raises(AudioError, match="shorter than one 25 Hz token"):
        tokenizer.tokenize(torch.randn(1, 100))
    with pytest.raises(AudioError, match="silent"):
        tokenizer.tokenize(torch.stack([melody(1.0, 1), torch.zeros(SR)]))
    bad = melody(1.0, 1)
    bad[100] = float("nan")
    with pytest.raises(AudioError):
        tokenizer.tokenize(bad[None])
    # A k-means file of another model's feature size names both sizes.
    other = KMeansTokenizer.on(W2VBert(W2VBertConfig.preset("tiny", dim=48)), layer=1, num_clusters=16)
    other.save_kmeans(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match=r"dimension 48 .* dimension 32"):
        tokenizer.load_kmeans(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match="out of range"):
        KMeansTokenizer.on(tokenizer.backbone, layer=9, num_clusters=16)


def _hf_backbones():
    from transformers import HubertConfig, HubertModel, Wav2Vec2BertConfig, Wav2Vec2BertModel

    from musiclm.semantic.adapters import HFHubert, HFWav2Vec2Bert

    torch.manual_seed(0)
    w2v = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_depthwise_kernel_size=3,
        feature_projection_input_dim=160,
    )
    hubert = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 64),
        conv_kernel=(10, 64),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_normalize=True,
    )
    return [(HFWav2Vec2Bert, Wav2Vec2BertModel(w2v)), (HFHubert, HubertModel(hubert))]


@pytest.mark.parametrize("index", [0, 1], ids=["wav2vec2bert", "hubert"])
def test_hf_adapters(index, tmp_path):
    adapter, hf_model = _hf_backbones()[index]
    hf_model.save_pretrained(tmp_path / "hf")  # a user's local weights folder
    backbone = adapter.from_hf_pretrained(tmp_path / "hf")
    tok = KMeansTokenizer.on(backbone, layer=2, num_clusters=8)
    tok.fit_kmeans([melody(2.0, seed) for seed in range(4)])
    for samples in (SR, 12345, 7001):
        assert tok.tokenize(melody(2.0, 5)[:samples][None]).shape == (1, round(25 * samples / SR))
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_component(tmp_path / "tok")
    assert (
        json.loads((tmp_path / "tok" / "config.json").read_text())["config"]["backbone"]
        == tok.config.backbone
    )
    wav = melody(1.5, 9)[None]
    assert torch.equal(loaded.tokenize(wav), tok.tokenize(wav))


def test_cli_fit_kmeans_and_tokenize(tiny_model, tmp_path):
    from musiclm.cli.main import app

    tiny_model.save_pretrained(tmp_path / "w2v")
    lines = []
    for i in range(4):
        save_audio(tmp_path / f"{i}.wav", resample(melody(3.0, i), SR, 24000), 24000)  # the commands resample
        lines.append(json.dumps({"path": f"{i}.wav", "split": "train"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "semantic",
            "fit-kmeans",
            "--model",
            str(tmp_path / "w2v"),
            "--data",
            str(tmp_path / "m.jsonl"),
            "--out",
            str(tmp_path / "tok"),
            "--clusters",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "semantic",
            "tokenize",
            str(tmp_path / "1.wav"),
            "--out",
            str(tmp_path / "t.npy"),
            "--tokenizer",
            str(tmp_path / "tok"),
        ],
    )
    assert result.exit_code == 0, result.output
    tokens = np.load(tmp_path / "t.npy")
    assert tokens.shape == (75,) and tokens.max() < 8


def test_cli_train(tmp_path):
    from musiclm.cli.main import app

    for i in range(2):
        save_audio(tmp_path / f"{i}.wav", melody(3.0, i), SR)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": f"{i}.wav"}) + "\n" for i in range(2)))
    args = [
        "train",
        "w2vbert",
        "--data",
        str(tmp_path / "m.jsonl"),
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--crop-seconds",
        "1",
        "--device",
        "cpu",
        "--set",
        "log_every=1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [h for h in history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in steps)
    model = load_component(tmp_path / "run")
    assert isinstance(model, W2VBert) and model.hidden_states(melody(1.0, 5)[None])[-1].shape[:2] == (1, 25)
    # a rerun finds the run finished and trains no further
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"loss"') == 3


# ---------------------------------------------------------------- note-aware tokens and the probe
BP_SR = 22050


@pytest.fixture(scope="module")
def basic_pitch_tokenizer() -> KMeansTokenizer:
    from musiclm.semantic.tokenizer import build_backbone

    tok = KMeansTokenizer.on(build_backbone("basic_pitch", {}), layer=0, num_clusters=16, standardize=False)
    tok.fit_kmeans([resample(melody(3.0, seed), SR, BP_SR) for seed in range(4)], seed=0)
    return tok


@pytest.mark.parametrize("seconds", [1.0, 2.3])
def test_basic_pitch_tokens_are_25hz(basic_pitch_tokenizer, seconds):
    wav = resample(torch.stack([melody(3.0, 5), melody(3.0, 6)]), SR, BP_SR)[:, : int(seconds * BP_SR)]
    tokens = basic_pitch_tokenizer.tokenize(wav)
    assert tokens.shape == (2, round(25 * wav.shape[-1] / BP_SR)) and tokens.dtype == torch.long


def test_basic_pitch_tokens_tell_notes_apart(basic_pitch_tokenizer, tmp_path):
    low, high = basic_pitch_tokenizer.tokenize(
        resample(torch.stack([tone(1.0, 220.0), tone(1.0, 330.0)]), SR, BP_SR)
    )
    # the middle of each note, away from its onset
    assert not set(low[5:20].tolist()) & set(high[5:20].tolist())
    basic_pitch_tokenizer.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())["config"]
    assert config["backbone"] == "basic_pitch" and len(config["backbone_config"]["sha256"]) == 64
    wav = resample(melody(1.5, 9), SR, BP_SR)[None]
    assert torch.equal(load_component(tmp_path / "tok").tokenize(wav), basic_pitch_tokenizer.tokenize(wav))


def scored_clips(directory, count: int, split: str, seed: int) -> list:
    """Clips whose score is known: random one-note-at-a-time tunes as MIDI, and their audio synthesised."""
    import pretty_midi

    from musiclm.data.manifest import Clip

    rate, rng, clips = 24000, np.random.default_rng(seed), []
    for i in range(count):
        pm, wav = pretty_midi.PrettyMIDI(), []
        instrument = pretty_midi.Instrument(program=0)
        for n in range(12):
            pitch = int(rng.integers(57, 72))
            instrument.notes.append(pretty_midi.Note(90, pitch, n * 0.25, (n + 1) * 0.25))
            wav.append(tone(0.25, float(pretty_midi.note_number_to_hz(pitch)), seed * 100 + i * 12 + n))
        pm.instruments.append(instrument)
        pm.write(str(directory / f"{split}{i}.mid"))
        save_audio(directory / f"{split}{i}.wav", resample(torch.cat(wav), SR, rate), rate)
        clips.append(
            Clip(directory / f"{split}{i}.wav", 3.0, rate, split=split, midi=directory / f"{split}{i}.mid")
        )
    return clips


class LoudnessTokenizer:
    """Tokens that hear how loud a frame is and nothing of its pitch: the probe's blind reference."""

    sample_rate, frame_rate, vocab_size = SR, 25.0, 8

    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav.reshape(len(wav), -1, SR // 25)
        return (frames.square().mean(-1).sqrt() * 40).long().clamp(0, self.vocab_size - 1)


def test_probe_sees_the_notes_only_in_tokens_that_carry_them(basic_pitch_tokenizer, tmp_path):
    from musiclm.cli.main import app
    from musiclm.data.manifest import write_manifest
    from musiclm.evaluation.semantic_probe import probe

    train, test = scored_clips(tmp_path, 4, "train", 0), scored_clips(tmp_path, 2, "test", 1)
    blind = probe(LoudnessTokenizer(), train, test)
    assert blind["pitch_class_f1"] < 0.2 and blind["context_agreement"] == 1.0
    write_manifest(tmp_path / "m.jsonl", train + test)
    basic_pitch_tokenizer.save_pretrained(tmp_path / "tok")
    args = ["semantic", "probe", "--data", str(tmp_path / "m.jsonl"), "--tokenizer", str(tmp_path / "tok")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "probe.json")])
    assert result.exit_code == 0, result.output
    seeing = json.loads((tmp_path / "probe.json").read_text())
    assert (seeing["train_clips"], seeing["test_clips"]) == (4, 2)
    assert seeing["pitch_class_f1"] > blind["pitch_class_f1"] + 0.4
    # the notes are in each token, not only in the clip's set of tokens
    assert seeing["pitch_class_f1"] > seeing["pitch_class_f1_shuffled"] + 0.2
    assert seeing["context_agreement"] > 0.5, seeing
