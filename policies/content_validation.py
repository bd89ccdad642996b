"""Checks for the values read from the content rules file (``conf/content_rules.toml``).

Its one job is the building blocks of rules-file validation: each helper checks one kind
of TOML value (the set of keys of a table, a sub-table, a number, a list of strings, a
regex or a list of regexes) and raises a ValueError that says where the bad value is.
Regexes are compiled here with ``_FLAGS``, the flags every content rule and off-platform
detector uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_FLAGS = re.IGNORECASE | re.UNICODE


def _check_keys(where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: [{key}] must be a table")
    return value


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    return float(value)


def _compile_list(value: Any, where: str, *, required: bool) -> tuple[re.Pattern[str], ...]:
    if value is None:
        value = []
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"{where} must be a list of regexes")
    if required and not value:
        raise ValueError(f"{where} must not be empty")
    return tuple(_compile(p, where) for p in value)


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: pattern must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"{where}: bad regex {pattern!r}: {exc}") from exc


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of non-empty strings")
    return tuple(value)
