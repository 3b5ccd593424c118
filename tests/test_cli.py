"""The `musiclm` command: errors about the user's input are one line, not a traceback; bugs keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys

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
