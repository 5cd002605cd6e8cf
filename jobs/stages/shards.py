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
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from jobs.core.contract import GATEWAY_URL_ENV, TAG_INPUTS, TAG_SHARD
from jobs.core.errors import IncompleteResult
from jobs.core.faults import pause_point
from jobs.core.results import StageResult
from jobs.eval.datasets import Record
from jobs.eval.runner import RowOutcome
from jobs.stages.common import python_command, spend_metrics
from jobs.stages.context import StageContext
from jobs.store import traces, tracking

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


@dataclass
class ShardResult(StageResult):
    """What one shard process hands back: its run. The stage's result is the merge's."""

    STAGE: ClassVar[str] = ""  # never recorded as a stage result
    index: int | None = None
    shards: int | None = None


def _shard_runs(ctx: StageContext, inputs: str, shards: int, status: str | None = "FINISHED") -> dict[int, Any]:
    """The newest shard run per index for these inputs and shard count."""
    found: dict[int, Any] = {}
    for run in ctx.store.find_runs(ctx.pipeline_id, shard_stage(ctx.stage), status):
        index, _, count = run.data.tags.get(TAG_SHARD, "").partition("/")
        if run.data.tags.get(TAG_INPUTS) == inputs and count == str(shards):
            found.setdefault(int(index), run)
    return found


def run_shard(ctx: StageContext, inputs: str, index: int, shards: int,
              evaluate: Callable[[str], tuple[Outcomes, int]]) -> ShardResult:
    """Evaluate one shard into its own run (reusing a finished one). ``evaluate(run_id)``
    returns the shard's outcomes and how many rows it evaluated again."""
    done = _shard_runs(ctx, inputs, shards).get(index)
    if done is not None and not ctx.force:
        ctx.say(f"shard {index + 1}/{shards} already finished (run {done.info.run_id}); reusing it")
        return ShardResult(run_id=done.info.run_id, index=index, shards=shards)
    for orphan in _shard_runs(ctx, inputs, shards, "RUNNING").values():
        if orphan.data.tags.get(TAG_SHARD) == f"{index}/{shards}":  # a killed attempt at this shard
            tracking.terminate(orphan.info.run_id, "KILLED")
    name = f"{ctx.stage}-{ctx.pipeline_id}-shard-{index + 1}of{shards}"
    with tracking.shard_run(ctx.store.experiment_id, ctx.pipeline_id, shard_stage(ctx.stage), inputs,
                            f"{index}/{shards}", name, lambda: spend_metrics(ctx)) as run:
        outcomes, retried = evaluate(run.info.run_id)
        pause_point(f"{ctx.stage}.shard-{index}.scored")  # traces written, outcomes not yet
        tracking.log_files(dicts={OUTCOMES_FILE: {"retried": retried, "groups": {
            g: {rid: asdict(o) for rid, o in rows.items()} for g, rows in outcomes.items()}}})
        tracking.log(metrics={"rows": sum(len(v) for v in outcomes.values()), "retried_rows": retried})
    ctx.say(f"shard {index + 1}/{shards} finished: run {run.info.run_id}")
    return ShardResult(run_id=run.info.run_id, index=index, shards=shards)


def run_locally(ctx: StageContext, indexes: Sequence[int]) -> None:
    """Run the given shards as processes side by side, their output prefixed with the shard.
    They use this stage's LLM gateway: one cache, and the spend lands in one place."""
    env = dict(os.environ)
    if ctx.session is not None:
        env[GATEWAY_URL_ENV] = ctx.session.gateway_url  # a process boundary: conf/gateway reads gateway.url from it

    def pump(index: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            print(f"  [shard {index}] {line.rstrip()}", flush=True)

    force = ["force=true"] if ctx.force else []
    procs = {i: subprocess.Popen(python_command(ctx, ctx.stage, f"{ctx.stage}.shard={i}", *force),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                 env=env) for i in indexes}
    ctx.say(f"running shard(s) {', '.join(str(i) for i in indexes)} as {len(procs)} local process(es)")
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
        ctx.say(f"shard(s) failed: {', '.join(f'{i} (exit {c})' for i, c in failed.items())}")


def gather(ctx: StageContext, inputs: str, shards: int, units: Units,
           rerun: Callable[[list[int]], None] | None = None) -> tuple[Outcomes, int, list[Any]]:
    """The merged outcomes of all shards, after running any shard that has no finished run;
    also how many rows the shards evaluated again and the shard runs.

    The proof: every unit comes back from exactly the shard it belongs to, once. A unit that
    is missing, turns up in another shard's run, or turns up twice raises IncompleteResult."""
    runs = _shard_runs(ctx, inputs, shards)
    missing = [i for i in range(shards) if i not in runs or ctx.force]  # force=true: every shard anew
    if missing:
        (rerun or (lambda idx: run_locally(ctx, idx)))(missing)
        runs = _shard_runs(ctx, inputs, shards)
    still = [i for i in range(shards) if i not in runs]
    if still:
        raise IncompleteResult(f"shard(s) {', '.join(map(str, still))} of {shards} have no finished run after a rerun; "
                               f"their output above says why. Run the stage again: finished shards are reused")
    merged, retried = merge([tracking.load_dict(runs[i].info.run_id, OUTCOMES_FILE) for i in range(shards)],
                            units, shards)
    n = sum(len(v) for v in merged.values())
    ctx.say(f"merged {shards} shards: {n} of {len(units)} rows, each exactly once")
    return merged, retried, [runs[i] for i in range(shards)]


def merge(blobs: list[dict], units: Units, shards: int) -> tuple[Outcomes, int]:
    """The shards' outcome files as one set of outcomes, each row exactly once from its own shard."""
    merged: Outcomes = {}
    retried, problems = 0, []
    for index, blob in enumerate(blobs):
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
    return merged, retried


def link_traces(outcomes: dict[str, RowOutcome], run_id: str) -> None:
    """Link the rows' traces to ``run_id`` so that searching the run's traces finds them,
    wherever a shard logged them."""
    traces.link_to_run([o.trace_id for o in outcomes.values() if o.trace_id], run_id)
