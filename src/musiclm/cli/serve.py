"""``musiclm serve``: the web page (:mod:`musiclm.web`) on a model loaded once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from musiclm.cli.apps import app
from musiclm.cli.common import Device


@app.command()
def serve(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Pipeline folder (musiclm assemble). Default: the shipped checkpoints/musiclm_small."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the page to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 7860,
    device: Device = "auto",
) -> None:
    """A web page to make music: prompt, melody, continuation or story; one generation at a time."""
    # Before Gradio is imported: no telemetry or version check leaves the machine
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from musiclm.training.distributed import pick_device
    from musiclm.web import serve as serve_page

    serve_page(checkpoint, host, port, pick_device(device))
