"""Expert labels: parsing label files and the programmatic rubric expert.

A label says what an expert thinks of one trace under the judge's name: a value, a
rationale, and who said it. Files are JSONL or CSV, keyed by ``trace_id`` or
``question_id``; a ``name`` column, when present, must equal the judge's name.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobs.core.errors import UserError
from jobs.core.judge_kinds import kind_of
from jobs.eval import expectations as rules
from jobs.eval.datasets import check_line_sizes, jsonl_objects


@dataclass(frozen=True)
class Label:
    key: str  # a trace id or a question id
    value: Any
    rationale: str
    expert: str
    where: str  # file:line, for messages


def coerce(value: Any, kind: str, categories: Iterable[str] | None, where: str,
           scale: Iterable[float] | None = None) -> Any:
    """A label's value as the judge's kind (``kind`` is its feedback_value_type) parses it; a
    float judge's label must lie on its ``scale`` ([0, 1] when None)."""
    scale = None if scale is None else list(scale)
    return kind_of({"feedback_value_type": kind, "categories": list(categories or []), "scale": scale,
                    "pass_threshold": scale[0] if scale else None}).parse(value, where)


def parse_file(text: str, source: str, judge_name: str, kind: str, categories: Iterable[str] | None,
               default_expert: str, max_record_bytes: int | None = None,
               scale: Iterable[float] | None = None) -> tuple[str, list[Label]]:
    """Parse a label file. Returns the key column ('trace_id' or 'question_id') and the labels;
    a float judge's values outside its ``scale`` are refused with their file:line."""
    check_line_sizes(text, source, max_record_bytes)
    if source.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        rows = [(n + 2, dict(r)) for n, r in enumerate(reader)]
    else:
        rows = list(jsonl_objects(text, source))
    if not rows:
        raise UserError(f"{source}: no labels in the file; add one row per labelled trace")
    labels, key_col = [], None
    for n, row in rows:
        where = f"{source}:{n}"
        name = row.get("name")
        if name not in (None, "") and str(name) != judge_name:
            raise UserError(f"{where}: label name '{name}' does not match the judge '{judge_name}'; "
                            f"rename the labels to '{judge_name}' or set judge.name")
        col = "trace_id" if row.get("trace_id") else "question_id" if row.get("question_id") else None
        if col is None:
            raise UserError(f"{where}: needs a trace_id or a question_id column")
        key_col = key_col or col
        if col != key_col:
            raise UserError(f"{where}: mixes {col} with {key_col}; key every row the same way")
        if row.get("value") in (None, ""):
            raise UserError(f"{where}: value is missing; give the expert's verdict")
        labels.append(Label(str(row[col]), coerce(row["value"], kind, categories, where, scale),
                            str(row.get("rationale") or ""), str(row.get("expert") or default_expert), where))
    return key_col or "trace_id", labels


# ------------------------------------------------------------------ rubric expert
@dataclass(frozen=True)
class Criterion:
    name: str
    when: tuple[str, ...]
    unless: tuple[str, ...]
    check: rules.ResponseCheck  # must_match, must_not_match, must_state (and fact_pattern) of the config
    missing: str

    def applies(self, expectations: dict[str, Any]) -> bool:
        return rules.applies(self.when, self.unless, expectations)


CHECK_KEYS = ("must_match", "must_not_match", "must_state")


def compile_rubric(items: Iterable[Any]) -> list[Criterion]:
    out = []
    for i, item in enumerate(items or []):
        where = f"feedback.criteria[{i}]"
        try:
            name = str(item["name"])
            missing = str(item["missing"])
        except (KeyError, TypeError):
            raise UserError(f"{where}: needs name and missing (the rationale text when the check fails)") from None
        patterns = {}
        for key in ("must_match", "must_not_match"):
            if item.get(key):
                try:
                    patterns[key] = re.compile(str(item[key]))
                except re.error as e:
                    raise UserError(f"{where}.{key}: bad regex ({e})") from None
        if not patterns and not item.get("must_state"):
            raise UserError(f"{where}: give one of {', '.join(CHECK_KEYS)}")
        fact_pattern = item.get("fact_pattern")
        if fact_pattern:
            if "{fact}" not in str(fact_pattern):
                raise UserError(f"{where}.fact_pattern must contain {{fact}}, e.g. '\\b{{fact}}\\b'")
            try:
                re.compile(str(fact_pattern).replace("{fact}", "x"))
            except re.error as e:
                raise UserError(f"{where}.fact_pattern: bad regex ({e})") from None
        check = rules.ResponseCheck(patterns.get("must_match"), patterns.get("must_not_match"),
                                    facts=str(item["must_state"]) if item.get("must_state") else None,
                                    fact_pattern=str(fact_pattern) if fact_pattern else None)
        out.append(Criterion(name, rules.check_conditions(item.get("when") or (), f"{where}.when"),
                             rules.check_conditions(item.get("unless") or (), f"{where}.unless"), check, missing))
    if not out:
        raise UserError("feedback.criteria is empty; the rubric expert needs at least one check")
    return out


def rubric_verdict(criteria: list[Criterion], response: str, expectations: dict[str, Any]) -> tuple[int, int, str]:
    """(checks met, checks that applied, rationale) of the rubric expert on one response."""
    checked = [c for c in criteria if c.applies(expectations)]
    missing = []
    for c in checked:
        if not c.check.holds(response, expectations):
            unstated = c.check.unstated(response, expectations)
            missing.append(c.missing + (f" ({'; '.join(unstated)})" if unstated else ""))
    if missing:
        return len(checked) - len(missing), len(checked), "Missing: " + "; ".join(missing) + "."
    return len(checked), len(checked), ("Meets every criterion the expert checks: "
                                        + (", ".join(c.name for c in checked) or "none apply") + ".")


def rubric_value(judge_cfg: Any, met: int, checked: int) -> Any:
    """The expert's verdict in the judge's own value type: pass/fail for a bool judge, for a float
    judge the share of checks met placed on its scale (low + share x (high - low), judge.scale),
    and for a categorical one the best category when every
    check holds, the worst below half, a middle one in between."""
    return kind_of(judge_cfg).rubric_value(met, checked)
