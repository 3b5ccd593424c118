"""The pairs file: one JSON object a line, two prompts that differ in one attribute, each side with the
attributes a render of it would have; read and checked, with the shipped one as default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from musiclm.attributes import CHANGES_INSTRUMENT, KIND_ATTRIBUTE, ORDER

PAIRS_FILE = Path(__file__).parents[1] / "pairs.jsonl"

# the attributes each side of a pair states; a pair must change exactly its kind's one
COMPARED = ("tempo_class", "mode", "register", "articulation", "voices", "families", "style")


class PairsError(ValueError):
    """A pairs file or pair audio that cannot be used: names the file, line or pair."""


@dataclasses.dataclass
class Pair:
    kind: str
    a: str
    b: str
    attributes_a: dict[str, Any]
    attributes_b: dict[str, Any]

    def changed(self) -> set[str]:
        """The compared attributes that differ between the sides (``instruments`` aside)."""
        return {k for k in COMPARED if self.attributes_a.get(k) != self.attributes_b.get(k)}

    def check(self) -> None:
        """Raise ``ValueError`` unless the pair asks for exactly one change, of its kind, the right way."""
        if self.kind not in KIND_ATTRIBUTE:
            raise ValueError(f"unknown kind {self.kind!r}; choose from {list(KIND_ATTRIBUTE)}")
        for side, text, attrs in (("a", self.a, self.attributes_a), ("b", self.b, self.attributes_b)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f'"{side}" must be a non-empty prompt')
            missing = [k for k in (*COMPARED, "instruments") if k not in attrs]
            if missing:
                raise ValueError(f"attributes_{side} lacks {missing}")
        name = KIND_ATTRIBUTE[self.kind]
        if self.changed() != {name}:
            raise ValueError(
                f"a {self.kind} pair must differ in {name} only; its sides differ in "
                f"{sorted(self.changed()) or 'nothing'}"
            )
        same_instruments = self.attributes_a["instruments"] == self.attributes_b["instruments"]
        if self.kind not in CHANGES_INSTRUMENT and not same_instruments:
            raise ValueError(f"a {self.kind} pair must keep the instruments; they differ")
        va, vb = self.attributes_a[name], self.attributes_b[name]
        if name in ORDER and not ORDER[name].index(va) < ORDER[name].index(vb):
            raise ValueError(f"{name} must go up from A to B along {ORDER[name]}; got {va!r} -> {vb!r}")
        if name == "voices" and not va < vb:
            raise ValueError(f"voices must grow from A to B; got {va} -> {vb}")
        if name == "families" and (not set(va) - set(vb) or not set(vb) - set(va)):
            raise ValueError(f"each side of a family pair needs a family the other lacks; got {va} -> {vb}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_pairs(path: str | Path = PAIRS_FILE) -> list[Pair]:
    """The pairs of a JSONL file (default: the shipped one), each checked by :meth:`Pair.check`."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"pairs file {path} not found")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            pair = Pair(**data)
            pair.check()
        except (ValueError, TypeError, KeyError) as err:
            raise PairsError(
                f'{path}:{number}: {err} (each line: {{"kind", "a", "b", "attributes_a", "attributes_b"}})'
            ) from err
        pairs.append(pair)
    if not pairs:
        raise PairsError(f"pairs file {path} has no pairs")
    return pairs
