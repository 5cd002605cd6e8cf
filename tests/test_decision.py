"""compare -> gate on real servers, the pipeline driver's summary, and the gate's
refusals that need MLflow state: stale compare results, production moved concurrently,
and a promotion followed by a rollback."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from jobs.core.contract import RESULT_TAG, TAG_RELEASE
from jobs.core.paths import ROOT
from jobs.store import tracking

from .conftest import COMPARE_OVERRIDES, SESSION_PROMPT, labelled_traces, printed_result

pytestmark = pytest.mark.integration
PROMPT = SESSION_PROMPT


def test_compare_logged_paired_statistics_table_and_chart(decided, mlflow_client):
    pid, procs = decided
    r = printed_result(procs["compare"])
    run = mlflow_client.get_run(r["run_id"])
    assert r["outcome"] == "compared" and r["n_repeats"] in (1, 2) and r["rows_per_arm"] == 40 * r["n_repeats"]
    seq = r["sequential"]  # the default design: looks of one repeat each, at most compare.n_repeats=2
    assert r["design"] == "sequential" and seq["max_looks"] == 2 and seq["looks_run"] == r["n_repeats"]
    assert [x["look"] for x in seq["looks"]] == list(range(1, r["n_repeats"] + 1))
    assert seq["rows_spent"] == 2 * r["rows_per_arm"] and seq["rows_planned"] == 160
    assert seq["action"] in ("stop_efficacy", "stop_futility", "stop_final") and seq["why"] in procs["compare"].stdout
    m = run.data.metrics
    assert m["ci_low"] <= m["delta"] <= m["ci_high"] and 0 <= m["p_value"] <= 1
    assert m["delta"] == pytest.approx(r["delta"], abs=1e-4)
    names = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"compare.png", "per_question.csv"} <= names
    rows = open(mlflow_client.download_artifacts(run.info.run_id, "per_question.csv")).read().splitlines()
    assert len(rows) == 41 and rows[0].startswith("question_id,question,baseline_pass_share")
    assert "McNemar p=" in procs["compare"].stdout
    arms = mlflow_client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(arms) == 2
    for arm in arms:  # each arm's run page lists the held-out file it read, under Datasets
        inputs = mlflow_client.get_run(arm.info.run_id).inputs.dataset_inputs
        assert ("heldout.jsonl", {"mlflow.data.context": "heldout"}) in [
            (d.dataset.name, {t.key: t.value for t in d.tags}) for d in inputs], inputs


def test_mlflow_compare_evaluations_agrees_on_the_same_runs(decided):
    """MLflow 3.18's paired comparison of the two arms' runs, recorded by compare, pairs the
    same (question, repeat) rows and agrees with promptgate's own figures."""
    _, procs = decided
    r = printed_result(procs["compare"])
    m = r["mlflow_comparison"]
    assert m["status"] == "ok" and m["unpaired"] == 0, m
    assert m["n_paired"] == r["pairs"] > 0
    if r["baseline_errors"] == r["candidate_errors"] == 0:  # every question has all its runs
        assert m["diff"] == pytest.approx(r["delta"], abs=1e-3)
        assert (m["baseline_mean"], m["candidate_mean"]) == pytest.approx(
            (r["baseline_pass_rate"], r["candidate_pass_rate"]), abs=1e-3)
    if m["method"] == "mcnemar_exact":  # fewer than 25 discordant pairs: the same exact test
        assert m["p_value"] == pytest.approx(r["p_value"], abs=1e-4)
    else:  # MLflow's chi-square approximation of the same McNemar test
        assert m["method"] == "mcnemar_chi2" and m["p_value"] == pytest.approx(r["p_value"], rel=0.5, abs=0.01)
    assert m["ci_low"] <= m["diff"] <= m["ci_high"]
    line = next(x for x in procs["compare"].stdout.splitlines() if x.startswith("MLflow compare_evaluations"))
    print(line)
    assert line.startswith("MLflow compare_evaluations (cross-check, on hitting_quality_passed: the judge's pass/fail")
    if r["baseline_errors"] == r["candidate_errors"] == 0:
        assert line.endswith("the same gain"), line


def test_gate_decision_recorded_matches_printed_and_alias(decided, servers, mlflow_client):
    pid, procs = decided
    r = printed_result(procs["gate"])
    run = mlflow_client.get_run(r["run_id"])
    printed = "PROMOTED" if "[gate] PROMOTED" in procs["gate"].stdout else "REFUSED"
    assert {"promote": "PROMOTED", "refuse": "REFUSED"}[r["decision"]] == printed
    assert run.data.tags["promptgate.gate.decision"] == r["decision"]
    candidate = mlflow_client.get_prompt_version(PROMPT, r["candidate_version"])
    assert candidate.tags["promptgate.gate.decision"] == r["decision"]
    assert candidate.tags["promptgate.gate.pipeline_id"] == pid
    assert int(candidate.tags["promptgate.gate.previous_production"]) == r["previous_production"]
    gates = json.loads(candidate.tags["promptgate.gate.gates"])
    assert len(gates) == 6 and gates[-1]["name"] == "judge_kappa"  # five on compare's figures, one on the judge
    production = int(mlflow_client.get_prompt_version_by_alias(PROMPT, "production").version)
    assert production == (r["candidate_version"] if r["decision"] == "promote" else r["previous_production"])

    # the driver (`make run`) on the same pipeline id reuses every stage and prints the same decision
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"pipeline_id={pid}", *COMPARE_OVERRIDES],
                          env=servers.env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("reusing it") == 7
    summary = proc.stdout.split("=== promptgate pipeline")[1]
    assert f"gate: {printed}" in summary and "kappa" in summary and "train score" in summary and "chart:" in summary
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    parent = mlflow_client.search_runs([exp], f"tags.`promptgate.pipeline_id` = '{pid}' AND tags.`promptgate.stage` = 'pipeline'")
    assert [r.info.status for r in parent] == ["FINISHED"] and "promptgate.failed_stage" not in parent[0].data.tags


# ------------------------------------------------------------------ gate refusals on MLflow state
@pytest.fixture()
def gate_prompt(mlflow_client):
    """A prompt of its own with three versions, production on v1."""
    import mlflow

    name = f"gate-test-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        mlflow.genai.register_prompt(name=name, template=f"prompt text {i}")
    mlflow.genai.set_prompt_alias(name, alias="production", version=1)
    return name


def mark_candidate(prompt, version, pid):
    """What optimize records: the pipeline's candidate version."""
    import mlflow

    record_result(mlflow.MlflowClient(), pid, "optimize", {"outcome": "candidate", "candidate_version": version})


MEASURED_JUDGE = {"measured": True, "judge_version": None, "kappa_before": 0.8, "holdout": 12, "holdout_scored": 12}


def mark_measured_judge(pid):
    """What align records when the base judge agreed with the experts on enough held-out labels."""
    import mlflow

    record_result(mlflow.MlflowClient(), pid, "align", MEASURED_JUDGE)


def record_result(client, pid, stage, result):
    """Store a stage result the way stages do: a finished run tagged for the pipeline."""
    exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
    run = client.create_run(exp, tags={tracking.TAG_PIPELINE: pid, tracking.TAG_STAGE: stage,
                                       RESULT_TAG: json.dumps(result)})
    client.set_terminated(run.info.run_id, "FINISHED")


GOOD = {"outcome": "compared", "baseline_version": 1, "candidate_version": 3, "judge_version": "base", "delta": 0.3,
        "p_value": 0.001, "ci_low": 0.1, "regressions": 0, "baseline_error_rate": 0.0, "candidate_error_rate": 0.0}


def gate(servers, pid, prompt, *extra):
    return servers.stage("gate", f"pipeline_id={pid}", f"prompt.name={prompt}", *extra, timeout=120)


def production(client, prompt):
    return int(client.get_prompt_version_by_alias(prompt, "production").version)


def test_promote_then_rollback(decided, servers, mlflow_client, gate_prompt):
    pid = f"gate-ok-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", GOOD)
    mark_candidate(gate_prompt, 3, pid)
    proc = gate(servers, pid, gate_prompt)
    assert proc.returncode == 0 and "PROMOTED: production v1 -> v3" in proc.stdout, proc.stderr
    assert production(mlflow_client, gate_prompt) == 3
    again = gate(servers, pid, gate_prompt)  # a retried Job moves nothing twice
    assert again.returncode == 0 and "reusing it" in again.stdout and production(mlflow_client, gate_prompt) == 3
    proc = gate(servers, pid, gate_prompt, "gate.rollback=true")
    assert proc.returncode == 0 and "production moved back from v3 to v1" in proc.stdout, proc.stderr
    assert production(mlflow_client, gate_prompt) == 1
    assert mlflow_client.get_prompt_version(gate_prompt, 3).tags["promptgate.gate.decision"] == "rolled_back"


def test_refuses_when_production_moved_concurrently(decided, servers, mlflow_client, gate_prompt):
    import mlflow

    pid = f"gate-race-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", GOOD)
    mark_candidate(gate_prompt, 3, pid)
    mlflow.genai.set_prompt_alias(gate_prompt, alias="production", version=2)  # another pipeline won meanwhile
    proc = gate(servers, pid, gate_prompt)
    assert proc.returncode == 0
    assert "REFUSED: production stays v2; production moved concurrently: compare measured against v1" in proc.stdout
    assert production(mlflow_client, gate_prompt) == 2
    assert "moved concurrently" in mlflow_client.get_prompt_version(gate_prompt, 3).tags["promptgate.gate.reasons"]


def test_refusal_exits_3_when_asked(decided, servers, mlflow_client, gate_prompt):
    pid = f"gate-refuse-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", {**GOOD, "delta": 0.01})
    mark_candidate(gate_prompt, 3, pid)
    proc = gate(servers, pid, gate_prompt, "gate.fail_on_refuse=true")
    assert proc.returncode == 3 and "REFUSED" in proc.stdout
    assert production(mlflow_client, gate_prompt) == 1


@pytest.mark.parametrize("setup,expect", [
    ([], "has no finished compare stage; run `python -m jobs.compare"),
    ([2], "stale compare results: compare used candidate v3 but the pipeline's candidate is now v2"),
    ([3, ("align", {"judge_version": 4})], "stale compare results: compare used judge vbase but align now records v4"),
])
def test_missing_or_stale_compare_exits_2(decided, servers, mlflow_client, gate_prompt, setup, expect):
    pid = f"gate-stale-{uuid.uuid4().hex[:6]}"
    if setup:
        record_result(mlflow_client, pid, "compare", GOOD)
        mark_candidate(gate_prompt, setup[0], pid)
    for stage, result in setup[1:]:
        record_result(mlflow_client, pid, stage, result)
    proc = gate(servers, pid, gate_prompt)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert production(mlflow_client, gate_prompt) == 1


def test_two_gates_at_once_promote_exactly_one(decided, servers, mlflow_client, gate_prompt):
    """Both pipelines measured against v1 and pass every gate; only one may move production."""

    pids = [f"gate-both-{k}-{uuid.uuid4().hex[:6]}" for k in (2, 3)]
    for pid, candidate in zip(pids, (2, 3)):
        mark_measured_judge(pid)
        record_result(mlflow_client, pid, "compare", {**GOOD, "candidate_version": candidate})
        mark_candidate(gate_prompt, candidate, pid)
    procs = [subprocess.Popen([sys.executable, "-m", "jobs.gate", f"pipeline_id={pid}", f"prompt.name={gate_prompt}"],
                              env=servers.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in pids]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    promoted = [o for o, _ in outs if "[gate] PROMOTED: production v1 -> v" in o]
    refused = [o for o, _ in outs if "REFUSED: production stays v" in o and "production moved concurrently" in o]
    assert len(promoted) == 1 and len(refused) == 1, outs
    winner = 2 if "-> v2" in promoted[0] else 3
    assert production(mlflow_client, gate_prompt) == winner
    loser = 5 - winner
    assert "moved concurrently" in mlflow_client.get_prompt_version(gate_prompt, loser).tags["promptgate.gate.reasons"]


def test_of_two_breakers_of_a_dead_holders_lock_one_holds_it_at_a_time(mlflow_client, monkeypatch):
    """A gate killed while holding production's lock leaves it. Two gates read it and both see
    its holder gone; the second acts 0.3 s after the first has broken the lock and taken it
    (the interleaving that let both hold it), and still exactly one holds it at a time."""
    import socket
    import threading
    import time

    from jobs.store import prompts

    prompt = f"lock-race-{uuid.uuid4().hex[:6]}"
    lock = f"promptgate-lock.{prompt}.production"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is gone from this host
    mlflow_client.create_registered_model(lock, tags={"acquired_at": str(time.time()), "host": socket.gethostname(),
                                                      "pid": str(dead.pid), "token": "the-dead-gate"})
    holder_gone, both_read, looks = prompts._holder_gone, threading.Barrier(2), []

    def first_look_together(tags: dict, stale_s: float) -> bool:
        gone = holder_gone(tags, stale_s)
        looks.append(tags.get("token"))
        if len(looks) <= 2:  # each gate's first look: both have read the dead holder's lock before either acts
            both_read.wait(timeout=30)
            if len(looks) == 2 and threading.current_thread().name == "second":
                time.sleep(0.3)
        return gone

    monkeypatch.setattr(prompts, "_holder_gone", first_look_together)
    turns, failed = [], []

    def gate() -> None:
        try:
            with prompts.alias_lock(prompt, "production", timeout_s=60):
                t0 = time.monotonic()
                time.sleep(1.0)
                turns.append((t0, time.monotonic()))
        except Exception as e:  # noqa: BLE001 - reported below
            failed.append(repr(e))

    threads = [threading.Thread(target=gate, name=n) for n in ("first", "second")]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    for t in threads:
        t.join(timeout=120)
    assert looks[:2] == ["the-dead-gate", "the-dead-gate"]  # both saw the dead holder's lock
    assert not failed and len(turns) == 2, (failed, turns)
    (_, first_end), (second_start, _) = sorted(turns)
    assert first_end <= second_start, f"both gates held the lock at once: {turns}"
    assert not mlflow_client.search_registered_models(f"name LIKE '{lock}%'")  # lock and breaker models gone


def test_a_gate_releases_only_its_own_lock(mlflow_client):
    """A gate whose lock was broken and taken by another (it ran past stale_s) leaves the new holder's lock."""
    from jobs.store import prompts

    prompt = f"lock-own-{uuid.uuid4().hex[:6]}"
    lock = f"promptgate-lock.{prompt}.production"
    with prompts.alias_lock(prompt, "production"):
        mlflow_client.delete_registered_model(lock)  # broken by another gate, which then took it
        mlflow_client.create_registered_model(lock, tags={"token": "the-other-gate"})
    assert mlflow_client.get_registered_model(lock).tags["token"] == "the-other-gate"
    mlflow_client.delete_registered_model(lock)


@pytest.fixture()
def release_prompts(mlflow_client):
    """A two-prompt agent of its own: router v1-v3, each released with responder v1-v3, production on v1."""
    import mlflow

    tag = uuid.uuid4().hex[:6]
    router, responder = f"gate-router-{tag}", f"gate-responder-{tag}"
    for i in range(3):
        mlflow.genai.register_prompt(name=responder, template=f"responder text {i}")
        mlflow.genai.register_prompt(name=router, template=f"router text {i}",
                                     tags={TAG_RELEASE: json.dumps({responder: i + 1})})
    for name in (router, responder):
        mlflow.genai.set_prompt_alias(name, alias="production", version=1)
    return router, responder


def release_gate(servers, pid, router, companions, *extra):
    """The gate for a release: ``companions`` maps role -> prompt name."""
    specs = [f"+prompt.companions.{role}={{name:{name},seed_text:x}}" for role, name in companions.items()]
    return gate(servers, pid, router, "prompt.role=router", *specs, *extra)


def test_a_two_prompt_release_is_promoted_and_rolled_back_together(decided, servers, mlflow_client, release_prompts):
    router, responder = release_prompts
    pid = f"gate-release-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", GOOD)
    mark_candidate(router, 3, pid)
    proc = release_gate(servers, pid, router, {"responder": responder})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PROMOTED: production v1 (responder v1) -> v3 (responder v3)" in proc.stdout
    assert (production(mlflow_client, router), production(mlflow_client, responder)) == (3, 3)
    recorded = mlflow_client.get_prompt_version(router, 3).tags["promptgate.gate.release"]
    assert json.loads(recorded) == {router: 3, responder: 3}
    proc = release_gate(servers, pid, router, {"responder": responder}, "gate.rollback=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "production moved back from v3 (responder v3) to v1 (responder v1)" in proc.stdout
    assert (production(mlflow_client, router), production(mlflow_client, responder)) == (1, 1)


def test_a_refused_release_moves_no_prompt(decided, servers, mlflow_client, release_prompts):
    router, responder = release_prompts
    pid = f"gate-release-no-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", {**GOOD, "delta": 0.01})
    mark_candidate(router, 3, pid)
    proc = release_gate(servers, pid, router, {"responder": responder})
    assert proc.returncode == 0 and "REFUSED: production stays v1 (responder v1); min_delta" in proc.stdout, proc.stderr
    assert (production(mlflow_client, router), production(mlflow_client, responder)) == (1, 1)


def test_a_release_that_cannot_move_every_prompt_moves_none(decided, servers, mlflow_client, release_prompts):
    """The second companion's version does not exist: the first companion's alias moves back."""
    import mlflow

    router, responder = release_prompts
    missing = f"{responder}-b"
    mlflow.genai.register_prompt(name=missing, template="other text")
    mlflow.genai.set_prompt_alias(missing, alias="production", version=1)
    mlflow.MlflowClient().set_prompt_version_tag(router, "2", TAG_RELEASE, json.dumps({responder: 2, missing: 9}))
    pid = f"gate-release-half-{uuid.uuid4().hex[:6]}"
    mark_measured_judge(pid)
    record_result(mlflow_client, pid, "compare", {**GOOD, "candidate_version": 2})
    mark_candidate(router, 2, pid)
    proc = release_gate(servers, pid, router, {"responder": responder, "writer": missing})
    assert proc.returncode != 0
    assert [production(mlflow_client, n) for n in (router, responder, missing)] == [1, 1, 1]


def test_three_expert_labels_register_nothing_and_the_gate_says_why(decided, servers, mlflow_client, gate_prompt):
    """Agreement on too few held-out labels is refused, not printed as if it meant something."""
    from tests.test_bad_input import scorer_versions

    pid = f"three-labels-{uuid.uuid4().hex[:6]}"
    labelled_traces(pid, 3, "hitting_quality")
    judges_before = scorer_versions(mlflow_client)
    proc = servers.stage("align", f"pipeline_id={pid}", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = printed_result(proc)
    assert result["measured"] is False and result["judge_version"] is None and result["kappa_after"] is None
    assert "not enough held-out labels to measure agreement: 1 held out, aligner.min_holdout is 8" in proc.stdout
    assert "no judge registered" in proc.stdout and "kappa" not in proc.stdout.split("no judge registered")[0]
    assert scorer_versions(mlflow_client) == judges_before
    assert mlflow_client.get_run(result["run_id"]).data.tags["promptgate.align.measured"] == "false"

    record_result(mlflow_client, pid, "compare", GOOD)  # a compare that would pass every other gate
    mark_candidate(gate_prompt, 3, pid)
    proc = gate(servers, pid, gate_prompt)
    assert proc.returncode == 0 and production(mlflow_client, gate_prompt) == 1, proc.stderr
    assert ("REFUSED: production stays v1; judge_kappa not measured (needs >= 0.2): not enough held-out labels "
            "to measure agreement") in proc.stdout
    assert "judge_kappa not measured" in mlflow_client.get_prompt_version(gate_prompt, 3).tags["promptgate.gate.reasons"]


def test_a_companion_added_later_joins_the_live_release(servers, mlflow_client):
    """A one-prompt pipeline's prompt gets a companion: production's version is recorded as
    released with the companion's seed, and no copy of the first prompt is registered."""
    tag = uuid.uuid4().hex[:6]
    first, companion = f"late-router-{tag}", f"late-responder-{tag}"
    one = servers.stage("register", f"pipeline_id=late1-{tag}", f"prompt.name={first}", "prompt.seed_text=route it")
    assert one.returncode == 0, one.stderr[-2000:]
    two = servers.stage("register", f"pipeline_id=late2-{tag}", f"prompt.name={first}", "prompt.seed_text=route it",
                        f"+prompt.companions.responder={{name:{companion},seed_text:answer it}}")
    assert two.returncode == 0, two.stderr[-2000:]
    assert f"'baseline' v1 is released with '{companion}' v1" in two.stdout  # baseline and production: both v1
    assert "production -> v1 (responder v1)" in two.stdout
    assert [v.version for v in mlflow_client.search_prompt_versions(first)] == [1]
    assert json.loads(mlflow_client.get_prompt_version(first, 1).tags[TAG_RELEASE]) == {companion: 1}
    assert production(mlflow_client, companion) == 1
