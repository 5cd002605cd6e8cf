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
from dataclasses import dataclass
from typing import Any

from jobs.core.errors import UserError

WORD_LIMIT_RE = re.compile(r"(?:under|at most|no more than|fewer than)\s+(\d+)\s+words", re.I)
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


@dataclass(frozen=True)
class ResponseCheck:
    """What a response must show, one reading for the rubric expert and the simulator's judge."""
    match: re.Pattern | None = None  # the response must contain this
    no_match: re.Pattern | None = None  # the response must not contain this
    max_words: int | None = None  # at most this many words (or the limit the judge's instructions state)
    facts: str | None = None  # expectation key of a list of facts the response must each state (expected_facts)
    fact_pattern: str | None = None  # regex per fact, ``{fact}`` standing for it; default: its words in order

    def unstated(self, response: str, expectations: dict[str, Any]) -> list[str]:
        """The expected facts the response does not state."""
        if not self.facts:
            return []
        return [f for f in fact_list(expectations, self.facts) if not fact_stated(f, response, self.fact_pattern)]

    def holds(self, response: str, expectations: dict[str, Any], instructions: str = "") -> bool:
        if self.match is not None and not self.match.search(response):
            return False
        if self.no_match is not None and self.no_match.search(response):
            return False
        if self.max_words is not None:
            m = WORD_LIMIT_RE.search(instructions or "")
            if len(response.split()) > (int(m.group(1)) if m else self.max_words):
                return False
        return not self.unstated(response, expectations)
