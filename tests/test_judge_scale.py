"""A 1-5 Likert judge end to end on real servers (issue 26, item 1): its threshold and labels
lie on its declared scale, the simulator's judge and the rubric expert answer on it, align
reports agreement both on pass/fail and on the scale, GEPA scores it on [0, 1], compare counts
a pass at the threshold on the scale and the gate decides; the monitor's borderline margin is
in the scale's units."""

from __future__ import annotations

import pytest

from jobs.core.contract import TAG_ARM, TAG_SPLIT
from jobs.core.judge_kinds import kind_of
from tests.conftest import new_pipeline_id, printed_result, run_pipeline, stage_result

JUDGE = "hitting_likert"  # a name of its own: the experiment's label schema 'hitting_quality' is the bool judge's
LIKERT = (f"judge.name={JUDGE}", "judge.feedback_value_type=float", "judge.scale=[1,5]", "judge.pass_threshold=4")


def values(client, pid, source_type):
    """The judge's (LLM_JUDGE) or the experts' (HUMAN) values under the judge's name on the pipeline's traces."""
    import mlflow

    exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
    found = mlflow.search_traces(locations=[exp], filter_string=f"tag.`promptgate.pipeline_id` = '{pid}'",
                                 return_type="list")
    return [a.feedback.value for t in found for a in t.info.assessments or []
            if a.name == JUDGE and a.source.source_type == source_type and getattr(a, "feedback", None)]


@pytest.mark.integration
def test_a_1_to_5_judge_passes_labels_and_agrees_on_its_scale(servers, mlflow_client):
    pid = new_pipeline_id("likert")
    procs = {}
    for stage in ("register", "evaluate", "feedback", "align"):
        procs[stage] = proc = servers.stage(stage, f"pipeline_id={pid}", *LIKERT)
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    evaluated = printed_result(procs["evaluate"])
    assert 0 < evaluated["pass_rate"] < 1 and evaluated["errors"] == 0  # judged on 1-5 against 4: some pass, some fail
    said = values(mlflow_client, pid, "LLM_JUDGE")
    assert said and all(1 <= v <= 5 for v in said) and max(said) > 1  # the judge answered on 1-5, not on 0..1
    labelled = values(mlflow_client, pid, "HUMAN")
    assert labelled and all(1 <= v <= 5 for v in labelled) and max(labelled) >= 4  # the rubric expert labels on 1-5
    fed = printed_result(procs["feedback"])
    assert 0 < fed["expert_pass_rate"] < 1
    assert "expert labels on the judge's scale 1-5: mean" in procs["feedback"].stdout
    aligned = printed_result(procs["align"])
    assert aligned["measured"] is True and aligned["kappa_before"] is not None  # pass/fail agreement, as for any judge
    assert aligned["scale_n_before"] >= 1 and aligned["scale_mae_before"] is not None  # and on the scale, with its n
    assert 0 <= aligned["scale_mae_before"] <= 4 and aligned["scale_qwk_before"] is not None
    out = procs["align"].stdout
    assert "on the scale 1-5: mean absolute error" in out and f"(n={aligned['scale_n_before']})" in out
    for line in out.splitlines():
        if any(k in line for k in ("before:", "after:", "judge-expert agreement", "\tjudge", "base\t", "aligned\t")):
            print(line)
    for stage in ("evaluate", "feedback"):
        print("\n".join(line for line in procs[stage].stdout.splitlines() if "pass rate" in line or "scale" in line))


@pytest.mark.integration
def test_the_review_queues_question_for_a_1_to_5_judge_asks_for_a_number_from_1_to_5(servers, mlflow_client):
    from mlflow.genai import label_schemas

    pid = new_pipeline_id("likertui")
    name = "likert_review"
    overrides = (f"pipeline_id={pid}", *LIKERT, f"judge.name={name}")
    for stage, extra in (("register", ()), ("evaluate", ()),
                         ("feedback", ("feedback=ui", "feedback.wait=false", "feedback.min_labels=1"))):
        proc = servers.stage(stage, *overrides, *extra)
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"question '{name}' (a number from 1.0 to 5.0, new)" in proc.stdout
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    schema = label_schemas.get_label_schema(name, experiment_id=exp)
    assert type(schema.input).__name__ == "InputNumeric" and (schema.input.min_value, schema.input.max_value) == (1.0, 5.0)
    assert "on a scale from 1 to 5" in schema.instruction  # the reviewer reads the scale the judge is told
    print(next(line for line in proc.stdout.splitlines() if "review queue" in line))


def judged(client, pid):
    """(trace tags, the judge's last LLM_JUDGE value) of every trace of the pipeline that has one."""
    import mlflow

    exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
    found = mlflow.search_traces(locations=[exp], filter_string=f"tag.`promptgate.pipeline_id` = '{pid}'",
                                 return_type="list")
    out = []
    for t in found:
        said = [a.feedback.value for a in t.info.assessments or [] if a.name == JUDGE
                and a.source.source_type == "LLM_JUDGE" and getattr(a, "feedback", None) and a.feedback.value is not None]
        if said:
            out.append((t.info.tags, said[-1]))
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_a_1_to_5_judge_runs_the_whole_pipeline_to_a_gate_decision(servers, mlflow_client):
    """The whole pipeline (the driver, as `make run`) with a 1-5 judge passing at 4, on its own
    prompt (the gate may move its production alias), asserted from what MLflow holds."""
    import uuid

    pid, prompt = new_pipeline_id("likertrun"), f"likert-{uuid.uuid4().hex[:6]}"
    proc = run_pipeline(servers, pid, f"prompt.name={prompt}", *LIKERT, "compare.n_repeats=1")  # one run: the scale is the subject
    result = {stage: stage_result(mlflow_client, pid, stage)[1]
              for stage in ("evaluate", "feedback", "align", "optimize", "compare", "gate")}
    traces = judged(mlflow_client, pid)
    train = [v for tags, v in traces if tags.get(TAG_SPLIT) == "train" and TAG_ARM not in tags]
    arms = {arm: [v for tags, v in traces if tags.get(TAG_ARM) == arm] for arm in ("baseline", "candidate")}
    assert train and all(arms.values()), (len(train), {k: len(v) for k, v in arms.items()})
    assert all(1 <= v <= 5 for v in train + arms["baseline"] + arms["candidate"])  # the judge answers on 1-5

    # evaluate: a pass is a value at or above 4 on the scale, and some rows pass, some fail
    ev = result["evaluate"]
    assert 0 < ev["pass_rate"] < 1 and ev["errors"] == 0
    assert ev["pass_rate"] == pytest.approx(sum(v >= 4 for v in train) / len(train), abs=1e-6)

    # feedback: the rubric expert's labels lie on 1..5, and some pass, some fail
    labels = values(mlflow_client, pid, "HUMAN")
    assert labels and all(1 <= v <= 5 for v in labels) and min(labels) < 4 <= max(labels)
    assert 0 < result["feedback"]["expert_pass_rate"] < 1

    # align: agreement on pass/fail and on the scale, each with its sample
    al = result["align"]
    assert al["measured"] is True and al["kappa_before"] is not None and al["holdout_scored"] >= 1
    assert al["scale_n_before"] >= 1 and 0 <= al["scale_mae_before"] <= 4 and -1 <= al["scale_qwk_before"] <= 1

    # optimize: GEPA's scores are the judge's values mapped onto [0, 1] ((v - 1) / 4), not 1..5
    opt = result["optimize"]
    assert opt["judge_name"] == JUDGE and opt["metric_calls"] > 0
    assert 0 <= opt["initial_train_score"] <= 1 and 0 <= opt["final_train_score"] <= 1
    assert opt["outcome"] == "candidate", opt["reason"]  # compare needs a candidate to measure

    # compare: both arms judged on 1-5, a pass at 4 on the scale, a pass rate strictly between 0 and 1
    cmp_ = result["compare"]
    assert cmp_["outcome"] == "compared" and cmp_["judge_name"] == JUDGE and cmp_["n_repeats"] == 1
    assert cmp_["rows_per_arm"] == cmp_["questions"] and cmp_["pairs"] > 0
    for arm in ("baseline", "candidate"):
        judged_ok = arms[arm]
        rate = cmp_[f"{arm}_pass_rate"]
        assert rate == pytest.approx(sum(v >= 4 for v in judged_ok) / len(judged_ok), abs=1e-6), arm
    assert 0 < cmp_["baseline_pass_rate"] < 1 and 0 < cmp_["candidate_pass_rate"] <= 1
    assert cmp_["delta"] == pytest.approx(cmp_["candidate_pass_rate"] - cmp_["baseline_pass_rate"], abs=1e-6)
    assert cmp_["ci_low"] <= cmp_["delta"] <= cmp_["ci_high"] and 0 <= cmp_["p_value"] <= 1

    # gate: a decision, recorded on its run and on the candidate version
    gate = result["gate"]
    assert gate["decision"] in ("promote", "refuse") and gate["candidate_version"] == opt["candidate_version"]
    version = mlflow_client.get_prompt_version(prompt, gate["candidate_version"])
    assert version.tags["promptgate.gate.decision"] == gate["decision"]
    assert version.tags["promptgate.gate.pipeline_id"] == pid
    assert mlflow_client.get_run(gate["run_id"]).data.tags["promptgate.gate.decision"] == gate["decision"]
    summary = proc.stdout.split("=== promptgate pipeline")[1]
    print(summary)
    # the summary: MLflow's cross-check on the judge's pass at 4, not its 1-5 mean, and the per-slice table
    assert f"MLflow compare_evaluations on the same runs' {JUDGE}_passed: the judge's pass/fail per run pair" in summary
    slices = [line.split() for line in summary.splitlines() if line.split()[:1] in (["injection"], ["unanswerable"])]
    assert [x[:3] for x in slices] == [["injection", "injection=true", "1"], ["unanswerable", "answerable=false", "4"]]


def test_the_monitors_borderline_margin_is_in_the_scales_units():
    """On a 1-5 judge passing at 4, ``monitor.borderline`` is points of the scale: 0.5 sends the
    passes 4..4.5 to review with every failure, not 4..5 (0.5 read as half of a 0..1 scale would
    be 2 points); a margin as wide as the scale is refused, one above 1 point is not."""
    from jobs.core.errors import UserError
    from jobs.stages.monitor import borderline_margin, for_review

    judge = {"feedback_value_type": "float", "scale": [1, 5], "pass_threshold": 4}
    likert = kind_of(judge)
    assert [likert.borderline(v, 0.5) for v in (3.4, 3.5, 4.0, 4.5, 4.6, 5.0, 1.0)] == \
        [False, True, True, True, False, False, False]
    values = {"one": 1.0, "three": 3.0, "just-under": 3.9, "four": 4.0, "four-and-a-half": 4.5, "4.6": 4.6,
              "five": 5.0, "error": None}
    assert for_review(judge, values, 0.5) == ["one", "three", "just-under", "four", "four-and-a-half"]
    assert for_review(judge, values, 0.15) == ["one", "three", "just-under", "four"]  # the default: a bare 4
    assert for_review(judge, values, 0.0) == ["one", "three", "just-under", "four"]
    assert for_review(judge, values, 1.5) == ["one", "three", "just-under", "four", "four-and-a-half", "4.6", "five"]
    with pytest.raises(UserError, match=r"monitor.borderline=4 is as wide as judge.scale \[1, 5\]"):
        borderline_margin(judge, 4.0)
    with pytest.raises(UserError, match="monitor.borderline=1 is as wide"):  # on 0..1 the same 1 covers the scale
        borderline_margin({"feedback_value_type": "float"}, 1.0)
    assert borderline_margin({"feedback_value_type": "bool"}, 4.0) == 4.0  # no margin for a pass/fail judge
    # what GEPA is given: the value mapped onto [0, 1] by the scale, off-scale values clipped
    assert likert.score(5.0) == 1.0 and likert.score(1.0) == 0.0 and likert.score(4.0) == 0.75
    assert likert.score(6.0) == 1.0 and likert.score(0.0) == 0.0
    assert likert.score_fn()(3.0) == 0.5 and likert.score_fn()(None) == 0.0
