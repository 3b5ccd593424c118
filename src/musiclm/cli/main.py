"""Entry point of the ``musiclm`` command.

Each part keeps its commands in its own module (``cli/codec.py``: ``musiclm codec ...`` and
``musiclm train codec``); importing the module registers them. Heavy imports stay inside commands
so that ``musiclm --help`` answers at once.
"""

from __future__ import annotations

import atexit
import gc
import os
import platform
from typing import NoReturn

import typer

# typer vendors click: its usage errors derive from typer.TyperException, and the one for a bare group
# (`musiclm`, `musiclm train`) is only named in its vendored module
from typer._click.exceptions import NoArgsIsHelpError

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
from musiclm.cli.common import shown_as_refusal


@app.command()
def info() -> None:
    """Versions, the compute device, and how many CPU threads torch uses."""
    import torch

    typer.echo(f"musiclm {musiclm.__version__}")
    typer.echo(f"python {platform.python_version()}, torch {torch.__version__}")
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    typer.echo(f"device: {device}, torch threads: {torch.get_num_threads()}")


def _usage_message(err: typer.TyperException) -> str:
    """typer's wording of a refusal, without its "Invalid value:" prefix where a command raised
    ``typer.BadParameter`` about no option in particular (its message says it all)."""
    if isinstance(err, typer.BadParameter) and err.param is None and err.param_hint is None:
        return err.message
    return err.format_message()


def _refuse(message: str) -> NoReturn:
    """The one way a command refuses: one ``error:`` line on stderr (a wrapped message joined into it, so
    a log or a script reads one line per refusal) and exit status 1."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
    raise SystemExit(1)


def main() -> None:
    # The command works offline by default (every default part ships in the repository or a package); a user
    # who can reach a model hub sets HF_HUB_OFFLINE=0. The library itself leaves the environment alone.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # At exit the interpreter's collector walks every object the command's imports made (a second of CPU
    # once torch and transformers are loaded) to find garbage that the process's end frees anyway; frozen,
    # they are skipped. Run at exit, after the command, so a caller of main() in-process keeps its collector.
    atexit.register(gc.freeze)
    try:
        # not standalone: click and typer would print their own boxed usage errors and exit with status 2
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as err:  # `musiclm`, `musiclm codec`: the menu, not a refusal
        # with rich, the help is printed as the error is made and its message is empty
        if err.message.strip():
            typer.echo(err.message)
        code = 0
    except typer.TyperException as err:
        _refuse(_usage_message(err))
    except typer.Abort:
        _refuse("aborted")
    except Exception as err:
        if not shown_as_refusal(err):
            raise
        _refuse(str(err))
    # --help, typer.Exit and Ctrl-C (130) come back as an exit status; a finished command returns None
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
