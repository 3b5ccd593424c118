"""Bad input everywhere: the CLI, the Python API and the loaders.

Each bad input gets one clear error that names the problem (from the CLI: one ``error:`` line on
stderr and exit status 1, never a traceback or a usage box) or a documented success; no half-written
file is left behind, what earlier runs wrote stays intact, and no output replaces one of the command's
inputs or, without ``--overwrite``, an existing file. Documented successes: 8-channel audio
is downmixed; a 0-length file reads as 0 samples; a 2 MHz file is resampled; a WAV whose data stops
short reads the samples that are there; FLAC, OGG and MP3 decode; prompts of 20,000 characters
(truncated by the text tower), emoji, CJK and control characters generate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.audio import AudioError, load_audio, save_audio
from musiclm.cli.main import main
from musiclm.config import ConfigError
from musiclm.data.manifest import Clip, read_manifest, write_manifest
from musiclm.files import atomic_write
from musiclm.interfaces import load_component
from musiclm.pipeline import SHIPPED_MODEL, GenerationError, MusicLM
from musiclm.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

RATE = 24000


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def dominant_hz(wav: torch.Tensor, rate: int = RATE) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(wav.numpy()))) * rate / len(wav))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """One file of each kind of bad (or unusual) audio."""
    root = tmp_path_factory.mktemp("zoo")
    sf.write(root / "good.wav", tone(), RATE)
    (root / "empty.wav").write_bytes(b"")
    (root / "trunc.wav").write_bytes((root / "good.wav").read_bytes()[:30])  # cut inside the header
    (root / "short_data.wav").write_bytes((root / "good.wav").read_bytes()[:2044])  # header says 1 s
    (root / "text.wav").write_text("these are not audio samples\n")
    (root / "junk.mp3").write_bytes(b"ID3" + bytes(500))
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        wav = tone()
        wav[100] = bad
        sf.write(root / name, wav, RATE, subtype="FLOAT")
    sf.write(root / "ch8.wav", np.tile(tone()[:, None], (1, 8)), RATE)
    sf.write(root / "zero.wav", np.zeros(0, np.float32), RATE)
    sf.write(root / "silent.wav", np.zeros(2 * RATE, np.float32), RATE)
    sf.write(root / "huge_rate.wav", tone(seconds=0.001, rate=2_000_000), 2_000_000)
    sf.write(root / "t.flac", tone(), RATE)
    sf.write(root / "t.ogg", tone(), RATE)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(root / "good.wav"), str(root / "t.mp3")], check=True
    )
    (root / "folder.wav").mkdir()
    return root


class Interrupted:
    """``musiclm ARGS`` in a subprocess, sent SIGINT (Ctrl-C) by a watcher thread as soon as ``needed``
    files matching ``pattern`` exist in ``folder``; ``before`` fingerprints them at that instant."""

    def __init__(self, args: list, folder: Path, pattern: str, needed: int, log: Path):
        self.folder, self.pattern, self.needed, self.log = folder, pattern, needed, log
        env = {k: v for k, v in os.environ.items() if k != "MUSICLM_DEBUG"}
        with open(log, "w") as out:  # a file, not a pipe: nobody reads a pipe while the watcher waits
            self.process = subprocess.Popen(
                [sys.executable, "-m", "musiclm.cli.main", *map(str, args)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # a shell's background job (`make test &`, CI wrappers) starts with SIGINT ignored, which the
                # child would inherit, and Python leaves an ignored SIGINT ignored: Ctrl-C must reach it
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        self.before: dict[str, str] | None = None
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        while len(list(self.folder.glob(self.pattern))) < self.needed:
            if self.process.poll() is not None:
                return
            time.sleep(0.1)
        time.sleep(0.3)  # the next file may be a moment from its rename
        self.before = {p.name: digest(p) for p in self.folder.glob(self.pattern)}
        self.process.send_signal(signal.SIGINT)

    def result(self, timeout: float = 240.0) -> tuple[int, str]:
        self.watcher.join(timeout)
        code = self.process.wait(60)
        assert self.before is not None, f"finished before it could be interrupted: {self.log.read_text()}"
        return code, self.log.read_text()


@pytest.fixture(scope="module", autouse=True)
def interrupted(tmp_path_factory, zoo):
    """A batch generation and a training run, started first so they run beside the other tests and
    are interrupted while they work; checked at the end of the module."""
    root = tmp_path_factory.mktemp("interrupted")
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"a calm piece number {i}\n" for i in range(4)))
    clips = []
    for i, freq in enumerate((220, 330, 440, 550)):
        sf.write(root / f"clip{i}.wav", tone(freq, 3.0), RATE)
        clips.append(Clip(root / f"clip{i}.wav", duration=3.0))
    manifest = write_manifest(root / "train.jsonl", clips)
    runs = {
        "generate": Interrupted(
            [
                "generate",
                "--prompts-file",
                prompts,
                "--batch-size",
                "1",
                "--duration",
                "1",
                "--seed",
                "0",
                "--out",
                root / "gen" / "o.wav",
            ],
            root / "gen",
            "o-*.wav",
            1,
            root / "generate.log",
        ),
        "train": Interrupted(
            [
                "train",
                "codec",
                "--preset",
                "tiny",
                "--data",
                manifest,
                "--out",
                root / "run",
                "--steps",
                "400",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--set",
                "ckpt_every=2",
                "--set",
                "progress=false",
            ],
            root / "run" / "checkpoints",
            "step_*.pt",
            2,
            root / "train.log",
        ),
    }
    yield {**runs, "prompts": prompts}
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()


def run(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """``musiclm ARGS`` in this process through the real entry point (its error formatting included):
    exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["musiclm", *map(str, args)])
    monkeypatch.delenv("MUSICLM_DEBUG", raising=False)
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(capsys, monkeypatch, *args) -> tuple[int, str]:
    code, out, err = run(capsys, monkeypatch, *args)
    return code, out + err


def assert_clear(code: int, text: str, *words: str) -> None:
    assert code == 1, text
    assert "Traceback" not in text, text
    assert len([line for line in text.splitlines() if line.startswith("error:")]) == 1, text
    for word in words:
        assert word in text, (word, text)


def refusal(capsys, monkeypatch, *args) -> str:
    """The line a refused ``musiclm ARGS`` prints: the only one on stderr, ``error: ...``, exit status 1."""
    code, out, err = run(capsys, monkeypatch, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    return lines[0]


# ------------------------------------------------------------------------------------ audio loader
@pytest.mark.parametrize(
    "name, words",
    [
        ("empty.wav", "is empty (0 bytes)"),
        ("trunc.wav", "cannot read audio file"),
        ("text.wav", "cannot read audio file"),
        ("junk.mp3", "complete WAV, FLAC, OGG or MP3 file"),
        ("nan.wav", "contains NaN or infinite samples"),
        ("inf.wav", "contains NaN or infinite samples"),
        ("folder.wav", "is a folder, not an audio file"),
        ("missing.wav", "no such file"),
    ],
)
def test_load_audio_refuses_bad_files(zoo, name, words):
    with pytest.raises(AudioError, match=re.escape(words)):
        load_audio(zoo / name, RATE)


@pytest.mark.parametrize(
    "name, samples, hz",
    [
        ("ch8.wav", RATE, 440),
        ("t.flac", RATE, 440),
        ("t.ogg", RATE, 440),
        ("t.mp3", RATE, 440),
        ("zero.wav", 0, None),
        ("huge_rate.wav", 24, None),
        ("short_data.wav", 1000, None),
    ],
)
def test_load_audio_documented_successes(zoo, name, samples, hz):
    wav = load_audio(zoo / name, RATE)
    assert wav.ndim == 1 and abs(wav.shape[0] - samples) <= (1200 if name == "t.mp3" else 1)
    if hz is not None:
        assert dominant_hz(wav) == pytest.approx(hz, abs=2)


# ------------------------------------------------------------------------------------ Python API
@pytest.fixture(scope="module")
def model() -> MusicLM:
    return MusicLM.from_pretrained()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"texts": [""]}, "are empty"),
        ({"texts": ["  \n\t"]}, "are empty"),
        ({"texts": []}, "no prompts"),
        ({"duration": -1.0}, "positive number of seconds"),
        ({"duration": 0.0}, "positive number of seconds"),
        ({"duration": math.inf}, "positive number of seconds"),
        ({"duration": math.nan}, "positive number of seconds"),
        ({"duration": 1e6}, "above this model's maximum"),
        ({"temperatures": (1.0,)}, "3 finite values"),
        ({"temperatures": (math.nan, 1.0, 1.0)}, "3 finite values"),
        ({"guidance": math.inf}, "finite scale"),
        ({"top_p": 2.0}, "top_p must be in (0, 1]"),
        ({"melody": "folder.wav"}, "is a folder"),
        ({"melody": "nan.wav"}, "NaN"),
        ({"melody": "zero.wav"}, "needs at least one window"),
        ({"continuation": "silent.wav"}, "silent"),
        ({"continuation": "missing.wav"}, "not found"),
        ({"texts": None, "story": [("calm piano", -1.0)]}, "each needs > 0 s"),
    ],
)
def test_generate_refuses_bad_requests(model, zoo, kwargs, words):
    kwargs = {k: zoo / v if k in ("melody", "continuation") else v for k, v in kwargs.items()}
    request = {"texts": ["calm piano"], "duration": 1.0, **kwargs}
    with pytest.raises((GenerationError, AudioError, ValueError), match=re.escape(words)):
        model.generate(request.pop("texts"), request.pop("duration"), seed=0, **request)


@pytest.fixture(scope="module")
def odd_prompts(model) -> torch.Tensor:
    prompts = [
        ("slow piano " * 2000)[:20_000],
        "🎹🎻 calm 🌙 night 🎶",
        "安静的钢琴曲，静かなピアノ",
        "calm\x00piano\x07\x1b[31m\r\b",
    ]
    assert len(prompts[0]) == 20_000
    return model.generate(prompts, 1.0, seed=0)


@pytest.mark.parametrize("index", range(4), ids=["20000 chars", "emoji", "CJK", "control chars"])
def test_odd_prompts_generate(model, odd_prompts, index):
    wav = odd_prompts[index]
    assert wav.shape == (model.sample_rate,) and torch.isfinite(wav).all() and wav.abs().max() > 1e-3


# ------------------------------------------------------------------------------------ model loaders
@pytest.fixture(scope="module")
def broken_parts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parts")
    for name in ("truncated", "pickled", "bad_json"):
        shutil.copytree(SHIPPED_MODEL / "melody", root / name)
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    torch.save({"w": torch.zeros(3)}, root / "pickled" / "model.safetensors")
    (root / "bad_json" / "config.json").write_text('{"model_type": "melody_embed')
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize(
    "name, error, words",
    [
        ("truncated", ConfigError, "is not a readable safetensors file"),
        ("pickled", ConfigError, "is not a readable safetensors file"),
        ("bad_json", ConfigError, "is not a JSON object"),
        ("empty", FileNotFoundError, "has no config.json"),
    ],
)
def test_load_component_refuses_broken_folders(broken_parts, name, error, words):
    with pytest.raises(error, match=re.escape(words)):
        load_component(broken_parts / name)


def _pipeline_copy(root: Path) -> Path:
    root.mkdir()
    for item in SHIPPED_MODEL.iterdir():
        if item.is_dir():
            (root / item.name).symlink_to(item)
    shutil.copy(SHIPPED_MODEL / "pipeline.json", root)
    return root


def test_pipeline_loaders_refuse_what_is_not_a_pipeline(tmp_path, zoo):
    from musiclm.codec.soundstream import SoundStream, SoundStreamConfig

    with pytest.raises(FileNotFoundError, match="no pipeline.json"):
        MusicLM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no pipeline.json"):
        MusicLM.from_pretrained(zoo / "good.wav")
    other = _pipeline_copy(tmp_path / "other")
    (other / "codec").unlink()
    SoundStream(SoundStreamConfig.preset("tiny")).save_pretrained(other / "codec")
    with pytest.raises(GenerationError, match="trained for other parts"):
        MusicLM.from_pretrained(other)
    bad_meta = _pipeline_copy(tmp_path / "bad_meta")
    (bad_meta / "pipeline.json").write_text("{max_duration")
    with pytest.raises(ConfigError, match="pipeline.json is not valid JSON"):
        MusicLM.from_pretrained(bad_meta)


# ------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", ""], "prompt(s) at position [0] are empty"),
        (["generate", "calm", "  "], "prompt(s) at position [1] are empty"),
        (["generate"], "no prompts: give one"),
        (
            ["generate", "calm", "--duration", "0.001"],
            "shorter than one frame of this model; give at least 0.04 s",
        ),
        (["generate", "calm", "--duration", "-1"], "--duration must be a positive number of seconds, got -1"),
        (["generate", "calm", "--duration", "inf"], "--duration must be a positive number of seconds"),
        (["generate", "calm", "--duration", "ten"], "Invalid value for '--duration'"),
        (["generate", "calm", "--guidance", "-1"], "--guidance must be a finite scale >= 0"),
        (["generate", "calm", "--candidates", "0"], "--candidates must be at least 1"),
        (["generate", "calm", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["generate", "calm", "--device", "cuda"], "no CUDA device"),
        (["generate", "calm", "--device", "gpu"], "unknown device 'gpu'"),
        (["generate", "calm", "--out", "{tmp}/folder.wav"], "folder.wav: it is a folder"),
        (["generate", "calm", "--out", "{tmp}/o.mp3"], "unknown extension .mp3; choose a writable path"),
        (["generate", "calm", "--out", "{tmp}/o"], "no extension; choose a writable path"),
        (["generate", "calm", "--out", "{tmp}/o.xyz"], "cannot write audio file"),
        (["generate", "calm", "--out", "{tmp}/a_file/o.wav"], "a_file is a file, not a folder"),
        (["generate", "calm", "--continue", "{tmp}/missing.wav"], "--continue: {tmp}/missing.wav not found"),
        (["generate", "calm", "--durtion", "3"], "No such option: --durtion"),
        (
            ["generate", "--blend", "calm:-1"],
            "the weight of blended text 'calm' must be a finite number >= 0",
        ),
        (["generate", "calm", "--blend", "organ"], "a blended text is 'TEXT:WEIGHT'"),
        (["generate", "--blend", "calm:0"], "every style clip and blended text weighs 0"),
        (["codec", "decode", "{tmp}/missing.npz", "{tmp}/o.wav"], "missing.npz: no such file"),
        (["codec", "decode", "{tmp}/a_file", "{tmp}/o.wav"], "a_file is not a .npz of codes"),
        (["codec", "decode", "{tmp}/folder", "{tmp}/o.wav"], "folder: a folder"),
        (["codec", "encode"], "Missing argument"),
        (["serve", "--port", "70000"], "Invalid value for '--port'"),
        (["train", "codec", "--data", "{tmp}/m.jsonl", "--out", "{tmp}/run", "--set", "ema"], "key=value"),
        (["no-such-command"], "No such command"),
    ],
)
def test_cli_refusals_are_one_error_line_before_any_work(capsys, monkeypatch, tmp_path, args, words):
    """Refused on the command line or before a model loads: one line, exit 1, nothing written."""
    (tmp_path / "a_file").write_text("not audio, not codes\n")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same refusal on a GPU machine
    line = refusal(capsys, monkeypatch, *(a.format(tmp=tmp_path) for a in args))
    assert words.format(tmp=tmp_path) in line and "allow_pickle" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "folder.wav"]


def test_cli_help_is_not_a_refusal(capsys, monkeypatch):
    for args in (["--help"], [], ["codec"], ["generate", "--help"]):
        code, out, err = run(capsys, monkeypatch, *args)
        assert code == 0 and "Usage" in out and not err.strip(), (args, out, err)


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "calm", "--duration", "nan"], "positive number of seconds"),
        (["generate", "calm", "--duration", "-3"], "positive number of seconds"),
        (["generate", "", "--duration", "1"], "are empty"),
        (["generate", "calm", "--checkpoint", "{zoo}/good.wav"], "no pipeline.json"),
        (["generate", "calm", "--duration", "1", "--melody", "{zoo}/missing.wav"], "not found"),
        (["generate", "calm", "--duration", "1", "--melody", "{zoo}/nan.wav"], "NaN"),
        (["generate", "--prompts-file", "{zoo}/missing.txt"], "not found"),
        (["generate", "--prompts-file", "{zoo}/empty_prompt.jsonl"], 'non-empty "text"'),
        (["data", "index", "{zoo}/good.wav", "--out", "{tmp}/m.jsonl"], "is not a folder"),
        (["mulan", "embed", "--model", "{zoo}", "--audio", "{zoo}/good.wav"], "has no config.json"),
    ],
)
def test_cli_bad_inputs_are_one_clear_error(capsys, monkeypatch, tmp_path, zoo, args, words):
    (zoo / "empty_prompt.jsonl").write_text('{"text": ""}\n')
    code, text = cli(capsys, monkeypatch, *(a.format(zoo=zoo, tmp=tmp_path) for a in args))
    assert_clear(code, text, words)


def test_a_command_that_takes_a_part_defaults_to_the_shipped_one(capsys, monkeypatch, tmp_path, zoo):
    code, text = cli(
        capsys, monkeypatch, "semantic", "tokenize", zoo / "good.wav", "--out", tmp_path / "t.npy"
    )
    assert code == 0, text
    assert np.load(tmp_path / "t.npy").ndim == 1 and "25 Hz" in text


def test_data_index_skips_and_counts(capsys, monkeypatch, tmp_path, zoo):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("good.wav", "empty.wav", "nan.wav", "silent.wav", "zero.wav", "junk.mp3", "t.flac"):
        shutil.copy(zoo / name, folder)
    code, text = cli(capsys, monkeypatch, "data", "index", folder, "--out", tmp_path / "m.jsonl")
    assert code == 0 and "2 files" in text and "skipped 5 input(s)" in text, text
    entries = map(json.loads, (tmp_path / "m.skipped.jsonl").open())
    reasons = {Path(e["item"]).name: e["reason"] for e in entries}
    assert set(reasons) == {"empty.wav", "nan.wav", "silent.wav", "zero.wav", "junk.mp3"}
    assert "silent" in reasons["silent.wav"] and "NaN" in reasons["nan.wav"]
    assert "0-length" in reasons["zero.wav"]
    code, text = cli(capsys, monkeypatch, "data", "index", folder, "--out", tmp_path / "s.jsonl", "--strict")
    assert_clear(code, text, "without --strict")
    assert not (tmp_path / "s.jsonl").exists()
    for name in ("good.wav", "t.flac"):
        (folder / name).unlink()
    code, text = cli(capsys, monkeypatch, "data", "index", folder, "--out", tmp_path / "n.jsonl")
    assert_clear(code, text, "no usable audio files", "skipped 5 input(s)")


def test_tokenize_skips_silent_unreadable_and_missing_clips(capsys, monkeypatch, tmp_path, zoo):
    sf.write(tmp_path / "long.wav", tone(seconds=2.0), RATE)
    clips = [
        Clip(tmp_path / "long.wav"),
        Clip(zoo / "silent.wav"),
        Clip(zoo / "text.wav"),
        Clip(zoo / "gone.wav"),
        Clip(zoo / "t.ogg", duration=0.03),
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", clips)
    parts = [f"--{n}={SHIPPED_MODEL / n}" for n in ("codec", "semantic", "mulan")]
    code, text = cli(capsys, monkeypatch, "tokenize", *parts, "--data", manifest, "--out", tmp_path / "tok")
    assert code == 0 and "skipped 4 input(s)" in text, text
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "tok" / "skipped.jsonl").open()]
    assert any("silent" in r for r in reasons) and any("no such file" in r for r in reasons)
    assert any("shorter than two semantic frames" in r for r in reasons)
    from musiclm.stages.data import load_shards

    assert len(load_shards(tmp_path / "tok")) == 1
    code, text = cli(
        capsys, monkeypatch, "tokenize", *parts, "--data", manifest, "--out", tmp_path / "tok2", "--strict"
    )
    assert_clear(code, text, "silent", "without --strict")


def test_eval_skips_unusable_reference_clips(capsys, monkeypatch, tmp_path, zoo):
    for i, freq in enumerate((220, 330, 440)):
        sf.write(tmp_path / f"ref{i}.wav", tone(freq, 1.0), RATE)
    refs = [Clip(tmp_path / f"ref{i}.wav", split="test") for i in range(3)]
    refs += [Clip(zoo / "silent.wav", split="test"), Clip(zoo / "text.wav", split="test")]
    manifest = write_manifest(tmp_path / "ref.jsonl", refs)
    (tmp_path / "p.txt").write_text("a low tone\na high tone\n")  # FAD needs 2+ clips a row
    (tmp_path / "given").mkdir()
    for name in ("good.wav", "t.flac"):
        shutil.copy(zoo / name, tmp_path / "given")
    args = [
        "eval",
        "--prompts",
        tmp_path / "p.txt",
        "--reference",
        manifest,
        "--audio",
        tmp_path / "given",
        "--mulan",
        SHIPPED_MODEL / "mulan",
        "--seconds",
        "1",
        "--no-fad-inf",
        "--reference-clips",
        "2",  # the tiny manifest holds 5 held-out clips, 2 of them unusable
    ]
    code, text = cli(capsys, monkeypatch, *args, "--out", tmp_path / "e")
    assert code == 0 and "skipped 2 input(s)" in text, text
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["info"]["skipped_inputs"] == 2
    assert len((tmp_path / "e" / "skipped.jsonl").read_text().splitlines()) == 2
    code, text = cli(capsys, monkeypatch, *args, "--out", tmp_path / "strict", "--strict")
    assert_clear(code, text, "without --strict")


# ------------------------------------------------------------------------------------ train all
@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_all")
    clips = []
    for i in range(4):
        sf.write(root / f"c{i}.wav", tone(200 + 100 * i, 1.0), RATE)
        clips.append(Clip(root / f"c{i}.wav", duration=1.0, captions=[f"tone {i}"]))
    return write_manifest(root / "m.jsonl", clips)


def test_train_all_checks_before_training(capsys, monkeypatch, tmp_path, small_manifest, zoo):
    import musiclm.cli.train_all as train_all

    def run(*args):
        return cli(capsys, monkeypatch, "train", "all", "--preset", "tiny", *args)

    clips = read_manifest(small_manifest)
    gone = write_manifest(tmp_path / "gone.jsonl", [*clips, Clip(tmp_path / "nowhere.wav")])
    assert_clear(
        *run("--data", gone, "--out", tmp_path / "a"), "nowhere.wav does not exist", "fix the manifest"
    )
    bad = write_manifest(tmp_path / "bad.jsonl", clips)
    bad.write_text(bad.read_text() + "{not json\n")
    assert_clear(*run("--data", bad, "--out", tmp_path / "b"), "bad.jsonl:5")
    broken = write_manifest(tmp_path / "broken.jsonl", [Clip(zoo / "text.wav", captions=["x"])])
    assert_clear(*run("--data", broken, "--out", tmp_path / "c"), "cannot read audio file", "remove it")
    assert_clear(*run("--data", small_manifest, "--out", zoo / "good.wav" / "run"), "cannot write to")
    full_disk = shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full_disk)
    assert_clear(*run("--data", small_manifest, "--out", tmp_path / "d"), "GB free", "choose another --out")
    assert not any((tmp_path / d / "parts").exists() for d in "abcd")  # nothing trained
    monkeypatch.undo()
    assert train_all.preflight([small_manifest], tmp_path / "e", melody=True) is False
    assert "melody conditioning is skipped" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ nothing lost
def test_corrupt_checkpoint_names_only_a_checkpoint_that_loads(tmp_path):
    for step in (2, 3, 4):
        save_checkpoint({"step": step, "w": torch.ones(3)}, tmp_path / f"step_{step:08d}.pt")
    for step in (3, 4):  # a bad disk: the last two are damaged
        path = tmp_path / f"step_{step:08d}.pt"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"step_00000004.pt is truncated.*step_00000002.pt is intact"):
        load_checkpoint(tmp_path / "step_00000004.pt")
    (tmp_path / "step_00000002.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no earlier checkpoint loads \(2 tried\)"):
        load_checkpoint(tmp_path / "step_00000004.pt")


def test_batch_generation_keeps_earlier_files_when_a_later_run_fails(capsys, monkeypatch, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a calm piano\na fast drum groove\n")
    args = [
        "generate",
        "--prompts-file",
        prompts,
        "--batch-size",
        "1",
        "--duration",
        "1",
        "--seed",
        "1",
        "--out",
        tmp_path / "o.wav",
    ]
    assert cli(capsys, monkeypatch, *args)[0] == 0
    before = {p.name: digest(p) for p in tmp_path.glob("o-*.wav")}
    assert sorted(before) == ["o-0.wav", "o-1.wav"]
    real_write, calls = sf.write, []

    def dies_while_writing(file, data, *a, **kw):  # Ctrl-C in the middle of writing the second file
        calls.append(file)
        if len(calls) == 2:
            Path(file).write_bytes(b"RIFF half a file")
            raise KeyboardInterrupt
        return real_write(file, data, *a, **kw)

    monkeypatch.setattr(sf, "write", dies_while_writing)
    code, text = cli(
        capsys, monkeypatch, *args[:-2], "--seed", "2", "--out", tmp_path / "o.wav", "--overwrite"
    )
    assert code == 130 and "Traceback" not in text, text
    assert digest(tmp_path / "o-1.wav") == before["o-1.wav"]  # the interrupted write left the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o-0.wav", "o-1.wav", "p.txt"]
    monkeypatch.setattr(sf, "write", real_write)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("o-*.wav")}
    assert cli(capsys, monkeypatch, *args, "--skip-existing")[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("o-*.wav")} == stamps


def test_data_build_keeps_the_earlier_build_when_a_later_one_fails(tmp_path, monkeypatch):
    from musiclm.data import build as build_mod

    opts = dict(
        out=tmp_path,
        hours=None,
        sample_rate=16000,
        workers=1,
        seed=3,
        clip_seconds=(2.0, 2.0),
        melody_fraction=0.0,
        collections=["essen"],
        soundfonts=["TimGM6mb"],
    )
    manifest = build_mod.build(build_mod.BuildOptions(max_works=1, **opts))
    kept = {p.relative_to(tmp_path): digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    real_render, calls = build_mod.render_midi, []

    def killed_on_the_next_work(*a, **kw):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "render_midi", killed_on_the_next_work)
    with pytest.raises(KeyboardInterrupt):
        build_mod.build(build_mod.BuildOptions(max_works=3, **opts))
    assert calls and real_render is not build_mod.render_midi
    now = {p.relative_to(tmp_path): digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert {k: now.get(k) for k in kept} == kept and manifest in [tmp_path / k for k in kept]
    assert not [p for p in now if ".partial" in p.name or p.suffix == ".tmp"]


@pytest.fixture
def owned(tmp_path) -> Path:
    """A user's files: a folder of audio with a caption sidecar, a 48 kHz stereo recording and a link to it,
    codes, a manifest, a prompt file, a MusicCaps CSV, two eval-pairs folders and one earlier output of
    each kind the commands write."""
    (tmp_path / "dir").mkdir()
    sf.write(tmp_path / "dir" / "song.wav", tone(), RATE)
    (tmp_path / "dir" / "song.txt").write_text("a calm tone\n")
    sf.write(tmp_path / "intro.wav", np.stack([tone(rate=48000)] * 2, axis=1), 48000)
    (tmp_path / "link.wav").symlink_to(tmp_path / "intro.wav")
    np.savez(tmp_path / "codes.npz", codes=np.zeros((4, 50), np.int16), num_samples=16000)
    write_manifest(tmp_path / "m.jsonl", [Clip(tmp_path / "dir" / "song.wav", split="test")])
    (tmp_path / "p.txt").write_text("calm piano\nfast fiddle\n")
    (tmp_path / "caps.csv").write_text("ytid,start_s,end_s,caption\nsong,0,1,a calm tone\n")
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "pairs.json").write_text("{}\n")
    for name in ("old.wav", "batch-1.wav", "old.npz", "old.npy", "old.jsonl", "old.json", "old.safetensors"):
        (tmp_path / name).write_bytes(b"the user's earlier result\n")
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (digest(p), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def refused_untouched(capsys, monkeypatch, root: Path, args: list[str]) -> str:
    """The refusal line of ``musiclm ARGS`` (``{tmp}`` standing for ``root``), checked to come before any
    model loads and to leave every file under ``root`` as it was, with none added."""
    monkeypatch.setattr("musiclm.interfaces.load_component", lambda *a, **k: pytest.fail("loaded a part"))
    monkeypatch.setattr(MusicLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded a pipeline"))
    before = snapshot(root)
    line = refusal(capsys, monkeypatch, *(str(a).format(tmp=root) for a in args))
    assert snapshot(root) == before, line
    return line


@pytest.mark.parametrize(
    "args",
    [
        ["data", "index", "{tmp}/dir", "--out", "{tmp}/dir/song.wav"],
        ["data", "index", "{tmp}/dir", "--out", "{tmp}/dir/song.txt"],  # its caption sidecar
        ["data", "musiccaps", "{tmp}/caps.csv", "--audio-dir", "{tmp}/dir", "--out", "{tmp}/caps.csv"],
        ["data", "musiccaps", "{tmp}/caps.csv", "--audio-dir", "{tmp}/dir", "--out", "{tmp}/dir/song.wav"],
        ["generate", "calm", "--continue", "{tmp}/intro.wav", "--out", "{tmp}/intro.wav"],
        ["generate", "calm", "--continue", "{tmp}/intro.wav", "--out", "{tmp}/link.wav"],  # the same file
        ["generate", "calm", "--melody", "{tmp}/intro.wav", "--out", "{tmp}/intro.wav"],
        ["codec", "encode", "{tmp}/intro.wav", "{tmp}/intro.wav"],
        ["semantic", "tokenize", "{tmp}/intro.wav", "--out", "{tmp}/intro.wav"],
        ["semantic", "probe", "--data", "{tmp}/m.jsonl", "--out", "{tmp}/m.jsonl"],
        ["mulan", "embed", "--audio", "{tmp}/intro.wav", "--out", "{tmp}/intro.wav"],
        ["mulan", "eval", "--data", "{tmp}/m.jsonl", "--out", "{tmp}/m.jsonl"],
        ["eval-prompts", "--manifest", "{tmp}/m.jsonl", "--out", "{tmp}/m.jsonl"],
        ["eval-pairs-compare", "--first", "{tmp}/a", "--second", "{tmp}/b", "--out", "{tmp}/a/pairs.json"],
    ],
    ids=[
        "index: audio",
        "index: sidecar",
        "musiccaps: csv",
        "musiccaps: audio",
        "generate: --continue",
        "generate: a link to --continue",
        "generate: --melody",
        "codec encode",
        "semantic tokenize",
        "semantic probe",
        "mulan embed",
        "mulan eval",
        "eval-prompts",
        "eval-pairs-compare",
    ],
)
def test_no_output_replaces_an_input_even_with_overwrite(capsys, monkeypatch, owned, args):
    line = refused_untouched(capsys, monkeypatch, owned, [*args, "--overwrite"])
    assert "it is also an input of this command and would be lost" in line, line


@pytest.mark.parametrize(
    "args, existing",
    [
        (["generate", "calm", "--out", "{tmp}/old.wav"], "old.wav"),
        (["generate", "--prompts-file", "{tmp}/p.txt", "--out", "{tmp}/batch.wav"], "batch-1.wav"),
        (["codec", "encode", "{tmp}/intro.wav", "{tmp}/old.npz"], "old.npz"),
        (["codec", "decode", "{tmp}/codes.npz", "{tmp}/old.wav"], "old.wav"),
        (["data", "index", "{tmp}/dir", "--out", "{tmp}/old.jsonl"], "old.jsonl"),
        (
            ["data", "musiccaps", "{tmp}/caps.csv", "--audio-dir", "{tmp}/dir", "--out", "{tmp}/old.jsonl"],
            "old.jsonl",
        ),
        (["semantic", "tokenize", "{tmp}/intro.wav", "--out", "{tmp}/old.npy"], "old.npy"),
        (["semantic", "probe", "--data", "{tmp}/m.jsonl", "--out", "{tmp}/old.json"], "old.json"),
        (["mulan", "embed", "--text", "calm", "--out", "{tmp}/old.safetensors"], "old.safetensors"),
        (["mulan", "eval", "--data", "{tmp}/m.jsonl", "--out", "{tmp}/old.json"], "old.json"),
        (["eval-stage", "--tokens", "{tmp}/dir", "--out", "{tmp}/old.json"], "old.json"),
        (["eval-prompts", "--manifest", "{tmp}/m.jsonl", "--out", "{tmp}/old.jsonl"], "old.jsonl"),
        (
            ["eval-pairs-compare", "--first", "{tmp}/a", "--second", "{tmp}/b", "--out", "{tmp}/old.json"],
            "old.json",
        ),
    ],
    ids=[
        "generate",
        "generate: batch",
        "codec encode",
        "codec decode",
        "data index",
        "data musiccaps",
        "semantic tokenize",
        "semantic probe",
        "mulan embed",
        "mulan eval",
        "eval-stage",
        "eval-prompts",
        "eval-pairs-compare",
    ],
)
def test_an_existing_output_is_kept_without_overwrite(capsys, monkeypatch, owned, args, existing):
    line = refused_untouched(capsys, monkeypatch, owned, args)
    assert f"{owned / existing} already exists; pass --overwrite to replace it" in line, line


def test_overwrite_replaces_an_earlier_output(capsys, monkeypatch, owned):
    args = ["data", "index", owned / "dir", "--out", owned / "old.jsonl", "--overwrite"]
    assert cli(capsys, monkeypatch, *args)[0] == 0
    assert [c.path.name for c in read_manifest(owned / "old.jsonl")] == ["song.wav"]
    assert not list(owned.glob("*.partial"))


PARTS = [f"--{part}" for part in ("codec", "semantic", "mulan", "semantic-stage", "coarse-stage")]


def assemble(out: str, part: str = "{tmp}/dir", codec: str | None = None) -> list[str]:
    parts = [x for flag in PARTS for x in (flag, codec if codec and flag == "--codec" else part)]
    return ["assemble", *parts, "--out", out]


KMEANS = ["semantic", "fit-kmeans", "--data", "{tmp}/m.jsonl", "--backbone", "basic_pitch"]


@pytest.mark.parametrize(
    "args",
    [
        assemble("{tmp}/dir"),
        assemble("{tmp}/a", codec="{tmp}/a"),
        assemble("{tmp}/dir/pipeline"),  # inside an input
        assemble("{tmp}"),  # holds the inputs
        ["codec", "export", "{tmp}/dir", "{tmp}/dir"],
        ["codec", "export", "{tmp}/dir", "{tmp}/dir/codec"],
        [*KMEANS, "--out", "{tmp}"],  # holds the manifest
        ["semantic", "fit-kmeans", "--data", "{tmp}/m.jsonl", "--model", "{tmp}/dir", "--out", "{tmp}/dir/k"],
        ["train", "classifier", "--data", "{tmp}/m.jsonl", "--augment-codec", "{tmp}/a", "--out", "{tmp}/a"],
    ],
    ids=[
        "assemble: a part",
        "assemble: --codec",
        "assemble: inside a part",
        "assemble: around the parts",
        "codec export: the run",
        "codec export: inside the run",
        "fit-kmeans: around --data",
        "fit-kmeans: inside --model",
        "train classifier: --augment-codec",
    ],
)
def test_no_output_folder_overlaps_an_input_even_with_overwrite(capsys, monkeypatch, owned, args):
    if args[:2] != ["train", "classifier"]:  # it resumes an existing run instead, and has no --overwrite
        args = [*args, "--overwrite"]
    line = refused_untouched(capsys, monkeypatch, owned, args)
    assert "an input of this command, which would be lost" in line, line


@pytest.mark.parametrize(
    "args",
    [
        assemble("{tmp}/b", part="{tmp}/dir"),
        ["codec", "export", "{tmp}/dir", "{tmp}/b"],
        [*KMEANS, "--out", "{tmp}/b"],
    ],
    ids=["assemble", "codec export", "fit-kmeans"],
)
def test_an_existing_output_folder_is_kept_without_overwrite(capsys, monkeypatch, owned, args):
    line = refused_untouched(capsys, monkeypatch, owned, args)
    assert f"{owned / 'b'} already exists and is not empty; pass --overwrite to replace it" in line, line


def test_overwrite_replaces_an_earlier_output_folder(capsys, monkeypatch, owned):
    code, text = cli(
        capsys, monkeypatch, "codec", "export", SHIPPED_MODEL / "codec", owned / "b", "--overwrite"
    )
    assert code == 0, text
    assert (owned / "b" / "config.json").is_file() and (owned / "b" / "model.safetensors").is_file()


def test_an_interrupted_write_leaves_the_earlier_file_whole(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("earlier\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as tmp:
        tmp.write_text('{"half": ')
        raise KeyboardInterrupt
    assert path.read_text() == "earlier\n" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_non_finite_audio_is_never_written(tmp_path):
    kept = tmp_path / "kept.wav"
    sf.write(kept, tone(), RATE)
    before = snapshot(tmp_path)
    for bad in (math.nan, math.inf):
        wav = torch.from_numpy(tone())
        wav[5] = bad
        for path in (kept, tmp_path / "new.wav"):
            with pytest.raises(AudioError, match=f"refusing to write {path}: 1 of {RATE} samples are NaN"):
                save_audio(path, wav, RATE)
    assert snapshot(tmp_path) == before


def test_non_finite_weights_are_refused_at_load_with_the_part_name(capsys, monkeypatch, tmp_path):
    from safetensors.torch import load_file, save_file

    pipeline = _pipeline_copy(tmp_path / "pipeline")
    stage = pipeline / "coarse_stage"
    stage.unlink()  # a link to the shipped part: poison a copy
    shutil.copytree(SHIPPED_MODEL / "coarse_stage", stage)
    weights = load_file(stage / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() >= 3)
    weights[name] = weights[name].clone()
    weights[name].view(-1)[:3] = torch.tensor([math.nan, math.inf, -math.inf])
    save_file(weights, stage / "model.safetensors")
    total = sum(v.numel() for v in weights.values() if v.is_floating_point())
    message = f"{stage} holds non-finite weights (3 of {total} values are NaN/inf); retrain or restore it"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_component(stage)
    out = tmp_path / "o.wav"
    line = refusal(
        capsys, monkeypatch, "generate", "calm", "--duration", "1", "--checkpoint", pipeline, "--out", out
    )
    assert line == f"error: {message}" and not out.exists()


def test_ctrl_c_during_batch_generation_keeps_what_was_written(interrupted, capsys, monkeypatch):
    run = interrupted["generate"]
    code, log = run.result()
    folder, before = run.folder, run.before
    assert code == 130 and "Traceback" not in log, log
    assert not list(folder.glob("*partial*"))
    assert all(digest(folder / name) == sha for name, sha in before.items())
    assert all(sf.info(str(p)).frames == 16000 for p in folder.glob("o-*.wav"))
    args = [
        "generate",
        "--prompts-file",
        interrupted["prompts"],
        "--batch-size",
        "1",
        "--duration",
        "1",
        "--seed",
        "0",
        "--out",
        folder / "o.wav",
        "--skip-existing",
    ]
    assert cli(capsys, monkeypatch, *args)[0] == 0  # the rerun resumes
    assert sorted(p.name for p in folder.iterdir()) == [f"o-{i}.wav" for i in range(4)]
    assert all(digest(folder / name) == sha for name, sha in before.items())


def test_ctrl_c_during_training_keeps_the_checkpoints(interrupted):
    run = interrupted["train"]
    code, log = run.result()
    folder, before = run.folder, run.before
    assert code == 130 and "Traceback" not in log, log
    assert not list(folder.glob("*.partial"))
    found = sorted(folder.glob("step_*.pt"))
    assert found and all(load_checkpoint(p)["step"] > 0 for p in found)
    assert max(found).name >= max(before)
    assert all(digest(folder / name) == sha for name, sha in before.items() if (folder / name).exists())
