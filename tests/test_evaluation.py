"""The evaluation suite on real signals with known answers (click tracks, triads, tones), the
classifier trained by the engine on the rendered tiny dataset, and `musiclm eval` end to end on the
tiny pipeline."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from musiclm.attributes import KIND_ATTRIBUTE, TEMPO_BANDS, tempo_class
from musiclm.cli.main import app, main
from musiclm.data.manifest import read_manifest, write_manifest
from musiclm.evaluation import adherence, asked, fad, kld, melody, memorization, prompts
from musiclm.evaluation.pairs import audio as pair_audio
from musiclm.evaluation.pairs import detectors, references
from musiclm.evaluation.pairs import statistics as pair_stats
from musiclm.evaluation.pairs.file import PairsError, read_pairs

SR = 22050


def click_track(bpm: float, seconds: float = 8.0, sr: int = SR) -> torch.Tensor:
    wav = torch.zeros(round(seconds * sr))
    click = torch.sin(2 * torch.pi * 1000 * torch.arange(400) / sr) * torch.exp(-torch.arange(400) / 80.0)
    for k in range(int(seconds * bpm / 60)):
        i = round(k * 60 / bpm * sr)
        wav[i : i + 400] += click[: len(wav) - i]
    return wav


def chord_sequence(chords: list[list[int]], seconds_each: float = 1.0, sr: int = SR) -> torch.Tensor:
    """Harmonic tones of MIDI notes (with a few partials, like an instrument)."""
    t = torch.arange(round(seconds_each * sr)) / sr
    out = []
    for chord in chords:
        wav = torch.zeros_like(t)
        for note in chord:
            f = 440.0 * 2 ** ((note - 69) / 12)
            for h in (1, 2, 3):
                wav += torch.sin(2 * torch.pi * f * h * t) / h
        out.append(wav * torch.hann_window(len(t)) / len(chord) / 3)
    return torch.cat(out)


def melody_wav(notes: list[int], seconds_each: float = 0.4, sr: int = SR) -> torch.Tensor:
    return chord_sequence([[n] for n in notes], seconds_each, sr)


def sine_melody(notes_per_second: float, seconds: float = 5.0, sr: int = SR) -> torch.Tensor:
    """A legato sine line up and down a C-major scale, its phase continuous so that no gap marks a new note
    (0 notes a second: middle C held)."""
    steps = np.array([0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2])
    t = np.arange(round(seconds * sr)) / sr
    hz = librosa.midi_to_hz(60 + steps[(t * notes_per_second).astype(int) % len(steps)])
    return torch.from_numpy(0.5 * np.sin(2 * np.pi * np.cumsum(hz) / sr)).float()


def test_frechet_distance_and_fad_infinity():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 4)), rng.normal(size=(4000, 4))
    shifted = rng.normal(size=(4000, 4)) + np.array([1.0, 0, 0, 0])
    assert fad.fad(a, b) < 0.02
    assert fad.fad(a, shifted) == pytest.approx(1.0, abs=0.1)  # true distance: ||mu||^2 = 1
    mu, s = fad.statistics(a)
    assert fad.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    # small sets are biased upwards; the extrapolation removes the bias
    small = shifted[:200]
    inf = fad.fad_infinity(small, b, sizes=[50, 80, 120, 160, 200], trials=10)
    assert abs(inf["fad_inf"] - 1.0) < abs(fad.fad(small[:50], b) - 1.0)
    assert inf["slope"] > 0
    with pytest.raises(fad.FADError, match="NaN"):
        fad.statistics(np.full((3, 2), np.nan))


@pytest.mark.parametrize("bpm, cls", [(120, "medium"), (75, "slow"), (150, "fast")])
def test_tempo_of_click_tracks(bpm, cls):
    est = adherence.estimate_bpm(click_track(bpm), SR)
    assert adherence.tempo_matches(est, bpm)["acc1"], est
    assert tempo_class(est) == cls


def test_key_of_triad_sequences():
    d_minor = chord_sequence([[62, 65, 69], [67, 70, 74], [69, 73, 76], [62, 65, 69]] * 2)  # i iv V i
    g_major = chord_sequence([[67, 71, 74], [60, 64, 67], [62, 66, 69], [67, 71, 74]] * 2)  # I IV V I
    assert adherence.estimate_key(d_minor, SR) == ("D", "minor")
    assert adherence.estimate_key(g_major, SR) == ("G", "major")
    assert adherence.key_matches(("D", "minor"), "D", "minor") == {
        "mode": True,
        "key": True,
        "key_relative": True,
    }
    assert adherence.key_matches(("F", "major"), "D", "minor")["key_relative"]
    assert not adherence.key_matches(("F", "major"), "D", "minor")["key"]
    with pytest.raises(ValueError, match="key name"):
        adherence.pitch_class("H#")


@pytest.mark.parametrize(
    "text, bpm, key, mode",
    [
        ("A tango at about 120 BPM in D minor.", 120, "D", "minor"),
        ("Here organ carries a hymn, roughly 96 beats per minute.", 96, None, None),
        ("Listen to flute performing a reel; it feels gloomy, key of E minor.", None, "E", "minor"),
        ("A waltz in F# major", None, "F#", "major"),
        ("a dirge in Bb minor, 60bpm", 60, "Bb", "minor"),
        ("Folk; accordion; slow; happy; C major; 104 BPM.", 104, "C", "major"),
        ("in the key of B flat major at 90.5 beats a minute", 90.5, "Bb", "major"),
        ("a march in E♭ major", None, "Eb", "major"),
        ("a nocturne in G♯ Minor", None, "G#", "minor"),
        ("C sharp minor, at a 132-BPM clip", 132, "C#", "minor"),
        ("A-flat major chorale", None, "Ab", "major"),
        ("a lament in a minor key", None, None, None),  # "a" is an article: the mode alone names no key
        ("A slow, calm flute melody.", None, None, None),
        ("", None, None, None),
    ],
)
def test_asked_tempo_and_key_read_from_the_prompt_words(text, bpm, key, mode):
    assert asked.asked(text) == {"bpm": bpm, "key": key, "mode": mode}


def test_asked_tempo_share_on_click_tracks():
    played_asked = [(120, "at about 120 BPM"), (150, "roughly 75 beats per minute"), (75, "at 150 bpm")]
    played_asked += [(100, "at 130 BPM"), (150, "at about 50 BPM"), (120, "a march, tempo not named")]
    scores = asked.asked_scores([click_track(b) for b, _ in played_asked], SR, [t for _, t in played_asked])
    clips = scores["per_clip_asked"]
    assert [c["prompt"] for c in clips] == [0, 1, 2, 3, 4]  # the prompt naming no tempo is not counted
    assert [c["tempo"] for c in clips] == [True, False, False, False, False]
    assert [c["tempo_octave"] for c in clips] == [True, True, True, False, False]  # x3 is no octave error
    assert scores["asked_tempo_n"] == 5 and scores["asked_tempo_share"] == pytest.approx(0.2)
    assert scores["asked_tempo_octave_share"] == pytest.approx(0.6)
    assert scores["asked_key_n"] == 0 and math.isnan(scores["asked_key_share"])


def test_asked_key_on_a_triad_progression():
    d_minor = chord_sequence([[62, 65, 69], [67, 70, 74], [69, 73, 76], [62, 65, 69]] * 2)  # i iv V i
    texts = ["A dirge in D minor.", "key of G minor", "in F major", "in D major", "no key named"]
    scores = asked.asked_scores([d_minor] * len(texts), SR, texts)
    assert [(c["key"], c["mode"]) for c in scores["per_clip_asked"]] == [
        (True, True),
        (False, True),
        (False, False),  # the relative major is another key and mode
        (False, False),
    ]
    assert scores["per_clip_asked"][0]["key_detected"] == "D minor" and scores["asked_key_n"] == 4
    assert scores["asked_key_share"] == 0.25 and scores["asked_mode_share"] == 0.5
    assert scores["asked_tempo_n"] == 0


def test_note_change_rate_counts_notes_and_not_drones():
    from musiclm.evaluation.melodies import note_change_rate, note_rate_ratios

    slow, fast, held = (note_change_rate(sine_melody(n), SR) for n in (2, 6, 0))
    assert slow == pytest.approx(2, abs=0.3) and fast == pytest.approx(6, abs=0.6)
    assert held <= 0.2  # the one note it starts on
    ratios = note_rate_ratios([0.2, 6.0, 1.0], [2.0, 6.0, 0.0])
    assert ratios["per_clip_note_rate_ratio"][:2] == pytest.approx([0.1, 1.0])
    assert math.isnan(ratios["per_clip_note_rate_ratio"][2])  # a real clip without note changes: no ratio
    assert ratios["note_rate_ratio_median"] == pytest.approx(0.55) and ratios["note_rate_ratio_n"] == 2


def test_suite_reports_note_changes_against_the_real_clip_and_what_the_words_ask(tmp_path):
    from musiclm.data.manifest import Clip
    from musiclm.evaluation import suite

    rate, seconds = 16000, 4.0

    def clip(name: str, wav: torch.Tensor, split: str = "valid") -> Clip:
        sf.write(tmp_path / f"{name}.wav", wav.numpy(), rate)
        return Clip(tmp_path / f"{name}.wav", seconds, split=split)

    real = [clip("real0", sine_melody(4, seconds, rate)), clip("real1", sine_melody(2, seconds, rate))]
    spare = [clip(f"spare{i}", sine_melody(1, seconds, rate)) for i in range(2)]
    texts = ["A quick tune at about 120 BPM in C major.", "A slow tune."]
    metrics = suite.run_evaluation(
        [prompts.Prompt(t, reference=c.path) for t, c in zip(texts, real)],
        real + spare + [clip("train", sine_melody(0, seconds, rate), "train")],
        tmp_path / "eval",
        suite.Evaluators(),
        sample_rate=rate,
        seconds=seconds,
        generated=[sine_melody(0, seconds, rate), sine_melody(2, seconds, rate)],  # a drone; the real pace
        reference_clips_min=2,
    )
    generated, truth = metrics["generated"], metrics["ground truth"]
    assert truth["per_clip_note_rate"] == pytest.approx([4, 2], abs=0.3)
    assert generated["per_clip_note_rate_ratio"] == pytest.approx([0, 1], abs=0.1)
    assert metrics["random training"]["note_rate_ratio_median"] < 0.1  # a held tone against both
    assert "note_rate_ratio_median" not in truth  # 1 by construction
    assert generated["asked_tempo_n"] == 1 and generated["asked_key_n"] == 1
    assert truth["asked_tempo_share"] in (0.0, 1.0) and "per_clip_asked" in truth
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Music that moves" in report and "| 1 | A slow tune. | 2.000 |" in report
    assert "## Tempo and key asked by name" in report and "Stable Audio 3" in report
    assert "note_rate" not in report.split("## Metrics")[1].split("## Tempo")[0]  # not in the big table


def test_an_interrupted_report_keeps_the_earlier_one(tmp_path, request):
    from musiclm.evaluation.report import write_report

    metrics = {"generated": {"fad_mulan": 1.5, "adherence_family": 0.5}}
    write_report(tmp_path, metrics, {"prompts": 2})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"metrics.json", "report.md", "adherence.png"} <= before.keys()
    request.getfixturevalue("dying_text_writes")
    with pytest.raises(OSError, match="No space left"):
        write_report(tmp_path, {"generated": {"fad_mulan": 9.0, "adherence_family": 0.1}}, {"prompts": 3})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no half file, no temporary one


def test_adherence_rows_on_known_audio():
    wavs = [
        click_track(120, 6) + chord_sequence([[62, 65, 69], [67, 70, 74], [69, 73, 76]] * 2),
        click_track(120, 6),
    ]
    attrs = [{"tempo_class": "medium", "bpm": 120, "key": "D", "mode": "minor"}, {"tempo_class": "fast"}]
    rows = adherence.adherence(wavs, SR, attrs)
    assert rows[0]["tempo_class"] == 1.0 and rows[0]["key"] == 1.0 and rows[0]["tempo_acc1"] == 1.0
    assert rows[1]["tempo_class"] == 0.0 and "key" not in rows[1]


def test_melody_agreement():
    tune = [62, 64, 65, 67, 69, 67, 65, 64, 62, 69]
    ref = melody_wav(tune)
    same = melody.melody_agreement(ref, ref + 0.01 * torch.randn_like(ref), SR)
    octave = melody.melody_agreement(ref, melody_wav([n + 12 for n in tune]), SR)
    other = melody.melody_agreement(ref, melody_wav([70, 60, 72, 61, 66, 59, 71, 63, 68, 60]), SR)
    assert same["chroma"] > 0.9 and same["contour"] > 0.95
    assert octave["chroma"] > 0.8  # octave errors forgiven
    assert other["chroma"] < 0.3 and other["contour"] < 0.5


def test_kld_zero_for_identical_positive_otherwise():
    p = {"family": torch.tensor([[0.9, 0.1]]), "tempo": torch.tensor([[0.8, 0.1, 0.1]])}
    q = {"family": torch.tensor([[0.1, 0.9]]), "tempo": torch.tensor([[0.1, 0.1, 0.8]])}
    same = kld.kl_per_head(p, p)
    diff = kld.kl_per_head(p, q)
    assert all(float(v) == pytest.approx(0, abs=1e-5) for v in same.values())
    assert all(float(v) > 0.5 for v in diff.values())


def test_memorization_match_rates():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(64, 64))  # high-dimensional like real k-means centroids
    target = torch.from_numpy(rng.integers(0, 32, (6, 50)))
    copy = target.clone()
    copy[3:, :2] = (copy[3:, :2] + 1) % 32  # near copies: exact fails, approximate holds
    other = torch.from_numpy(rng.integers(32, 64, (6, 50)))  # other tokens entirely
    near = memorization.match_rates(copy, target, centroids)
    far = memorization.match_rates(other, target, centroids)
    assert near["exact_match"] == 0.5 and near["approx_match"] == 1.0
    assert far["exact_match"] == 0.0 and far["approx_match"] == 0.0
    assert far["ot_cost_mean"] > near["ot_cost_mean"]


def test_prompt_files(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\nA calm piano piece.\n\nA fast fiddle tune.\n")
    assert [p.text for p in prompts.read_prompts(txt)] == ["A calm piano piece.", "A fast fiddle tune."]
    good = tmp_path / "p.jsonl"
    good.write_text(
        json.dumps({"text": "x", "attributes": {"mode": "minor"}, "duration": 5, "melody": "a.wav"}) + "\n"
    )
    (p,) = prompts.read_prompts(good)
    assert p.attributes == {"mode": "minor"} and p.melody == (tmp_path / "a.wav").resolve()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    with pytest.raises(prompts.PromptError, match="bad.jsonl:2"):
        prompts.read_prompts(bad)
    csv = tmp_path / "musiccaps.csv"  # two rows in the MusicCaps CSV's own format
    csv.write_text(
        "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,"
        "is_audioset_eval\n"
        '-0Gj8-vB1q4,30,40,"/m/0140xf","[\'sad\', \'ballad\']","A sad ballad with strings.",4,False,True\n'
        'abc,0,10,"/m/04rlf","not a list","A fast fiddle tune.",1,False,False\n'
    )
    caps = prompts.import_musiccaps(csv, limit=5)
    assert [c.text for c in caps] == ["A sad ballad with strings.", "A fast fiddle tune."]
    assert caps[0].duration == 10.0 and caps[0].attributes["aspects"] == ["sad", "ballad"]
    assert caps[1].attributes["aspects"] == []  # an unreadable aspect list is no aspects, not an error
    assert [c.text for c in prompts.import_musiccaps(csv, eval_only=True)] == ["A sad ballad with strings."]
    (tmp_path / "other.csv").write_text("text,start\nx,0\n")
    with pytest.raises(prompts.PromptError, match="not the MusicCaps CSV"):
        prompts.import_musiccaps(tmp_path / "other.csv")


def test_fad_and_kld_reference_leave_out_the_clips_under_test(tmp_path):
    from musiclm.data.manifest import Clip
    from musiclm.evaluation import suite

    attrs = [
        {"mode": "minor", "style": "chorale"},
        {"mode": "major", "style": "chorale"},
        {"mode": "minor", "style": "chorale"},
        {"mode": "minor", "style": "folk song"},
        {"mode": "major"},
    ]
    clips = [Clip(tmp_path / f"{i}.wav", split="valid", attributes=a) for i, a in enumerate(attrs)]
    asked = [prompts.Prompt("a sad chorale", {"mode": "minor", "style": "chorale"}, reference=clips[0].path)]
    spare = suite.spare_reference(asked, clips, under_test=[tmp_path / "4.wav"], minimum=3)
    assert spare == clips[1:4]  # neither the prompt's own clip nor the audio given for evaluation
    assert suite.matched_references(asked, spare) == [clips[2]]  # the other minor chorale, not clip 0 itself
    with pytest.raises(suite.EvalError, match=r"needs 4 held-out clips .* but 3 of the manifest's 5"):
        suite.spare_reference(asked, clips, under_test=[tmp_path / "4.wav"], minimum=4)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from musiclm.codec.soundstream import SoundStream, SoundStreamConfig
    from musiclm.mulan.model import MuLan, MuLanConfig
    from musiclm.pipeline import MusicLM, StageSet, stage_config, vocabularies
    from musiclm.semantic.tokenizer import KMeansTokenizer
    from musiclm.semantic.w2vbert import W2VBert, W2VBertConfig
    from musiclm.stages import STAGES, StageLM

    torch.manual_seed(0)
    codec = SoundStream(SoundStreamConfig.preset("tiny")).eval()
    semantic = KMeansTokenizer.on(W2VBert(W2VBertConfig.preset("tiny")), layer=1, num_clusters=8)
    semantic.centroids.normal_()
    mulan = MuLan(MuLanConfig.preset("tiny")).eval()
    mulan.fit_quantizer(torch.nn.functional.normalize(torch.randn(256, mulan.embed_dim), dim=-1))
    vocab = vocabularies(codec, semantic, mulan, None, coarse_quantizers=2)
    stages = StageSet(*(StageLM(stage_config(s, "tiny", vocab)) for s in STAGES))
    return MusicLM(codec, semantic, mulan, stages).save_pretrained(tmp_path_factory.mktemp("pipe") / "m")


def test_classifier_trains_and_eval_runs_end_to_end(tiny_dataset, tiny_pipeline, tmp_path, monkeypatch):
    from musiclm.evaluation.classifier import EvalClassifier

    runner = CliRunner()
    clf_dir = tmp_path / "clf"
    res = runner.invoke(
        app,
        [
            "train",
            "classifier",
            "--data",
            str(tiny_dataset),
            "--out",
            str(clf_dir),
            "--preset",
            "tiny",
            "--steps",
            "60",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--no-augment",
            "--set",
            "val_every=0",
            "--set",
            "progress=false",
            "--set",
            "warmup_steps=5",
            "--lr",
            "3e-3",
            "--set",
            "log_every=1",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    history = [json.loads(line) for line in (clf_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in history if "loss" in h]
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.2  # single batches of 8 are noisy: compare means
    acc = json.loads((clf_dir / "heldout_accuracy.json").read_text())
    assert set(acc) >= {"family", "tempo", "mode", "style", "family_f1_per_family"} and acc["n"] > 0
    assert (
        sum(sum(row.values()) for row in acc["confusion_style"].values()) == acc["n"]
    )  # every clip counted once
    assert isinstance(EvalClassifier.from_pretrained(clf_dir), EvalClassifier)

    pfile = tmp_path / "prompts.jsonl"
    res = runner.invoke(
        app, ["eval-prompts", "--manifest", str(tiny_dataset), "--out", str(pfile), "--limit", "2"]
    )
    assert res.exit_code == 0, res.output
    under_test = {str(p.reference) for p in prompts.read_prompts(pfile)}
    clips = read_manifest(tiny_dataset)
    spare = [c for c in clips if c.split != "train" and str(c.path) not in under_test]
    # the tiny build holds out 2 works; FAD and KLD need held-out clips beyond the ones under test
    res = runner.invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(tiny_pipeline),
            "--prompts",
            str(pfile),
            "--reference",
            str(tiny_dataset),
            "--classifier",
            str(clf_dir),
            "--out",
            str(tmp_path / "e0"),
            "--reference-clips",
            str(len(spare) + 1),
        ],
    )
    assert res.exit_code != 0
    assert f"needs {len(spare) + 1} held-out clips" in str(res.exception)
    assert f"but {len(spare)} of" in str(res.exception)
    # so hold out some training clips too (the random-training row keeps the rest)
    reference = tmp_path / "reference.jsonl"
    train = [c for c in clips if c.split == "train"]
    write_manifest(
        reference,
        [c for c in clips if c.split != "train"]
        + [dataclasses.replace(c, split="valid") for c in train[:4]]
        + train[4:],
    )
    out = tmp_path / "eval"
    eval_args = ["eval", "--checkpoint", str(tiny_pipeline), "--prompts", str(pfile), "--reference"]
    eval_args += [str(reference), "--classifier", str(clf_dir), "--out", str(out), "--seconds", "2"]
    eval_args += ["--no-fad-inf", "--reference-clips", "4", "--guidance"]
    res = runner.invoke(app, [*eval_args, "2", "--memorization", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["rows"]
    assert set(rows) == {"generated", "ground truth", "codec resynthesis", "random training"}
    for row in rows.values():
        assert {"fad_mulan", "fad_codec", "fad_classifier", "mcc", "kld"} <= set(row)
        assert -1 <= row["mcc"] <= 1 and row["fad_mulan"] >= 0
    assert metrics["info"]["fad_reference_clips"] == len(spare) + 4  # every held-out clip not under test
    # measured against other real clips, the ground truth scores above zero: nothing is 0 by construction
    assert rows["ground truth"]["kld"] > 1e-4 and rows["ground truth"]["fad_classifier"] > 1e-4
    assert 0 <= metrics["info"]["memorization"]["exact_match"] <= 1 and metrics["info"]["guidance"] == 2
    report = (out / "report.md").read_text()
    assert report.split("## Tempo")[0].count("| generated |") == 1 and "## Music that moves" in report
    assert (out / "spectrograms.png").stat().st_size > 1000 and (out / "adherence.png").is_file()

    # a rerun resumes from the audio written: nothing is generated again, and the row is the same
    assert sorted(w.name for w in (out / "audio").glob("*.wav")) == ["000.wav", "001.wav"]
    from musiclm.pipeline import MusicLM

    real_generate = MusicLM.generate
    monkeypatch.setattr(MusicLM, "generate", lambda *a, **k: pytest.fail("generated again on resume"))
    (out / "metrics.json").unlink()
    res = runner.invoke(app, [*eval_args, "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    resumed = json.loads((out / "metrics.json").read_text())["rows"]["generated"]
    assert resumed["mcc"] == pytest.approx(rows["generated"]["mcc"], abs=1e-3)
    # other settings in the same folder are refused before anything is generated
    monkeypatch.setattr(MusicLM, "generate", real_generate)
    res = runner.invoke(app, [*eval_args, "3"])
    assert res.exit_code != 0
    assert "generated with other settings (guidance: 2.0 there, 3.0 now)" in str(res.exception)

    # already generated audio: the ground truth itself, given as a manifest, scores as the ground truth row
    given = tmp_path / "given.jsonl"
    given.write_text(
        "".join(json.dumps({"path": str(c.path)}) + "\n" for c in clips if str(c.path) in under_test)
    )
    res = runner.invoke(
        app,
        [
            "eval",
            "--audio",
            str(given),
            "--prompts",
            str(pfile),
            "--reference",
            str(reference),
            "--classifier",
            str(clf_dir),
            "--out",
            str(tmp_path / "e2"),
            "--seconds",
            "2",
            "--no-fad-inf",
            "--reference-clips",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    again = json.loads((tmp_path / "e2" / "metrics.json").read_text())["rows"]
    for key in ("kld", "fad_classifier"):
        assert again["generated"][key] == pytest.approx(again["ground truth"][key])
        # without a pipeline the clips are read at 24 kHz instead of its rate: equal up to resampling, which
        # moves a KLD near 0.003 by ~1e-4
        assert again["ground truth"][key] == pytest.approx(rows["ground truth"][key], rel=0.01, abs=3e-4)
    res = runner.invoke(
        app,
        [
            "eval",
            "--audio",
            str(tmp_path),
            "--prompts",
            str(pfile),
            "--reference",
            str(reference),
            "--classifier",
            str(clf_dir),
            "--out",
            str(tmp_path / "e3"),
        ],
    )
    assert res.exit_code != 0 and "counts must match" in str(res.exception)


def test_classifier_rhythm_and_key_features_hear_tempo_and_mode():
    import pyloudnorm

    from musiclm.audio import CHROMAS, RhythmAndKey
    from musiclm.codec.soundstream import SoundStream, SoundStreamConfig
    from musiclm.data.augment import Augment
    from musiclm.evaluation.classifier import ClassifierConfig, EvalClassifier

    sr = 24000
    model = EvalClassifier(ClassifierConfig.preset("tiny", rhythm_and_key=True, hidden=16)).eval()
    # a click every 0.5 s: the onset autocorrelation peaks at lag 25 frames (50 Hz), index 25 - 5
    clicks = torch.stack([click_track(120, 6.0, sr), click_track(80, 6.0, sr)])
    rhythm = model.rhythm_and_key.rhythm(model.mel(clicks))
    assert int(rhythm[0].argmax()) + 5 == 25 and int(rhythm[1, 20:60].argmax()) + 25 in (
        37,
        38,
    )  # 0.75 s: 37.5
    c_major, c_minor = (
        [[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]],
        [[60, 63, 67], [65, 68, 72], [67, 71, 74], [60, 63, 67]],
    )
    d_major = [[n + 2 for n in chord] for chord in c_major]
    chords = torch.stack([chord_sequence(ch, 1.0, sr) for ch in (c_major, c_minor, d_major)])
    for chroma in CHROMAS:
        keys = RhythmAndKey(sr, 50.0, chroma=chroma).key(chords)
        corr = keys[:, :24].view(3, 2, 12)
        assert corr[0, 0, 0] > corr[0, 1].max() and corr[1, 1, 0] > corr[1, 0].max(), chroma  # best key first
        torch.testing.assert_close(keys[2], keys[0], atol=0.05, rtol=0)  # a transposition changes nothing
    with pytest.raises(ValueError, match="chroma must be one of"):
        RhythmAndKey(sr, 50.0, chroma="cqt")
    out = model(torch.randn(2, 2 * sr) * 0.1)
    assert out["mode"].shape == (2, 2) and out["family"].shape[0] == 2

    codec = SoundStream(SoundStreamConfig.preset("tiny")).eval()
    augment = Augment(codec=codec, codec_share=1.0, reverb_share=1.0, level_lufs=(-30.0, -30.0))
    wav = chord_sequence(c_major, 0.5, sr)
    changed = augment(wav, sr, np.random.default_rng(0))
    assert changed.shape == wav.shape and torch.isfinite(changed).all() and not torch.allclose(changed, wav)
    assert pyloudnorm.Meter(sr).integrated_loudness(changed.double().numpy()) == pytest.approx(-30.0, abs=0.5)


def test_adherence_reads_tempo_and_mode_from_the_classifier_when_given():
    from musiclm.evaluation.classifier import ClassifierConfig, EvalClassifier

    sr = 24000
    clf = EvalClassifier(ClassifierConfig.preset("tiny")).eval()
    wavs = [click_track(150, 4.0, sr), chord_sequence([[62, 65, 69]] * 4, 1.0, sr)]
    attrs = [{"tempo_class": "fast", "mode": "minor"}, {"tempo_class": "slow", "mode": "minor"}]
    rows = adherence.adherence(wavs, sr, attrs, clf)
    probs = clf.predict(torch.stack(wavs))
    for i, row in enumerate(rows):
        assert {"tempo_class", "tempo_class_beat", "mode", "mode_chroma"} <= set(row)
        assert row["tempo_class"] == float(
            clf.config.tempos[int(probs["tempo"][i].argmax())] == attrs[i]["tempo_class"]
        )
        assert row["mode"] == float(clf.config.modes[int(probs["mode"][i].argmax())] == "minor")
    assert (
        rows[0]["tempo_class_beat"] == 1.0 and rows[1]["mode_chroma"] == 1.0
    )  # the librosa detectors still run
    plain = adherence.adherence(wavs, sr, attrs)
    assert plain[0]["tempo_class"] == 1.0 and "tempo_class_beat" not in plain[0]


# ---------------------------------------------------------------- paired adherence
def harmonic_tone(freq: float, seconds: float = 2.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(round(seconds * sr)) / sr
    return sum(torch.sin(2 * torch.pi * freq * h * t) / h for h in (1, 2, 3, 4)) * 0.2


def notes_with_envelope(
    freqs: list[float], envelope, seconds_each: float = 0.25, sr: int = SR
) -> torch.Tensor:
    t = torch.arange(round(seconds_each * sr)) / sr
    return torch.cat([torch.sin(2 * torch.pi * f * t) * envelope(t) * 0.3 for f in freqs])


def test_pair_detectors_move_the_asked_way_on_known_audio():
    rate_a, rate_b = (
        detectors.onset_rate(click_track(bpm, 4).numpy(), SR) for bpm in (120, 360)
    )  # 2 vs 6 Hz
    assert rate_a == pytest.approx(2, abs=0.3) and rate_b == pytest.approx(6, abs=0.6)
    minor = chord_sequence([[60, 63, 67], [65, 68, 72], [67, 71, 74], [60, 63, 67]])  # i iv V i in C minor
    major = chord_sequence([[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]])  # I IV V I in C major
    assert detectors.majorness(minor.numpy(), SR) < 0 < detectors.majorness(major.numpy(), SR)
    # the pitch of a harmonic tone is its fundamental, not the centroid of its partials
    low, high = (detectors.pitch_height(harmonic_tone(f).numpy(), SR) for f in (200.0, 800.0))
    assert low == pytest.approx(librosa.hz_to_midi(200.0), abs=1)
    assert high == pytest.approx(librosa.hz_to_midi(800.0), abs=1)
    tune = [262.0, 294.0, 330.0, 349.0, 392.0, 349.0, 330.0, 294.0] * 2
    plucked = notes_with_envelope(tune, lambda t: torch.exp(-t / 0.08))
    sustained = notes_with_envelope(tune, lambda t: torch.clamp(t / 0.01, max=1.0))
    assert detectors.note_decay(sustained.numpy(), SR) < 5 < 20 < detectors.note_decay(plucked.numpy(), SR)
    one = torch.sin(2 * torch.pi * 440 * torch.arange(2 * SR) / SR) * 0.3
    chord = sum(harmonic_tone(440 * 2 ** (k / 12)) for k in (0, 4, 7, 11)) / 4  # four notes at once
    assert (
        detectors.simultaneous_pitches(chord.numpy(), SR)
        > detectors.simultaneous_pitches(one.numpy(), SR) + 2
    )
    assert detectors.simultaneous_pitches(np.zeros(SR, np.float32), SR) == 0.0


def test_pair_shares_carry_their_uncertainty():
    assert pair_stats.wilson_interval(33, 66) == [0.383, 0.617]
    assert pair_stats.wilson_interval(7, 11) == pytest.approx([0.354, 0.848], abs=1e-3)
    low, high = pair_stats.wilson_interval(66, 66)
    assert high == pytest.approx(1.0) and low > 0.94
    rows = [{"kind": "mode", "moved": m} for m in (True, True, False, True)]
    summary = pair_stats.summarize(rows)
    assert summary["n"] == 4 and summary["share"] == 0.75
    assert summary["by_kind"]["mode"]["ci95"] == summary["ci95"] == pair_stats.wilson_interval(3, 4)


def test_comparing_two_models_on_the_same_pairs(tmp_path, monkeypatch, capsys):
    def run(seed: int, moved: list[bool]) -> dict:
        kinds = ["tempo", "mode"] * (len(moved) // 2)
        return {
            "info": {"seed": seed},
            "pairs": [
                {"kind": k, "a": f"slow {i}", "b": f"fast {i}", "generated": {"moved": m}}
                for i, (k, m) in enumerate(zip(kinds, moved))
            ],
        }

    first = [run(0, [True] * 4 + [False] * 16), run(1, [False] * 20)]
    second = [run(0, [True] * 20), run(1, [True] * 4 + [False] * 16)]
    result = pair_stats.compare_runs(first, second)
    assert result["seeds"] == [0, 1]
    assert result["all"] == {
        "n": 40,
        "first": 0.1,
        "second": 0.6,
        "second_only": 20,
        "first_only": 0,
        "p_value": pytest.approx(2 * 0.5**20, rel=1e-2),
    }
    assert result["by_kind"]["tempo"]["n"] == 20 and result["by_kind"]["mode"]["second_only"] == 10
    assert pair_stats.sign_test(5, 5) == 1.0
    with pytest.raises(ValueError, match="share no scored pair"):
        pair_stats.compare_runs(first, [run(7, [True] * 20)])

    folders = []
    for name, result_of_seed in (("a", first[0]), ("b", second[0])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pairs.json").write_text(json.dumps(result_of_seed))
        folders.append(str(tmp_path / name))
    out = tmp_path / "compare.json"
    res = CliRunner().invoke(
        app, ["eval-pairs-compare", "--first", folders[0], "--second", folders[1], "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["all"]["second_only"] == 16
    # through the real entry point: one `error:` line, however long the temporary path is
    monkeypatch.setattr(
        sys, "argv", ["musiclm", "eval-pairs-compare", "--first", str(tmp_path), "--second", folders[1]]
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: ") and "has no pairs.json" in err


def test_shipped_pairs_file():
    from musiclm.data import corpus
    from musiclm.data.captions import STYLE_WORDS, WORDS
    from musiclm.data.instruments import FAMILY_OF, articulation

    shipped = read_pairs()
    kinds = [p.kind for p in shipped]
    assert len(shipped) >= 60 and all(kinds.count(k) >= 10 for k in KIND_ATTRIBUTE)
    caption_words = {
        w.lower() for sets in (WORDS, STYLE_WORDS) for d in sets.values() for ws in d.values() for w in ws
    }
    for p in shipped:
        assert p.changed() == {KIND_ATTRIBUTE[p.kind]}, p
        for attrs in (p.attributes_a, p.attributes_b):  # renderable: the dataset's own instruments and styles
            assert attrs["families"] == list(dict.fromkeys(FAMILY_OF[i] for i in attrs["instruments"]))
            assert attrs["articulation"] == articulation(attrs["instruments"])
            assert attrs["style"] in {c.style for c in corpus.COLLECTIONS}
            assert attrs["tempo_class"] in TEMPO_BANDS
        for text in (p.a, p.b):  # worded away from the caption templates' synonym lists
            used = [
                w for w in caption_words if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text.lower())
            ]
            assert not used, (text, used)
    assert len({(p.a, p.b) for p in shipped}) == len(shipped)


def test_eval_options_from_a_file(tmp_path):
    import typer

    from musiclm.cli.common import options_from_file

    command = typer.main.get_command(app).commands["eval"]
    given = tmp_path / "eval.json"
    given.write_text(json.dumps({"seed": 5, "reference-clips": 8, "fad-inf": False, "prompts": "p.txt"}))
    assert options_from_file(given, command) == {
        "seed": 5,
        "reference_clips": 8,
        "fad_inf": False,
        "prompts": "p.txt",
    }
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"seed": 1, "reference_clip": 8}))
    with pytest.raises(
        typer.BadParameter, match=r"unknown option 'reference_clip'; valid: .*, reference-clips,"
    ):
        options_from_file(wrong, command)

    # the file fills in what the command line leaves out; the command line wins wherever both give a value
    args = ["--reference", "m.jsonl", "--out", "o", "--seed", "3"]
    for order in (["--options", str(given), *args], [*args, "--options", str(given)]):
        params = command.make_context("eval", order).params
        assert (params["seed"], params["reference_clips"], params["fad_inf"]) == (3, 8, False)
        assert (str(params["prompts"]), params["batch"]) == ("p.txt", 4)
    res = CliRunner().invoke(app, ["eval", "--options", str(wrong)])
    assert res.exit_code != 0 and "unknown option 'reference_clip'" in res.output


def test_pairs_file_errors(tmp_path):
    good = read_pairs()[0].to_json()
    two = {**good, "attributes_b": {**good["attributes_b"], "mode": "minor"}}  # tempo and mode both change
    backwards = {**good, "attributes_a": good["attributes_b"], "attributes_b": good["attributes_a"]}
    for bad, message in (
        (two, "must differ in tempo_class only"),
        (backwards, "must go up from A to B"),
        ({**good, "kind": "loudness"}, "unknown kind"),
    ):
        path = tmp_path / "p.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(PairsError, match=rf"p.jsonl:2: .*{message}"):
            read_pairs(path)


def test_reference_renders_and_eval_pairs(tiny_pipeline, tmp_path):
    from musiclm.evaluation.classifier import ClassifierConfig, EvalClassifier
    from musiclm.evaluation.pairs.chain import CHAIN_LINKS

    shipped = read_pairs()
    # piano folk tunes: clear onsets even in 2 s at a slow tempo, and a quick parse
    chosen = [
        next(
            p
            for p in shipped
            if p.kind == k and p.attributes_a["instruments"] == [0] and p.attributes_a["style"] == "folk song"
        )
        for k in ("tempo", "register")
    ]
    pfile = tmp_path / "two.jsonl"
    pfile.write_text("".join(json.dumps(p.to_json()) + "\n" for p in chosen))
    renders = references.render_reference_pairs(
        chosen, tmp_path / "ceiling", seconds=2.0, seed=0, soundfonts=["TimGM6mb"]
    )
    audio = [renders / f"00{i}-{s}.wav" for i in (0, 1) for s in "ab"]
    assert all(sf.info(str(p)).duration == pytest.approx(2.0, abs=0.01) for p in audio)
    stamps = [p.stat().st_mtime_ns for p in audio]
    references.render_reference_pairs(chosen, renders, seconds=2.0, seed=0, soundfonts=["TimGM6mb"])
    assert [p.stat().st_mtime_ns for p in audio] == stamps  # a rerun resumes: finished renders are kept

    runner = CliRunner()
    clf = EvalClassifier(ClassifierConfig.preset("tiny")).save_pretrained(tmp_path / "clf")
    res = runner.invoke(
        app,
        [
            "eval-pairs",
            "--audio",
            str(renders),
            "--pairs",
            str(pfile),
            "--seconds",
            "2",
            "--out",
            str(tmp_path / "scored"),
            "--classifier",
            str(clf),
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    result = json.loads((tmp_path / "scored" / "pairs.json").read_text())
    scored = result["rows"]["generated"]
    assert scored["share"] == 1.0 and scored["by_kind"] == {
        "tempo": {"share": 1.0, "n": 1, "ci95": [0.207, 1.0]},
        "register": {"share": 1.0, "n": 1, "ci95": [0.207, 1.0]},
    }
    register = result["pairs"][1]["generated"]
    assert register["b"] - register["a"] > 12  # rendered about two octaves apart, and read as pitch
    assert result["rows"]["shuffled"]["n"] == 2
    table_row = "| generated | 100% (1; 21%-100%) | 100% (1; 21%-100%) | 100% (2; 34%-100%) |"
    assert table_row in (tmp_path / "scored" / "pairs.md").read_text()

    # a pipeline generates both sides of each pair with the same seed, into files a rerun reuses
    generate = [
        "eval-pairs",
        "--checkpoint",
        str(tiny_pipeline),
        "--pairs",
        str(pfile),
        "--seconds",
        "0.5",
        "--out",
        str(tmp_path / "gen"),
        "--classifier",
        str(clf),
        "--batch",
        "2",
    ]
    res = runner.invoke(app, generate)
    assert res.exit_code == 0, res.output + repr(res.exception)
    generated = json.loads((tmp_path / "gen" / "pairs.json").read_text())
    assert (
        generated["rows"]["generated"]["n"] == 2
        and len(list((tmp_path / "gen" / "audio").glob("*.wav"))) == 4
    )
    # --chain (on the same folder: the generated audio is kept) adds the renders sent through the model
    res = runner.invoke(app, [*generate, "--chain"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    chained = json.loads((tmp_path / "gen" / "pairs.json").read_text())
    assert [p["generated"] for p in chained["pairs"]] == [p["generated"] for p in generated["pairs"]]
    for name, link in CHAIN_LINKS.items():
        assert chained["rows"][name]["n"] == 2
        wavs = sorted((tmp_path / "gen" / "chain" / link).glob("*.wav"))
        # (given semantic tokens, the acoustic stages cover their whole frames only: up to 0.5 s)
        assert len(wavs) == 4 and all(0.25 < sf.info(str(w)).duration < 0.52 for w in wavs)
    assert chained["rows"]["reference renders"]["n"] == 2
    res = runner.invoke(app, ["eval-pairs", "--pairs", str(pfile), "--out", str(tmp_path / "x"), "--chain"])
    assert res.exit_code != 0 and "--chain needs --checkpoint" in res.output

    # rescoring the saved audio reads it at its own rate, so it gives the generating run's scores
    rescore = [
        "eval-pairs",
        "--audio",
        str(tmp_path / "gen" / "audio"),
        "--pairs",
        str(pfile),
        "--seconds",
        "0.5",
    ]
    res = runner.invoke(app, [*rescore, "--out", str(tmp_path / "rescored"), "--classifier", str(clf)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rescored = json.loads((tmp_path / "rescored" / "pairs.json").read_text())
    assert rescored["info"]["sample_rate"] == generated["info"]["sample_rate"] != 24000
    assert [p["generated"] for p in rescored["pairs"]] == [p["generated"] for p in generated["pairs"]]
    (tmp_path / "gen" / "audio" / "001-b.wav").unlink()
    with pytest.raises(PairsError, match="001-b.wav"):
        pair_audio.load_pair_audio(tmp_path / "gen" / "audio", 2, 16000, 0.5)
    res = runner.invoke(app, ["eval-pairs", "--pairs", str(pfile), "--out", str(tmp_path / "none")])
    assert res.exit_code != 0 and "nothing to score" in res.output


def test_melody_scores_tell_the_notes_from_a_drone():
    from musiclm.evaluation import melodies as mel

    flute, chords = mel.Item("flute", 73, 72, 2), mel.Item("piano", 0, 60, 1, voices=3)
    drone = mel.Item("flute", 73, 72, 0.2)  # its first note held for the whole 5 s
    renders = mel.render_items([flute, chords, drone])
    played = mel.score_item(flute, renders[0], mel.RATE)
    assert played["pitch"] > 0.9 and played["pitch_recall"] > 0.9 and played["onset_f1"] > 0.9
    assert mel.score_item(chords, renders[1], mel.RATE)["chroma_f1"] > 0.6
    held = mel.score_item(flute, renders[2], mel.RATE)  # the drone scored against the scale's score
    assert held["pitch_recall"] < 0.2 and held["onset_f1"] < 0.3


def test_eval_melodies_writes_scores_and_audio_of_every_row(tiny_pipeline, tmp_path):
    out = tmp_path / "mel"
    runner = CliRunner()
    res = runner.invoke(
        app, ["eval-melodies", "--checkpoint", str(tiny_pipeline), "--limit", "2", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    scores = json.loads((out / "melodies.json").read_text())
    assert set(scores["rows"]) == {"render", "codec", "acoustic stages"}
    assert all(len(rows) == 2 and "pitch" in rows[0] for rows in scores["rows"].values())
    assert scores["summary"]["render"]["slow melodies (<= 2/s) pitch"] > 0.9  # the renders are the truth
    assert (
        len(list((out / "audio").rglob("*.wav"))) == 6 and "| render |" in (out / "melodies.md").read_text()
    )
    res = runner.invoke(app, ["eval-melodies", "--checkpoint", str(tiny_pipeline), "--limit", "0"])
    assert res.exit_code != 0 and "--limit must be at least 1" in res.output


def test_register_and_polyphony_measures_of_the_real_semantic_check():
    from musiclm.evaluation.diagnostics import correlation, median_pitch, polyphony

    rate = 16000
    t = torch.arange(2 * rate) / rate

    def notes(*midi):
        return sum(torch.sin(2 * math.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in midi) / len(midi)

    assert abs(median_pitch(notes(69), rate) - 69) < 0.5 and abs(median_pitch(notes(57), rate) - 57) < 0.5
    assert math.isnan(median_pitch(torch.zeros(2 * rate), rate))
    assert polyphony(notes(60), rate) < 1.5 and polyphony(notes(60, 64, 67), rate) > 2.5
    assert correlation([1, 2, float("nan"), 4], [2, 4, 5, 8]) == pytest.approx(1.0)
    assert math.isnan(correlation([1, 1, 1], [1, 2, 3]))


def test_whistled_tune_has_the_midi_pitch_and_is_the_same_for_a_seed(tmp_path):
    import pretty_midi

    from musiclm.evaluation import whistle

    midi = pretty_midi.PrettyMIDI()
    tune, bass = pretty_midi.Instrument(program=73), pretty_midi.Instrument(program=32)
    tune.notes = [pretty_midi.Note(90, p, 0.5 * i, 0.5 * i + 0.45) for i, p in enumerate([50, 54, 57, 62])]
    tune.notes.append(pretty_midi.Note(90, 45, 0.0, 0.45))  # a lower note struck with the first
    bass.notes = [pretty_midi.Note(90, 38, 0.0, 2.0)]
    midi.instruments += [tune, bass]
    midi.write(str(tmp_path / "t.mid"))
    notes = whistle.whistle_register(whistle.tune(tmp_path / "t.mid"))
    assert [p for _, _, p in notes] == [62, 66, 69, 74]  # the top line, an octave up: its highest in C5..B5

    rate = 16000
    wav = whistle.whistle(notes, 2.0, rate, seed=1)
    assert np.array_equal(wav, whistle.whistle(notes, 2.0, rate, seed=1))
    assert not np.array_equal(wav, whistle.whistle(notes, 2.0, rate, seed=2))
    pitch = melody.pitch_track(torch.from_numpy(wav), rate)  # the suite's tracker
    times = np.arange(len(pitch)) * melody.HOP / melody.TRACK_RATE
    for start, end, note in notes:
        held = (times > start + 0.1) & (times < end - 0.1)
        assert abs(np.nanmedian(librosa.hz_to_midi(pitch[held])) - note) * 100 < 50


def test_melody_prompts_are_also_generated_without_their_melody_and_scored_both_ways(tmp_path):
    from musiclm.audio import load_audio
    from musiclm.data.manifest import Clip
    from musiclm.evaluation import suite, whistle

    rate, seconds = 16000, 3.0
    tune = [(0.5 * i, 0.5 * i + 0.45, p) for i, p in enumerate([67, 71, 74, 72, 69, 67])]
    other = [(s, e, p - 5) for s, e, p in tune]  # the same rhythm a fourth lower: other pitch classes

    class FollowsTheMelody:
        """Plays the melody it is given, else another tune."""

        sample_rate = rate

        def __init__(self):
            self.calls: list[dict] = []

        def generate(self, texts, duration, seed, melody=None, **kwargs):
            self.calls.append({"texts": texts, "seed": seed, "melody": melody, **kwargs})
            wav = load_audio(melody, rate) if melody else torch.from_numpy(whistle.whistle(other, 3.0, rate))
            return wav[None].expand(len(texts), -1)

    def clip(name: str, wav: np.ndarray, split: str = "valid") -> Clip:
        sf.write(tmp_path / f"{name}.wav", wav, rate)
        return Clip(tmp_path / f"{name}.wav", seconds, split=split)

    real = [clip(f"real{i}", whistle.whistle(tune, seconds, rate, seed=i)) for i in range(2)]
    spare = [clip(f"spare{i}", whistle.whistle(other, seconds, rate)) for i in range(2)]
    items = [
        prompts.Prompt("a plain tune", reference=real[0].path),
        prompts.Prompt("a whistled tune", reference=real[1].path, melody=real[1].path),
    ]
    pipeline, audio = FollowsTheMelody(), tmp_path / "audio"
    settings = {"seed": 5, "out_dir": audio, "guidance": 2.0}
    generated = suite.generate_audio(pipeline, items, seconds, **settings)
    without = suite.generate_audio(pipeline, items, seconds, melody=False, **settings)
    with_call, without_call = [c for c in pipeline.calls if c["texts"] == ["a whistled tune"]]
    assert with_call["melody"] == real[1].path and without_call["melody"] is None
    assert {**with_call, "melody": None} == without_call  # same text, seed and settings: only the melody goes
    assert without[0] is None  # no baseline for a prompt without a melody
    assert sorted(p.name for p in audio.iterdir()) == ["000.wav", "001-no-melody.wav", "001.wav"]

    metrics = suite.run_evaluation(
        items,
        real + spare + [clip("train", whistle.whistle(other, seconds, rate), "train")],
        tmp_path / "eval",
        suite.Evaluators(),
        sample_rate=rate,
        seconds=seconds,
        generated=generated,
        reference_clips_min=2,
        without_melody=without,
    )
    row = metrics["generated"]
    assert row["melody_n"] == 1 and row["per_clip_melody_chroma"][0] is None
    assert row["melody_with"] > 0.9 and row["melody_without"] < 0.2
    assert row["melody_gain"] == pytest.approx(row["melody_with"] - row["melody_without"])
    assert "melody_with" not in metrics["ground truth"] and metrics["ground truth"]["melody_chroma"] > 0.9
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Melody conditioning" in report and "same text and seed" in report
    assert "melody" not in report.split("## Metrics")[1].split("## Tempo")[0]  # not in the big table


def test_eval_prompts_give_melodies_whistled_from_test_split_clips_only(tiny_dataset, tmp_path):
    from musiclm.audio import load_audio
    from musiclm.evaluation import whistle

    pfile, runner = tmp_path / "p.jsonl", CliRunner()
    res = runner.invoke(
        app, ["eval-prompts", "--manifest", str(tiny_dataset), "--out", str(pfile), "--melodies", "1"]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    items = prompts.read_prompts(pfile)
    (i, given), *others = [(i, p) for i, p in enumerate(items) if p.melody is not None]
    assert not others and "(1 with a whistled melody)" in res.output
    clip = next(c for c in read_manifest(tiny_dataset) if c.path == given.reference)
    assert clip.split == "test" and given.melody == tmp_path / "p_melodies" / f"{i:03d}.wav"
    notes = whistle.whistle_register(whistle.tune(clip.midi))
    expected = whistle.whistle(notes, clip.duration, whistle.RATE, seed=i)
    assert np.allclose(load_audio(given.melody).numpy(), expected, atol=1e-4)  # 16-bit PCM
    res = runner.invoke(
        app,
        ["eval-prompts", "--musiccaps", str(pfile), "--out", str(tmp_path / "m.jsonl"), "--melodies", "1"],
    )
    assert res.exit_code != 0 and "--melodies needs --manifest" in res.output
