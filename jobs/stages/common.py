"""Small helpers the stages share: reuse of a finished result, printing, recorded versions."""

from __future__ import annotations

import json
from typing import Any

from jobs.core.errors import UserError
from jobs.store import tracking

RESULT_TAG = tracking.RESULT_TAG


def reuse(cfg: Any, experiment_id: str, stage: str, inputs: str) -> dict | None:
    """The finished result of this stage for this pipeline id and inputs, unless force=true."""
    if cfg.force:
        return None
    run = tracking.latest_result(experiment_id, str(cfg.pipeline_id), stage, inputs)
    result = tracking.result_of(run)
    if not result:
        return None
    print(f"[{stage}] pipeline {cfg.pipeline_id} already has this result (run {run.info.run_id}); "
          "reusing it. Pass force=true to run again.")
    return result


def finish(stage: str, result: dict) -> dict:
    """Record the result on the active run and return it; a crossed budget stops the stage first."""
    import mlflow

    from jobs.gateway import client as gateway

    if gateway.current is not None:
        gateway.current.check()
        result = {**result, "spend": gateway.current.figures()}  # the run's metrics are logged by stage_run

    mlflow.set_tag(RESULT_TAG, json.dumps(result, sort_keys=True, default=str))
    return result


def recorded(cfg: Any, experiment_id: str, stage: str, key: str) -> Any:
    """A value a previous stage of this pipeline recorded in its result."""
    run = tracking.latest_result(experiment_id, str(cfg.pipeline_id), stage)
    result = tracking.result_of(run)
    if not result:
        raise UserError(f"pipeline {cfg.pipeline_id} has no finished {stage} stage; run `python -m jobs.{stage} "
                        f"pipeline_id={cfg.pipeline_id}` first")
    return result[key]


def say(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)
