"""Small helpers the stages share: reuse of a finished result, printing, recorded values."""

from __future__ import annotations

from typing import Any

from jobs.core import spans
from jobs.core.errors import UserError
from jobs.core.results import StageResult
from jobs.store import tracking


def reuse(cfg: Any, experiment_id: str, stage: str, inputs: str) -> StageResult | None:
    """The finished result of this stage for this pipeline id and inputs, unless force=true."""
    if cfg.force:
        return None
    run = tracking.latest_result(experiment_id, str(cfg.pipeline_id), stage, inputs)
    result = tracking.result_of(run)
    if result is None:
        return None
    print(f"[{stage}] pipeline {cfg.pipeline_id} already has this result (run {run.info.run_id}); "
          "reusing it. Pass force=true to run again.")
    tracking.mark_launch(run.info.run_id)  # the launcher that started this attempt finds the result there
    return result


def finish(result: StageResult, shard_runs: list | None = None) -> StageResult:
    """Record the result on the active run and return it; a crossed budget stops the stage first.
    A sharded stage's result counts what its shards spent (their runs hold it) with its own."""
    from jobs.gateway import client as gateway

    if gateway.current is not None:
        gateway.current.check()
        result.spend = gateway.current.figures()  # the run's metrics are logged by stage_run
        result.spans = gateway.current.by_kind()
    if shard_runs:
        result.spend = {k: (result.spend or {}).get(k, 0.0) + v for k, v in gateway.spend_of_runs(shard_runs).items()}
        result.spans = spans.add(result.spans, gateway.kinds_of_runs(shard_runs))
    tracking.record_result(result)
    return result


def recorded(cfg: Any, experiment_id: str, stage: str) -> Any:
    """The result a previous stage of this pipeline recorded; exit 2 naming the missing stage."""
    result = tracking.result_of(tracking.latest_result(experiment_id, str(cfg.pipeline_id), stage))
    if result is None:
        raise UserError(f"pipeline {cfg.pipeline_id} has no finished {stage} stage; run `{command(stage, cfg)}` first")
    return result


def command_args(stage: str, cfg: Any = None) -> list[str]:
    """``-m jobs.<stage>`` with this invocation's overrides (experiment=, dataset paths, ...),
    without ``force=`` and ``<stage>.shard=``; ``pipeline_id=`` comes from ``cfg`` when given."""
    from hydra.core.hydra_config import HydraConfig

    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    dropped = ("force", f"{stage}.shard") + (("pipeline_id",) if cfg is not None else ())
    keep = [o for o in given if o.lstrip("+~").split("=", 1)[0] not in dropped]
    return ["-m", "jobs." + stage, *([f"pipeline_id={cfg.pipeline_id}"] if cfg is not None else []), *keep]


def command(stage: str, cfg: Any) -> str:
    """The command that runs ``stage`` with this invocation's overrides, so a "run X first"
    hint does the right thing when followed literally."""
    import shlex

    return " ".join(["python", *map(shlex.quote, command_args(stage, cfg))])


def say(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)
