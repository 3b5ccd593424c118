"""The `musiclm` command: errors about the user's input are one line, not a traceback; bugs keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from musiclm.audio import AudioError
from musiclm.cli.main import _raised_on_purpose


def musiclm(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = (
        {**os.environ, "MUSICLM_DEBUG": "1"}
        if debug
        else {k: v for k, v in os.environ.items() if k != "MUSICLM_DEBUG"}
    )
    return subprocess.run(
        [sys.executable, "-m", "musiclm.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_user_errors_print_one_line_and_exit_1(tmp_path):
    result = musiclm("generate", "calm piano", "--checkpoint", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "error:" in result.stderr and "no pipeline.json" in result.stderr
    assert "Traceback" not in result.stderr and "MUSICLM_DEBUG" in result.stderr
    debug = musiclm("generate", "calm piano", "--checkpoint", str(tmp_path / "nowhere"), debug=True)
    assert debug.returncode != 0 and "FileNotFoundError" in debug.stderr and "pipeline.py" in debug.stderr


def test_only_errors_raised_on_purpose_lose_their_traceback():
    def raise_here(err):
        try:
            raise err
        except Exception as caught:
            return caught

    assert _raised_on_purpose(raise_here(AudioError("unreadable")))  # musiclm's own error class
    assert not _raised_on_purpose(raise_here(ValueError("raised outside musiclm")))
    assert not _raised_on_purpose(raise_here(ZeroDivisionError()))


def test_commands_that_take_a_part_default_to_the_shipped_models(tmp_path):
    from typer.testing import CliRunner

    from musiclm.audio import save_audio
    from musiclm.cli.main import app
    from musiclm.data.manifest import Clip, write_manifest
    from musiclm.pipeline import MusicLM
    from musiclm.stages.shards import read_meta
    from musiclm.stages.tokenize import vocab_meta

    runner = CliRunner()
    result = runner.invoke(app, ["mulan", "embed", "--text", "a fast fiddle tune"])
    assert result.exit_code == 0 and "tokens" in result.output.lower(), result.output
    t = torch.arange(48000) / 16000
    clip = save_audio(tmp_path / "tone.wav", 0.2 * torch.sin(2 * torch.pi * 330 * t), 16000)
    write_manifest(tmp_path / "m.jsonl", [Clip(path=clip, split="train")])
    result = runner.invoke(
        app, ["tokenize", "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "tok")]
    )
    assert result.exit_code == 0, result.output
    shipped = MusicLM.from_pretrained()
    assert read_meta(tmp_path / "tok") == vocab_meta(shipped.codec, shipped.semantic, shipped.mulan, None)
