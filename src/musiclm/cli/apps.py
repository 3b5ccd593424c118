"""The command groups; part modules add their commands to these."""

import typer

app = typer.Typer(help="MusicLM: text in, music out.", no_args_is_help=True, add_completion=False)
train_app = typer.Typer(help="Train a part of MusicLM with the shared training engine.", no_args_is_help=True)
app.add_typer(train_app, name="train")
