"""Question sets as JSONL, validated on load with line numbers in every error.

A record: ``{"id": "tr-01", "inputs": {"question": "..."}, "expectations": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jobs.core.errors import UserError
from jobs.store.files import read_text


@dataclass(frozen=True)
class Record:
    id: str
    inputs: dict[str, Any]
    expectations: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # file:line, for messages

    def as_eval_row(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "expectations": dict(self.expectations)}


def jsonl_objects(text: str, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}:{n}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise UserError(f"{source}:{n}: expected a JSON object per line, got {type(obj).__name__}")
        yield n, obj


def parse(text: str, source: str, input_keys: Iterable[str] = ("question",),
          required_expectations: Iterable[str] = ()) -> list[Record]:
    records: list[Record] = []
    ids: set[str] = set()
    seen_inputs: dict[str, int] = {}
    for n, obj in jsonl_objects(text, source):
        where = f"{source}:{n}"
        inputs = obj.get("inputs")
        if not isinstance(inputs, dict):
            raise UserError(f"{where}: missing 'inputs' object; add \"inputs\": {{\"question\": \"...\"}}")
        for key in input_keys:
            if not isinstance(inputs.get(key), str):
                raise UserError(f"{where}: inputs.{key} is missing or not a string; every record needs it")
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


def load(uri: str, input_keys: Iterable[str] = ("question",), required_expectations: Iterable[str] = ()) -> list[Record]:
    return parse(read_text(uri, "dataset"), uri, input_keys, required_expectations)


def from_config(dataset_cfg: Any, split: str) -> list[Record]:
    uri = dataset_cfg.get(split)
    if not uri:
        raise UserError(f"dataset.{split} is not set; give the path or s3:// URI of the {split} JSONL")
    return load(str(uri), list(dataset_cfg.input_keys), list(dataset_cfg.required_expectations))
