"""Compare reuses what was measured (issue 27, item 1): a compare whose baseline release, held-out
rows, agent and model an earlier compare already measured takes that arm's traces instead of
running the agent again, and re-judges them when the judge or scorers differ; ``force=true``, a
changed held-out file or agent setting measures afresh. And the sequential design records its looks."""

from __future__ import annotations

import pytest

from jobs.config.compose import compose
from jobs.stages import compare

from .conftest import COMPARE_OVERRIDES, printed_result

pytestmark = pytest.mark.integration

FIGURES = ("baseline_pass_rate", "candidate_pass_rate", "delta", "p_value", "pairs", "regressions", "n_repeats")


def agent_calls(servers, pid: str) -> int:
    """Agent calls the session gateway has answered for the pipeline's compare stages so far."""
    sessions = servers.gateway_stats()["sessions"].values()
    return sum(int(s["by_kind"].get("agent", {}).get("calls", 0)) for s in sessions
               if s["pipeline"] == pid and s["stage"] == "compare")


def run_compare(servers, pid: str, *overrides: str) -> tuple[dict, int, str]:
    """compare on the pipeline, which must succeed: its result, the agent calls it made, its output."""
    before = agent_calls(servers, pid)
    proc = servers.stage("compare", f"pipeline_id={pid}", *COMPARE_OVERRIDES, *overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return printed_result(proc), agent_calls(servers, pid) - before, proc.stdout


def arm_traces(mlflow_client, compare_run: str, arm: str, spans: bool = False) -> list:
    """The traces in the evaluation view of a compare run's arm."""
    exp = mlflow_client.get_run(compare_run).info.experiment_id
    runs = mlflow_client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{compare_run}' AND tags.`promptgate.arm` = '{arm}'")
    assert len(runs) == 1
    return mlflow_client.search_traces(locations=[exp], run_id=runs[0].info.run_id, max_results=500, include_spans=spans)


def llm_calls(traces: list) -> int:
    """The agent's LLM calls the traces hold (one CHAT_MODEL span each)."""
    return sum(1 for t in traces for sp in t.data.spans if sp.span_type == "CHAT_MODEL")


@pytest.mark.slow  # three compares on the session pipeline
def test_a_compare_of_a_measured_baseline_reuses_its_traces_and_decides_the_same(decided, servers, mlflow_client):
    pid, procs = decided
    first = printed_result(procs["compare"])
    assert first["design"] == "sequential" and first["sequential"]["looks_run"] == first["n_repeats"]
    assert first["sequential"]["why"].startswith(f"look {first['n_repeats']} of 2")

    # another bootstrap: a new compare result, but the same baseline release, rows, agent and model
    again, calls, out = run_compare(servers, pid, "compare.bootstrap=1000")
    rows = again["rows_per_arm"]
    assert again["reused"] == {"arm": "baseline", "rows": rows, "from_compare": first["run_id"],
                               "from_arm_run": again["reused"]["from_arm_run"], "rejudged": False}
    # every agent call the gateway answered was the candidate's: 0 for the baseline
    assert calls == llm_calls(arm_traces(mlflow_client, again["run_id"], "candidate", spans=True)) > 0
    assert f"baseline: {rows // again['n_repeats']} traces reused from compare {first['run_id']}" in out
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert len(arm_traces(mlflow_client, again["run_id"], "baseline")) == rows  # reused traces in the arm's view

    # another further scorer: the baseline's traces are re-judged, still without the agent
    rejudged, calls, out = run_compare(servers, pid, "compare.bootstrap=1000", "judge.scorers=[Safety]")
    assert rejudged["reused"]["rejudged"] is True and rejudged["reused"]["rows"] == rejudged["rows_per_arm"]
    assert calls == llm_calls(arm_traces(mlflow_client, rejudged["run_id"], "candidate", spans=True))
    assert "re-judged with" in out
    assert {k: rejudged[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert rejudged["scorer_counts"]["baseline"]["Safety"]["judged"] == rejudged["rows_per_arm"]
    # a re-judged trace holds the first compare's verdict and this one's: MLflow's cross-check reads this run's
    cross = rejudged["mlflow_comparison"]
    assert cross["status"] == "ok", cross
    assert (cross["n_paired"], round(cross["diff"], 4)) == (rejudged["pairs"], round(rejudged["delta"], 4))

    # force=true measures both arms afresh, and on the same seeds decides the same
    fresh, calls, _ = run_compare(servers, pid, "force=true")
    assert fresh["reused"] is None
    assert calls == sum(llm_calls(arm_traces(mlflow_client, fresh["run_id"], arm, spans=True)) for arm in compare.ARMS)
    assert {k: fresh[k] for k in FIGURES} == {k: first[k] for k in FIGURES}


def test_a_changed_held_out_file_or_agent_setting_is_another_measurement(tmp_path):
    """What an arm measured is named by its release, its held-out rows, the agent's and the
    model's settings: change one and no earlier arm run stands for it."""
    from jobs.core.paths import ROOT
    from jobs.eval import datasets

    def digest(*overrides: str, version: int = 2) -> str:
        cfg = compose(list(overrides))
        return compare.arm_digest(cfg, version, datasets.from_config(cfg, "heldout"))

    fewer = tmp_path / "heldout.jsonl"
    fewer.write_text("".join((ROOT / "data/baseball/heldout.jsonl").read_text().splitlines(keepends=True)[1:]))
    assert digest() == digest("compare.bootstrap=1000", "gate.min_delta=0.2")  # how it is decided: the same rows
    for changed in ([f"dataset.heldout={fewer}"], ["agent.max_steps=3"], ["model.temperature=0.5"]):
        assert digest(*changed) != digest(), changed
    assert digest(version=3) != digest()
