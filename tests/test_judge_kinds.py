"""Judge kinds (jobs/core/judge_kinds.py): each kind's answers, and the modules that delegate to them."""

from __future__ import annotations

from typing import Literal

import pytest
from omegaconf import OmegaConf

from jobs.core.errors import UserError
from jobs.core.judge_kinds import Categorical, Numeric, PassFail, kind_of
from jobs.eval import judges, labels
from jobs.store import reviews

CATS = ["good", "partial", "poor"]


def cfg(kind: str, **kw):
    return OmegaConf.create({"name": "j", "instructions": "Grade {{ outputs }}", "feedback_value_type": kind, **kw})


def test_kind_of_builds_each_kind_from_omegaconf_or_a_dict():
    assert kind_of(cfg("bool")) == PassFail()
    assert kind_of({"feedback_value_type": "float", "pass_threshold": 0.7}) == Numeric(low=0.0, high=1.0, threshold=0.7)
    assert kind_of({"feedback_value_type": "float"}).threshold == 0.5
    assert kind_of(cfg("categorical", categories=CATS)) == Categorical(options=("good", "partial", "poor"))
    assert kind_of({}) == PassFail()  # the schema's default


@pytest.mark.parametrize("node,message", [
    ({"feedback_value_type": "int"}, "judge.feedback_value_type 'int' is unknown; use one of bool, float, categorical"),
    ({"feedback_value_type": "categorical", "categories": None},
     "judge.categories is empty; a categorical judge needs its allowed values, best first"),
    ({"feedback_value_type": "categorical", "categories": []}, "judge.categories is empty"),
    ({"feedback_value_type": "categorical", "categories": ["good", "good", "bad"]},
     "judge.categories ['good', 'good', 'bad'] has 'good' twice; list each category once, best first"),
    ({"feedback_value_type": "categorical", "categories": ["good", "bad", "ok", "bad"]},
     "judge.categories ['good', 'bad', 'ok', 'bad'] has 'bad' twice"),
    ({"feedback_value_type": "categorical", "categories": ["good", "", "bad"]},
     "judge.categories ['good', '', 'bad'] has an empty category; give every category a name, best first"),
    ({"feedback_value_type": "categorical", "categories": ["good", "  "]}, "judge.categories ['good', '  '] has an empty category"),
    ({"feedback_value_type": "categorical", "categories": ["good", None]}, "judge.categories ['good', ''] has an empty category"),
])
def test_kind_of_refuses_unknown_types_and_empty_categories(node, message):
    with pytest.raises(UserError) as e:
        kind_of(node)
    assert str(e.value).startswith(message)
    with pytest.raises(UserError) as e:  # judges.check says the same
        judges.check(OmegaConf.create({"name": "j", "instructions": "{{ outputs }}", **node}))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("raw,value", [
    (True, True), (False, False), ("yes", True), (" Pass ", True), ("Y", True), ("1", True),
    ("no", False), ("FAILED", False), ("bad", False), ("0", False),
])
def test_pass_fail_parses_yes_and_no(raw, value):
    assert PassFail().parse(raw, "l.jsonl:1") is value
    assert labels.coerce(raw, "bool", None, "l.jsonl:1") is value


@pytest.mark.parametrize("kind,categories,raw,message", [
    ("bool", None, "maybe", "l.csv:3: value 'maybe' is not a yes/no label; use true or false"),
    ("float", None, "high", "l.csv:3: value 'high' is not a number; the judge's feedback type is float"),
    ("float", None, None, "l.csv:3: value 'None' is not a number; the judge's feedback type is float"),
    ("categorical", CATS, "ok", "l.csv:3: value 'ok' is not one of the judge's categories ['good', 'partial', 'poor']"),
])
def test_a_bad_label_is_refused_with_where_and_why(kind, categories, raw, message):
    with pytest.raises(UserError) as e:
        kind_of({"feedback_value_type": kind, "categories": categories}).parse(raw, "l.csv:3")
    assert str(e.value) == message
    with pytest.raises(UserError) as e:
        labels.coerce(raw, kind, categories, "l.csv:3")
    assert str(e.value) == message


def test_numeric_and_categorical_parse():
    assert Numeric().parse("0.25", "w") == 0.25 and Numeric().parse(1, "w") == 1.0
    assert Categorical(options=("good", "poor")).parse("poor", "w") == "poor"
    _, labs = labels.parse_file('{"trace_id": "t", "value": "partial"}\n', "l.jsonl", "j", "categorical", CATS, "file")
    assert labs[0].value == "partial"


@pytest.mark.parametrize("judge,value,passed,score", [
    (cfg("bool"), True, True, 1.0), (cfg("bool"), False, False, 0.0),
    (cfg("bool"), "yes", True, 1.0), (cfg("bool"), "no", False, 0.0),
    (cfg("float"), 0.5, True, 0.5), (cfg("float"), 0.49, False, 0.49), (cfg("float"), "0.9", True, 0.9),
    (cfg("float", pass_threshold=0.8), 0.7, False, 0.7),
    (cfg("categorical", categories=CATS), "good", True, 1.0),
    (cfg("categorical", categories=CATS), "partial", False, 0.5),
    (cfg("categorical", categories=CATS), "poor", False, 0.0),
    (cfg("categorical", categories=CATS), "other", False, None),
    (cfg("categorical", categories=["yes", "no"]), "no", False, 0.0),
    (cfg("bool"), None, None, None), (cfg("float"), None, None, None),
])
def test_passed_and_score(judge, value, passed, score):
    assert judges.passed(judge, value) is passed and kind_of(judge).passed(value) is passed
    assert judges.score(judge, value) == pytest.approx(score) if score is not None else judges.score(judge, value) is None


def test_score_maps_the_numeric_range_onto_0_to_1():
    assert Numeric(low=1.0, high=5.0, threshold=3.0).score(2.0) == 0.25
    assert Numeric(low=1.0, high=5.0, threshold=3.0).passed(3.0) is True
    with pytest.raises(ValueError):
        Numeric(low=1.0, high=1.0)


def test_the_optimizer_number_converter():
    assert kind_of(cfg("bool")).score_fn() is None  # GEPA takes a pass/fail as it is
    to_number = kind_of(cfg("float")).score_fn()
    assert to_number(0.75) == 0.75 and to_number(None) == 0.0
    to_number = kind_of(cfg("categorical", categories=CATS)).score_fn()
    assert (to_number("good"), to_number("partial"), to_number("poor"), to_number("other")) == (1.0, 0.5, 0.0, 0.0)


@pytest.mark.parametrize("judge,value,margin,borderline", [
    (cfg("bool"), True, 0.15, False), (cfg("bool"), False, 0.15, False),
    (cfg("float"), 0.6, 0.15, True), (cfg("float"), 0.4, 0.15, True), (cfg("float"), 0.9, 0.15, False),
    (cfg("float"), 0.3, 0.15, False), (cfg("float", pass_threshold=0.8), 0.9, 0.15, True),
    (cfg("float"), "0.55", 0.0, False), (cfg("float"), 0.5, 0.0, True),
    (cfg("categorical", categories=CATS), "partial", 0.15, True),
    (cfg("categorical", categories=CATS), "good", 0.15, False),
    (cfg("categorical", categories=CATS), "poor", 0.15, False),
    (cfg("categorical", categories=["good", "poor"]), "poor", 0.15, False),
])
def test_borderline(judge, value, margin, borderline):
    assert kind_of(judge).borderline(value, margin) is borderline


@pytest.mark.parametrize("judge,met,checked,value", [
    (cfg("bool"), 2, 2, True), (cfg("bool"), 1, 2, False), (cfg("bool"), 0, 0, True),
    (cfg("float"), 1, 3, 0.333), (cfg("float"), 0, 0, 1.0), (cfg("float"), 0, 4, 0.0),
    (cfg("categorical", categories=CATS), 3, 3, "good"), (cfg("categorical", categories=CATS), 2, 3, "partial"),
    (cfg("categorical", categories=CATS), 1, 3, "poor"), (cfg("categorical", categories=["a", "b"]), 1, 2, "b"),
])
def test_rubric_value(judge, met, checked, value):
    assert kind_of(judge).rubric_value(met, checked) == value
    assert labels.rubric_value(judge, met, checked) == value


def test_rubric_value_uses_the_numeric_range():
    assert Numeric(low=1.0, high=5.0).rubric_value(1, 2) == 3.0


@pytest.mark.parametrize("share,value", [(1.0, "good"), (0.99, "partial"), (0.5, "partial"), (0.49, "poor"), (0.0, "poor")])
def test_value_for_a_share_is_what_the_simulator_grades(share, value):
    kind = Categorical(options=tuple(CATS))
    assert kind.value_for(share) == value == judges.category_for(CATS, share)
    assert judges.category_for(["good", "poor"], 0.7) == "poor"  # two categories: no middle one
    assert PassFail().value_for(share) is (share >= 1.0)
    assert Numeric().value_for(share) == round(share, 3)


def test_widget_data_and_the_mlflow_inputs_built_from_it():
    from mlflow.genai.label_schemas import InputCategorical, InputNumeric, InputPassFail

    assert kind_of(cfg("bool")).widget() == {"input": "pass_fail", "positive_label": "Pass", "negative_label": "Fail"}
    assert kind_of(cfg("float")).widget() == {"input": "numeric", "min_value": 0.0, "max_value": 1.0}
    assert kind_of(cfg("categorical", categories=CATS)).widget() == {"input": "categorical", "options": CATS}
    w = reviews.schema_input(cfg("bool"))
    assert isinstance(w, InputPassFail) and (w.positive_label, w.negative_label) == ("Pass", "Fail")
    w = reviews.schema_input(cfg("float"))
    assert isinstance(w, InputNumeric) and (w.min_value, w.max_value) == (0.0, 1.0)
    assert reviews.describe(w) == "a number from 0.0 to 1.0"
    w = reviews.schema_input(cfg("categorical", categories=CATS))
    assert isinstance(w, InputCategorical) and w.options == CATS
    assert reviews.describe(w) == "one of good, partial, poor"


def test_review_queue_limits_apply_to_categories_only():
    reviews.check_judge(cfg("bool"))
    reviews.check_judge(cfg("float"))
    reviews.check_judge(cfg("categorical", categories=[f"c{i}" for i in range(10)]))
    for cats in ([f"c{i}" for i in range(11)], ["good", "x" * 65]):
        with pytest.raises(UserError, match="a review queue question takes at most 10 categories"):
            reviews.check_judge(cfg("categorical", categories=cats))


def test_value_type_for_make_judge():
    assert judges.value_type(cfg("bool")) is bool
    assert judges.value_type(cfg("float")) is float
    assert judges.value_type(cfg("categorical", categories=CATS)) == Literal["good", "partial", "poor"]


# ------------------------------------------------------------------ a numeric judge's declared scale (judge.scale)
LIKERT = {"scale": [1, 5], "pass_threshold": 4}


def test_a_numeric_judge_declares_its_scale_and_its_threshold_lies_on_it():
    kind = kind_of(cfg("float", **LIKERT))
    assert kind == Numeric(low=1.0, high=5.0, threshold=4.0)
    assert (kind.passed(4.0), kind.passed(3.9), kind.score(3.0)) == (True, False, 0.5)
    assert kind.rubric_value(3, 4) == 4.0 and kind.rubric_value(0, 3) == 1.0  # the rubric expert labels on 1-5
    assert kind.widget() == {"input": "numeric", "min_value": 1.0, "max_value": 5.0}  # the review queue's question
    assert reviews.describe(reviews.schema_input(cfg("float", **LIKERT))) == "a number from 1.0 to 5.0"
    assert kind_of(cfg("float")) == Numeric(low=0.0, high=1.0, threshold=0.5)  # no scale: 0..1, as before
    assert kind_of(cfg("bool", **LIKERT)) == PassFail()  # other kinds ignore it


@pytest.mark.parametrize("settings,message", [
    ({"scale": [1, 5], "pass_threshold": 0.5},
     "judge.pass_threshold=0.5 is outside judge.scale [1, 5]; no value of the judge can reach it: "
     "set judge.pass_threshold between 1 and 5"),
    ({"pass_threshold": 4.0}, "judge.pass_threshold=4 is outside judge.scale [0, 1]; no value of the judge can reach "
     "it: set judge.pass_threshold between 0 and 1, or declare the judge's range as judge.scale, e.g. [1, 5]"),
    ({"scale": [5, 1], "pass_threshold": 3}, "judge.scale [5, 1] needs low < high, like [1, 5]"),
    ({"scale": [1], "pass_threshold": 1}, "judge.scale=[1] must be two numbers [low, high], like [1, 5]"),
])
def test_a_threshold_off_the_scale_or_a_bad_scale_is_refused(settings, message):
    with pytest.raises(UserError) as e:
        judges.check(cfg("float", **settings))
    assert str(e.value) == message


def test_labels_off_the_scale_are_refused_with_the_line():
    assert labels.coerce("4", "float", None, "l.csv:3", [1, 5]) == 4.0
    with pytest.raises(UserError) as e:
        labels.coerce("7", "float", None, "l.csv:3", [1, 5])
    assert str(e.value) == "l.csv:3: value 7 is outside the judge's scale 1 to 5 (judge.scale); give a value on that scale"
    with pytest.raises(UserError, match=r"l.jsonl:2: value 4 is outside the judge's scale 0 to 1"):
        labels.parse_file('{"trace_id": "a", "value": 0.5}\n{"trace_id": "b", "value": 4}\n', "l.jsonl", "j", "float",
                          None, "file")  # no scale: 0..1


def test_the_judges_instructions_state_its_scale_and_the_simulator_answers_on_it():
    from jobs.sim.roles import on_declared_scale

    text = judges.instructions(cfg("float", **LIKERT))
    assert text.startswith("Grade {{ outputs }}") and "on a scale from 1 to 5, where 1 is the worst" in text
    assert judges.instructions(cfg("bool")) == "Grade {{ outputs }}"  # other kinds: as configured
    assert on_declared_scale(0.75, text) == 4.0 and on_declared_scale(0.0, text) == 1.0
    assert on_declared_scale(0.5, "Grade it.", {"type": "number", "minimum": 0, "maximum": 10}) == 5.0
    assert on_declared_scale(0.333, "Grade it.") == 0.333  # nothing declared: 0..1


def test_agreement_on_the_scale():
    from jobs.eval import stats

    assert stats.mean_absolute_error([1, 3, 5], [2, 3, 3]) == 1.0 and stats.mean_absolute_error([], []) is None
    assert stats.quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], 1, 5) == 1.0
    assert abs(stats.quadratic_weighted_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], 1, 5) + 1.0) < 1e-9
    assert stats.quadratic_weighted_kappa([3, 3], [3, 3], 1, 5) is None  # one point only: undefined
    # a near miss costs less than a far one: 4 for 5 keeps most of the agreement
    near = stats.quadratic_weighted_kappa([1, 2, 3, 4, 4], [1, 2, 3, 4, 5], 1, 5)
    far = stats.quadratic_weighted_kappa([1, 2, 3, 4, 1], [1, 2, 3, 4, 5], 1, 5)
    assert 0.8 < near < 1.0 and far < near


def test_aligns_headline_gives_a_numeric_judges_agreement_on_its_scale_with_its_n():
    from types import SimpleNamespace

    from jobs.core.results import AlignResult

    evidence = SimpleNamespace(min_holdout_labels=10)
    result = AlignResult(measured=True, kappa_before=0.667, kappa_after=1.0, accuracy_before=0.833, accuracy_after=1.0,
                         holdout_scored=12, labels=28, judge_version=1, scale_mae_before=0.278, scale_mae_after=0.0,
                         scale_qwk_before=0.877, scale_qwk_after=1.0, scale_n_before=12, scale_n_after=12)
    line = result.headline(evidence)[0]
    assert "kappa 0.667 -> 1.000" in line
    assert ("on the judge's scale: mean absolute error 0.278 -> 0.000, weighted kappa 0.877 -> 1.000 (n=12 -> 12)"
            in line)
    assert "on the judge's scale" not in AlignResult(measured=True, kappa_before=0.5, holdout_scored=12).headline(evidence)[0]
