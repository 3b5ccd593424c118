"""The `musiclm` command: errors about the user's input are one line, not a traceback; bugs keep theirs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from musiclm.audio import AudioError, save_audio
from musiclm.errors import PACKAGE_DIR, raised_on_purpose
from musiclm.pipeline import story_segment


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
    assert (
        result.returncode == 1 and result.stderr.startswith("error:") and "no pipeline.json" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    debug = musiclm("generate", "calm piano", "--checkpoint", str(tmp_path / "nowhere"), debug=True)
    assert debug.returncode != 0 and "FileNotFoundError" in debug.stderr and "pipeline.py" in debug.stderr


def caught(call) -> Exception:
    try:
        call()
    except Exception as err:
        return err
    raise AssertionError("nothing raised")


def test_only_errors_raised_on_purpose_lose_their_traceback():
    def raise_here(err):
        try:
            raise err
        except Exception as caught:
            return caught

    assert raised_on_purpose(raise_here(AudioError("unreadable")))  # musiclm's own error class
    assert not raised_on_purpose(raise_here(ValueError("raised outside musiclm")))
    assert not raised_on_purpose(raise_here(ZeroDivisionError()))


def test_a_value_error_is_the_users_only_where_musiclm_raised_it():
    """Judged by the frame that raised it, in the package's own folder: musiclm's refusal of a malformed story
    segment is the user's; numpy's refusal of a shape, called from here, is a bug."""
    assert raised_on_purpose(caught(lambda: story_segment("calm piano without seconds")))
    assert not raised_on_purpose(caught(lambda: np.reshape(np.zeros(3), 2)))


def test_a_library_in_a_folder_named_musiclm_keeps_its_traceback(tmp_path):
    """A clone into ~/musiclm/ puts torch and numpy under a musiclm/ folder too: their errors are bugs."""
    library = tmp_path / "musiclm" / ".venv" / "site-packages" / "torch" / "functional.py"
    code = compile("raise ValueError('einsum(): operands do not broadcast')", str(library), "exec")
    try:
        exec(code)
    except ValueError as err:
        assert not raised_on_purpose(err)


def test_the_library_never_imports_the_command_line():
    """The command line is built on the library (its recipes, the pipeline, the errors), never the reverse."""
    importers = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.relative_to(PACKAGE_DIR).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(name == "musiclm.cli" or name.startswith("musiclm.cli.") for name in names):
                importers.append(str(path.relative_to(PACKAGE_DIR)))
    assert not importers, importers


def test_train_all_composes_library_calls_only():
    """`train all` calls the recipes, never another command: it imports no command module of the CLI."""
    tree = ast.parse((PACKAGE_DIR / "cli" / "train_all.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {m for m in imported if m.startswith("musiclm.cli")} == {"musiclm.cli.apps", "musiclm.cli.common"}


def test_train_w2vbert_is_named_for_the_model_it_trains():
    """`train stage --stage semantic` trains the semantic stage; w2v-BERT, whose features k-means turns into
    semantic tokens, has a command of its own name."""
    assert musiclm("train", "w2vbert", "--help").returncode == 0
    old = musiclm("train", "semantic", "--data", "m.jsonl", "--out", "w2vbert")
    assert old.returncode == 1 and "No such command 'semantic'" in old.stderr, old.stderr


def test_progress_bars_write_plain_lines_into_a_pipe(tmp_path):
    """A log gets whole lines, not a bar redrawn with carriage returns. The interval is 0 here, so that
    every redraw of the three stage bars is such a line (at the real 10 s, a short bar writes none)."""
    run = "import musiclm.progress as p; p.LOG_INTERVAL = 0; from musiclm.cli.main import main; main()"
    args = ["generate", "calm piano", "--duration", "0.2", "--seed", "0", "--out", str(tmp_path / "o.wav")]
    env = {k: v for k, v in os.environ.items() if k != "MUSICLM_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", run, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "\r" not in log and "\x1b" not in log, repr(log[:2000])
    assert max(map(len, log.splitlines())) <= 200, log
    assert any(line.startswith("semantic stage:") for line in result.stderr.splitlines()), log


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


@pytest.mark.parametrize(
    "style, words",
    [
        ("{tmp}/missing.wav", "style file {tmp}/missing.wav not found"),
        ("{tmp}/text.wav", "cannot read audio file"),
        ("{tmp}/silent.wav", "is silent"),
        ("{tmp}/short.wav", "give at least 1 s of music"),
        ("{tmp}/song.wav:loud", "the weight after the last ':' must be a number"),
        ("{tmp}/song.wav:-1", "must be a finite number >= 0"),
        ("{tmp}/song.wav:nan", "must be a finite number >= 0"),
    ],
)
def test_bad_style_clips_are_refused_before_the_model_loads(capsys, monkeypatch, tmp_path, style, words):
    for name, seconds, level in (("song", 2.0, 0.2), ("silent", 2.0, 0.0), ("short", 0.3, 0.2)):
        t = torch.arange(round(seconds * 16000)) / 16000
        save_audio(tmp_path / f"{name}.wav", level * torch.sin(2 * torch.pi * 330 * t), 16000)
    (tmp_path / "text.wav").write_text("not audio")
    style = style.format(tmp=tmp_path)
    for args in (["calm piano", "--style", style], ["--style", style]):
        line = refused_before_loading(capsys, monkeypatch, tmp_path, *args)
        assert words.format(tmp=tmp_path) in line, line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--style", "{tmp}/song.wav:0"], "every style clip and blended text weighs 0"),
        (["--style", "{tmp}/song.wav:0", "--blend", "a jig:0"], "every style clip and blended text weighs 0"),
        (["--story", "calm piano:1", "--style", "{tmp}/song.wav"], "story mode takes text prompts only"),
        (["--story", "calm piano:1", "--blend", "a jig:1"], "story mode takes text prompts only"),
        (["calm piano", "--blend", "a jig"], "a blended text is 'TEXT:WEIGHT'"),
        (["calm piano", "--blend", "a jig:-0.5"], "blended text 'a jig' must be a finite number >= 0"),
        (["--blend", "a jig:nan"], "blended text 'a jig' must be a finite number >= 0"),
        (["--blend", " :1"], "a blended text is a text describing music"),
    ],
)
def test_style_and_blend_requests_that_cannot_be_served_are_refused(
    capsys, monkeypatch, tmp_path, args, words
):
    t = torch.arange(32000) / 16000
    save_audio(tmp_path / "song.wav", 0.2 * torch.sin(2 * torch.pi * 330 * t), 16000)
    line = refused_before_loading(capsys, monkeypatch, tmp_path, *(a.format(tmp=tmp_path) for a in args))
    assert words in line, line


def refused_before_loading(capsys, monkeypatch, tmp_path, *args: str) -> str:
    """The one ``error:`` line of ``musiclm generate ARGS`` run in this process (exit status 1), refused
    before any model loads and with nothing written."""
    from musiclm.cli.main import main
    from musiclm.pipeline import MusicLM

    def forbidden(*a, **kw):
        raise AssertionError("the model was loaded")

    before = sorted(tmp_path.iterdir())
    monkeypatch.setattr(MusicLM, "from_pretrained", forbidden)
    monkeypatch.setattr(
        sys, "argv", ["musiclm", "generate", *args, "--duration", "1", "--out", str(tmp_path / "o.wav")]
    )
    monkeypatch.delenv("MUSICLM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert sorted(tmp_path.iterdir()) == before
    return lines[0]
