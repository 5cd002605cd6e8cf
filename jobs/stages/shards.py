"""Sharded evaluation: a stage's rows split into N shards, each evaluated by a process of
its own (locally) or a pod (an Indexed Job on a cluster) into a run of its own, then
merged into the stage's result with the same completeness proof as one process: every row
exactly once, none lost, none counted twice.

A shard run is tagged with the stage's inputs hash and its index, and a finished one is
reused: after a killed shard, only that shard runs again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from jobs.core.errors import IncompleteResult
from jobs.core.faults import pause_point
from jobs.eval.datasets import Record
from jobs.eval.runner import RowOutcome
from jobs.store import tracking

SHARD_TAG = "promptgate.shard"  # "<index>/<shards>" on a shard's run
OUTCOMES_FILE = "shard_outcomes.json"  # each row's outcome, the merge's input
Units = list[tuple[str, Record]]  # (group, record): the group is compare's arm, or "rows"
Outcomes = dict[str, dict[str, RowOutcome]]  # group -> record id -> outcome


def shard_stage(stage: str) -> str:
    """The stage tag of a shard's run: not the stage's, so lookups of results never see it."""
    return f"{stage}-shard"


def mine(units: Units, shards: int, index: int) -> Units:
    """Shard ``index``'s rows: every ``shards``-th one, so shards differ by at most one row."""
    return units[index::shards]


def by_group(units: Units) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for group, record in units:
        out.setdefault(group, []).append(record)
    return out


def _shard_runs(experiment_id: str, pipeline_id: str, stage: str, inputs: str, shards: int,
                status: str | None = "FINISHED") -> dict[int, Any]:
    """The newest shard run per index for these inputs and shard count."""
    found: dict[int, Any] = {}
    for run in tracking.find_runs(experiment_id, pipeline_id, shard_stage(stage), status):
        index, _, count = run.data.tags.get(SHARD_TAG, "").partition("/")
        if run.data.tags.get(tracking.TAG_INPUTS) == inputs and count == str(shards):
            found.setdefault(int(index), run)
    return found


def run_shard(cfg: Any, experiment_id: str, stage: str, inputs: str, index: int, shards: int,
              evaluate: Callable[[str], tuple[Outcomes, int]], say: Callable[[str], None]) -> str:
    """Evaluate one shard into its own run (reusing a finished one) and return the run id.
    ``evaluate(run_id)`` returns the shard's outcomes and how many rows it evaluated again."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from jobs.gateway import client as gateway

    pid = str(cfg.pipeline_id)
    done = _shard_runs(experiment_id, pid, stage, inputs, shards).get(index)
    if done is not None and not cfg.force:
        say(f"shard {index + 1}/{shards} already finished (run {done.info.run_id}); reusing it")
        return done.info.run_id
    for orphan in _shard_runs(experiment_id, pid, stage, inputs, shards, "RUNNING").values():
        if orphan.data.tags.get(SHARD_TAG) == f"{index}/{shards}":  # a killed attempt at this shard
            MlflowClient().set_terminated(orphan.info.run_id, "KILLED")
    tags = {tracking.TAG_PIPELINE: pid, tracking.TAG_STAGE: shard_stage(stage), tracking.TAG_INPUTS: inputs,
            SHARD_TAG: f"{index}/{shards}", "mlflow.parentRunId": tracking.pipeline_run_id(experiment_id, pid)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}-{pid}-shard-{index + 1}of{shards}",
                          tags=tags) as run:
        outcomes, retried = evaluate(run.info.run_id)
        pause_point(f"{stage}.shard-{index}.scored")  # traces written, outcomes not yet
        mlflow.log_dict({"retried": retried, "groups": {g: {rid: asdict(o) for rid, o in rows.items()}
                                                         for g, rows in outcomes.items()}}, OUTCOMES_FILE)
        mlflow.log_metrics({"rows": sum(len(v) for v in outcomes.values()), "retried_rows": retried})
        if gateway.current is not None:
            gateway.current.log()
    say(f"shard {index + 1}/{shards} finished: run {run.info.run_id}")
    return run.info.run_id


def shard_command(stage: str, index: int, force: bool = False) -> list[str]:
    """This process's own command with ``<stage>.shard=<index>``: the local way to run one shard."""
    from jobs.stages.common import command_args

    return [sys.executable, *command_args(stage), f"{stage}.shard={index}", *(["force=true"] if force else [])]


def run_locally(stage: str, indexes: Sequence[int], say: Callable[[str], None], force: bool = False) -> None:
    """Run the given shards as processes side by side, their output prefixed with the shard.
    They use this stage's LLM gateway: one cache, and the spend lands in one place."""
    from jobs.gateway import client as gateway

    env = dict(os.environ)
    if gateway.current is not None:
        env["PROMPTGATE_GATEWAY_URL"] = gateway.current.gateway_url  # conf/gateway: gateway.url

    def pump(index: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            print(f"  [shard {index}] {line.rstrip()}", flush=True)

    procs = {i: subprocess.Popen(shard_command(stage, i, force), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace", env=env) for i in indexes}
    say(f"running shard(s) {', '.join(str(i) for i in indexes)} as {len(procs)} local process(es)")
    pumps = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in procs.items()]
    for t in pumps:
        t.start()
    try:
        codes = {i: p.wait() for i, p in procs.items()}
    except KeyboardInterrupt:
        for p in procs.values():
            p.kill()
        raise
    for t in pumps:
        t.join(timeout=5)
    failed = {i: c for i, c in codes.items() if c != 0}
    if failed:
        say(f"shard(s) failed: {', '.join(f'{i} (exit {c})' for i, c in failed.items())}")


def gather(cfg: Any, experiment_id: str, stage: str, inputs: str, shards: int, units: Units,
           say: Callable[[str], None], rerun: Callable[[list[int]], None] | None = None) -> tuple[Outcomes, int, list[Any]]:
    """The merged outcomes of all shards, after running any shard that has no finished run;
    also how many rows the shards evaluated again and the shard runs.

    The proof: every unit comes back from exactly the shard it belongs to, once. A unit that
    is missing, turns up in another shard's run, or turns up twice raises IncompleteResult."""
    import mlflow

    pid = str(cfg.pipeline_id)
    runs = _shard_runs(experiment_id, pid, stage, inputs, shards)
    missing = [i for i in range(shards) if i not in runs or cfg.force]  # force=true: every shard anew
    if missing:
        (rerun or (lambda idx: run_locally(stage, idx, say, bool(cfg.force))))(missing)
        runs = _shard_runs(experiment_id, pid, stage, inputs, shards)
    still = [i for i in range(shards) if i not in runs]
    if still:
        raise IncompleteResult(f"shard(s) {', '.join(map(str, still))} of {shards} have no finished run after a rerun; "
                               f"their output above says why. Run the stage again: finished shards are reused")
    merged: Outcomes = {}
    retried, problems = 0, []
    for index in range(shards):
        blob = mlflow.artifacts.load_dict(f"runs:/{runs[index].info.run_id}/{OUTCOMES_FILE}")
        retried += int(blob.get("retried", 0))
        expected = {(g, r.id) for g, r in mine(units, shards, index)}
        got = {(g, rid) for g, rows in blob["groups"].items() for rid in rows}
        if got - expected:
            problems.append(f"shard {index} holds rows that are not its own: {sorted(got - expected)[:5]}")
        if expected - got:
            problems.append(f"shard {index} lost {len(expected - got)} row(s): {sorted(expected - got)[:5]}")
        for group, rows in blob["groups"].items():
            for rid, o in rows.items():
                if rid in merged.setdefault(group, {}):
                    problems.append(f"row {group}/{rid} came back twice")
                merged[group][rid] = RowOutcome(**o)
    if problems:
        raise IncompleteResult(f"the {shards} shards' outcomes do not add up to the stage's rows: {'; '.join(problems)}")
    n = sum(len(v) for v in merged.values())
    say(f"merged {shards} shards: {n} of {len(units)} rows, each exactly once")
    return merged, retried, [runs[i] for i in range(shards)]


def link_traces(outcomes: dict[str, RowOutcome], run_id: str) -> None:
    """Link the rows' traces to ``run_id`` so that searching the run's traces finds them,
    wherever a shard logged them (MLflow links at most 100 per call)."""
    from mlflow.tracking import MlflowClient

    ids = [o.trace_id for o in outcomes.values() if o.trace_id]
    for start in range(0, len(ids), 100):
        MlflowClient().link_traces_to_run(ids[start:start + 100], run_id)
