"""The embedded dataset builder, captions, indexing and the training datasets."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from musiclm.audio import load_audio
from musiclm.cli.main import app
from musiclm.data import build as build_mod
from musiclm.data import render
from musiclm.data.augment import Augment
from musiclm.data.build import BuildOptions, build
from musiclm.data.captions import (
    FAMILY_WORDS,
    MELODY_TEMPLATES,
    STYLE_WORDS,
    TEMPLATES,
    TEXTURE_SENTENCES,
    WORDS,
    caption_from_attributes,
    counterfactual_caption,
    make_captions,
)
from musiclm.data.datasets import AudioCropDataset
from musiclm.data.instruments import FAMILIES, MELODY_TIMBRES
from musiclm.data.manifest import ManifestError, read_manifest

KEYS = {
    "instruments",
    "families",
    "bpm",
    "tempo_class",
    "key",
    "mode",
    "time_signature",
    "voices",
    "collection",
    "composer",
    "style",
    "soundfont",
    "work_id",
    "melody_group",
    "is_melody",
    "license",
    "caption_set",
}


def small_build(out: Path, works: int = 3, **kw) -> Path:
    opts = dict(
        out=out,
        hours=None,
        max_works=works,
        workers=1,
        seed=5,
        clip_seconds=(3.0, 3.0),
        melody_fraction=0.5,
        collections=["essen", "oneills1850"],
        soundfonts=["TimGM6mb"],
    )
    return build(BuildOptions(**{**opts, **kw}))


def test_tiny_dataset_clips_attributes_and_midi(tiny_dataset):
    clips = read_manifest(tiny_dataset)
    assert 10 <= len(clips) <= 20
    for clip in clips:
        assert KEYS <= set(clip.attributes), KEYS - set(clip.attributes)
        a = clip.attributes
        info = sf.info(str(clip.path))
        assert info.samplerate == clip.sample_rate == 24000 and info.channels == 1
        assert 3.5 < clip.duration < 4.5 and abs(info.duration - clip.duration) < 1e-3
        assert a["tempo_class"] == ("slow" if a["bpm"] < 90 else "medium" if a["bpm"] < 130 else "fast")
        assert a["mode"] in ("major", "minor") and a["caption_set"] == (
            "train" if clip.split == "train" else "heldout"
        )
        assert 1 <= len(clip.captions) <= 3 and all(len(c) > 20 for c in clip.captions)
        wav = load_audio(clip.path)
        assert wav.abs().max() > 0.01 and torch.isfinite(wav).all()
        midi = pretty_midi.PrettyMIDI(str(clip.midi))  # the exact MIDI rendered, aligned to the clip's t=0
        starts = [n.start for i in midi.instruments for n in i.notes]
        assert min(starts) < 0.5 and max(starts) < clip.duration
        assert sorted({i.program for i in midi.instruments}) == sorted(set(a["programs"]))


def test_splits_by_work_and_melody_pairs(tiny_dataset):
    clips = read_manifest(tiny_dataset)
    splits = defaultdict(set)
    for clip in clips:
        splits[clip.split].add(clip.attributes["work_id"])
    assert set(splits) == {"train", "valid", "test"}
    assert not (splits["train"] & splits["valid"]) and not (splits["train"] & splits["test"])
    assert not (splits["valid"] & splits["test"])
    groups = defaultdict(list)
    for clip in clips:
        if clip.attributes["melody_group"]:
            groups[clip.attributes["melody_group"]].append(clip)
    assert groups
    for members in groups.values():
        melody = [c for c in members if c.attributes["is_melody"]]
        assert len(melody) == 1 and len(members) == 2
        assert len({c.attributes["work_id"] for c in members}) == 1 and len({c.split for c in members}) == 1
        assert melody[0].attributes["programs"][0] in MELODY_TIMBRES and melody[0].attributes["voices"] == 1
    card = json.loads((tiny_dataset.parent / "card.json").read_text())
    assert card["clips"] == len(clips) and card["melody_groups"] == len(groups)
    assert sum(card["counts"]["split"].values()) == len(clips)
    assert abs(card["hours"] - sum(c.duration for c in clips) / 3600) < 1e-3
    assert (tiny_dataset.parent / "card.md").read_text().startswith("# Embedded music dataset")


def test_heldout_wording_never_in_training_captions():
    for table in (WORDS, STYLE_WORDS):
        for field in table["train"]:
            assert not set(table["train"][field]) & set(table["heldout"][field]), field
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["heldout"])
    assert not set(MELODY_TEMPLATES["train"]) & set(MELODY_TEMPLATES["heldout"])
    attrs = dict(
        is_melody=False,
        tempo_class="fast",
        mode="minor",
        style="chorale",
        instruments=["Violin"],
        voices=1,
        bpm=140,
        key="D",
        time_signature="3/4",
        reverb=False,
    )
    train = {
        c
        for s in range(30)
        for c in make_captions({**attrs, "caption_set": "train"}, ["violin"], np.random.default_rng(s), 3)
    }
    held = {
        c
        for s in range(30)
        for c in make_captions({**attrs, "caption_set": "heldout"}, ["violin"], np.random.default_rng(s), 3)
    }
    assert not train & held and len(train) > 20
    heldout_words = {w for table in (WORDS, STYLE_WORDS) for ws in table["heldout"].values() for w in ws}
    assert not any(w in c for c in train for w in heldout_words)
    assert all("violin" in c.lower() for c in train)
    assert all(" a old" not in c and " a energetic" not in c for c in train | held)


# The attribute words of the paired-adherence prompts (musiclm/evaluation/pairs.jsonl) and of the held-out
# zero-shot label prompts (musiclm.mulan.evaluate) that the training captions did not use when those
# prompts were written: they stay out of training, so that both evaluations read wording it never saw.
# (The dataset's instrument names, e.g. "pizzicato strings", are in both and not listed.)
EVALUATION_WORDS = {
    "tempo": [
        "takes its time", "quick", "quickly", "half speed", "speed", "crawl", "races", "dragged", "heavy",
        "clip", "pace", "hurry", "hurried", "unrushed", "rush", "driving", "drawn out", "zipping",
        "tumbling", "snail's", "stately", "stepping", "lazy", "gallop",
    ],
    "mode": [
        "minor key", "major key", "tearful", "glad", "smiling", "dark", "grieving", "warm", "brooding",
        "merry", "heavy-hearted", "light-hearted", "lament", "celebration", "grim", "hope", "haunted",
        "bouncy", "good-humoured", "funeral", "wedding", "sorrow", "joy",
    ],
    "register": [
        "bass notes", "top", "lowest", "highest", "thick", "thin", "down low", "up high", "rumbling",
        "shimmering", "bottom", "octaves", "growls", "whistles", "range", "left-hand", "right-hand",
    ],
    "articulation": [
        "picked", "picking", "snapping", "holding out", "held out", "ringing", "bow", "bowing", "bows",
        "strokes", "drawing out", "plucking", "fingers", "connected", "smoothly", "pluck",
    ],
    "density": [
        "unison", "four-part", "weaving", "together", "note by note", "underneath", "filled in", "top line",
        "interlocking", "bare", "stacked", "inner parts", "alone", "at once", "full harmony", "no harmony",
    ],
    "style": [
        "Bach", "German", "Lutheran", "barn dance", "countryside", "church", "mass", "motet", "Monteverdi",
        "folk tune", "Irish jig",
    ],
    "family": ["quartet", "orchestra", "steel-string", "synth pad", "square-wave", "violin-section"],
    "zero-shot": ["recording"],  # "a recording featuring {family}"
}  # fmt: skip
# What the two caption sets have shared from the start: function words and generic words of music.
SHARED_WORDS = {
    "a", "an", "and", "at", "for", "in", "it", "of", "one", "or", "the", "with", "time", "sound", "sounds",
    "song", "tune", "piece", "melody", "dance", "hymn", "parts", "section", "fiddle", "bowed", "low", "high",
}  # fmt: skip


def _vocabulary(which: str) -> list[str]:
    """Every word list entry and template (its fields left out) of a caption set, lower-case."""
    lists = [words for table in (WORDS, STYLE_WORDS, FAMILY_WORDS) for words in table[which].values()]
    lists += [TEMPLATES[which], MELODY_TEMPLATES[which], *TEXTURE_SENTENCES[which]]
    return [re.sub(r"\{\w+\}", " ", p).lower() for phrases in lists for p in phrases]


def _says(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None


def _words(phrases: list[str]) -> set[str]:
    return {w for p in phrases for w in re.findall(r"[\w'-]+", p)}


def test_training_and_heldout_vocabularies_are_disjoint():
    train, heldout = _vocabulary("train"), _vocabulary("heldout")
    text = "\n".join(train)
    assert [p for p in heldout if _says(text, p.strip(" .,;"))] == []  # no held-out phrase, word for word
    assert _words(train) & _words(heldout) <= SHARED_WORDS, sorted(
        _words(train) & _words(heldout) - SHARED_WORDS
    )
    # nor inside a training word: "lone" in "alone" (the generated captions are checked for the same above)
    heldout_words = [
        w.lower() for table in (WORDS, STYLE_WORDS) for ws in table["heldout"].values() for w in ws
    ]
    assert [(w, p) for w in heldout_words for p in train if w in p] == []
    for table in (TEMPLATES, MELODY_TEMPLATES):
        assert not set(table["train"]) & set(table["heldout"])
    assert not {s for kind in TEXTURE_SENTENCES["train"] for s in kind} & {
        s for kind in TEXTURE_SENTENCES["heldout"] for s in kind
    }
    # many ways to say each attribute in training, a few held out
    assert all(len(WORDS["train"][v]) >= 12 for v in ("slow", "medium", "fast", "major", "minor"))
    assert len(TEMPLATES["train"]) >= 20 and len(MELODY_TEMPLATES["train"]) >= 6


def test_evaluation_prompt_words_stay_out_of_training():
    from musiclm.evaluation.pairs.file import read_pairs
    from musiclm.mulan.evaluate import FAMILY_TEMPLATES

    prompts = "\n".join([f"{p.a}\n{p.b}" for p in read_pairs()] + [FAMILY_TEMPLATES["heldout"]])
    train = "\n".join(_vocabulary("train"))
    for kind, words in EVALUATION_WORDS.items():
        for word in words:
            assert _says(prompts, word), (
                f"{word!r} ({kind}) is in no evaluation prompt: drop it from the list"
            )
            assert not _says(train, word), (
                f"{word!r} ({kind}) of the evaluation prompts is in training captions"
            )
    # and the captions drawn, instrument names and all
    attrs = {**STRING_CHORALE, "families": ["strings"], "register": "low", "articulation": "plucked"}
    drawn = "\n".join(
        caption_from_attributes({**attrs, "tempo_class": t, "mode": m}, np.random.default_rng(s))
        for t in ("slow", "medium", "fast")
        for m in ("major", "minor")
        for s in range(30)
    )
    assert [w for ws in EVALUATION_WORDS.values() for w in ws if _says(drawn, w)] == []


def test_deterministic_and_resume_repairs_half_written(tmp_path):
    first = small_build(tmp_path / "a")
    second = small_build(tmp_path / "b")
    assert [json.loads(line) for line in first.read_text().splitlines()] == [
        json.loads(line) for line in second.read_text().splitlines()
    ]
    lines = first.read_text()
    clips = read_manifest(first)
    before = sf.read(str(clips[0].path))[0]
    clips[0].path.unlink()  # a half-finished work: its audio is gone...
    marker = sorted((tmp_path / "a" / "works").glob("*.json"))[-1]
    marker.unlink()  # ...and another work never finished
    (tmp_path / "a" / "clips" / "stale.wav.partial").write_bytes(b"RIFF")
    first_seconds = json.loads((tmp_path / "a" / "card.json").read_text())["build_seconds"]
    assert small_build(tmp_path / "a").read_text() == lines
    resumed_seconds = json.loads((tmp_path / "a" / "card.json").read_text())["build_seconds"]
    assert resumed_seconds > first_seconds > 0  # the card counts the time of every run of the folder
    assert np.array_equal(sf.read(str(clips[0].path))[0], before)
    assert marker.is_file() and not (tmp_path / "a" / "clips" / "stale.wav.partial").exists()


def test_bad_works_and_renders_are_skipped_and_listed(tmp_path, monkeypatch):
    real_parse, real_render = build_mod.corpus.parse_work, build_mod.render_midi
    calls = {"n": 0}

    def parse(work):
        if work.work_id.endswith(("1", "3", "5", "7", "9")):
            raise ValueError("unreadable score")
        return real_parse(work)

    def bad_render(*args, **kw):
        calls["n"] += 1
        wav, clipped = real_render(*args, **kw)
        return (wav * 0, 0.0) if calls["n"] == 1 else (wav, 0.5) if calls["n"] == 2 else (wav, clipped)

    monkeypatch.setattr(build_mod.corpus, "parse_work", parse)
    monkeypatch.setattr(build_mod, "render_midi", bad_render)
    manifest = small_build(tmp_path, works=8)
    card = json.loads((tmp_path / "card.json").read_text())
    reasons = card["skip_reasons"]
    assert (
        reasons.get("parse failed", 0) >= 1
        and reasons["silent render"] == 1
        and reasons["clipped render"] == 1
    )
    assert len(card["skipped"]) == sum(reasons.values())
    assert "parse failed" in (tmp_path / "card.md").read_text()
    assert len(read_manifest(manifest)) == card["clips"] > 0


def test_missing_fluidsynth_or_soundfont_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "fluidsynth", None
    )  # what importing pyfluidsynth without the library does
    render._fluidsynth.cache_clear()
    with pytest.raises(render.RenderError, match="FluidSynth library is not installed.*apt-get install"):
        small_build(tmp_path)
    monkeypatch.undo()
    render._fluidsynth.cache_clear()
    monkeypatch.setitem(render.SOUNDFONTS, "TimGM6mb", ("/nonexistent/TimGM6mb.sf2", "GPL-2.0", 1.0))
    with pytest.raises(render.RenderError, match="apt-get install .*timgm6mb"):
        small_build(tmp_path)
    result = CliRunner().invoke(app, ["data", "build", "--out", str(tmp_path), "--hours", "0"])
    assert result.exit_code != 0 and "--hours must be positive" in result.output


# a slow string trio chorale in D minor: the attributes a render's captions are made from
STRING_CHORALE = dict(
    is_melody=False,
    tempo_class="slow",
    mode="minor",
    style="chorale",
    programs=[40, 41, 42],
    voices=3,
    bpm=60,
    key="D",
    time_signature="3/4",
    reverb=False,
    caption_set="train",
    register="middle",
    articulation="sustained",
)


def test_counterfactual_captions_change_one_attribute():
    attrs = STRING_CHORALE
    words = WORDS["train"]
    seen = set()
    for seed in range(60):
        text = counterfactual_caption(attrs, np.random.default_rng(seed)).lower()
        family_changed = not any(name in text for name in ("violin", "viola", "cello"))
        for name in sorted((i[1] for items in FAMILIES.values() for i in items), key=len, reverse=True):
            text = text.replace(name, "")  # "bright piano" is no mood word
        tempo_changed = any(w in text for t in ("medium", "fast") for w in words[t])
        mode_changed = any(w in text for w in words["major"]) or "d major" in text
        assert tempo_changed + mode_changed + family_changed == 1, text
        seen.add((tempo_changed, mode_changed, family_changed))
    assert len(seen) == 3  # all three kinds occur
    assert counterfactual_caption({"captions": "a real recording"}, np.random.default_rng(0)) is None


def test_family_words_and_fresh_captions():
    attrs = dict(
        is_melody=False,
        tempo_class="fast",
        mode="major",
        style="folk song",
        programs=[40, 56],
        families=["strings", "brass"],
        voices=2,
        bpm=150,
        key="G",
        time_signature="6/8",
        reverb=True,
        caption_set="train",
    )
    names = ["violin", "trumpet"]
    # at the build's share of 0 the captions, and the draws after them, are what they were without family
    # words
    rng_default, rng_zero = np.random.default_rng(3), np.random.default_rng(3)
    assert make_captions(attrs, names, rng_default, 3) == make_captions(attrs, names, rng_zero, 3, 0.0)
    assert rng_default.random() == rng_zero.random()
    family = make_captions(attrs, names, np.random.default_rng(0), 3, family_share=1.0)
    family_words = FAMILY_WORDS["train"]
    for text in family:
        assert "violin" not in text and "trumpet" not in text, text
        text = text.lower()
        assert any(w in text for w in family_words["strings"]) and any(
            w in text for w in family_words["brass"]
        )
    for which in ("train", "heldout"):  # every family has words in both caption sets, and they never meet
        assert set(family_words) == set(FAMILIES) == set(FAMILY_WORDS[which])
    for fam in FAMILIES:
        assert not set(FAMILY_WORDS["train"][fam]) & set(FAMILY_WORDS["heldout"][fam])
    fresh = {caption_from_attributes(attrs, np.random.default_rng(s)) for s in range(40)}
    assert len(fresh) > 30 and all(any(w in c.lower() for w in WORDS["train"]["fast"]) for c in fresh)
    assert any("violin" in c for c in fresh) and any("brass" in c for c in fresh)
    assert caption_from_attributes({"captions": "a real recording"}, np.random.default_rng(0)) is None
    # a hard negative with another family names that family, never the clip's own
    negatives = [counterfactual_caption(attrs, np.random.default_rng(s), family_share=1.0) for s in range(40)]
    own_family = family_words["strings"] + family_words["brass"]
    other_family = [n.lower() for n in negatives if not any(w in n.lower() for w in own_family)]
    others = [w for fam, words in family_words.items() if fam not in ("strings", "brass") for w in words]
    assert len(other_family) >= 5 and all(any(w in n for w in others) for n in other_family), other_family


def test_crop_dataset(tiny_dataset):
    ds = AudioCropDataset(tiny_dataset, sample_rate=16000, crop_seconds=2.5, with_text=True)
    assert all(c.split == "train" for c in ds.clips)
    item = ds[12345]
    assert item["audio"].shape == (40000,) and item["audio"].dtype == torch.float32
    assert item["text"] in ds.clips[item["clip"]].captions and item["clip"] == 12345 % len(ds)
    again = ds[12345]
    assert torch.equal(item["audio"], again["audio"]) and item["text"] == again["text"]
    crops = {ds[k]["audio"][:100].sum().item() for k in range(3 * len(ds)) if k % len(ds) == 0}
    assert len(crops) == 3  # the same clip, different random crops for different keys
    val = AudioCropDataset(
        tiny_dataset, sample_rate=24000, crop_seconds=5.0, split="valid", random_crop=False
    )
    assert torch.equal(val[0]["audio"], val[0]["audio"]) and val[0]["audio"].shape == (120000,)
    assert val[0]["audio"][-1000:].abs().max() == 0  # 5 s crop of a 4 s clip is zero-padded
    rms = [float(ds[k]["audio"].pow(2).mean().sqrt()) for k in range(4)]
    assert max(rms) / min(rms) < 3  # loudness-normalised
    quieter = AudioCropDataset(tiny_dataset, sample_rate=16000, crop_seconds=2.5, gain_db=(-12.0, -6.0))
    gains = [float(quieter[k]["audio"].abs().max() / ds[k]["audio"].abs().max()) for k in range(4)]
    assert all(10 ** (-12 / 20) - 1e-6 <= g <= 10 ** (-6 / 20) + 1e-6 for g in gains) and len(set(gains)) > 1
    hard = AudioCropDataset(tiny_dataset, 16000, 2.5, with_text=True, hard_negatives=True)
    negatives = [hard[k] for k in range(8)]
    assert all(n["negative_text"] not in hard.clips[n["clip"]].captions for n in negatives)
    with pytest.raises(ValueError, match="with_text"):
        AudioCropDataset(tiny_dataset, 16000, 2.5, hard_negatives=True)
    fresh = AudioCropDataset(
        tiny_dataset, 16000, 2.5, with_text=True, hard_negatives=True, fresh_captions=True
    )
    drawn = [fresh[k] for k in range(4 * len(fresh))]
    assert sum(d["text"] not in fresh.clips[d["clip"]].captions for d in drawn) > len(drawn) // 2
    assert all(d["text"] != d["negative_text"] for d in drawn)
    augmented = AudioCropDataset(
        tiny_dataset, 16000, 2.5, augment=Augment(reverb_share=1.0, level_lufs=(-20, -20))
    )
    for k in range(3):
        wet, dry = augmented[k]["audio"], ds[k]["audio"]
        assert wet.shape == dry.shape and not torch.allclose(wet, dry, atol=1e-3)
        assert abs(float(wet.pow(2).mean() / dry.pow(2).mean()) - 1) < 0.5  # reverb, not a level change
    everything = AudioCropDataset(tiny_dataset, 24000, 1.0, split=None)
    assert len(everything) == len(read_manifest(tiny_dataset))


def write_tone(path: Path, seconds: float, freq: float, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def test_index_folder_weights_and_bad_lines(tmp_path, tiny_dataset):
    folder = tmp_path / "mine"
    write_tone(folder / "a.wav", 3.0, 220)
    write_tone(folder / "sub" / "b.flac", 2.0, 330)
    write_tone(folder / "c.wav", 2.0, 440)
    (folder / "a.json").write_text(json.dumps({"description": "A calm tone.", "genre": "ambient", "bpm": 60}))
    (folder / "sub" / "b.json").write_text(
        json.dumps({"genre": "drone", "moods": ["dark"], "key": "A minor"})
    )
    (folder / "c.txt").write_text("A high tone.\nA sine wave.\n")
    (folder / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "mine.jsonl"
    result = CliRunner().invoke(app, ["data", "index", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 files" in result.output and "skipped 1 input(s)" in result.output
    assert "broken.wav" in (tmp_path / "mine.skipped.jsonl").read_text()
    clips = {c.path.name: c for c in read_manifest(out)}
    assert clips["a.wav"].captions == ["A calm tone."] and clips["a.wav"].attributes["bpm"] == 60
    assert clips["b.flac"].captions == ["Dark drone in A minor."] and clips["b.flac"].duration == 2.0
    assert clips["c.wav"].captions == ["A high tone.", "A sine wave."]
    mixed = AudioCropDataset([tiny_dataset, out], 24000, 1.0, weights=[1, 3])
    mine = sum(mixed[k]["clip"] >= len(mixed.clips) - 3 for k in range(400))
    assert 250 < mine < 350  # weights, not manifest sizes, decide where crops come from
    assert mixed[7]["audio"].shape == (24000,)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(out.read_text() + json.dumps({"path": "gone.wav"}) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:4: .*gone.wav.*--skip-bad"):
        AudioCropDataset(bad, 24000, 1.0)
    assert len(AudioCropDataset(bad, 24000, 1.0, skip_bad=True)) == 3
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no usable clips"):
        AudioCropDataset(tmp_path / "empty.jsonl", 24000, 1.0)
    with pytest.raises(ManifestError, match="no clips of split 'valid'"):
        AudioCropDataset(out, 24000, 1.0, split="valid")
    with pytest.raises(ValueError, match="weights"):
        AudioCropDataset([out], 24000, 1.0, weights=[1, 2])


def test_musiccaps_import_uses_offsets(tmp_path):
    rate = 22050
    t = np.arange(20 * rate) / rate
    wav = np.where(t < 10, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)  # sound, then silence
    (tmp_path / "audio").mkdir()
    sf.write(str(tmp_path / "audio" / "abc123.wav"), wav, rate)
    write_tone(tmp_path / "audio" / "xyz789_30.wav", 10.0, 440, rate)
    (tmp_path / "caps.csv").write_text(
        "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval\n"
        "abc123,10,20,x,\"['silence']\",Silence.,1,False,True\n"
        "xyz789,30,40,x,\"['tone', 'high']\",A high tone.,1,False,False\n"
        "missing,0,10,x,[],Nothing.,1,False,False\n"
    )
    out = tmp_path / "mc.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "musiccaps",
            str(tmp_path / "caps.csv"),
            "--audio-dir",
            str(tmp_path / "audio"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0 and "2 rows with local audio, 1 rows without" in result.output
    clips = read_manifest(out)
    assert clips[0].offset == 10 and clips[0].split == "test" and clips[1].offset is None
    assert clips[1].attributes["aspects"] == ["tone", "high"]
    silent = AudioCropDataset(out, rate, 2.0, split="test")
    assert silent[0]["audio"].abs().max() < 1e-3  # the crop comes from 10-20 s, the silent half
