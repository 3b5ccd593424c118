"""Which errors are about the user's input: the command line prints them as one line and the web page as a
message, while any other error is a bug and keeps its traceback."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def raised_on_purpose(err: BaseException) -> bool:
    """An error musiclm raises about the user's input: one of its own error classes, or a ValueError /
    FileNotFoundError raised in its code. Anything else is a bug and keeps its traceback."""
    if type(err).__module__.startswith("musiclm."):
        return True
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    # the package's own folder, not any path with a musiclm/ in it: a clone into ~/musiclm/ puts torch's
    # and numpy's files (in .venv) there too
    in_musiclm = frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(
        PACKAGE_DIR
    )
    return in_musiclm and isinstance(err, (ValueError, FileNotFoundError))
