"""Retry-safe stages and shared state: SIGKILL each stage at its most awkward point and rerun
it under the same pipeline id; two pipelines gating one prompt on a PostgreSQL-backed
server; a whole pipeline with 20% injected faults; and no API key anywhere in MLflow."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest

from jobs.core.paths import ROOT
from jobs.gateway.server import cache_key
from jobs.store import tracking
from tests.conftest import (
    ARTIFACT_BUCKET,
    COMPARE_OVERRIDES,
    FAKE_API_KEY,
    S3_KEYS,
    SESSION_PROMPT,
    first_questions,
    new_pipeline_id,
    stage_result,
)
from tests.support.audit import KILL_POINTS, duplicates, kill_at_pause

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REQUIRE_SERVICES = os.environ.get("PROMPTGATE_REQUIRE_SERVICES") == "1"


def kill_when_paused(servers, stage: str, *overrides: str) -> str:
    code, out = kill_at_pause(stage, list(overrides), servers.env())
    servers.keep_log(f"{stage} (killed)", out)
    assert code == -signal.SIGKILL, f"{stage} ended by itself before its pause point:\n{out[-3000:]}"
    return out


def human_labels(client, experiment_id: str, pid: str, judge: str) -> dict[str, int]:
    import mlflow

    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=5000,
                                  filter_string=f"tag.`{tracking.TAG_PIPELINE}` = '{pid}'")
    out = {}
    for t in traces:
        n = sum(1 for a in t.info.assessments or [] if a.name == judge and a.source.source_type == "HUMAN")
        if n:
            out[t.info.trace_id] = n
    return out


def test_kill_each_stage_and_rerun(servers, mlflow_client, decided):
    """A new pipeline with the session pipeline's inputs under a prompt of its own. Each of
    evaluate, feedback, optimize and gate is killed after its first write, then rerun."""
    from mlflow.genai.scorers.registry import list_scorer_versions

    reference_pid, reference = decided
    pid, prompt = new_pipeline_id("kill"), f"kill-{uuid.uuid4().hex[:6]}"
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    judge_versions_before = len(list_scorer_versions(name="hitting_quality", experiment_id=exp))
    upstream_before = servers.gateway_stats()["totals"]["upstream_calls"]
    misses_before = len(servers.gateway_misses())
    common = (f"pipeline_id={pid}", f"prompt.name={prompt}", *COMPARE_OVERRIDES)
    for stage in ("register", "evaluate", "feedback", "align", "optimize", "compare", "gate"):
        if stage in KILL_POINTS:
            kill_when_paused(servers, stage, *common)
        proc = servers.stage(stage, *common)
        assert proc.returncode == 0, f"{stage} rerun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    # no duplicates: prompt versions, judge versions, HUMAN assessments, alias moves
    assert duplicates(mlflow_client, exp, pid, prompt, "hitting_quality") == {
        "prompt_versions": 0, "human_labels": 0, "finished_runs": 0, "judge_versions": 0}
    versions = tracking_versions(mlflow_client, prompt)
    assert sorted(versions) == [1, 2], versions  # the seed and one candidate
    assert len(list_scorer_versions(name="hitting_quality", experiment_id=exp)) - judge_versions_before <= 1
    _, evaluated = stage_result(mlflow_client, pid, "evaluate")
    labels = human_labels(mlflow_client, exp, pid, "hitting_quality")
    assert set(labels.values()) == {1} and len(labels) == evaluated["reviewable"]
    killed = mlflow_client.search_runs([exp], f"tags.`{tracking.TAG_PIPELINE}` = '{pid}' AND attributes.status = 'KILLED'")
    assert sorted(r.data.tags[tracking.TAG_STAGE] for r in killed) == sorted(KILL_POINTS)
    gate_runs = tracking.find_runs(exp, pid, "gate")
    assert len(gate_runs) == 1

    # the same decision as the session's uninterrupted pipeline
    _, mine = stage_result(mlflow_client, pid, "gate")
    _, theirs = stage_result(mlflow_client, reference_pid, "gate")
    assert (mine["decision"], mine["reasons"]) == (theirs["decision"], theirs["reasons"])
    if mine["decision"] == "promote":
        assert int(mlflow_client.get_prompt_version_by_alias(prompt, "production").version) == mine["candidate_version"]
        assert mine["previous_production"] == 1

    # unchanged inputs under a new pipeline id: every LLM call came from the shared cache, the
    # killed attempts' calls included, except GEPA's reflection requests, which quote the prompt's
    # name. Those went upstream once each (the killed optimize sent them, its rerun hit the cache)
    # and, renamed back, are requests the session pipeline sent.
    reference_runs = mlflow_client.search_runs([exp], f"tags.`{tracking.TAG_PIPELINE}` = '{reference_pid}'")
    reference_upstream = sum(r.data.metrics.get("gateway.upstream_calls", 0) for r in reference_runs)
    rerun_upstream = servers.gateway_stats()["totals"]["upstream_calls"] - upstream_before
    misses = servers.gateway_misses()
    sent_before = {cache_key("chat", m["body"]) for m in misses[:misses_before]}
    missed = misses[misses_before:]
    renamed = [cache_key("chat", json.loads(json.dumps(m["body"]).replace(prompt, SESSION_PROMPT))) for m in missed]
    unexplained = [f"{m['stage']}: {json.dumps(m['body'])[:600]}" for m, key in zip(missed, renamed)
                   if m["body"].get("model") != "sim-reflect" or key not in sent_before]
    assert reference_upstream > 200 and rerun_upstream == len(missed) == len(set(renamed)), (
        rerun_upstream, reference_upstream, len(missed))
    assert unexplained == [], unexplained


def test_optimize_rerun_finds_what_a_killed_attempt_registered(mlflow_client):
    """optimize_prompts registers before optimize can tag, so a SIGKILL there leaves an untagged
    copy; the rerun must find it whether it keeps a candidate or not, and never the seed or
    another pipeline's candidate with the same text."""
    import time

    import mlflow

    from jobs.stages.optimize import TAG, drop_versions, earlier_twins

    pid, prompt, text = new_pipeline_id("twin"), f"twin-{uuid.uuid4().hex[:6]}", "Answer the hitter."
    register = mlflow.genai.register_prompt
    register(name=prompt, template=text, tags={tracking.TAG_PIPELINE: pid})  # v1: the seed, as register tags it
    register(name=prompt, template=text)  # v2: left by this pipeline's killed optimize
    register(name=prompt, template=text, tags={TAG + "pipeline_id": "other", TAG + "source_run_id": "r"})  # v3
    register(name=prompt, template="Something else.")  # v4: untagged, other text
    started_ms = int(time.time() * 1000) + 1
    time.sleep(0.01)
    produced = register(name=prompt, template=text)  # v5: the rerun's own registration
    twins = earlier_twins(prompt, produced, pid, 1, started_ms)
    assert [int(v.version) for v in twins] == [2]
    assert earlier_twins(prompt, produced, pid, 1, int(twins[0].creation_timestamp)) == []  # made by this attempt
    drop_versions(prompt, [produced, *twins], "test", print)
    assert sorted(tracking_versions(mlflow_client, prompt)) == [1, 3, 4]


def tracking_versions(client, prompt: str) -> list[int]:
    return [int(v.version) for v in client.search_prompt_versions(prompt)]


# ------------------------------------------------------------------ PostgreSQL-backed server
@pytest.fixture(scope="module")
def postgres_mlflow(tmp_path_factory):
    """An MLflow server on a fresh PostgreSQL database, as on the cluster."""
    import psycopg

    from jobs.core.servers import free_port, start_mlflow, stop_process

    try:
        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5,
                                autocommit=True)
    except psycopg.OperationalError as e:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required here (PROMPTGATE_REQUIRE_SERVICES=1): {e}")
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({str(e).strip()}); the concurrent-gate test needs one")
    db = f"promptgate_test_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {db}")
    state = tmp_path_factory.mktemp("pg-mlflow")
    proc, uri = start_mlflow(state, free_port(), backend_uri=f"postgresql://postgres@127.0.0.1:5432/{db}",
                             timeout_s=600)
    yield uri
    stop_process(proc.pid)
    admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    admin.close()


def test_two_pipelines_gate_one_prompt_on_postgres(servers, postgres_mlflow):
    """Both pipelines measured against v1 and pass every gate; exactly one moves production."""
    import mlflow
    from mlflow import MlflowClient

    from tests.test_decision import GOOD, MEASURED_JUDGE

    mlflow.set_tracking_uri(postgres_mlflow)
    client = MlflowClient(postgres_mlflow)
    exp = mlflow.set_experiment("promptgate-baseball").experiment_id
    prompt = f"pg-gate-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        mlflow.genai.register_prompt(name=prompt, template=f"prompt text {i}")
    mlflow.genai.set_prompt_alias(prompt, alias="production", version=1)
    pids = [f"pg-both-{k}-{uuid.uuid4().hex[:6]}" for k in (2, 3)]
    for pid, candidate in zip(pids, (2, 3)):
        for stage, result in (("compare", {**GOOD, "candidate_version": candidate}),
                              ("optimize", {"outcome": "candidate", "candidate_version": candidate}),
                              ("align", MEASURED_JUDGE)):
            run = client.create_run(exp, tags={tracking.TAG_PIPELINE: pid, tracking.TAG_STAGE: stage,
                                               tracking.RESULT_TAG: json.dumps(result)})
            client.set_terminated(run.info.run_id, "FINISHED")
    env = servers.env(MLFLOW_TRACKING_URI=postgres_mlflow)
    procs = [subprocess.Popen([sys.executable, "-m", "jobs.gate", f"pipeline_id={pid}", f"prompt.name={prompt}"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in pids]
    outs = [p.communicate(timeout=900) for p in procs]
    mlflow.set_tracking_uri(servers.mlflow_uri)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(  # each gate's exit code and the end of what it printed
        f"--- {pid}: exit {p.returncode}\n{o[-1500:]}\n{e[-3000:]}" for pid, p, (o, e) in zip(pids, procs, outs))
    promoted = [o for o, _ in outs if "PROMOTED: production v1 -> v" in o]
    refused = [o for o, _ in outs if "REFUSED: production stays v" in o and "production moved concurrently" in o]
    assert len(promoted) == 1 and len(refused) == 1, outs
    winner = 2 if "-> v2" in promoted[0] else 3
    assert int(client.get_prompt_version_by_alias(prompt, "production").version) == winner
    loser_tags = client.get_prompt_version(prompt, 5 - winner).tags
    assert loser_tags["promptgate.gate.decision"] == "refuse" and "moved concurrently" in loser_tags["promptgate.gate.reasons"]


# ------------------------------------------------------------------ faults
FAULTS = {"rate_429": 0.08, "rate_timeout": 0.04, "rate_malformed": 0.08, "timeout_s": 0.5}  # 20% of judge calls


def test_pipeline_with_20_percent_faults(servers, mlflow_client, tmp_path):
    """The whole pipeline on a simulator of its own that injects faults, with the cache off.
    Every injected fault shows up in MLflow, and the decision follows the error-rate gate."""
    pid, prompt = new_pipeline_id("faults"), f"faults-{uuid.uuid4().hex[:6]}"
    sim = [f"model.sim.{k}={v}" for k, v in FAULTS.items()]
    env = servers.env(PROMPTGATE_SIM_URL="", PROMPTGATE_GATEWAY_URL="")  # its own simulator and gateway
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"pipeline_id={pid}", f"prompt.name={prompt}",
                           "gateway.cache=off", "compare.n_repeats=1", "optimizer=gepa_default", *sim,
                           f"dataset.heldout={first_questions(tmp_path, 12)}"],  # faults, not compare's figures, are the subject
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    servers.keep_log("faults pipeline", proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    injected = json.loads(re.search(r"^simulator injected: (\{.*\})$", proc.stdout, re.M).group(1))
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    runs = mlflow_client.search_runs([exp], f"tags.`{tracking.TAG_PIPELINE}` = '{pid}'")
    recorded = {k: sum(r.data.metrics.get(f"gateway.{k}", 0) for r in runs) for k in ("faults", "malformed", "exhausted")}
    transport = sum(n for kind, n in injected.items() if not kind.endswith(":malformed"))
    malformed = sum(n for kind, n in injected.items() if kind.endswith(":malformed"))
    assert transport > 0 and malformed > 0, injected
    assert recorded["faults"] == transport and recorded["malformed"] == malformed, (recorded, injected)

    # malformed judge replies became ERROR rows, never a pass or fail, never sent to experts
    for stage in ("evaluate", "compare"):
        run, result = stage_result(mlflow_client, pid, stage)
        errors = result["errors"] if stage == "evaluate" else result["baseline_errors"] + result["candidate_errors"]
        assert errors >= run.data.metrics.get("gateway.malformed", 0), (stage, result)  # each one is an ERROR row
    _, evaluated = stage_result(mlflow_client, pid, "evaluate")
    _, feedback = stage_result(mlflow_client, pid, "feedback")
    assert feedback["labels_written"] == evaluated["reviewable"] == evaluated["rows"] - evaluated["errors"]

    # the decision follows the error-rate gate
    _, compare = stage_result(mlflow_client, pid, "compare")
    _, gate = stage_result(mlflow_client, pid, "gate")
    assert compare["outcome"] == "compared", f"GEPA found no candidate under faults, so no gate was tried: {compare}"
    rate = max(compare["baseline_error_rate"], compare["candidate_error_rate"])
    error_gate = next(g for g in gate["gates"] if g["name"] == "max_error_rate")
    assert error_gate["value"] == pytest.approx(rate, abs=1e-4)
    assert error_gate["passed"] == (rate <= error_gate["threshold"])
    if not error_gate["passed"]:
        assert gate["decision"] == "refuse"


# ------------------------------------------------------------------ secrets
def test_api_key_appears_nowhere(servers, mlflow_client, decided):
    """The session's stages and gateway ran with FAKE_API_KEY exported, as a user's would. What
    MLflow holds is read where it keeps it: every row of its database (runs, params, tags, trace
    info, assessments, prompt versions) and every object in its artifact bucket (run artifacts,
    trace spans), besides the stages' output and the gateway's cache."""
    import boto3

    needles = (FAKE_API_KEY.encode(), FAKE_API_KEY[-12:].encode())
    hits, scanned, keys = [], {}, []

    def scan(where: str, kind: str, data: bytes) -> None:
        scanned[kind] = scanned.get(kind, 0) + 1
        if any(n in data for n in needles):
            hits.append(where)

    for db in servers.state_dir.glob("mlflow.db*"):  # the session server's SQLite store (and its journal)
        scan(str(db), "database", db.read_bytes())
    s3 = boto3.client("s3", endpoint_url=servers.s3_endpoint, region_name="us-east-1",
                      **{k.lower(): v for k, v in S3_KEYS.items() if k != "AWS_DEFAULT_REGION"})
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ARTIFACT_BUCKET):
        for obj in page.get("Contents", []):
            keys.append(obj["Key"])
            scan(f"s3://{ARTIFACT_BUCKET}/{obj['Key']}", "artifact", s3.get_object(Bucket=ARTIFACT_BUCKET, Key=obj["Key"])["Body"].read())
    for path in (servers.state_dir / "llm-cache").rglob("*"):
        if path.is_file():
            scan(str(path), "cache entry", path.read_bytes())
    scan("stage output", "log", servers.stage_log.read_bytes())

    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    runs = mlflow_client.search_runs([exp], max_results=5000)
    assert scanned["database"] >= 1 and servers.stage_log.stat().st_size > 10_000  # the stages' output really was captured
    # the scan saw what the session wrote: every run that MLflow lists artifacts for has them in the bucket scanned
    with_artifacts = [r.info.run_id for r in runs if mlflow_client.list_artifacts(r.info.run_id)]
    unscanned = [run_id for run_id in with_artifacts if not any(f"/{run_id}/artifacts/" in key for key in keys)]
    assert len(with_artifacts) >= 5 and not unscanned, (len(with_artifacts), unscanned)
    assert scanned["cache entry"] > 100, scanned
    assert not hits, hits
