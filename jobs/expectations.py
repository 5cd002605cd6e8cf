"""Conditions on a record's expectations, one reading for the rubric expert and the simulator.

A condition is a string in one of two forms:

* ``flag``: the expectation is truthy (``answerable: true``, a non-empty ``expected_facts``);
* ``key=value``: the expectation equals ``value`` (compared as lower-case text, so
  ``answerable=false`` and ``topic=refund`` both work); ``key=a|b`` equals either.

``when`` lists conditions that must all hold; ``unless`` lists conditions none of which may.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from jobs.errors import UserError

_CONDITION_RE = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:=\s*(.*?)\s*)?$")


def check_conditions(conditions: Iterable[Any], where: str) -> tuple[str, ...]:
    """The conditions as strings, or a UserError naming ``where`` when one has no valid form."""
    if isinstance(conditions, str):
        raise UserError(f"{where}: give a list, e.g. [{conditions}], not a string")
    out = []
    for c in conditions or ():
        if not isinstance(c, str) or not _CONDITION_RE.match(c):
            raise UserError(f"{where}: condition {c!r} is neither 'flag' nor 'key=value'")
        out.append(c)
    return tuple(out)


def holds(condition: str, expectations: dict[str, Any]) -> bool:
    m = _CONDITION_RE.match(condition)
    if m is None:
        return False
    key, expected = m.group(1), m.group(2)
    value = expectations.get(key)
    if expected is None:
        return bool(value)
    return value is not None and str(value).strip().lower() in {e.strip() for e in expected.lower().split("|")}


def applies(when: Iterable[str], unless: Iterable[str], expectations: dict[str, Any]) -> bool:
    return all(holds(c, expectations) for c in when) and not any(holds(c, expectations) for c in unless)


def fact_list(expectations: dict[str, Any], key: str) -> list[str]:
    """The facts under ``key`` (MLflow's ``expected_facts``) as a list of strings."""
    value = expectations.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def fact_stated(fact: str, response: str, pattern: str | None = None) -> bool:
    """Whether ``response`` states ``fact``: as words in order, ignoring case, spacing and
    punctuation at the ends; or, with ``pattern``, where ``{fact}`` is replaced by the
    escaped fact (e.g. ``\\b{fact}\\b``)."""
    if pattern:
        return re.search(pattern.replace("{fact}", re.escape(fact)), response, re.I) is not None
    words = re.findall(r"\w+", fact.lower())
    if not words:
        return True
    return re.search(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b", response.lower()) is not None
