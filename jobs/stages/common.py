"""Small helpers the stages share: reuse of a finished result, printing, recorded values."""

from __future__ import annotations

from typing import Any

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


def finish(result: StageResult) -> StageResult:
    """Record the result on the active run and return it; a crossed budget stops the stage first."""
    from jobs.gateway import client as gateway

    if gateway.current is not None:
        gateway.current.check()
        result.spend = gateway.current.figures()  # the run's metrics are logged by stage_run
    tracking.record_result(result)
    return result


def recorded(cfg: Any, experiment_id: str, stage: str) -> Any:
    """The result a previous stage of this pipeline recorded; exit 2 naming the missing stage."""
    result = tracking.result_of(tracking.latest_result(experiment_id, str(cfg.pipeline_id), stage))
    if result is None:
        raise UserError(f"pipeline {cfg.pipeline_id} has no finished {stage} stage; run `{command(stage, cfg)}` first")
    return result


def command(stage: str, cfg: Any) -> str:
    """The command that runs ``stage`` with this invocation's overrides (experiment=, dataset paths,
    ...), so a "run X first" hint does the right thing when followed literally."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    keep = [o for o in given if o.lstrip("+~").split("=", 1)[0] not in ("pipeline_id", "force")]
    return " ".join(["python -m jobs." + stage, f"pipeline_id={cfg.pipeline_id}", *map(shlex.quote, keep)])


def say(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)
