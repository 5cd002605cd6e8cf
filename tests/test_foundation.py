"""register -> evaluate -> feedback on real servers; assertions on what MLflow holds."""

from __future__ import annotations

import pytest

from jobs.core.paths import ROOT
from jobs.store import tracking
from tests.conftest import SESSION_PROMPT

pytestmark = pytest.mark.integration
PROMPT = SESSION_PROMPT
JUDGE = "hitting_quality"


def experiment_id(client):
    return client.get_experiment_by_name("promptgate-baseball").experiment_id


def pipeline_traces(pid):
    """The traces evaluate made (compare adds held-out traces to the same pipeline later)."""
    import mlflow

    exp = mlflow.get_experiment_by_name("promptgate-baseball").experiment_id
    return mlflow.search_traces(locations=[exp], return_type="list", max_results=1000,
                                filter_string=f"tag.`{tracking.TAG_PIPELINE}` = '{pid}' AND tag.`promptgate.split` = 'train'")


def test_register_creates_the_prompt_and_both_aliases(foundation, mlflow_client):
    pid, procs = foundation
    seed = (ROOT / "data/baseball/seed_prompt.txt").read_text().strip()
    baseline = mlflow_client.get_prompt_version_by_alias(PROMPT, "baseline")
    production = mlflow_client.get_prompt_version_by_alias(PROMPT, "production")
    assert baseline.template == seed and production.version == baseline.version
    assert "production -> v" in procs["register"].stdout


def test_register_again_with_the_same_text_adds_no_version(foundation, servers, mlflow_client):
    before = len(list(mlflow_client.search_prompt_versions(PROMPT)))
    proc = servers.stage("register", "pipeline_id=found-again")
    assert proc.returncode == 0, proc.stderr
    assert "already holds this text" in proc.stdout
    assert len(list(mlflow_client.search_prompt_versions(PROMPT))) == before


def test_register_a_changed_text_adds_one_version_and_keeps_production(foundation, servers, mlflow_client, tmp_path):
    production = mlflow_client.get_prompt_version_by_alias(PROMPT, "production").version
    seed = tmp_path / "seed.txt"
    seed.write_text("You are a terse hitting assistant. Give a recommendation.")
    for _ in range(2):
        proc = servers.stage("register", "pipeline_id=changed", f"prompt.seed_file={seed}", "force=true")
        assert proc.returncode == 0, proc.stderr
    texts = [v.template for v in mlflow_client.search_prompt_versions(PROMPT)]
    assert texts.count(seed.read_text()) == 1
    assert mlflow_client.get_prompt_version_by_alias(PROMPT, "production").version == production


def test_evaluate_traced_every_row_and_tagged_them_for_review(foundation, mlflow_client):
    pid, procs = foundation
    traces = pipeline_traces(pid)
    ids = {t.info.tags.get(tracking.TAG_QUESTION) for t in traces}
    assert len(traces) == 28 and ids == {f"tr-{i:02d}" for i in range(1, 29)}
    assert all(t.info.tags.get(tracking.TAG_REVIEW) == "pending" for t in traces)
    judged = [a for t in traces for a in t.info.assessments if a.name == JUDGE and a.source.source_type == "LLM_JUDGE"]
    assert len(judged) == 28
    run = tracking.latest_result(experiment_id(mlflow_client), pid, "evaluate")
    assert run.data.metrics["rows"] == 28 and run.data.metrics["errors"] == 0
    assert 0 < run.data.metrics["pass_rate"] < 1
    assert run.data.metrics[f"{JUDGE}/mean"] == pytest.approx(run.data.metrics["pass_rate"])


def test_feedback_put_human_assessments_under_the_judge_name(foundation, mlflow_client):
    pid, _ = foundation
    traces = pipeline_traces(pid)
    human = [a for t in traces for a in t.info.assessments
             if a.source.source_type == "HUMAN" and getattr(a, "feedback", None) is not None]
    assert len(human) == 28 and {a.name for a in human} == {JUDGE}
    assert {a.source.source_id for a in human} == {"rubric:hitting_quality"}  # feedback.expert_id: rubric:${judge.name}
    # the rubric expert is stricter than the base judge: they disagree somewhere
    disagree = 0
    for t in traces:
        by = {a.source.source_type: a.feedback.value for a in t.info.assessments
              if a.name == JUDGE and getattr(a, "feedback", None) is not None}
        disagree += by["HUMAN"] != by["LLM_JUDGE"]
    assert disagree > 0
    assert any("data limits" in (a.rationale or "") for a in human)


def test_a_rerun_reuses_results_and_adds_no_duplicate_labels(foundation, servers, mlflow_client):
    pid, _ = foundation
    for stage in ("evaluate", "feedback"):
        proc = servers.stage(stage, f"pipeline_id={pid}")
        assert proc.returncode == 0 and "reusing it" in proc.stdout, proc.stderr
    proc = servers.stage("feedback", f"pipeline_id={pid}", "force=true")
    assert proc.returncode == 0 and "0 expert labels written" in proc.stdout and "28 already there" in proc.stdout
    human = [a for t in pipeline_traces(pid) for a in t.info.assessments
             if a.source.source_type == "HUMAN" and getattr(a, "feedback", None) is not None]
    assert len(human) == 28


def test_feedback_from_a_label_file_keyed_by_question_id(foundation, servers, mlflow_client, tmp_path):
    pid, _ = foundation
    labels = tmp_path / "labels.csv"
    labels.write_text("question_id,value,rationale,expert,name\ntr-01,false,Missing: too vague.,ann,hitting_quality\n"
                      "tr-02,true,Good.,ann,hitting_quality\n")
    proc = servers.stage("feedback", f"pipeline_id={pid}", "feedback=file", f"feedback.path={labels}")
    assert proc.returncode == 0, proc.stderr
    by_q = {t.info.tags[tracking.TAG_QUESTION]: t for t in pipeline_traces(pid)}
    ann = [a for a in by_q["tr-01"].info.assessments if a.source.source_id == "ann"]
    assert len(ann) == 1 and ann[0].feedback.value is False and ann[0].name == JUDGE
    import mlflow

    for q in ("tr-01", "tr-02"):  # leave the session pipeline's labels as the rubric wrote them
        for a in by_q[q].info.assessments:
            if a.source.source_id == "ann":
                mlflow.delete_assessment(trace_id=by_q[q].info.trace_id, assessment_id=a.assessment_id)


def test_the_session_server_keeps_its_sqlite_file_in_write_ahead_log_mode(foundation, servers, tmp_path):
    """start_mlflow puts the SQLite file in WAL mode before MLflow opens it (a row's commits
    then neither fsync a rollback journal nor block the other workers' reads); MLflow created
    its tables in that file and wrote the foundation pipeline through the log."""
    import sqlite3

    from jobs.core.servers import write_ahead_log

    db = servers.state_dir / "mlflow.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM trace_info").fetchone()[0] >= 28  # evaluate's traces
    finally:
        conn.close()
    assert (servers.state_dir / "mlflow.db-wal").exists()
    assert write_ahead_log(tmp_path / "new" / "mlflow.db") == "wal"  # a new state folder's file, before MLflow makes it
