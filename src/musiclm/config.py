"""Typed configs with named presets.

Every model's config is a dataclass deriving from :class:`Config`. A preset is a named set of field
overrides (``tiny`` for tests, ``small`` for one CPU machine, ``paper`` for the paper's sizes), so a
config is always "a preset plus what you changed", and it serialises to plain JSON.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self


class ConfigError(ValueError):
    """A config that cannot be built or does not match what it is loaded into."""


@dataclasses.dataclass
class Config:
    # Subclasses fill this with {preset name: {field: value}}; fields not named keep their defaults.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Fields a subclass no longer has, and why: a config.json written before their removal is refused with
    # the reason and the fix, not only with the list of fields it does have.
    RETIRED: ClassVar[dict[str, str]] = {}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        if name not in cls.PRESETS:
            raise ConfigError(
                f"unknown preset {name!r} for {cls.__name__}; choose one of {sorted(cls.PRESETS)}"
            )
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        retired = [name for name in unknown if name in cls.RETIRED]
        if retired:
            reasons = "; ".join(f"{name}: {cls.RETIRED[name]}" for name in retired)
            raise ConfigError(
                f"{cls.__name__} no longer has {retired} ({reasons}); delete them from the config.json "
                "(or run.json) that holds them: the weights load as before"
            )
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {name: _coerce(hints[name], value) for name, value in data.items()}
        wrong = [
            f"{name}={value!r} (expected {_type_name(hints[name])})"
            for name, value in values.items()
            if not _matches(hints[name], value)
        ]
        if wrong:
            raise ConfigError(f"{cls.__name__}: wrong type for {', '.join(wrong)}")
        return cls(**values)

    def diff(self, other: Config) -> list[str]:
        """Human-readable list of fields whose values differ, e.g. ``["dim: 64 != 128"]``."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [
            f"{key}: {mine.get(key, '<missing>')!r} != {theirs.get(key, '<missing>')!r}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


def _coerce(hint: Any, value: Any) -> Any:
    """Turn JSON values back into the field's type: nested configs and tuples (JSON has only lists)."""
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None) and value is not None:
                return _coerce(arg, value)
    return value


def _matches(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits the field's type (ints pass for floats; containers are checked by kind only)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return not isinstance(hint, type) or isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat
