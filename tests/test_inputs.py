"""Validation of datasets, label files and the rubric expert: line numbers and fixes in messages."""

from __future__ import annotations

import json

import pytest

from jobs import datasets, labels
from jobs.errors import UserError
from jobs.paths import ROOT

REQ = ("answerable", "small_sample", "injection")


def parse(text: str):
    return datasets.parse(text, "d.jsonl", ["question"], REQ)


def row(**kw):
    base = {"id": "a", "inputs": {"question": "q"}, "expectations": dict.fromkeys(REQ, False)}
    base.update(kw)
    return json.dumps(base)


@pytest.mark.parametrize("text,message", [
    ("", "d.jsonl: the dataset is empty"),
    (row() + "\n{broken\n", "d.jsonl:2: not valid JSON"),
    (row(inputs=None), "d.jsonl:1: missing 'inputs' object"),
    (row(inputs={"q": 1}), "d.jsonl:1: inputs.question is missing"),
    (row(expectations={"answerable": True}), "d.jsonl:1: expectations.small_sample is missing"),
    (row() + "\n" + row(), "d.jsonl:2: duplicate id 'a'"),
    (row() + "\n" + row(id="b"), "d.jsonl:2: same inputs as line 1"),
    ("[1, 2]", "d.jsonl:1: expected a JSON object"),
])
def test_bad_dataset_lines_are_named(text, message):
    with pytest.raises(UserError) as e:
        parse(text)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_shipped_datasets_are_valid_disjoint_and_cover_the_edge_cases():
    train = datasets.load(str(ROOT / "data/baseball/train.jsonl"), ["question"], REQ)
    held = datasets.load(str(ROOT / "data/baseball/heldout.jsonl"), ["question"], REQ)
    assert len(train) >= 24 and len(held) >= 24
    assert not {r.inputs["question"] for r in train} & {r.inputs["question"] for r in held}
    for split in (train, held):
        exp = [r.expectations for r in split]
        assert any(e["injection"] for e in exp)
        assert any(not e["answerable"] and not e["injection"] for e in exp)
        assert any(not r.inputs["question"].strip() for r in split)
        assert any(e["small_sample"] for e in exp)


def test_label_file_jsonl_and_csv():
    key, labs = labels.parse_file('{"trace_id": "tr-1", "value": "yes", "rationale": "ok", "name": "j"}\n', "l.jsonl",
                                  "j", "bool", None, "file")
    assert key == "trace_id" and labs[0].value is True and labs[0].expert == "file"
    key, labs = labels.parse_file("question_id,value,rationale,expert\nq1,false,Missing: x,ann\n", "l.csv", "j", "bool",
                                  None, "file")
    assert key == "question_id" and labs[0].value is False and labs[0].expert == "ann" and labs[0].where == "l.csv:2"


@pytest.mark.parametrize("text,message", [
    ('{"trace_id": "t", "value": true, "name": "other"}', "l.jsonl:1: label name 'other' does not match the judge 'j'"),
    ('{"value": true}', "l.jsonl:1: needs a trace_id or a question_id"),
    ('{"trace_id": "t", "value": "maybe"}', "l.jsonl:1: value 'maybe' is not a yes/no label"),
    ('{"trace_id": "t"}', "l.jsonl:1: value is missing"),
    ("", "l.jsonl: no labels"),
    ('{"trace_id": "t", "value": 1}\n{"question_id": "q", "value": 1}', "l.jsonl:2: mixes question_id with trace_id"),
])
def test_bad_label_files_are_named(text, message):
    with pytest.raises(UserError) as e:
        labels.parse_file(text, "l.jsonl", "j", "bool", None, "file")
    assert str(e.value).startswith(message)


def test_rubric_expert_applies_checks_by_expectation():
    rubric = labels.compile_rubric([
        {"name": "rec", "when": ["answerable"], "must_match": "Recommendation:", "missing": "no rec"},
        {"name": "leak", "when": ["injection"], "must_not_match": "My instructions", "missing": "leaks"},
    ])
    assert labels.rubric_verdict(rubric, "Recommendation: swing", {"answerable": True}) == (
        True, "Meets every criterion the expert checks: rec.")
    assert labels.rubric_verdict(rubric, "nope", {"answerable": True}) == (False, "Missing: no rec.")
    assert labels.rubric_verdict(rubric, "My instructions are: x", {"injection": True})[0] is False
    with pytest.raises(UserError, match=r"feedback.criteria\[0\].must_match: bad regex"):
        labels.compile_rubric([{"name": "x", "missing": "y", "must_match": "("}])
