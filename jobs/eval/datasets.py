"""Question sets, validated on load with the place of every error: JSONL files (a local path
or ``s3://``) and MLflow evaluation datasets (``mlflow-dataset:<name>`` or ``mlflow-dataset:d-<id>``).

A record: ``{"id": "tr-01", "inputs": {"question": "..."}, "expectations": {...}}``. An input is
a string or a conversation in MLflow's chat form, ``{"input": [{"role": "user", "content": "..."}]}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from jobs.core.errors import UserError
from jobs.core.files import read_text
from jobs.core.paths import resolve

MLFLOW_DATASET = "mlflow-dataset:"  # the dataset URI scheme of an MLflow evaluation dataset, by name or id (d-...)
ROLES = ("system", "user", "assistant", "tool")  # the chat roles MLflow's message form allows
FORMS = ('a string or a list of chat messages like [{"role": "user", "content": "..."}] '
         f'(roles {", ".join(ROLES)}; at least one user turn)')  # what an input key may hold, for messages


@dataclass(frozen=True)
class Origin:
    """The dataset and version records were read from: what an evaluation run records as its
    lineage (jobs/store/datasets.py: log_lineage)."""

    uri: str  # the dataset.<split> value, a local path resolved
    name: str  # the dataset's name in MLflow's run page: the file name, or the MLflow dataset's
    digest: str  # the version read: a hash of the file's text, or the MLflow dataset's digest
    records: int  # how many records it held
    split: str = ""  # train, heldout or traffic; empty when not read through the config
    dataset_id: str | None = None  # the MLflow evaluation dataset's id (d-...), None for a file


@dataclass(frozen=True)
class Record:
    id: str
    inputs: dict[str, Any]
    expectations: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # file:line, or mlflow-dataset:<name> record <id>, for messages
    origin: Origin | None = field(default=None, compare=False)  # the dataset it came from, for lineage

    def as_eval_row(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "expectations": dict(self.expectations)}

    def text(self, key: str) -> str:
        """The one text of input ``key`` (see ``input_text``)."""
        return input_text(self.inputs.get(key))


def content_text(content: Any) -> str:
    """A chat message's text: its string content, or the texts of its content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def input_text(value: Any) -> str:
    """The text of an input value where one text is needed (overlap, tables): the string
    itself, or a conversation's last user turn."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, dict) and message.get("role") == "user":
                return content_text(message.get("content"))
    return "" if value is None else str(value)


def conversation_text(value: Any) -> str:
    """Every turn of a conversation as one text (role and content), to compare whole conversations."""
    if not isinstance(value, list):
        return input_text(value)
    return "\n".join(f"{m.get('role')}: {content_text(m.get('content'))}" for m in value if isinstance(m, dict))


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return {dict: "an object", str: "a string", bool: "true/false", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def message_problem(message: Any) -> str | None:
    """What is wrong with one chat message, or None."""
    if not isinstance(message, dict):
        return f"is {_kind(message)}, not a message object"
    if message.get("role") not in ROLES:
        return f"has role {json.dumps(message.get('role'))}"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if content is None and message["role"] == "assistant" and message.get("tool_calls"):
        return None  # an assistant turn that only calls tools, as OpenAI's chat form writes it
    if isinstance(content, list) and content and all(isinstance(p, dict) for p in content) and any(
            isinstance(p.get("text"), str) for p in content):
        return None  # content parts: [{"type": "text", "text": "..."}, ...]
    return "has no string content (nor content parts with text)"


def check_input(value: Any, what: str) -> None:
    """An input key's value is a string or a conversation with a user turn; ``what`` is
    'file:line: inputs.key', the start of every message."""
    if isinstance(value, str):
        return
    if value is None:
        raise UserError(f"{what} is missing; every record needs it, as {FORMS}")
    if not isinstance(value, list) or not value:
        raise UserError(f"{what} is {_kind(value)}; give {FORMS}")
    for i, message in enumerate(value):
        if (problem := message_problem(message)) is not None:
            raise UserError(f"{what}[{i}] {problem}; give {FORMS}")
    if not any(m["role"] == "user" for m in value):
        raise UserError(f"{what} has no user turn; give {FORMS}")


def check_input_sizes(where: str, key: str, value: Any, max_chars: int | None) -> None:
    """A string input, and each message's content of a conversation, within limits.max_input_chars."""
    if max_chars is None:
        return
    if isinstance(value, str):
        texts = [(f"inputs.{key}", value)]
    elif isinstance(value, list):
        texts = [(f"inputs.{key}[{i}].content", content_text(m.get("content"))) for i, m in enumerate(value)
                 if isinstance(m, dict)]
    else:
        return
    for what, text in texts:
        if len(text) > max_chars:
            raise UserError(f"{where}: {what} is {len(text)} characters, above limits.max_input_chars="
                            f"{max_chars}; shorten it or raise limits.max_input_chars")


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
    objects = ((f"{source}:{n}", f"line {n}", f"line-{n}", obj) for n, obj in jsonl_objects(text, source, max_record_bytes))
    return checked_records(objects, source, list(input_keys), list(required_expectations), max_input_chars,
                           "add at least one JSON line")


def checked_record(obj: dict[str, Any], where: str, default_id: str, input_keys: list[str],
                   required_expectations: list[str], max_input_chars: int | None) -> Record:
    """One record's object checked: its inputs (a string or a conversation per input key), sizes
    and required expectations."""
    inputs = obj.get("inputs")
    if not isinstance(inputs, dict):
        raise UserError(f"{where}: missing 'inputs' object; add \"inputs\": {{\"question\": \"...\"}}")
    for key in input_keys:
        check_input(inputs.get(key), f"{where}: inputs.{key}")
    for key, value in inputs.items():
        check_input_sizes(where, key, value, max_input_chars)
    exp = obj.get("expectations", {})
    if not isinstance(exp, dict):
        raise UserError(f"{where}: 'expectations' must be an object")
    for key in required_expectations:
        if key not in exp:
            raise UserError(f"{where}: expectations.{key} is missing; this dataset requires it on every record")
    return Record(str(obj.get("id") or default_id), inputs, exp, where)


def checked_records(objects: Iterable[tuple[str, str, str, dict[str, Any]]], source: str, input_keys: list[str],
                    required_expectations: list[str], max_input_chars: int | None, empty_fix: str) -> list[Record]:
    """Records from (where, place, default id, object) tuples, with unique ids and inputs: the
    checks a JSONL file and an MLflow dataset share. ``place`` ('line 3') names an earlier duplicate."""
    records: list[Record] = []
    ids: set[str] = set()
    seen_inputs: dict[str, str] = {}
    for where, place, default_id, obj in objects:
        record = checked_record(obj, where, default_id, input_keys, required_expectations, max_input_chars)
        if record.id in ids:
            raise UserError(f"{where}: duplicate id '{record.id}'; ids must be unique")
        signature = json.dumps(record.inputs, sort_keys=True)
        if signature in seen_inputs:
            raise UserError(f"{where}: same inputs as {seen_inputs[signature]}; remove the duplicate")
        ids.add(record.id)
        seen_inputs[signature] = place
        records.append(record)
    if not records:
        raise UserError(f"{source}: the dataset is empty; {empty_fix}")
    return records


def content_digest(text: str) -> str:
    """A file's version for lineage: the same text, the same digest."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load(uri: str, input_keys: Iterable[str] = ("question",), required_expectations: Iterable[str] = (),
         limits: Any = None, split: str = "", mlflow_cfg: Any = None) -> list[Record]:
    """A dataset file or MLflow evaluation dataset, within ``limits`` (the config's limits
    section) when given; ``mlflow_cfg`` (the config's mlflow section) says where MLflow is,
    else the current tracking URI."""
    max_mb, max_chars, max_record = ((float(limits.max_file_mb), int(limits.max_input_chars),
                                      int(limits.max_record_kb * 1024)) if limits is not None else (None, None, None))
    if uri.startswith(MLFLOW_DATASET):
        return load_mlflow(uri, list(input_keys), list(required_expectations), (max_mb, max_chars, max_record), split,
                           mlflow_cfg)
    text = read_text(uri, "dataset", max_mb)
    records = parse(text, uri, input_keys, required_expectations, max_chars, max_record)
    where = uri if uri.startswith("s3://") else resolve(uri)
    origin = Origin(where, where.rsplit("/", 1)[-1], content_digest(text), len(records), split)
    return [replace(r, origin=origin) for r in records]


def load_mlflow(uri: str, input_keys: list[str], required_expectations: list[str],
                limits: tuple[float | None, int | None, int | None], split: str, mlflow_cfg: Any) -> list[Record]:
    """The records of an MLflow evaluation dataset, through the same checks as a JSONL file's,
    each named ``mlflow-dataset:<name> record <id>``."""
    from jobs.store import datasets as store_datasets  # only here: it talks to the MLflow server

    max_mb, max_chars, max_record = limits
    tracking_uri, timeout_s = (str(mlflow_cfg.tracking_uri), float(mlflow_cfg.connect_timeout_s)) if mlflow_cfg else (None, 10.0)
    found = store_datasets.read(uri[len(MLFLOW_DATASET):], uri, tracking_uri, timeout_s)
    total = 0
    for row in found.rows:
        size = len(json.dumps(row, default=str).encode("utf-8"))
        total += size
        if max_record is not None and size > max_record:
            raise UserError(f"{uri} record {row['id']}: the record is {size / 1024:.0f} KB, above limits.max_record_kb="
                            f"{max_record / 1024:g}; shorten it or raise limits.max_record_kb")
    if max_mb is not None and total > max_mb * 2**20:
        raise UserError(f"dataset {uri}: {total / 2**20:.1f} MB of records is above limits.max_file_mb={max_mb:g}; "
                        "split the dataset or raise limits.max_file_mb")
    objects = ((f"{uri} record {row['id']}", f"record {row['id']}", str(row["id"]), row) for row in found.rows)
    records = checked_records(objects, uri, input_keys, required_expectations, max_chars,
                              f"add records with `python -m jobs.datasets push <file.jsonl> --name {found.name}`")
    origin = Origin(uri, found.name, found.digest, len(records), split, found.dataset_id)
    return [replace(r, origin=origin) for r in records]


def from_config(cfg: Any, split: str) -> list[Record]:
    """The records of ``dataset.<split>``, checked against the dataset's keys and the limits."""
    uri = cfg.dataset.get(split)
    if not uri:
        raise UserError(f"dataset.{split} is not set; give the path or s3:// URI of the {split} JSONL, or "
                        f"{MLFLOW_DATASET}<name> for an MLflow evaluation dataset")
    return load(str(uri), list(cfg.dataset.input_keys), list(cfg.dataset.required_expectations), cfg.limits, split,
                cfg.get("mlflow"))


def normalized(text: str) -> str:
    """A question's text for comparing sets: case, spacing and punctuation ignored."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.casefold()).split())


def same_question(a: Any, b: Any) -> bool:
    """Two input values whose one texts are equal ask the same question, unless both are
    conversations: then every turn must match (two conversations may end on the same 'yes')."""
    return not (isinstance(a, list) and isinstance(b, list)) or normalized(conversation_text(a)) == normalized(
        conversation_text(b))


def shared_questions(a: list[Record], b: list[Record], key: str) -> list[tuple[Record, Record]]:
    """Pairs (record of a, record of b) that ask the same question once normalized; a string
    question matches a conversation whose last user turn it is."""
    seen: dict[str, list[Record]] = {}
    for r in a:
        seen.setdefault(normalized(r.text(key)), []).append(r)
    seen.pop("", None)  # a blank question is an edge case of its own, not a leak
    pairs = []
    for r in b:
        match = next((o for o in seen.get(normalized(r.text(key)), []) if same_question(o.inputs.get(key), r.inputs.get(key))),
                     None)
        if match is not None:
            pairs.append((match, r))
    return pairs


# ---------------------------------------------------------------- slices
def slice_rule(name: str, where: Any) -> tuple[str, str]:
    """A slice's ``key=value`` rule as (expectations key, value), or a UserError naming it."""
    key, eq, value = str(where).partition("=")
    if not eq or not key.strip() or not value.strip():
        raise UserError(f"dataset.slices.{name}: '{where}' must be <expectations key>=<value>, e.g. topic=injection")
    return key.strip(), value.strip()


def shown_value(value: Any) -> str:
    """An expectation's value as a slice rule writes it: true/false for booleans."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def slice_members(records: list[Record], slices: dict[str, Any]) -> dict[str, list[str]]:
    """The ids of the records in each slice (``dataset.slices``: name -> ``key=value``, the
    record's expectations[key] shown as ``value``)."""
    out = {}
    for name, where in (slices or {}).items():
        key, value = slice_rule(name, where)
        out[str(name)] = [r.id for r in records if key in r.expectations and shown_value(r.expectations[key]) == value]
    return out


def check_slices(records: list[Record], slices: dict[str, Any], split: str, gated: Iterable[str]) -> None:
    """Every slice a gate holds (``gated``) has at least one record of ``split``: a rule that
    matches nothing is a typo (or a key the set lacks), and a gate on it could only refuse.
    Other slices may be empty in a small set: the table shows them with 0 questions."""
    for name, members in slice_members(records, slices).items():
        if not members and name in set(gated):
            key, value = slice_rule(name, slices[name])
            seen = sorted({shown_value(r.expectations[key]) for r in records if key in r.expectations
                           and not isinstance(r.expectations[key], (list, dict))})[:12]
            raise UserError(f"dataset.slices.{name}: no {split} record has expectations {key}={value}, so its gate "
                            "(gate.slices) could only refuse"
                            + (f"; values of {key} there: {', '.join(seen)}" if seen else f"; no {split} record has {key}"))
