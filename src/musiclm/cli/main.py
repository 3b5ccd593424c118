"""Entry point of the ``musiclm`` command.

Each part keeps its commands in its own module (``cli/codec.py``: ``musiclm codec ...`` and
``musiclm train codec``); importing the module registers them. Heavy imports stay inside commands
so that ``musiclm --help`` answers at once.
"""

from __future__ import annotations

import platform

import typer

import musiclm
from musiclm.cli.apps import app
from musiclm.cli import evaluate  # noqa: F401,E402  (registers its commands)
from musiclm.cli import stages  # noqa: F401,E402  (registers its commands)
from musiclm.cli import mulan  # noqa: F401,E402  (registers its commands)
from musiclm.cli import data  # noqa: F401,E402  (registers its commands)
from musiclm.cli import semantic  # noqa: F401,E402  (registers its commands)
from musiclm.cli import codec  # noqa: F401,E402  (registers its commands)
from musiclm.cli import train_all  # noqa: F401,E402  (registers its commands)


@app.command()
def info() -> None:
    """Versions, the compute device, and how many CPU threads torch uses."""
    import torch

    typer.echo(f"musiclm {musiclm.__version__}")
    typer.echo(f"python {platform.python_version()}, torch {torch.__version__}")
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    typer.echo(f"device: {device}, torch threads: {torch.get_num_threads()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
