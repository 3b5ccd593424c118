"""Progress bars that read well in a terminal and in a log.

tqdm redraws its bar in place with carriage returns: right in a terminal, but a log file or a pipe
(``musiclm train ... 2> train.log``, CI, ``nohup``) keeps every redraw, run together into one line of
megabytes. :class:`tqdm` here is tqdm's own bar where its stream is a terminal; elsewhere it writes at
most one plain line every :data:`LOG_INTERVAL` seconds, and nothing for a bar that ends sooner.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from tqdm.asyncio import tqdm as _console_tqdm
from tqdm.auto import tqdm as _auto_tqdm

LOG_INTERVAL = 10.0  # seconds between two lines of one bar in a log
LOG_WIDTH = 100  # characters of a bar's line in a log (tqdm cannot ask a file for its width)

# the cursor-up code tqdm writes to redraw stacked bars: garbage in a log
_CURSOR_UP = re.compile(r"\x1b\[A")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Lines:
    """A stream that writes each of tqdm's redraws as a line of its own."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        for line in re.split(r"[\r\n]", _CURSOR_UP.sub("", text)):
            if line.strip():  # tqdm clears a bar by overwriting it with spaces
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


class tqdm(_auto_tqdm):
    """``tqdm.auto.tqdm``, writing plain lines (see the module) where its stream is not a terminal."""

    def __init__(self, *args: Any, **kwargs: Any):
        stream = kwargs.get("file") or sys.stderr
        # in Jupyter, tqdm.auto draws a widget, which needs none of this
        if _auto_tqdm is _console_tqdm and not _is_terminal(stream) and not kwargs.get("disable"):
            kwargs.update(
                file=_Lines(stream),
                mininterval=max(kwargs.get("mininterval", 0.1), LOG_INTERVAL),
                delay=max(kwargs.get("delay", 0.0), LOG_INTERVAL),
                ascii=True,
                ncols=LOG_WIDTH,
                dynamic_ncols=False,
            )
        super().__init__(*args, **kwargs)
