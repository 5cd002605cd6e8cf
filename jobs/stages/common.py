"""Small helpers the stages share: the stage's run, reuse of a finished result, recording a
result, reading an earlier stage's, and hints that repeat the user's command."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from jobs.core import spans
from jobs.core.contract import TAG_FAILURE
from jobs.core.errors import NothingMeasured, UserError
from jobs.core.results import StageResult
from jobs.stages.context import StageContext
from jobs.store import tracking


def reuse(ctx: StageContext, inputs: str) -> StageResult | None:
    """The finished result of this stage for this pipeline id and inputs, unless force=true."""
    if ctx.force:
        return None
    run = ctx.store.latest_result(ctx.pipeline_id, ctx.stage, inputs)
    result = tracking.result_of(run)
    if result is None:
        return None
    ctx.say(f"pipeline {ctx.pipeline_id} already has this result (run {run.info.run_id}); "
            "reusing it. Pass force=true to run again.")
    tracking.mark_launch(run.info.run_id, ctx.launch_id)  # the launcher that started this attempt finds it there
    return result


def spend_metrics(ctx: StageContext) -> dict[str, float]:
    """What the stage's gateway session spent, as run metrics (none without a session)."""
    return ctx.session.metrics() if ctx.session is not None else {}


@contextmanager
def stage_run(ctx: StageContext, inputs: str) -> Iterator[Any]:
    """The stage's MLflow run (tracking.stage_run), its spend logged as it ends."""
    with tracking.stage_run(ctx.store.experiment_id, ctx.pipeline_id, ctx.stage, inputs,
                            lambda: spend_metrics(ctx)) as run:
        yield run


def finish(ctx: StageContext, result: StageResult, shard_runs: list | None = None) -> StageResult:
    """Record the result on the active run and return it; a crossed budget stops the stage first.
    A sharded stage's result counts what its shards spent (their runs hold it) with its own."""
    from jobs.gateway import client as gateway

    if ctx.session is not None:
        ctx.session.check()
        result.spend = ctx.session.figures()  # the run's metrics are logged by stage_run
        result.spans = ctx.session.by_kind()
    if shard_runs:
        result.spend = {k: (result.spend or {}).get(k, 0.0) + v for k, v in gateway.spend_of_runs(shard_runs).items()}
        result.spans = spans.add(result.spans, gateway.kinds_of_runs(shard_runs))
    tracking.record_result(result, ctx.launch_id)
    return result


def recorded(ctx: StageContext, stage: str) -> Any:
    """The result a previous stage of this pipeline recorded; exit 2 naming the missing stage."""
    ctx.needs(stage)
    result = ctx.store.result(ctx.pipeline_id, stage)
    if result is None:
        if (why := ctx.store.failure(ctx.pipeline_id, stage)) is not None:  # the real cause, not "run it first"
            raise UserError(f"pipeline {ctx.pipeline_id}'s last {stage} run recorded no result: {why}. Fix that "
                            f"cause, then run `{command(ctx, stage)}`")
        raise UserError(f"pipeline {ctx.pipeline_id} has no finished {stage} stage; run `{command(ctx, stage)}` first")
    return result


def failure_cause(ctx: StageContext, failed: Iterable[Any]) -> str:
    """Which calls failed and the first error: "every judge call failed: HTTP 400 ...". ``failed``
    are row outcomes (jobs.eval.runner.RowOutcome) that are not OK; a row whose trace is not OK
    failed in the agent, any other in the judge."""
    failed = list(failed)
    if not failed:
        return "no rows"
    agent = [o for o in failed if o.state != "OK"]
    judge = [o for o in failed if o.state == "OK"]
    cause = ("every agent call failed" if agent and not judge else "every judge call failed" if judge and not agent
             else f"{len(agent)} rows failed in the agent and {len(judge)} in the judge")
    # the gateway's first error of that kind names the HTTP status; MLflow's row message often does not
    seen = ctx.session.failures()[1].get("agent" if agent else "judge") if ctx.session is not None else None
    detail = seen or (agent or judge)[0].error
    return f"{cause}: {' '.join(str(detail).split())[:300]}"


def nothing_measured(ctx: StageContext, why: str) -> NoReturn:
    """End the stage without a figure: the reason goes on its run (which ends FAILED and is never
    reused), in its output, and into the message later stages give instead of "run X first"."""
    tracking.log(tags={TAG_FAILURE: why})
    ctx.say(f"{why}; no figure recorded: fix the cause and run again")
    raise NothingMeasured(why)


def command_args(ctx: StageContext, stage: str, with_pipeline: bool = True) -> list[str]:
    """``-m jobs.<stage>`` with this invocation's overrides (experiment=, dataset paths, ...),
    without ``force=`` and ``<stage>.shard=``; ``pipeline_id=`` is this context's."""
    dropped = ("force", f"{stage}.shard") + (("pipeline_id",) if with_pipeline else ())
    keep = [o for o in ctx.overrides if o.lstrip("+~").split("=", 1)[0] not in dropped]
    return ["-m", "jobs." + stage, *([f"pipeline_id={ctx.pipeline_id}"] if with_pipeline else []), *keep]


def command(ctx: StageContext, stage: str) -> str:
    """The command that runs ``stage`` with this invocation's overrides, so a "run X first"
    hint does the right thing when followed literally."""
    return " ".join(["python", *map(shlex.quote, command_args(ctx, stage))])


def python_command(ctx: StageContext, stage: str, *extra: str) -> list[str]:
    """This invocation as a process to start: the interpreter, ``command_args`` and ``extra``."""
    return [sys.executable, *command_args(ctx, stage, with_pipeline=False), *extra]


def log_lineage(run_id: str, records: list[Any]) -> None:
    """The datasets a run's rows were read from, on its page in MLflow (the evaluate runner logs
    its own run's; a merge run of shards and optimize's run log theirs here)."""
    from jobs.store import datasets as store_datasets

    store_datasets.log_lineage(run_id, {r.origin for r in records if r.origin is not None})
