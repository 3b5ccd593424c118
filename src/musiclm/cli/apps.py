"""The command groups; part modules add their commands to these."""

import typer

app = typer.Typer(
    help="MusicLM: text in, music out.",
    epilog="A refused command prints one error: line and exits with status 1; MUSICLM_DEBUG=1 shows why.",
    no_args_is_help=True,
    add_completion=False,
)
train_app = typer.Typer(help="Train a part of MusicLM with the shared training engine.", no_args_is_help=True)
app.add_typer(train_app, name="train")
