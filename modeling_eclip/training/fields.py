# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Rules that the argument dataclasses of every command line (pretraining, image tower, detection) share, declared on
the fields themselves: a numeric field's range sits in its annotation (`Annotated[int, AT_LEAST_ONE]`) and
`check_ranges` checks them all; an optional field (`X | None`) takes "none" for None.

The range rides in the annotation rather than in `field(metadata=...)` because `HfArgumentParser` hands a field's
metadata to argparse, which refuses keys it does not know; `typing.get_type_hints` drops the annotation for it."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What an optional field reads as None, on the command line and in recipes.
NONE_STRINGS = ("none", "")


@dataclass(frozen=True)
class Range:
    """The values a numeric field takes: from `low` (excluded with `low_open`) up to `high` (None: no bound; excluded
    unless `high_closed`). Every value must also be finite."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and self.high_closed)
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"> {self.low}" if self.low_open else f">= {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{']' if self.high_closed else ')'}"


AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)  # a share that must leave something over: warm-up ratio, label smoothing, Adam's betas
PROBABILITY = Range(0, 1, high_closed=True)


def _field_type(annotation: Any) -> tuple[Any, Range | None]:
    """The annotation without `Annotated`, and the `Range` it carries (None when it has none)."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, next((extra for extra in extras if isinstance(extra, Range)), None)
    return annotation, None


def _is_optional(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


@functools.cache
def field_ranges(arguments_class: type) -> dict[str, Range]:
    """The `Range` of every numeric field of `arguments_class` that declares one, in field order."""
    hints = typing.get_type_hints(arguments_class, include_extras=True)
    ranges = {name: _field_type(hints[name])[1] for name in (f.name for f in dataclasses.fields(arguments_class))}
    return {name: value for name, value in ranges.items() if value is not None}


@functools.cache
def optional_fields(arguments_class: type) -> tuple[str, ...]:
    """The fields of `arguments_class` that take None (`X | None`)."""
    hints = typing.get_type_hints(arguments_class)
    return tuple(f.name for f in dataclasses.fields(arguments_class) if _is_optional(hints[f.name]))


def clear_none_strings(args: Any) -> None:
    """Sets every optional field given as "none" (any case) or "" to None, as the command line and recipes spell it."""
    for name in optional_fields(type(args)):
        value = getattr(args, name)
        if isinstance(value, str) and value.lower() in NONE_STRINGS:
            setattr(args, name, None)


def none_or(cast: type) -> Callable[[str], Any]:
    """An argparse type for an optional number: "none" (any case) or "" is None, anything else goes through `cast`."""

    def parse(value: str) -> Any:
        return None if value.strip().lower() in NONE_STRINGS else cast(value)

    parse.__name__ = cast.__name__  # argparse names the type in its error messages
    return parse


def check_ranges(args: Any) -> None:
    """Every numeric field with a `Range` is in it, finite, and an int where the field is one (None passes where the
    field is optional); a ValueError names the first field that is not, in field order."""
    hints = typing.get_type_hints(type(args))
    for name, allowed in field_ranges(type(args)).items():
        value = getattr(args, name)
        if value is None and _is_optional(hints[name]):
            continue
        wants_int = hints[name] is int or int in typing.get_args(hints[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (wants_int and not isinstance(value, int)):
            raise ValueError(f"{name} must be {'an integer' if wants_int else 'a number'}, got {value!r}")
        if value not in allowed:
            raise ValueError(f"{name} must be {allowed}, got {value}")
