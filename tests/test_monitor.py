"""The monitor on simulated production: the traffic generator answers fresh questions with the
production prompt; the monitor scores what arrived since its checkpoint with the judge the
gate relied on, never twice (not even after a kill), judges a window only once it is large
enough, and flags a drop (exit 3) once the simulated model behind production drifts."""

from __future__ import annotations

import pytest

from .conftest import SESSION_PROMPT, printed_result
from .support.audit import kill_at_pause

pytestmark = pytest.mark.integration
JUDGE = "hitting_quality"
MONITOR = ("monitor.min_window=30", "monitor.max_workers=4")


def judge_verdicts(client, trace_id: str) -> list:
    return [a for a in client.get_trace(trace_id).info.assessments
            if a.name == JUDGE and "LLM_JUDGE" in str(a.source.source_type)]


def production_traces(client, exp: str) -> list:
    import mlflow

    return mlflow.search_traces(locations=[exp], filter_string="tags.`promptgate.traffic` = 'production'",
                                return_type="list", max_results=1000)


def test_the_gate_recorded_what_the_monitor_holds_production_to(decided, mlflow_client):
    version = mlflow_client.get_prompt_version_by_alias(SESSION_PROMPT, "production")
    tags = version.tags
    assert 0 < float(tags["promptgate.gate.heldout_pass_rate"]) <= 1
    assert int(tags["promptgate.gate.heldout_rows"]) >= 20
    assert tags["promptgate.gate.judge_name"] == JUDGE


def test_monitor_scores_nothing_twice_waits_for_a_full_window_and_flags_a_drift(decided, servers, mlflow_client):
    from mlflow.genai import review_queues

    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    small = servers.stage("traffic", "traffic.requests=10", "traffic.seed=1000")
    assert small.returncode == 0, small.stdout[-2000:] + small.stderr[-2000:]
    assert "10 of 10 answered" in small.stdout
    first = servers.stage("monitor", *MONITOR)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    r1 = printed_result(first)
    assert r1["new_traces"] == 10 and r1["drift"] is None
    assert "drift NOT JUDGED: rests on 10 traces, fewer than monitor.min_window=30" in first.stdout
    scored = [t.info.trace_id for t in production_traces(mlflow_client, exp)]
    assert len(scored) == 10 and all(len(judge_verdicts(mlflow_client, t)) == 1 for t in scored)

    again = servers.stage("monitor", *MONITOR)  # nothing new: nothing scored, the small window carries over
    assert again.returncode == 0, again.stderr[-2000:]
    r2 = printed_result(again)
    assert r2["new_traces"] == 0 and r2["window_traces"] == 10 and r2["drift"] is None
    assert all(len(judge_verdicts(mlflow_client, t)) == 1 for t in scored)  # still one verdict each

    steady = servers.stage("traffic", "traffic.requests=40", "traffic.seed=2000")
    assert steady.returncode == 0, steady.stderr[-2000:]
    code, out = kill_at_pause("monitor", list(MONITOR), servers.env(), point="monitor.scored")  # judged, not counted
    assert code == -9, out[-2000:]
    judged = servers.stage("monitor", *MONITOR)  # keeps the killed run's verdicts: judges nothing again
    assert judged.returncode == 0, judged.stdout[-3000:] + judged.stderr[-3000:]
    r3 = printed_result(judged)
    assert r3["new_traces"] == 0 and r3["window_traces"] == 50 and r3["drift"] is False, r3
    assert "0 new traces since checkpoint" in judged.stdout and "40 judged by a run that did not finish" in judged.stdout
    assert "no drift: p=" in judged.stdout
    scored = [t.info.trace_id for t in production_traces(mlflow_client, exp)]
    assert len(scored) == 50 and all(len(judge_verdicts(mlflow_client, t)) == 1 for t in scored)

    drifting = servers.stage("traffic", "traffic.requests=40", "traffic.seed=3000", "traffic.drift=true")
    assert drifting.returncode == 0, drifting.stdout[-2000:] + drifting.stderr[-2000:]
    assert "DRIFTED" in drifting.stdout
    flagged = servers.stage("monitor", *MONITOR)
    assert flagged.returncode == 3, flagged.stdout[-3000:] + flagged.stderr[-3000:]
    r4 = printed_result(flagged)
    assert r4["new_traces"] == 40 and r4["window_traces"] == 40 and r4["drift"] is True
    assert r4["p_value"] < 0.01 and r4["drop"] >= 0.10
    assert "DRIFT: the pass rate dropped significantly" in flagged.stdout
    run = mlflow_client.get_run(r4["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["promptgate.monitor.drift"] == "true"
    version = mlflow_client.get_prompt_version(SESSION_PROMPT, r4["production_version"])
    assert "promptgate.monitor.drift" in version.tags

    queue = review_queues.get_review_queue(name="promptgate-production", experiment_id=exp)
    queued = {i.item_id for i in review_queues.list_review_queue_items(queue.queue_id)}
    assert len(queued) == r1["queued"] + r3["queued"] + r4["queued"] and r4["queued"] > r3["queued"]
    failing = next(iter(queued))
    assert mlflow_client.get_trace(failing).info.tags["promptgate.review_from"] == "production"

    from mlflow.genai.scorers import list_scorers

    watching = [s for s in list_scorers(experiment_id=exp) if s.name == JUDGE]
    assert watching and watching[0].filter_string == "tags.`promptgate.traffic` = 'production'"

    # production's agent fails on every request: the monitor counts errors and judges none of them
    failing = servers.stage("traffic", "traffic.requests=4", "traffic.seed=4000", "model.sim.fail='agent=500'",
                            "gateway.cache=off", PROMPTGATE_SIM_URL="", PROMPTGATE_GATEWAY_URL="")
    assert failing.returncode == 0 and "0 of 4 answered" in failing.stdout, failing.stdout[-2000:] + failing.stderr[-2000:]
    broken = servers.stage("monitor", *MONITOR)
    assert broken.returncode in (0, 3), broken.stdout[-3000:] + broken.stderr[-3000:]
    r5 = printed_result(broken)
    assert r5["new_traces"] == 4 and r5["errors"] == 4 and r5["window_traces"] == 0 and r5["drift"] is None, r5
    errored = [t for t in production_traces(mlflow_client, exp) if str(t.info.state).endswith("ERROR")]
    assert len(errored) == 4 and not any(judge_verdicts(mlflow_client, t.info.trace_id) for t in errored)


def test_a_window_below_its_floor_is_never_flagged():
    """Even an all-failing handful of traces is 'not judged', whatever the drop."""
    from types import SimpleNamespace

    from jobs.stages.monitor import verdict

    cfg = SimpleNamespace(monitor=SimpleNamespace(min_window=30, alpha=0.01, min_drop=0.1))
    assert verdict(cfg, 0, 8, 0.9, 200)[0] is None
    drift, drop, p, _ = verdict(cfg, 0, 30, 0.9, 200)
    assert drift is True and drop == pytest.approx(0.9) and p < 1e-6
    assert verdict(cfg, 24, 30, 0.9, 200)[0] is False  # 0.8 against 0.9 on 30 traces: not significant
