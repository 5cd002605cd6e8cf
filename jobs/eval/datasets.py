"""Question sets as JSONL, validated on load with line numbers in every error.

A record: ``{"id": "tr-01", "inputs": {"question": "..."}, "expectations": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jobs.core.errors import UserError
from jobs.core.files import read_text


@dataclass(frozen=True)
class Record:
    id: str
    inputs: dict[str, Any]
    expectations: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # file:line, for messages

    def as_eval_row(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "expectations": dict(self.expectations)}


def check_line_sizes(text: str, source: str, max_bytes: int | None) -> None:
    """Every line (one record) within limits.max_record_kb."""
    if max_bytes is None or len(text) * 4 <= max_bytes:  # a character is at most 4 bytes in UTF-8
        return
    for n, line in enumerate(text.splitlines(), 1):
        size = len(line.encode("utf-8"))
        if size > max_bytes:
            raise UserError(f"{source}:{n}: the record is {size / 1024:.0f} KB, above limits.max_record_kb={max_bytes / 1024:g}; "
                            "shorten it or raise limits.max_record_kb")


def jsonl_objects(text: str, source: str, max_line_bytes: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    check_line_sizes(text, source, max_line_bytes)
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            cut = " (the last line ends early: is the file truncated?)" if n == len(lines) and not text.endswith("\n") else ""
            raise UserError(f"{source}:{n}: not valid JSON ({e.msg}, column {e.colno}){cut}; each line must be one "
                            "JSON object") from None
        if not isinstance(obj, dict):
            raise UserError(f"{source}:{n}: expected a JSON object per line, got {type(obj).__name__}")
        yield n, obj


def parse(text: str, source: str, input_keys: Iterable[str] = ("question",),
          required_expectations: Iterable[str] = (), max_input_chars: int | None = None,
          max_record_bytes: int | None = None) -> list[Record]:
    records: list[Record] = []
    ids: set[str] = set()
    seen_inputs: dict[str, int] = {}
    for n, obj in jsonl_objects(text, source, max_record_bytes):
        where = f"{source}:{n}"
        inputs = obj.get("inputs")
        if not isinstance(inputs, dict):
            raise UserError(f"{where}: missing 'inputs' object; add \"inputs\": {{\"question\": \"...\"}}")
        for key in input_keys:
            if not isinstance(inputs.get(key), str):
                raise UserError(f"{where}: inputs.{key} is missing or not a string; every record needs it")
        for key, value in inputs.items():
            if max_input_chars is not None and isinstance(value, str) and len(value) > max_input_chars:
                raise UserError(f"{where}: inputs.{key} is {len(value)} characters, above limits.max_input_chars="
                                f"{max_input_chars}; shorten it or raise limits.max_input_chars")
        exp = obj.get("expectations", {})
        if not isinstance(exp, dict):
            raise UserError(f"{where}: 'expectations' must be an object")
        for key in required_expectations:
            if key not in exp:
                raise UserError(f"{where}: expectations.{key} is missing; this dataset requires it on every record")
        rid = str(obj.get("id") or f"line-{n}")
        if rid in ids:
            raise UserError(f"{where}: duplicate id '{rid}'; ids must be unique")
        signature = json.dumps(inputs, sort_keys=True)
        if signature in seen_inputs:
            raise UserError(f"{where}: same inputs as line {seen_inputs[signature]}; remove the duplicate")
        ids.add(rid)
        seen_inputs[signature] = n
        records.append(Record(rid, inputs, exp, where))
    if not records:
        raise UserError(f"{source}: the dataset is empty; add at least one JSON line")
    return records


def load(uri: str, input_keys: Iterable[str] = ("question",), required_expectations: Iterable[str] = (),
         limits: Any = None) -> list[Record]:
    """A dataset file, within ``limits`` (the config's limits section) when given."""
    max_mb, max_chars, max_record = ((float(limits.max_file_mb), int(limits.max_input_chars),
                                      int(limits.max_record_kb * 1024)) if limits is not None else (None, None, None))
    return parse(read_text(uri, "dataset", max_mb), uri, input_keys, required_expectations, max_chars, max_record)


def from_config(cfg: Any, split: str) -> list[Record]:
    """The records of ``dataset.<split>``, checked against the dataset's keys and the limits."""
    uri = cfg.dataset.get(split)
    if not uri:
        raise UserError(f"dataset.{split} is not set; give the path or s3:// URI of the {split} JSONL")
    return load(str(uri), list(cfg.dataset.input_keys), list(cfg.dataset.required_expectations), cfg.limits)


def normalized(text: str) -> str:
    """A question's text for comparing sets: case, spacing and punctuation ignored."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.casefold()).split())


def shared_questions(a: list[Record], b: list[Record], key: str) -> list[tuple[Record, Record]]:
    """Pairs (record of a, record of b) that ask the same question once normalized."""
    seen = {normalized(str(r.inputs.get(key, ""))): r for r in a}
    seen.pop("", None)  # a blank question is an edge case of its own, not a leak
    return [(seen[q], r) for r in b if (q := normalized(str(r.inputs.get(key, "")))) in seen]
