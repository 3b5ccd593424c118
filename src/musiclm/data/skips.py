"""What a long job could not use: skipped with a reason, counted, and written beside its results.

One unreadable, silent or too-short file should not end a job of hours, nor vanish without a word:
``SkipLog.skip`` records it (or, with ``strict``, stops the job with that reason), and ``finish``
writes every reason to ``skipped.jsonl`` and returns the summary the command prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from musiclm.files import write_text_atomic

SKIPPED_FILE = "skipped.jsonl"
SHOWN = 5  # reasons printed at the end of a job; the file holds all of them


class SkipError(ValueError):
    """A skip under ``--strict``: names the item and the reason."""


class SkipLog:
    """``path``: the job's ``skipped.jsonl``. ``resume`` keeps the entries of an earlier run of a
    job that does not redo finished work (tokenize), so their reasons are not lost."""

    def __init__(self, path: str | Path, strict: bool = False, resume: bool = False):
        self.path, self.strict = Path(path), strict
        self.earlier: list[dict] = []
        if resume and self.path.is_file():
            self.earlier = [
                json.loads(line)
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        self.entries: list[dict] = []

    def skip(self, item: object, reason: str) -> None:
        if self.strict:
            raise SkipError(f"{item}: {reason} (without --strict such an input is skipped and counted)")
        self.entries.append({"item": str(item), "reason": reason})

    def finish(self) -> str:
        """Write ``skipped.jsonl`` (atomically; removed when nothing was skipped) and return the
        summary: the count and the first reasons ("" when nothing was skipped)."""
        new = {e["item"] for e in self.entries}
        entries = [e for e in self.earlier if e["item"] not in new] + self.entries
        if not entries:
            self.path.unlink(missing_ok=True)
            return ""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        lines = [f"skipped {len(entries)} input(s) (all reasons in {self.path}):"]
        lines += [f"  {e['item']}: {e['reason']}" for e in entries[:SHOWN]]
        if len(entries) > SHOWN:
            lines.append(f"  ... and {len(entries) - SHOWN} more")
        return "\n".join(lines)
