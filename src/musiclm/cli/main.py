"""Entry point of the ``musiclm`` command.

Each part keeps its commands in its own module (``cli/codec.py``: ``musiclm codec ...`` and
``musiclm train codec``); importing the module registers them. Heavy imports stay inside commands
so that ``musiclm --help`` answers at once.
"""

from __future__ import annotations

import os
import platform

import typer

import musiclm
from musiclm.cli import (
    codec,  # noqa: F401,E402  (registers its commands)
    config,  # noqa: F401,E402  (registers its commands)
    data,  # noqa: F401,E402  (registers its commands)
    evaluate,  # noqa: F401,E402  (registers its commands)
    mulan,  # noqa: F401,E402  (registers its commands)
    semantic,  # noqa: F401,E402  (registers its commands)
    serve,  # noqa: F401,E402  (registers its commands)
    stages,  # noqa: F401,E402  (registers its commands)
    train_all,  # noqa: F401,E402  (registers its commands)
)
from musiclm.cli.apps import app


@app.command()
def info() -> None:
    """Versions, the compute device, and how many CPU threads torch uses."""
    import torch

    typer.echo(f"musiclm {musiclm.__version__}")
    typer.echo(f"python {platform.python_version()}, torch {torch.__version__}")
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    typer.echo(f"device: {device}, torch threads: {torch.get_num_threads()}")


def _raised_on_purpose(err: BaseException) -> bool:
    """An error musiclm raises about the user's input: one of its own error classes, or a ValueError /
    FileNotFoundError raised in its code. Anything else is a bug and keeps its traceback."""
    if type(err).__module__.startswith("musiclm."):
        return True
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    in_musiclm = frame is not None and f"{os.sep}musiclm{os.sep}" in frame.tb_frame.f_code.co_filename
    return in_musiclm and isinstance(err, (ValueError, FileNotFoundError))


def main() -> None:
    # The command works offline by default (every default part ships in the repository or a package); a user
    # who can reach a model hub sets HF_HUB_OFFLINE=0. The library itself leaves the environment alone.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except Exception as err:
        if os.environ.get("MUSICLM_DEBUG") or not _raised_on_purpose(err):
            raise
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        typer.echo("(set MUSICLM_DEBUG=1 to see the traceback)", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
