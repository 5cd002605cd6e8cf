"""align -> optimize on real servers: the judge learns from the experts, GEPA improves the
prompt under its budget, and MLflow holds the evidence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.core.paths import ROOT
from jobs.store import tracking

from .conftest import SESSION_PROMPT, printed_result

pytestmark = pytest.mark.integration
PROMPT = SESSION_PROMPT
JUDGE = "hitting_quality"


def test_alignment_raised_held_out_agreement(learned, mlflow_client):
    pid, procs = learned
    result = printed_result(procs["align"])
    run = mlflow_client.get_run(result["run_id"])
    m = run.data.metrics
    assert m["kappa_before"] < 1.0  # the base judge disagrees with the rubric experts
    assert m["kappa_after"] > m["kappa_before"]  # MemAlign learned what they check
    assert result["aligned"] is True and result["judge_version"] >= 1
    assert f"kappa {m['kappa_before']:.3f}" in procs["align"].stdout
    table = mlflow_client.download_artifacts(run.info.run_id, "agreement.csv")
    assert open(table).read().splitlines()[0] == "judge,n,accuracy,kappa,tp,tn,fp,fn"


def test_aligned_judge_reloads_in_a_fresh_process(learned, servers, mlflow_client):
    pid, procs = learned
    result = printed_result(procs["align"])
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    code = ("import mlflow; from mlflow.genai.scorers import get_scorer; "
            f"s = get_scorer(name='{JUDGE}', version={result['judge_version']}, experiment_id='{exp}'); "
            "print(type(s).__name__); print(s.instructions)")
    proc = subprocess.run([sys.executable, "-c", code], env=servers.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("MemoryAugmentedJudge")
    assert "data limits" in proc.stdout  # a distilled guideline from the experts' rationales


def test_gepa_candidate_beats_the_seed_within_budget(learned, mlflow_client):
    pid, procs = learned
    result = printed_result(procs["optimize"])
    run = mlflow_client.get_run(result["run_id"])
    assert result["outcome"] == "candidate"
    assert result["final_train_score"] > result["initial_train_score"]
    assert result["metric_calls"] <= result["max_metric_calls"]  # the hard cap held
    assert run.data.metrics["metric_calls"] <= int(run.data.params["max_metric_calls"])
    assert result["judge_version"] == printed_result(procs["align"])["judge_version"]  # scored by the aligned judge
    assert procs["candidate_alias"] == result["candidate_version"]
    version = mlflow_client.get_prompt_version(PROMPT, result["candidate_version"])
    tags = version.tags
    assert float(tags["promptgate.final_train_score"]) > float(tags["promptgate.initial_train_score"])
    assert int(tags["promptgate.metric_calls"]) <= int(tags["promptgate.max_metric_calls"])
    assert tags["promptgate.pipeline_id"] == pid and tags["promptgate.judge_name"] == JUDGE
    seed = mlflow_client.get_prompt_version_by_alias(PROMPT, "production").template
    assert version.template.startswith(seed) and version.template != seed
    assert "+++ candidate" in procs["optimize"].stdout


def test_sweep_keeps_a_run_per_point_and_names_the_best(sweep_pipeline, servers, mlflow_client):
    pid = sweep_pipeline
    proc = servers.stage("optimize", "-m", f"pipeline_id={pid}", "optimizer.max_metric_calls=36,44",
                         "optimizer.minibatch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "=== sweep summary ===" in proc.stdout
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    runs = tracking.find_runs(exp, pid, "optimize")
    overrides = {r.data.tags.get("promptgate.overrides") for r in runs}
    assert {o for o in overrides if o and "max_metric_calls=36" in o} and {o for o in overrides if o and "=44" in o}
    for r in runs:
        assert r.data.metrics["metric_calls"] <= r.data.metrics["max_metric_calls"]
