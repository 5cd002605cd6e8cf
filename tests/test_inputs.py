"""Validation of datasets, label files and the rubric expert: line numbers and fixes in messages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jobs.core.errors import UserError
from jobs.core.paths import ROOT
from jobs.eval import datasets, labels

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
        1, 1, "Meets every criterion the expert checks: rec.")
    assert labels.rubric_verdict(rubric, "nope", {"answerable": True}) == (0, 1, "Missing: no rec.")
    assert labels.rubric_verdict(rubric, "My instructions are: x", {"injection": True})[:2] == (0, 1)
    with pytest.raises(UserError, match=r"feedback.criteria\[0\].must_match: bad regex"):
        labels.compile_rubric([{"name": "x", "missing": "y", "must_match": "("}])


FACTS = {"expected_facts": ["shipped on 2026-11-02", "carrier DHL"], "topic": "delivery", "answerable": True}


@pytest.mark.parametrize("criterion,response,expectations,met", [
    # must_state: each of MLflow's expected_facts, as words in order (case, spacing, punctuation ignored)
    ({"must_state": "expected_facts"}, "It SHIPPED on 2026-11-02 with carrier DHL.", FACTS, True),
    ({"must_state": "expected_facts"}, "It shipped on 2026-11-02.", FACTS, False),
    ({"must_state": "expected_facts"}, "Anything.", {"topic": "delivery"}, True),  # no facts expected: nothing to state
    # fact_pattern: a regex per fact
    ({"must_state": "expected_facts", "fact_pattern": "^{fact}"}, "carrier DHL; shipped on 2026-11-02", FACTS, False),
    # when/unless forms: a flag (truthy, a non-empty list counts) and key=value
    ({"must_match": "x", "when": ["expected_facts"]}, "no", {"expected_facts": []}, None),  # empty list: not applied
    ({"must_match": "x", "when": ["topic=delivery"]}, "no", FACTS, False),
    ({"must_match": "x", "when": ["topic=refund"]}, "no", FACTS, None),
    ({"must_match": "x", "unless": ["answerable"]}, "no", FACTS, None),
    ({"must_match": "x", "when": ["answerable=true"]}, "x", FACTS, True),
])
def test_rubric_reads_standard_expectations(criterion, response, expectations, met):
    rubric = labels.compile_rubric([{"name": "c", "missing": "misses it", **criterion}])
    got, checked, why = labels.rubric_verdict(rubric, response, expectations)
    assert (None if checked == 0 else got == checked) == met
    if met is False and "must_state" in criterion:
        assert "misses it (" in why  # names the facts it did not state


@pytest.mark.parametrize("kind,categories,met,checked,value", [
    ("bool", None, 2, 2, True), ("bool", None, 1, 2, False),
    ("float", None, 1, 2, 0.5),
    ("categorical", ["good", "partial", "poor"], 3, 3, "good"),
    ("categorical", ["good", "partial", "poor"], 2, 3, "partial"),
    ("categorical", ["good", "partial", "poor"], 1, 3, "poor"),
])
def test_rubric_value_follows_the_judge_type(kind, categories, met, checked, value):
    judge = OmegaConf.create({"feedback_value_type": kind, "categories": categories})
    assert labels.rubric_value(judge, met, checked) == value


@pytest.mark.parametrize("item,message", [
    ({"when": "answerable", "must_match": "x"}, "feedback.criteria[0].when: give a list"),
    ({"when": ["a b"], "must_match": "x"}, "condition 'a b' is neither 'flag' nor 'key=value'"),
    ({"must_state": "expected_facts", "fact_pattern": "x"}, "fact_pattern must contain {fact}"),
    ({}, "feedback.criteria[0]: give one of must_match, must_not_match, must_state"),
])
def test_bad_rubric_checks_are_named(item, message):
    with pytest.raises(UserError) as e:
        labels.compile_rubric([{"name": "c", "missing": "m", **item}])
    assert message in str(e.value)


# ------------------------------------------------------------------ files: every way a read can go wrong
def test_read_text_names_the_file_for_each_failure(tmp_path, monkeypatch):
    from jobs.core.files import read_text

    with pytest.raises(UserError, match=r"^dataset .*nowhere.jsonl: no such file"):
        read_text(str(tmp_path / "nowhere.jsonl"), "dataset")
    with pytest.raises(UserError, match=r"^dataset .*: is a folder; give the path of the file in it$"):
        read_text(str(tmp_path), "dataset")
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail as it does for everyone else
        def denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match=r"locked.jsonl: permission denied; make the file readable by this user"):
        read_text(str(locked), "dataset")


@pytest.mark.parametrize("data,message", [
    (b"ok\n\xe9t\xe9\n", "d.jsonl:2: byte 0xe9 at column 1 is not UTF-8"),
    (b"\xff\xfeq\x00", "d.jsonl:1: byte 0xff at column 1 is not UTF-8"),  # UTF-16, as some editors save
])
def test_bytes_that_are_not_utf8_are_named_by_line_and_column(data, message):
    from jobs.core.files import decode_utf8

    with pytest.raises(UserError, match="^" + re.escape(message)):
        decode_utf8(data, "d.jsonl")
    assert decode_utf8(b"\xef\xbb\xbfq", "d.jsonl") == "q"  # a byte-order mark is dropped


def test_limits_name_the_line_and_the_limit():
    with pytest.raises(UserError, match=r"^d.jsonl:2: the record is 3 KB, above limits.max_record_kb=2"):
        datasets.parse(row() + "\n" + row(id="b", inputs={"question": "x" * 3000}), "d.jsonl", ["question"], REQ,
                       max_record_bytes=2048)
    with pytest.raises(UserError, match=r"^d.jsonl:1: inputs.question is 11 characters, above limits.max_input_chars=10"):
        datasets.parse(row(inputs={"question": "x" * 11}), "d.jsonl", ["question"], REQ, max_input_chars=10)
    with pytest.raises(UserError, match=r"^l.jsonl:1: the record is 3 KB"):
        labels.parse_file(json.dumps({"trace_id": "t", "value": True, "rationale": "x" * 3000}), "l.jsonl", "j", "bool",
                          None, "file", max_record_bytes=2048)


def test_a_truncated_last_line_says_so():
    with pytest.raises(UserError, match=r"d.jsonl:2: not valid JSON .* is the file truncated\?"):
        parse(row() + "\n" + row(id="b")[:20])
    with pytest.raises(UserError) as e:  # a broken line that ends with a newline is not called truncated
        parse(row() + "\n{broken\n")
    assert "truncated" not in str(e.value)


def test_shared_questions_ignore_case_spacing_and_punctuation():
    a = parse(row(id="a", inputs={"question": "Who pitches  today?"}) + "\n" + row(id="z", inputs={"question": " "}))
    b = parse(row(id="b", inputs={"question": "who pitches today"}) + "\n" + row(id="y", inputs={"question": ""}))
    assert [(x.id, y.id) for x, y in datasets.shared_questions(a, b, "question")] == [("a", "b")]  # blanks are no leak


def test_the_record_limit_counts_bytes_not_characters():
    """Three-byte characters: 1000 of them fit in 2 KB of characters but not in 2 KB of bytes."""
    with pytest.raises(UserError, match=r"^d.jsonl:1: the record is 3 KB, above limits.max_record_kb=2"):
        line = json.dumps({"inputs": {"question": "\u4e2d" * 1000}, "expectations": dict.fromkeys(REQ, False)},
                          ensure_ascii=False)
        datasets.parse(line, "d.jsonl", ["question"], REQ, max_record_bytes=2048)


# ------------------------------------------------------------------ chat inputs: MLflow's message lists
CHAT = {"input": [{"role": "user", "content": "Where is my order A-1?"}]}  # MLflow's chat-agent form
TURNS = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello, how can I help?"},
                      {"role": "user", "content": [{"type": "text", "text": "Where is my order A-1?"}]}]}


def test_chat_and_multi_turn_records_parse_and_give_their_last_user_turn():
    chat = datasets.parse(row(inputs=CHAT), "c.jsonl", ["input"], REQ)[0]
    turns = datasets.parse(row(inputs=TURNS), "c.jsonl", ["messages"], REQ)[0]
    assert chat.inputs == CHAT and turns.inputs == TURNS  # the agent gets the inputs as they are
    assert chat.text("input") == turns.text("messages") == "Where is my order A-1?"
    assert datasets.input_text("a question") == "a question"
    tools = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
             {"role": "tool", "content": "{}"}]  # an assistant turn that only calls tools, as OpenAI writes it
    assert datasets.parse(row(inputs={"input": tools}), "c.jsonl", ["input"], REQ)[0].text("input") == "q"


@pytest.mark.parametrize("value,message", [
    ([], "c.jsonl:1: inputs.input is an empty list; give a string or a list of chat messages"),
    ({"role": "user", "content": "q"}, "c.jsonl:1: inputs.input is an object; give a string or a list of chat messages"),
    (3, "c.jsonl:1: inputs.input is a number; give"),
    (["q"], "c.jsonl:1: inputs.input[0] is a string, not a message object; give"),
    ([{"role": "bot", "content": "q"}], 'c.jsonl:1: inputs.input[0] has role "bot"; give'),
    ([{"role": "user"}], "c.jsonl:1: inputs.input[0] has no string content"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], "c.jsonl:1: inputs.input[0] has no string content"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], "c.jsonl:1: inputs.input has no user turn"),
])
def test_a_wrong_input_shape_names_the_line_the_key_and_the_accepted_forms(value, message):
    with pytest.raises(UserError) as e:
        datasets.parse(row(inputs={"input": value}), "c.jsonl", ["input"], REQ)
    text = str(e.value)
    assert text.startswith(message) and "\n" not in text
    assert text.endswith('a list of chat messages like [{"role": "user", "content": "..."}] (roles system, user, '
                         "assistant, tool; at least one user turn)")


def test_the_input_limit_applies_to_each_message_of_a_conversation():
    long = {"input": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "x" * 11},
                      {"role": "user", "content": "q"}]}
    with pytest.raises(UserError, match=r"^c.jsonl:1: inputs.input\[1\].content is 11 characters, above "
                                        r"limits.max_input_chars=10; shorten it"):
        datasets.parse(row(inputs=long), "c.jsonl", ["input"], REQ, max_input_chars=10)


def test_a_string_question_overlaps_the_same_last_user_turn_of_a_conversation():
    train = parse(row(id="s", inputs={"question": "where is my order a-1"}))
    held = datasets.parse(row(id="c", inputs={"question": TURNS["messages"]}), "h.jsonl", ["question"], REQ)
    assert [(x.id, y.id) for x, y in datasets.shared_questions(train, held, "question")] == [("s", "c")]
    assert [(x.id, y.id) for x, y in datasets.shared_questions(held, train, "question")] == [("c", "s")]
    # two conversations that end on the same turn are different questions unless every turn matches
    other = [{"role": "user", "content": "Cancel it."}, {"role": "assistant", "content": "Which order?"},
             {"role": "user", "content": "Where is my order A-1?"}]
    held2 = datasets.parse(row(id="o", inputs={"question": other}), "h.jsonl", ["question"], REQ)
    assert datasets.shared_questions(held, held2, "question") == []
    assert len(datasets.shared_questions(held, [held[0]], "question")) == 1


def test_a_file_store_cannot_hold_mlflow_datasets_and_says_so(tmp_path):
    """MLflow's evaluation datasets need a SQL backend: a tracking URI that is a folder is named
    with the fix before MLflow is asked (it would raise FEATURE_DISABLED, or refuse ./mlruns)."""
    mlflow_cfg = OmegaConf.create({"tracking_uri": str(tmp_path / "mlruns"), "connect_timeout_s": 1})
    with pytest.raises(UserError) as e:
        datasets.load("mlflow-dataset:support-train", ["question"], mlflow_cfg=mlflow_cfg)
    assert str(e.value).startswith("mlflow-dataset:support-train: MLflow evaluation datasets need a SQL tracking "
                                   f"backend, and {tmp_path / 'mlruns'} keeps its runs in files (a file store); run the "
                                   "MLflow server with --backend-store-uri sqlite:///mlflow.db")


def test_compare_repeats_keep_the_records_origin():
    from jobs.stages.compare import repeated

    records = datasets.load(str(ROOT / "data/baseball/train.jsonl"), ["question"])
    assert {r.origin for r in repeated(records[:2], 3)} == {records[0].origin}
