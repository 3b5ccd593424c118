"""The assembled pipeline with tiny, untrained instances of the real parts: flow, shapes, persistence,
the tokenization job, the CLI, and every bad request refused before generation starts."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import musiclm.pipeline as pipeline
from musiclm.audio import load_audio, loudness_normalize, resample, save_audio
from musiclm.cli.main import app
from musiclm.codec.soundstream import SoundStream, SoundStreamConfig
from musiclm.data.manifest import Clip, write_manifest
from musiclm.mulan.melody import MelodyConfig, MelodyEmbedder
from musiclm.mulan.model import MuLan, MuLanConfig
from musiclm.pipeline import GenerationError, MusicLM, StageSet, generate_tokens, stage_config, vocabularies
from musiclm.semantic.tokenizer import KMeansTokenizer
from musiclm.semantic.w2vbert import W2VBert, W2VBertConfig
from musiclm.stages import STAGES, StageLM, tokenize
from musiclm.stages.data import StageDataset, load_shards
from musiclm.stages.shards import read_codebooks, read_meta
from musiclm.stages.tokenize import tokenize_clips

SR = 16000  # the tiny codec's rate
pipeline_generate_tokens = pipeline.generate_tokens


def tone(seconds: float, freq: float = 220.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(round(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * torch.pi * freq * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 2 * t))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # token-by-token decoding of tiny models is latency-bound; on a shared, loaded machine a second
    # intra-op thread only adds barrier waits (measured: 8 ms per layer norm under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    codec = SoundStream(SoundStreamConfig.preset("tiny")).eval()
    semantic = KMeansTokenizer.on(W2VBert(W2VBertConfig.preset("tiny")), layer=1, num_clusters=8)
    semantic.centroids.normal_()  # untrained k-means: random centroids still give varied tokens
    mulan = MuLan(MuLanConfig.preset("tiny")).eval()
    melody = MelodyEmbedder(MelodyConfig.preset("tiny")).eval()
    # untrained towers; their RVQs fitted on random unit vectors so that tokens exist
    mulan.fit_quantizer(torch.nn.functional.normalize(torch.randn(256, mulan.embed_dim), dim=-1))
    melody.fit_quantizer(torch.nn.functional.normalize(torch.randn(256, melody.embed_dim), dim=-1))
    return codec, semantic, mulan, melody


@pytest.fixture(scope="module")
def folder(parts, tmp_path_factory):
    codec, semantic, mulan, melody = parts
    vocab = vocabularies(codec, semantic, mulan, melody, coarse_quantizers=2)
    torch.manual_seed(1)
    stages = StageSet(*(StageLM(stage_config(s, "tiny", vocab)) for s in STAGES))
    return MusicLM(codec, semantic, mulan, stages, melody).save_pretrained(
        tmp_path_factory.mktemp("pipe") / "m"
    )


@pytest.fixture(scope="module")
def model(folder):
    return MusicLM.from_pretrained(folder)


def test_generate_shapes_and_seed(model, monkeypatch):
    sampled = []

    def recording(*args, **kwargs):
        sampled.append(pipeline_generate_tokens(*args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(pipeline, "generate_tokens", recording)
    melody = tone(5.0, sr=model.melody.sample_rate)
    a = model.generate(["calm piano", "fast drums"], 1.5, melody=melody, seed=0, guidance=3.0)
    assert a.shape == (2, round(1.5 * SR)) and torch.isfinite(a).all()
    b = model.generate(["calm piano", "fast drums"], 1.5, melody=melody, seed=0, guidance=3.0)
    model.generate(["calm piano", "fast drums"], 1.5, melody=melody, seed=1, guidance=3.0)
    assert torch.equal(a, b)
    # (the untrained codec's codebooks are still empty, so seeds are compared on the sampled tokens)
    first, second, third = sampled
    assert first["fine"].shape == (2, 2, 75) and first["semantic"].shape == (2, 38)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["semantic"], third["semantic"])


def test_melody_conditioned_model_generates_from_text_alone(model):
    assert model.stages.semantic.config.melody_quantizers  # NULL melody tokens stand in for the melody
    out = model.generate(["calm piano"], 1.0, seed=0)
    assert out.shape == (1, SR) and torch.isfinite(out).all()


def test_story_and_continuation(model):
    melody = tone(5.0, sr=model.melody.sample_rate)
    story = model.generate(None, 3.0, story=[("calm piano", 1.5), ("loud drums", 1.5)], melody=melody, seed=0)
    assert story.shape == (1, 3 * SR)
    prompt = tone(1.0)
    out = model.generate("jazz", 1.0, continuation=prompt, melody=melody, seed=0)
    assert out.shape == (1, 2 * SR)  # the 1 s prompt, then 1 s of new music


@pytest.mark.parametrize(
    "request_, message",
    [
        (dict(texts=["a"], duration=0), "positive"),
        (dict(texts=["a"], duration=-2), "positive"),
        (dict(texts=["a"], duration=301), "maximum"),
        (dict(texts=[], duration=1), "no prompts"),
        (dict(texts=["  "], duration=1), "empty"),
        (dict(texts=None, duration=3, story=[("a", 1.0), ("b", 1.0)]), "add up"),
        (dict(texts=["a"], duration=1, melody="zeros"), "silent"),
        (dict(texts=["a"], duration=1, melody="short"), "at least one window"),
        (dict(texts=["a"], duration=1, melody="missing.wav"), "not found"),
    ],
)
def test_bad_requests_fail_before_generation(model, monkeypatch, request_, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(pipeline, "generate_tokens", forbidden)
    sr = model.melody.sample_rate
    melodies = {
        "zeros": torch.zeros(5 * sr),
        "short": tone(1.0, sr=sr),
        None: None,
        "missing.wav": "missing.wav",
    }
    request_ = {
        **request_,
        "melody": melodies[request_.get("melody", "ok")] if "melody" in request_ else tone(5.0, sr=sr),
    }
    with pytest.raises((GenerationError, FileNotFoundError), match=message):
        model.generate(**request_)


def test_shipped_model_generates_music_from_text():
    assert (pipeline.SHIPPED_MODEL / "pipeline.json").is_file(), "the shipped model is part of the repository"
    shipped = MusicLM.from_pretrained()
    audio = shipped.generate(["a lively Irish folk dance on fiddle"], 2.0, seed=0)
    assert audio.shape == (1, 2 * shipped.sample_rate) and torch.isfinite(audio).all()
    assert audio.std() > 1e-3  # not silent


def test_loading_the_shipped_model_leaves_out_the_slow_libraries():
    """What keeps `musiclm generate` quick to start: the packaged text tower and the codec's codebooks load
    without transformers and vector-quantize-pytorch, whose imports cost 2-3 s of CPU (einx and transformers
    import torch._dynamo)."""
    slow = ("transformers", "vector_quantize_pytorch", "einx", "torch._dynamo")
    code = (
        "import sys; from musiclm.pipeline import MusicLM; MusicLM.from_pretrained(); "
        f"print([m for m in {slow!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_pipeline_guidance_is_the_default_and_a_request_overrides_it(folder, monkeypatch, tmp_path):
    guided = tmp_path / "guided"
    shutil.copytree(folder, guided)
    meta = json.loads((guided / "pipeline.json").read_text())
    assert meta["guidance"] is None  # a pipeline saved without a scale samples as the paper does
    (guided / "pipeline.json").write_text(json.dumps({**meta, "guidance": 2.5}))
    loaded = MusicLM.from_pretrained(guided)
    assert loaded.guidance == 2.5
    scales = []

    def recording(*args, **kwargs):
        scales.append({s.guidance for s in args[3]})
        return pipeline_generate_tokens(*args, **kwargs)

    monkeypatch.setattr(pipeline, "generate_tokens", recording)
    loaded.generate(["calm piano"], 0.5, seed=0)
    loaded.generate(["calm piano"], 0.5, seed=0, guidance=1.0)
    assert scales == [{2.5}, {1.0}]
    saved = loaded.save_pretrained(tmp_path / "saved")
    assert json.loads((saved / "pipeline.json").read_text())["guidance"] == 2.5
    (guided / "pipeline.json").write_text(json.dumps({**meta, "guidance": "strong"}))
    with pytest.raises(GenerationError, match="guidance must be a finite scale"):
        MusicLM.from_pretrained(guided)


def test_candidates_keep_the_sample_mulan_finds_closest_to_the_prompt(folder, model, monkeypatch, tmp_path):
    # each candidate row decodes to its own tone, and each prompt's "text" embedding is that of one tone,
    # so the choice is known: prompt 0 wants its second candidate, prompt 1 its third
    def tones(codes):
        return torch.stack([tone(1.0, freq=110.0 * (row + 2)) for row in range(codes.shape[0])])

    rate = model.mulan.sample_rate

    def heard(row):
        wav = loudness_normalize(resample(tone(1.0, freq=110.0 * (row + 2)), SR, rate), rate)
        return model.mulan.embed_audio(wav[None])[0]

    monkeypatch.setattr(model.codec, "decode", tones)
    monkeypatch.setattr(
        model.mulan, "embed_text", lambda texts: torch.stack([heard(1), heard(5)])[: len(texts)]
    )
    out = model.generate(["calm piano", "fast drums"], 1.0, seed=0, candidates=3)
    assert out.shape == (2, SR)
    assert torch.equal(out[0], tone(1.0, freq=330.0)) and torch.equal(out[1], tone(1.0, freq=770.0))
    assert torch.equal(model.generate(["calm piano"], 1.0, seed=0)[0], tone(1.0, freq=220.0))  # default: 1

    chosen = tmp_path / "chosen"
    shutil.copytree(folder, chosen)
    meta = json.loads((chosen / "pipeline.json").read_text())
    assert meta["candidates"] == 1
    (chosen / "pipeline.json").write_text(json.dumps({**meta, "candidates": 4}))
    assert MusicLM.from_pretrained(chosen).candidates_for(None) == 4
    assert MusicLM.from_pretrained(chosen).candidates_for(2) == 2
    with pytest.raises(GenerationError, match="candidates must be a whole number >= 1"):
        model.generate(["calm piano"], 1.0, candidates=0)


def test_missing_stage_and_mismatched_parts(folder, parts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "coarse_stage")
    with pytest.raises(FileNotFoundError, match="coarse_stage"):
        MusicLM.from_pretrained(broken)
    codec, semantic, mulan, melody = parts
    other = vocabularies(codec, semantic, mulan, None, coarse_quantizers=2)
    stages = StageSet(*(StageLM(stage_config(s, "tiny", {**other, "semantic_vocab": 5})) for s in STAGES))
    with pytest.raises(GenerationError, match="semantic_vocab=5"):
        MusicLM(codec, semantic, mulan, stages, None)
    # a "codebook" stage must hold this MuLan's code vectors, not another's
    vocab = vocabularies(codec, semantic, mulan, None, coarse_quantizers=2)
    stages = StageSet(
        *(StageLM(stage_config(s, "tiny", {**vocab, "mulan_embedding": "codebook"})) for s in STAGES)
    )
    with pytest.raises(GenerationError, match="another MuLan's codebooks"):
        MusicLM(codec, semantic, mulan, stages, None)
    for stage in stages:
        if stage.embeds_codebooks:
            stage.set_mulan_codebooks(mulan.code_vectors())
    MusicLM(codec, semantic, mulan, stages, None)


def test_pipeline_without_fine_stage_decodes_coarse_levels(folder, model, tmp_path):
    coarse_only = tmp_path / "coarse_only"
    shutil.copytree(folder, coarse_only)
    shutil.rmtree(coarse_only / "fine_stage")
    loaded = MusicLM.from_pretrained(coarse_only)
    assert loaded.stages.fine is None and len(list(loaded.stages)) == 2
    audio = loaded.generate(["a calm piano"], 1.0, seed=0)
    assert audio.shape == model.generate(["a calm piano"], 1.0, seed=0).shape
    mulan = [(0.0, loaded.mulan.quantize(loaded.mulan.embed_text(["a calm piano"])))]
    tokens = generate_tokens(loaded.stages, mulan, 1.0, generator=torch.Generator().manual_seed(0))
    assert set(tokens) == {"semantic", "coarse"}
    assert torch.allclose(audio, loaded.codec.decode(tokens["coarse"]))  # the coarse levels alone, decoded
    loaded.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "fine_stage").exists()


def test_tokenize_job_resumes_and_splits_ranks(parts, tmp_path):
    codec, semantic, mulan, melody = parts
    clips = []
    for i in range(3):
        path = save_audio(tmp_path / f"clip{i}.wav", tone(4.5, 200.0 + 50 * i) * 0.1, SR)
        clips.append(Clip(path=path, captions=["a quiet tone", "a sine"] if i == 0 else []))
    out = tmp_path / "tokens"
    # rank 1 of 2 with one clip per shard tokenizes shard 1 only; rank 0 then does shards 0 and 2
    assert [
        p.name for p in tokenize_clips(clips, out, *parts, shard_size=1, rank=1, world_size=2, progress=False)
    ] == ["shard-00001.safetensors"]
    assert not (out / "shard-00000.safetensors").exists()
    tokenize_clips(clips, out, *parts, shard_size=1, rank=0, world_size=2, progress=False)
    stamp = (out / "shard-00001.safetensors").stat().st_mtime_ns
    tokenize_clips(
        clips, out, *parts, shard_size=1, rank=1, world_size=2, progress=False
    )  # resume: nothing to do
    assert (out / "shard-00001.safetensors").stat().st_mtime_ns == stamp
    loaded = load_shards(out)
    assert len(loaded) == 3
    clip = loaded[0]
    assert clip["acoustic"].shape[0] == codec.num_quantizers
    assert clip["acoustic"].shape[-1] == 2 * clip["semantic"].shape[-1]  # 50 Hz vs 25 Hz, same span
    assert clip["melody"].shape[-1] == melody.num_quantizers
    # MuLan tokens of windows every 2 s (tiny MuLan: 2 s windows -> 0 and 2 s), of audio prepared as in
    # MuLan's training (loudness-normalised); the captions' text tokens beside them
    assert clip["mulan"].shape == (2, mulan.num_quantizers)
    first = loudness_normalize(
        load_audio(clips[0].path, mulan.sample_rate)[: mulan.window_samples], mulan.sample_rate
    )
    assert clip["mulan"][0].equal(mulan.quantize(mulan.embed_audio(first[None]))[0])
    assert clip["text"].equal(mulan.quantize(mulan.embed_text(["a quiet tone", "a sine"])))
    assert "text" not in loaded[1]
    meta = read_meta(out)
    vocab = vocabularies(codec, semantic, mulan, melody, coarse_quantizers=2)
    for name in STAGES:
        stage = StageLM(stage_config(name, "tiny", vocab))
        item = StageDataset(loaded, stage, melody_hop=meta["melody_hop"])[0]
        assert torch.isfinite(
            stage.training_step({k: v[None] for k, v in item.items()}, step=0, group="m")["loss"]
        )


def test_refresh_mulan_rewrites_only_the_conditioning_tokens(parts, tmp_path):
    codec, semantic, mulan, melody = parts
    clips = [
        Clip(
            path=save_audio(tmp_path / f"clip{i}.wav", tone(4.5, 220.0 * (i + 1)) * 0.1, SR),
            captions=["a tone"],
        )
        for i in range(2)
    ]
    write_manifest(tmp_path / "clips.jsonl", clips)
    out = tmp_path / "tokens"
    tokenize_clips(clips, out, *parts, shard_size=1, progress=False)
    before = list(load_shards(out))  # read now: the shards are read lazily, and the refresh rewrites them
    # a retrained MuLan: other weights, a quantizer fitted anew
    torch.manual_seed(7)
    retrained = MuLan(MuLanConfig.preset("tiny")).eval()
    retrained.fit_quantizer(torch.nn.functional.normalize(torch.randn(64, retrained.embed_dim), dim=-1))
    folder = retrained.save_pretrained(tmp_path / "mulan2")
    run = ["tokenize", "--data", str(tmp_path / "clips.jsonl"), "--out", str(out), "--mulan", str(folder)]
    result = CliRunner().invoke(app, [*run, "--refresh-mulan"])
    assert result.exit_code == 0 and "2 shard(s)" in result.output, result.output
    after = load_shards(out)
    for old, new, clip in zip(before, after, clips, strict=True):
        for kind in ("acoustic", "semantic", "melody"):
            assert new[kind].equal(old[kind])
        wav = load_audio(clip.path, retrained.sample_rate)
        assert new["mulan"].equal(tokenize.mulan_window_tokens(retrained, wav).to(new["mulan"].dtype))
        assert new["text"].equal(retrained.quantize(retrained.embed_text(["a tone"])).to(new["text"].dtype))
    assert read_codebooks(out).equal(retrained.code_vectors())  # what "codebook" stages embed
    # done shards are recognised: a second refresh rewrites nothing
    result = CliRunner().invoke(app, [*run, "--refresh-mulan"])
    assert result.exit_code == 0 and "0 shard(s)" in result.output, result.output
    # a MuLan with another vocabulary cannot refresh these shards
    other = MuLan(MuLanConfig.preset("tiny").replace(codebook_size=8)).eval()
    other.fit_quantizer(torch.nn.functional.normalize(torch.randn(64, other.embed_dim), dim=-1))
    other.save_pretrained(tmp_path / "mulan3")
    run[-1] = str(tmp_path / "mulan3")
    result = CliRunner().invoke(app, [*run, "--refresh-mulan"])
    assert result.exit_code != 0 and "tokenize again" in result.output


def test_refresh_semantic_replaces_only_the_semantic_tokens(parts, tmp_path):
    codec, semantic, mulan, melody = parts
    clips = [
        Clip(path=save_audio(tmp_path / f"clip{i}.wav", tone(4.5, 220.0 * (i + 1)) * 0.1, SR), captions=["a"])
        for i in range(2)
    ]
    write_manifest(tmp_path / "clips.jsonl", clips)
    out = tmp_path / "tokens"
    tokenize_clips(clips, out, *parts, shard_size=1, progress=False)
    before = list(load_shards(out))  # read now: the shards are read lazily, and the refresh rewrites them
    # another tokenizer on the same features: the old centroids in reverse order, then 8 far from any
    # feature, so that each old token t becomes 7 - t in a vocabulary of 16
    other = KMeansTokenizer.on(semantic.backbone, layer=1, num_clusters=16)
    other.centroids.copy_(torch.cat([semantic.centroids.flip(0), semantic.centroids + 1e4]))
    other.save_pretrained(tmp_path / "semantic2")
    run = ["tokenize", "--data", str(tmp_path / "clips.jsonl"), "--out", str(out)]
    run += ["--semantic", str(tmp_path / "semantic2"), "--refresh-semantic"]
    result = CliRunner().invoke(app, run)
    assert result.exit_code == 0 and "2 shard(s)" in result.output, result.output
    after = load_shards(out)
    for old, new in zip(before, after, strict=True):
        for kind in ("acoustic", "mulan", "text", "melody"):
            assert new[kind].equal(old[kind])
        assert new["semantic"].equal(7 - old["semantic"])
    assert read_meta(out)["semantic_vocab"] == 16
    result = CliRunner().invoke(app, run)  # done shards are recognised
    assert result.exit_code == 0 and "0 shard(s)" in result.output, result.output


def test_tokenize_manifests_refuses_a_bad_request_before_loading_a_part(tmp_path):
    from musiclm.config import ConfigError
    from musiclm.data.manifest import ManifestError
    from musiclm.stages.recipe import tokenize_manifests

    manifest = write_manifest(tmp_path / "m.jsonl", [Clip(path=tmp_path / "a.wav", split="train")])
    with pytest.raises(ManifestError, match="no clips of split 'valid'"):
        tokenize_manifests([manifest], tmp_path / "tok", tmp_path / "no codec", split="valid")
    with pytest.raises(ConfigError, match="refresh must be 'semantic' or 'mulan'"):
        tokenize_manifests([manifest], tmp_path / "tok", refresh="codec")


def test_rendered_clips_bring_fresh_caption_tokens(parts, tmp_path):
    render = dict(
        caption_set="train",
        tempo_class="slow",
        mode="minor",
        programs=[40],
        is_melody=False,
        voices=1,
        bpm=70,
        key="D",
        style="chorale",
        time_signature="4/4",
        reverb=False,
        families=["strings"],
    )
    path = save_audio(tmp_path / "render.wav", tone(4.5, 330.0) * 0.1, SR)
    clips = [Clip(path=path, captions=["a slow violin"], attributes=render)]
    mulan = parts[2]

    def text_tokens(folder, fresh):
        tokenize_clips(clips, tmp_path / folder, *parts, progress=False, fresh_captions=fresh)
        return load_shards(tmp_path / folder)[0]["text"]

    four, again, none = text_tokens("a", 4), text_tokens("b", 4), text_tokens("c", 0)
    # the stored caption first, then 4 drawn from the attributes: the same draws in every run
    assert four.shape == (5, mulan.num_quantizers) and four.equal(again)
    assert four[:1].equal(none) and none.equal(mulan.quantize(mulan.embed_text(["a slow violin"])))
    # the same build in another folder (another machine) draws the same captions
    moved = save_audio(tmp_path / "elsewhere" / "render.wav", tone(4.5, 330.0) * 0.1, SR)
    tokenize_clips(
        [dataclasses.replace(clips[0], path=moved)], tmp_path / "d", *parts, progress=False, fresh_captions=4
    )
    assert load_shards(tmp_path / "d")[0]["text"].equal(four)
    assert len({tuple(row.tolist()) for row in four}) > 1
    # a refresh asking for another number of drawn captions rewrites the shard, then finds it done
    assert tokenize.refresh_mulan_tokens(tmp_path / "c", clips, mulan, progress=False, fresh_captions=4) == 1
    assert load_shards(tmp_path / "c")[0]["text"].equal(four)
    assert tokenize.refresh_mulan_tokens(tmp_path / "c", clips, mulan, progress=False, fresh_captions=4) == 0


class LocalTokenizer:
    """A semantic tokenizer whose tokens depend on their own frame's audio alone: windowed tokenization
    must give exactly its whole-clip tokens (the window bookkeeping); w2v-BERT sees all of its input."""

    sample_rate, frame_rate, vocab_size = SR, 25.0, 8

    def __init__(self):
        self.lengths = []

    def tokenize(self, wav):
        self.lengths.append(wav.shape[-1])
        frames = round(self.frame_rate * wav.shape[-1] / self.sample_rate)
        wav = torch.nn.functional.pad(wav, (0, frames * 640 - wav.shape[-1]))
        return (wav.unflatten(-1, (frames, 640)).abs().mean(-1) * 40).long() % self.vocab_size


def same_codes(streamed: torch.Tensor, whole: torch.Tensor) -> bool:
    """The same shape and, but for a few frames at float-rounding ties, the same codes."""
    return streamed.shape == whole.shape and (streamed == whole).all(0).float().mean() > 0.98


def test_long_clips_are_tokenized_in_windows(parts, tmp_path):
    """Over two windows, a clip goes through the parts a window at a time: the acoustic codes (streamed),
    MuLan and melody tokens are the whole clip's; the semantic tokens are as many, the same for a tokenizer
    of local features, and for w2v-BERT what each window with its context gives (not the whole clip's).

    The streamed codec latents differ from the whole clip's by float rounding (~1e-6), which can move a code
    at a near-tie between two codewords; this untrained codec's codebooks, k-means-initialised on the test
    tone, have such ties (the shipped codec gave all 360,000 codes of a 10-minute file unchanged)."""
    codec, semantic, mulan, melody = parts
    wav = torch.cat([tone(2.32, 180.0 + 60 * i) for i in range(3)])  # 174 frames: 3 windows of 50, then 24
    local = LocalTokenizer()
    windowed = tokenize.semantic_windows(wav, local, "cpu", 2.0, context_seconds=0.5)
    # each window with 12 frames (0.48 s) of context either side, so no call sees more than 74 frames
    assert len(local.lengths) == 4 and max(local.lengths) == 74 * 640
    assert windowed.equal(local.tokenize(wav[None])[0])
    windowed = tokenize.semantic_windows(wav, semantic, "cpu", 2.0, context_seconds=0.5)
    first = semantic.tokenize(wav[None, : 62 * 640])[0]  # the first window and its right context
    assert windowed.shape == (174,) and windowed[:50].equal(first[:50])
    streamed, whole = (
        tokenize.encode_aligned(wav, SR, codec, semantic, window_seconds=w) for w in (2.0, None)
    )
    assert streamed[0].shape == whole[0].shape == (174,) and whole[1].shape == (codec.num_quantizers, 348)
    assert same_codes(streamed[1], whole[1])
    mulan_wav = resample(wav, SR, mulan.sample_rate)
    assert tokenize.mulan_window_tokens(mulan, mulan_wav, batch=2).equal(
        tokenize.mulan_window_tokens(mulan, mulan_wav)
    )

    clip = Clip(path=save_audio(tmp_path / "long.wav", wav, SR))
    out = {}
    for name, window in (("whole", None), ("windows", 2.0)):
        tokenize.tokenize_clips([clip], tmp_path / name, *parts, progress=False, window_seconds=window)
        out[name] = load_shards(tmp_path / name)[0]
    assert same_codes(out["windows"]["acoustic"], out["whole"]["acoustic"])
    for key in ("mulan", "melody"):
        assert out["windows"][key].equal(out["whole"][key]), key
    assert out["windows"]["semantic"].shape == out["whole"]["semantic"].shape
    assert out["whole"]["melody"].shape[0] == 2  # tiny melody: 4 s windows every 3 s, one to a 2 s piece


def test_cli_generate_and_train_stage(folder, tmp_path, parts):
    runner = CliRunner()
    melody = save_audio(tmp_path / "hum.wav", tone(5.0, sr=24000).numpy(), 24000)
    out = tmp_path / "song.wav"
    result = runner.invoke(
        app,
        [
            "generate",
            "calm piano",
            "--duration",
            "1",
            "--out",
            str(out),
            "--checkpoint",
            str(folder),
            "--seed",
            "3",
            "--melody",
            str(melody),
            "--guidance",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > SR  # 1 s of 16-bit audio
    bad = runner.invoke(
        app,
        [
            "generate",
            "--duration",
            "2",
            "--checkpoint",
            str(folder),
            "--melody",
            str(melody),
            "--story",
            "a:1",
            "--story",
            "b:0.5",
        ],
    )
    assert bad.exit_code != 0 and "add up" in bad.output
    clips = [Clip(path=save_audio(tmp_path / f"c{i}.wav", tone(4.5, 300.0 + i), SR)) for i in range(2)]
    manifest = write_manifest(tmp_path / "m.jsonl", clips)
    dirs = []
    for name, part in zip(("codec", "semantic", "mulan", "melody"), parts):
        dirs += [f"--{name}", str(part.save_pretrained(tmp_path / name))]
    result = runner.invoke(app, ["tokenize", *dirs, "--data", str(manifest), "--out", str(tmp_path / "tok")])
    assert result.exit_code == 0, result.output
    train_coarse = [
        "train",
        "stage",
        "--stage",
        "coarse",
        "--tokens",
        str(tmp_path / "tok"),
        "--preset",
        "tiny",
    ]
    result = runner.invoke(
        app,
        [
            *train_coarse,
            "--out",
            str(tmp_path / "run"),
            "--coarse-quantizers",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--val-tokens",
            str(tmp_path / "tok"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert StageLM.from_pretrained(tmp_path / "run").config.stage == "coarse"
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(logged[-1]["val/loss"])
    other = shutil.copytree(tmp_path / "tok", tmp_path / "other")
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "codebook_size": 2048}))
    # same layout, but the conditioning tokens of another MuLan
    another_mulan = shutil.copytree(tmp_path / "tok", tmp_path / "another_mulan")
    tokenize.save_codebooks(another_mulan, parts[2], mulan_digest="another MuLan")
    for val in (other, another_mulan):
        result = runner.invoke(
            app, [*train_coarse, "--out", str(tmp_path / "run2"), "--val-tokens", str(val)]
        )
        assert result.exit_code != 0 and "other parts" in result.output


def test_fp16_pipeline_is_half_the_size_and_generates(folder, model, tmp_path):
    half = MusicLM.from_pretrained(model.save_pretrained(tmp_path / "half", torch.float16))
    for part in ("codec", "semantic_stage", "fine_stage"):
        full_bytes = (folder / part / "model.safetensors").stat().st_size
        assert (tmp_path / "half" / part / "model.safetensors").stat().st_size < 0.6 * full_bytes
    assert next(half.stages.fine.parameters()).dtype == torch.float32  # stored in half, computed in full
    audio = half.generate("calm piano", 1.0, seed=0)
    assert audio.shape == (1, SR) and torch.isfinite(audio).all()


def test_cli_batch_mode_from_prompt_files(folder, tmp_path):
    runner = CliRunner()
    base = ["generate", "--duration", "0.5", "--checkpoint", str(folder), "--seed", "0", "--batch-size", "2"]
    txt = tmp_path / "prompts.txt"
    txt.write_text(
        "calm piano\n\nfast fiddle tune, 140 BPM\n# a comment\nchoir in D minor — slow\n", encoding="utf-8"
    )
    result = runner.invoke(app, [*base, "--prompts-file", str(txt), "--out", str(tmp_path / "t.wav")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("t-*.wav")) == ["t-0.wav", "t-1.wav", "t-2.wav"]
    (tmp_path / "t-2.wav").unlink()  # an interrupted job: the second batch's file is missing
    first = (tmp_path / "t-0.wav").stat().st_mtime_ns
    result = runner.invoke(
        app, [*base, "--prompts-file", str(txt), "--out", str(tmp_path / "t.wav"), "--skip-existing"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t-2.wav").is_file() and (tmp_path / "t-0.wav").stat().st_mtime_ns == first
    csv_file = tmp_path / "caps.csv"  # the MusicCaps columns
    csv_file.write_text(
        "ytid,start_s,end_s,aspect_list,caption\n"
        'a,0,10,"[\'piano\']","A mellow piano, ""very"" soft."\nb,30,40,[],Loud brass band\n'
    )
    result = runner.invoke(app, [*base, "--prompts-file", str(csv_file), "--out", str(tmp_path / "c.wav")])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("c-*.wav"))) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    result = runner.invoke(app, [*base, "--prompts-file", str(empty), "--out", str(tmp_path / "e.wav")])
    assert result.exit_code != 0 and "no prompts" in result.output and not list(tmp_path.glob("e*.wav"))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
        ),
    ],
)
def test_eval_stage_reports_every_link(folder, parts, tmp_path, device):
    codec, semantic, mulan, melody = parts
    clips = [
        Clip(
            path=save_audio(tmp_path / f"c{i}.wav", tone(4.0, 180.0 + 60 * i) * 0.2, SR),
            captions=[f"a tone number {i}"],
        )
        for i in range(4)
    ]
    tokenize_clips(clips, tmp_path / "held", codec, semantic, mulan, melody, progress=False)
    report = tmp_path / "diag.json"
    result = CliRunner().invoke(
        app,
        [
            "eval-stage",
            "--tokens",
            str(tmp_path / "held"),
            "--checkpoint",
            str(folder),
            "--clips",
            "4",
            "--real-clips",
            "3",
            "--seconds",
            "1",
            "--out",
            str(report),
            "--device",
            device,
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    semantic_fig, coarse_fig = figures["stages"]["semantic"], figures["stages"]["coarse"]
    assert semantic_fig["clips"] == 4 and semantic_fig["text_clips"] == 4
    for key in ("nll_own_audio", "nll_text", "nll_null", "gain_text", "gain_own_audio"):
        assert math.isfinite(semantic_fig[key]), key
    # untrained: no conditioning helps much, and every NLL is near a uniform guess over the codebook
    assert abs(semantic_fig["nll_null"] - math.log(8)) < 1.0
    assert math.isfinite(coarse_fig["cost_shift_semantic"]) and math.isfinite(
        figures["stages"]["fine"]["nll_own"]
    )
    real = figures["real_semantic"]
    assert real["clips"] == 3 and real["onset_rate_real"] >= 0 and real["mel_distance_real_all_levels"] > 0
    assert {"median_pitch_correlation", "polyphony_correlation"} <= set(real)
    wrong = tmp_path / "wrong"
    (wrong).mkdir()
    (wrong / "meta.json").write_text(json.dumps({**read_meta(tmp_path / "held"), "semantic_vocab": 99}))
    result = CliRunner().invoke(app, ["eval-stage", "--tokens", str(wrong), "--checkpoint", str(folder)])
    assert result.exit_code != 0 and "semantic_vocab" in result.output


# ------------------------------------------------------------------------------------ audio prompts
def recorded_mulan_tokens(monkeypatch) -> list:
    """Where each later ``generate`` puts the MuLan tokens its stages are conditioned on."""
    used = []

    def recording(*args, **kwargs):
        used.append(args[1][0][1])
        return pipeline_generate_tokens(*args, **kwargs)

    monkeypatch.setattr(pipeline, "generate_tokens", recording)
    return used


def test_style_conditions_the_stages_on_the_clips_mulan_audio_tokens(model, monkeypatch, tmp_path):
    used = recorded_mulan_tokens(monkeypatch)
    rate = model.mulan.sample_rate
    clip = tone(1.5, freq=330.0, sr=rate)  # within one window of the tiny MuLan (2 s)
    path = save_audio(tmp_path / "clip.wav", clip, rate)
    long_clip = torch.cat([tone(3.0, freq=330.0, sr=rate), tone(3.0, freq=550.0, sr=rate)])
    model.generate("calm piano", 0.5, seed=0)
    model.generate(None, 0.5, seed=0, style=clip)
    model.generate(None, 0.5, seed=0, style=path)
    model.generate(None, 0.5, seed=0, style=long_clip)
    text, audio, from_file, long = used
    # a clip of one window: the very tokens tokenization gave the windows the stages trained on
    assert audio.equal(tokenize.mulan_window_tokens(model.mulan, clip)) and not audio.equal(text)
    assert from_file.equal(tokenize.mulan_window_tokens(model.mulan, load_audio(path, rate)))
    # a longer clip: its windows' embeddings averaged, renormalised, then quantized
    windows = tokenize.mulan_window_embeddings(model.mulan, long_clip)
    averaged = torch.nn.functional.normalize(windows.mean(0, keepdim=True), dim=-1)
    assert len(windows) > 1 and long.equal(model.mulan.quantize(averaged))


def test_style_blends_with_text_in_mulans_space(model, monkeypatch):
    used = recorded_mulan_tokens(monkeypatch)
    rate = model.mulan.sample_rate
    a, b = tone(1.5, freq=330.0, sr=rate), tone(1.5, freq=550.0, sr=rate)
    texts = ["calm piano", "fast drums"]
    model.generate(texts, 0.5, seed=0)
    model.generate(texts, 0.5, seed=0, style=(a, 0.0))  # a clip of weight 0 leaves the text alone
    model.generate(None, 0.5, seed=0, style=[a, (b, 0)])  # no text: the clip alone
    judged = []

    def first_candidate(wavs, embedded):
        judged.append(embedded)
        return wavs[:, 0]

    monkeypatch.setattr(model, "_closest_to_prompt", first_candidate)
    model.generate(texts, 0.5, seed=0, style=[(a, 2.0), (b, 0.5)], candidates=2)
    text, zero, alone, blend = used
    assert zero.equal(text)
    assert alone.equal(tokenize.mulan_window_tokens(model.mulan, a))
    clips = 2.0 * model.embed_style(a) + 0.5 * model.embed_style(b)
    expected = torch.nn.functional.normalize(model.mulan.embed_text(texts) + clips, dim=-1)
    assert blend.equal(model.mulan.quantize(expected).repeat_interleave(2, 0))
    assert torch.allclose(judged[0][0][1], expected)  # the candidates are judged against the blend


def test_texts_blend_with_weights_in_mulans_space(model, monkeypatch):
    used = recorded_mulan_tokens(monkeypatch)
    single = model.generate("calm piano", 0.5, seed=0)
    one_to_zero = model.generate(None, 0.5, seed=0, blend=[("calm piano", 1.0), ("fast drums", 0.0)])
    beside_zero = model.generate("calm piano", 0.5, seed=0, blend=("fast drums", 0))
    # weights 1:0 are the single prompt: the same MuLan tokens, so the same music
    assert used[1].equal(used[0]) and used[2].equal(used[0])
    assert one_to_zero.equal(single) and beside_zero.equal(single)
    judged = []

    def first_candidate(wavs, embedded):
        judged.append(embedded[0][1])
        return wavs[:, 0]

    monkeypatch.setattr(model, "_closest_to_prompt", first_candidate)
    texts = ["calm piano", "fast drums"]
    clip = tone(1.5, freq=330.0, sr=model.mulan.sample_rate)
    blend = [("a slow organ chorale", 0.7), ("a jig on fiddle", 0.3)]
    model.generate(None, 0.5, seed=0, blend=blend, candidates=2)
    model.generate(texts, 0.5, seed=0, blend=blend, style=(clip, 0.5), candidates=2)
    organ, jig = model.mulan.embed_text([text for text, _ in blend])
    # the weighted sum of unit embeddings, renormalised, then quantized; each text prompt weighs 1
    alone = torch.nn.functional.normalize(0.7 * organ + 0.3 * jig, dim=-1)[None]
    mixed = 0.5 * model.embed_style(clip) + 0.7 * organ + 0.3 * jig
    with_texts = torch.nn.functional.normalize(model.mulan.embed_text(texts) + mixed, dim=-1)
    for tokens, embedded, expected in zip(used[3:], judged, (alone, with_texts)):
        assert torch.allclose(embedded, expected, atol=1e-6)
        assert tokens.equal(model.mulan.quantize(embedded).repeat_interleave(2, 0))


@pytest.mark.parametrize(
    "request_, message",
    [
        (dict(blend=("a jig", -1.0)), "blended text 'a jig' must be a finite number >= 0"),
        (dict(blend=[("a jig", math.nan)]), "blended text 'a jig' must be a finite number >= 0"),
        (dict(blend=[("  ", 1.0)]), "a blended text is a text describing music"),
        (dict(blend=[3]), "a blended text is a text describing music"),
        (
            dict(texts=None, blend=[("a jig", 0), ("a reel", 0.0)]),
            "every style clip and blended text weighs 0",
        ),
        (dict(texts=None, story=[("a", 1.0)], blend="a jig"), "story mode takes text prompts only"),
    ],
)
def test_bad_blends_fail_before_generation(model, monkeypatch, request_, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(pipeline, "generate_tokens", forbidden)
    monkeypatch.setattr(model.mulan, "embed_text", forbidden)
    with pytest.raises(GenerationError, match=message):
        model.generate(**{"texts": "calm piano", "duration": 1.0, **request_})


@pytest.mark.parametrize(
    "request_, message",
    [
        (dict(style="missing.wav"), "style file missing.wav not found"),
        (dict(style="unreadable"), "cannot read audio file"),
        (dict(style="silent"), "is silent"),
        (dict(style="short"), "give at least 1 s of music"),
        (dict(style="stereo"), "must be mono"),
        (dict(style="nan"), "NaN"),
        (dict(style=("ok", -1.0)), "must be a finite number >= 0"),
        (dict(style=("ok", math.inf)), "must be a finite number >= 0"),
        (dict(style=[3]), "a style clip is an audio file"),
        (dict(texts=None, style=("ok", 0)), "every style clip and blended text weighs 0"),
        (dict(texts=None, story=[("a", 1.0)], style="ok"), "story mode takes text prompts only"),
    ],
)
def test_bad_style_requests_fail_before_generation(model, monkeypatch, tmp_path, request_, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(pipeline, "generate_tokens", forbidden)
    rate = model.mulan.sample_rate
    (tmp_path / "unreadable.wav").write_text("not audio")
    clips = {
        "ok": tone(1.5, sr=rate),
        "missing.wav": "missing.wav",
        "unreadable": tmp_path / "unreadable.wav",
        "silent": torch.zeros(2 * rate),
        "short": tone(0.5, sr=rate),
        "stereo": tone(1.5, sr=rate).expand(2, -1),
        "nan": torch.full((2 * rate,), math.nan),
    }

    def resolved(style):
        if isinstance(style, tuple):
            return (clips[style[0]], style[1])
        return [3] if isinstance(style, list) else clips[style]

    request_ = {"texts": "calm piano", "duration": 1.0, **request_}
    request_["style"] = resolved(request_["style"])
    with pytest.raises(GenerationError, match=message):
        model.generate(**request_)


def test_cli_generates_from_a_style_clip_alone_or_blended(folder, tmp_path, monkeypatch):
    clip = save_audio(tmp_path / "song.wav", tone(1.5, sr=24000), 24000)
    requests = []
    generate = MusicLM.generate

    def recording(self, *args, **kwargs):
        requests.append((args[0], kwargs["style"]))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(MusicLM, "generate", recording)
    base = ["generate", "--duration", "0.5", "--checkpoint", str(folder), "--seed", "0"]
    runner = CliRunner()
    alone = runner.invoke(app, [*base, "--style", str(clip), "--out", str(tmp_path / "a.wav")])
    assert alone.exit_code == 0, alone.output
    both = [
        *base,
        "calm piano",
        "--style",
        f"{clip}:0.5",
        "--style",
        str(clip),
        "--out",
        str(tmp_path / "b.wav"),
    ]
    blended = runner.invoke(app, both)
    assert blended.exit_code == 0, blended.output
    assert (tmp_path / "a.wav").is_file() and (tmp_path / "b.wav").is_file()
    assert requests == [(None, [(clip, 1.0)]), (["calm piano"], [(clip, 0.5), (clip, 1.0)])]


def test_cli_blends_texts_with_weights(folder, tmp_path, monkeypatch):
    requests = []
    generate = MusicLM.generate

    def recording(self, *args, **kwargs):
        requests.append((args[0], kwargs["blend"]))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(MusicLM, "generate", recording)
    base = ["generate", "--duration", "0.5", "--checkpoint", str(folder), "--seed", "0"]
    runner = CliRunner()
    beside = [*base, "calm piano", "--blend", "a waltz in 3:4:0.5", "--out", str(tmp_path / "a.wav")]
    alone = [*base, "--blend", "a jig:0.7", "--blend", "a chorale:0.3", "--out", str(tmp_path / "b.wav")]
    for args in (beside, alone):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.wav").is_file() and (tmp_path / "b.wav").is_file()
    # the weight is after the last ':', so a text may hold colons
    assert requests == [
        (["calm piano"], [("a waltz in 3:4", 0.5)]),
        (None, [("a jig", 0.7), ("a chorale", 0.3)]),
    ]
