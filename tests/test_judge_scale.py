"""A 1-5 Likert judge end to end on real servers (issue 26, item 1): its threshold and labels
lie on its declared scale, the simulator's judge and the rubric expert answer on it, and align
reports agreement both on pass/fail and on the scale."""

from __future__ import annotations

import pytest

from tests.conftest import new_pipeline_id, printed_result

pytestmark = pytest.mark.integration
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
