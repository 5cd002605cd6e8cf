"""Failures are failures everywhere (issue 24): a stage whose figure would rest on no judged row
records none and says why, later stages name that cause, a failed agent call inside GEPA is an
error and never a judged output, and reflection calls that all fail are named as the reason.
Each runs a stage on a simulator of its own that answers one kind of call with a fixed error."""

from __future__ import annotations

import json
import uuid

import pytest

from jobs.core.contract import TAG_FAILURE
from jobs.core.paths import ROOT
from jobs.store import tracking
from tests.conftest import new_pipeline_id, stage_result

pytestmark = [pytest.mark.integration]


def small_set(tmp_path, n: int = 4) -> str:
    """The first ``n`` baseball training questions, as a dataset file of its own."""
    lines = (ROOT / "data/baseball/train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / f"train-{n}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


OWN = {"PROMPTGATE_SIM_URL": "", "PROMPTGATE_GATEWAY_URL": ""}  # a simulator and gateway of the stage's own


def own_sim(**knobs: object) -> list[str]:
    """Overrides for a stage on a simulator of its own with these knobs, its cache off."""
    return ["gateway.cache=off", *(f"model.sim.{k}={v!r}" for k, v in knobs.items())]  # quoted: fail= holds '='s


def error_lines(proc) -> list[str]:
    return [x for x in proc.stderr.splitlines() if x.startswith("error:")]


def newest_run(client, pid: str, stage: str):
    exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
    return tracking.find_runs(exp, pid, stage, status=None)[0]


def test_every_judge_call_failing_records_no_figure(servers, mlflow_client, tmp_path):
    """Every judge call answered 400: evaluate exits 1 with the cause, its run is FAILED with the
    reason and no result; feedback names that cause instead of "run evaluate first", and a rerun
    of evaluate runs again (no "reusing") instead of looping on the empty result."""
    pid, prompt = new_pipeline_id("nojudge"), f"nojudge-{uuid.uuid4().hex[:6]}"
    data = f"dataset.train={small_set(tmp_path)}"
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", data)
    assert servers.stage("register", *common).returncode == 0
    proc = servers.stage("evaluate", *common, *own_sim(fail="judge=400"), **OWN)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = error_lines(proc)
    assert "evaluate judged 0 of 4 rows: every judge call failed: " in line and "400" in line, line
    assert "pass rate" not in proc.stdout  # no 0/0 figure is printed
    run = newest_run(mlflow_client, pid, "evaluate")
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAILURE].startswith("evaluate judged 0 of 4 rows")
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    assert "pass_rate" not in run.data.metrics and tracking.latest_result(exp, pid, "evaluate") is None

    feedback = servers.stage("feedback", *common)
    assert feedback.returncode == 2
    (line,) = error_lines(feedback)
    assert "last evaluate run recorded no result: evaluate judged 0 of 4 rows: every judge call failed" in line, line

    again = servers.stage("evaluate", *common)  # the endpoint fixed: it runs, it does not reuse
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "reusing" not in again.stdout
    assert stage_result(mlflow_client, pid, "evaluate")[1]["scored"] == 4


def test_a_failed_agent_row_is_an_error_and_never_judged(servers, mlflow_client, tmp_path):
    """Every agent call fails: evaluate names the agent's error, and no judge call is spent on the
    failed rows (MLflow's judge would otherwise read each failed trace with tools)."""
    pid, prompt = new_pipeline_id("noanswer"), f"noanswer-{uuid.uuid4().hex[:6]}"
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", f"dataset.train={small_set(tmp_path)}")
    assert servers.stage("register", *common).returncode == 0
    proc = servers.stage("evaluate", *common, *own_sim(fail="agent=500"), **OWN)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = error_lines(proc)
    assert "evaluate judged 0 of 4 rows: every agent call failed: HTTP 500" in line, line
    run = newest_run(mlflow_client, pid, "evaluate")
    assert run.data.metrics["errors"] == 4 and run.data.metrics["gateway.errors.agent.500"] == 4
    assert run.data.metrics.get("span.judge.calls", 0) == 0, run.data.metrics


def test_failed_agent_calls_inside_optimize_are_errors(servers, mlflow_client, tmp_path):
    """Every agent call fails inside GEPA: no row's error message is judged as an answer; the
    scores rest on nothing, so optimize records no figure and registers no version."""
    pid, prompt = new_pipeline_id("noagent"), f"noagent-{uuid.uuid4().hex[:6]}"
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", f"dataset.train={small_set(tmp_path)}",
              "optimizer=gepa_small", "optimizer.val_fraction=0", "optimizer.minibatch_size=2",
              "optimizer.max_metric_calls=8")
    assert servers.stage("register", *common).returncode == 0
    proc = servers.stage("optimize", *common, *own_sim(fail="agent=500"), **OWN)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert "GEPA judged 0 of " in line and " agent errors, 0 judge errors); first: agent: " in line, line
    run = newest_run(mlflow_client, pid, "optimize")
    assert run.info.status == "FAILED" and run.data.metrics["judge_errors"] == 0
    assert run.data.metrics["agent_errors"] == run.data.metrics["metric_calls"] > 0
    versions = list(mlflow_client.search_prompt_versions(prompt))
    assert [int(v.version) for v in versions] == [1]  # GEPA's registration was dropped


def test_reflection_failing_is_named_by_optimize_and_the_gate(servers, mlflow_client, tmp_path):
    """Every GEPA reflection call answered 400 context_length_exceeded: optimize says so (how
    many, the first error) instead of "no gain", the gateway counts the 400s by kind, and the
    gate repeats the reason."""
    pid, prompt = new_pipeline_id("noreflect"), f"noreflect-{uuid.uuid4().hex[:6]}"
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", f"dataset.train={small_set(tmp_path, 10)}",
              "optimizer=gepa_small", "optimizer.val_fraction=0", "optimizer.minibatch_size=10",
              "optimizer.max_metric_calls=30")  # the seed, then one minibatch of all 10, some failed: GEPA reflects
    assert servers.stage("register", *common).returncode == 0
    proc = servers.stage("optimize", *common, *own_sim(fail="gepa=400:context_length_exceeded"), **OWN)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run, result = stage_result(mlflow_client, pid, "optimize")
    assert result["outcome"] == "no_improvement"
    assert result["reason"].startswith("GEPA produced no candidate: ") and "reflection calls failed" in result["reason"]
    assert "HTTP 400 context_length_exceeded" in result["reason"], result["reason"]
    failed = run.data.metrics["gateway.errors.reflection.400"]
    assert failed > 0 and f"{failed:.0f} of " in result["reason"]
    for stage in ("compare", "gate"):
        done = servers.stage(stage, *common)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _, gate = stage_result(mlflow_client, pid, "gate")
    assert gate["decision"] == "refuse"
    assert any(r.startswith("no candidate: optimize: GEPA produced no candidate") for r in gate["reasons"]), gate


def test_interrupt_ends_the_stage_with_its_run_failed(servers, mlflow_client, tmp_path):
    """Ctrl-C in the middle of evaluate (slow replies): the process ends with 130 (a bounded wait
    here, never a hang) and the stage's run is FAILED, not left RUNNING."""
    import signal
    import subprocess
    import sys
    import time

    from jobs.core.contract import LAUNCH_ENV

    pid, prompt = new_pipeline_id("sigint"), f"sigint-{uuid.uuid4().hex[:6]}"
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", f"dataset.train={small_set(tmp_path, 8)}")
    assert servers.stage("register", *common).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "jobs.evaluate", *common, *own_sim(latency_ms=3000)],
                            env=servers.env(**OWN, **{LAUNCH_ENV: "x"}),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    for _ in range(120):  # until the stage's run exists and its first slow calls are under way
        if tracking.find_runs(exp, pid, "evaluate", status="RUNNING"):
            break
        time.sleep(1)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    servers.keep_log("evaluate (interrupted)", out, err)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted: marking the stage's run FAILED" in err
    assert newest_run(mlflow_client, pid, "evaluate").info.status == "FAILED"
    parent = tracking.find_runs(exp, pid, "pipeline", status=None)[0]
    assert parent.info.status == "FAILED" and json.dumps(parent.data.tags).count("evaluate") >= 1
