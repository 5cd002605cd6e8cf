"""MLflow lookups shared by the stages: the server check, the pipeline's runs, UI links.

Stages find each other's outputs through run tags (``promptgate.pipeline_id``,
``promptgate.stage``); nothing is passed between stages as files.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jobs.core.contract import (  # noqa: F401 - the tags are tracking's API too
    LAUNCH_ENV,
    RESULT_TAG,
    TAG_FAILED_STAGE,
    TAG_INPUTS,
    TAG_LAUNCH,
    TAG_PIPELINE,
    TAG_QUESTION,
    TAG_REVIEW,
    TAG_STAGE,
)
from jobs.core.errors import UserError, network_reason
from jobs.core.results import StageResult, decode, encode

PIPELINE_STAGE = "pipeline"


def check_server(uri: str, timeout_s: float) -> None:
    """Fail fast, before importing mlflow, when an HTTP tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=min(3.0, timeout_s)) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = network_reason(e)
        time.sleep(0.5)
    raise UserError(f"MLflow server {uri} is not reachable ({last}); start it with `make mlflow-up` or set mlflow.tracking_uri")


def connect(cfg: Any) -> str:
    """Check the server, point the mlflow client at it, and return the experiment id."""
    uri = str(cfg.mlflow.tracking_uri)
    check_server(uri, float(cfg.mlflow.connect_timeout_s))
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment(str(cfg.mlflow.experiment))
    return exp.experiment_id


def inputs_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ui_base(cfg: Any) -> str:
    return str(cfg.mlflow.get("ui_url") or cfg.mlflow.tracking_uri).rstrip("/")


def run_link(cfg: Any, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(cfg)}/#/experiments/{experiment_id}/runs/{run_id}"


def traces_link(cfg: Any, experiment_id: str) -> str:
    return f"{ui_base(cfg)}/#/experiments/{experiment_id}/traces"


def trace_link(cfg: Any, experiment_id: str, trace_id: str) -> str:
    return f"{traces_link(cfg, experiment_id)}?selectedEvaluationId={trace_id}"


def prompt_link(cfg: Any, name: str) -> str:
    return f"{ui_base(cfg)}/#/prompts/{name}"


def _filter(pipeline_id: str, stage: str, status: str | None = None) -> str:
    f = f"tags.`{TAG_PIPELINE}` = '{pipeline_id}' AND tags.`{TAG_STAGE}` = '{stage}'"
    return f + (f" AND attributes.status = '{status}'" if status else "")


def find_runs(experiment_id: str, pipeline_id: str, stage: str, status: str | None = "FINISHED") -> list[Any]:
    """The pipeline's runs of a stage, newest first."""
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_runs([experiment_id], _filter(pipeline_id, stage, status),
                                      order_by=["attributes.start_time DESC"], max_results=50)


def result_of(run: Any | None) -> StageResult | None:
    """The result a stage run recorded, typed by its stage; None when there is none."""
    if run is None or RESULT_TAG not in run.data.tags or run.data.tags.get(TAG_STAGE) is None:
        return None
    return decode(run.data.tags[TAG_STAGE], run.data.tags[RESULT_TAG])


def record_result(result: StageResult) -> None:
    """Write a stage's result on the active run (the one function that writes results)."""
    import mlflow

    mlflow.set_tag(RESULT_TAG, encode(result))
    mark_launch(mlflow.active_run().info.run_id)


def mark_launch(run_id: str) -> None:
    """Tag the run that holds this stage's result with the launcher's id, when a launcher gave one."""
    launch_id = os.environ.get(LAUNCH_ENV)
    if launch_id:
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(run_id, TAG_LAUNCH + launch_id, "1")


def launched_result(launch_id: str) -> StageResult | None:
    """The result of the stage a launcher started with this id (None if it recorded none)."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{TAG_LAUNCH}{launch_id}` = '1'")
    return result_of(runs[0]) if runs else None


def latest_result(experiment_id: str, pipeline_id: str, stage: str, inputs: str | None = None) -> Any | None:
    for run in find_runs(experiment_id, pipeline_id, stage):
        if inputs is None or run.data.tags.get(TAG_INPUTS) == inputs:
            return run
    return None


def pipeline_run_id(experiment_id: str, pipeline_id: str) -> str:
    """The parent run that groups a pipeline's stage runs in the UI (created on first use)."""
    from mlflow.tracking import MlflowClient

    found = find_runs(experiment_id, pipeline_id, PIPELINE_STAGE, status=None)
    if found:
        run = found[-1]  # the oldest, should two stages race to create it
        if run.info.status != "RUNNING":  # resumed: it runs again until this stage ends
            MlflowClient().update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = MlflowClient().create_run(experiment_id, run_name=f"pipeline-{pipeline_id}",
                                    tags={TAG_PIPELINE: pipeline_id, TAG_STAGE: PIPELINE_STAGE})
    return run.info.run_id


def end_pipeline_run(experiment_id: str, pipeline_id: str, failed_stage: str | None = None) -> str | None:
    """End the pipeline's parent run: FINISHED, or FAILED with the stage that stopped it tagged.
    Returns the status set, or None when the pipeline has no run (nothing was written)."""
    from mlflow.tracking import MlflowClient

    found = find_runs(experiment_id, pipeline_id, PIPELINE_STAGE, status=None)
    if not found:
        return None
    client, run = MlflowClient(), found[-1]
    if failed_stage:
        client.set_tag(run.info.run_id, TAG_FAILED_STAGE, failed_stage)
    elif TAG_FAILED_STAGE in run.data.tags:  # a resumed pipeline that now got through
        client.delete_tag(run.info.run_id, TAG_FAILED_STAGE)
    status = "FAILED" if failed_stage else "FINISHED"
    client.set_terminated(run.info.run_id, status)
    return status


@contextmanager
def stage_run(cfg: Any, experiment_id: str, stage: str, inputs: str) -> Iterator[Any]:
    """An MLflow run for one stage, nested under the pipeline run, tagged for lookups."""
    import mlflow

    pid = str(cfg.pipeline_id)
    parent = pipeline_run_id(experiment_id, pid)
    tags = {TAG_PIPELINE: pid, TAG_STAGE: stage, TAG_INPUTS: inputs, "mlflow.parentRunId": parent}
    from jobs.gateway import client as gateway

    kill_orphans(experiment_id, pid, stage, inputs)
    failed = True
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}-{pid}", tags=tags) as run:
            try:
                yield run
            finally:
                if gateway.current is not None:  # spend is reported whether the stage finished or not
                    gateway.current.log()
        failed = False
    finally:  # the pipeline run is RUNNING only while one of its stages runs
        try:
            end_pipeline_run(experiment_id, pid, stage if failed else None)
        except Exception as e:  # noqa: BLE001 - bookkeeping must not hide the stage's own outcome
            print(f"warning: could not end the run pipeline-{pid} ({e}); the driver or a rerun ends it", file=sys.stderr)


def kill_orphans(experiment_id: str, pipeline_id: str, stage: str, inputs: str) -> None:
    """Mark runs of an earlier attempt at the same work that never ended (a killed process
    or pod) as KILLED, so the UI and lookups don't take them for live runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in find_runs(experiment_id, pipeline_id, stage, status="RUNNING"):
        if run.data.tags.get(TAG_INPUTS) == inputs:
            client.set_terminated(run.info.run_id, "KILLED")


def prompt_versions(name: str) -> list[Any]:
    """Every version of a prompt (all pages); empty when the prompt does not exist."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if not client.get_prompt(name):
        return []
    out, token = [], None
    while True:
        page = client.search_prompt_versions(name, max_results=100, page_token=token)
        out += list(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def pipeline_candidate(experiment_id: str, pipeline_id: str) -> int | None:
    """The candidate version this pipeline's optimize produced: its newest run that is not a
    sweep point, or a sweep's best point. None when there is none (no gain on train)."""
    for run in find_runs(experiment_id, pipeline_id, "optimize"):
        tags = run.data.tags
        if tags.get("promptgate.sweep_point") == "true" and tags.get("promptgate.sweep_best") != "true":
            continue
        result = result_of(run)
        return result.candidate_version if result is not None else None
    return None


def _holder_gone(tags: dict[str, str], stale_s: float) -> bool:
    """The lock's holder was killed: its process is gone from this host, or it is older than stale_s."""
    if time.time() - float(tags.get("acquired_at", "0")) > stale_s:
        return True
    if tags.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(tags.get("pid", "0")), 0)
        return False
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False


@contextmanager
def alias_lock(prompt_name: str, alias: str, timeout_s: float = 120, stale_s: float = 90) -> Iterator[None]:
    """Hold a lock on one alias across processes and machines.

    MLflow has no compare-and-set on aliases. Creating a registered model is atomic in
    its SQL store (the name is unique), so a model named after the alias serves as the
    mutex. A lock whose holder was killed (its pid is gone on this host, or it is older than
    ``stale_s``; the work under it takes seconds) is broken.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = f"promptgate-lock.{prompt_name}.{alias}"
    holder = {"acquired_at": str(time.time()), "host": socket.gethostname(), "pid": str(os.getpid())}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(name, tags=holder)
            break
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
            try:
                if _holder_gone(client.get_registered_model(name).tags, stale_s):
                    client.delete_registered_model(name)
                    continue
            except MlflowException:
                continue  # released meanwhile
            if time.monotonic() > deadline:
                raise UserError(f"alias '{alias}' of prompt '{prompt_name}' stayed locked for {timeout_s:.0f} s by "
                                f"another gate; retry, or delete the registered model '{name}' if no gate is running") from None
            time.sleep(0.5)
    try:
        yield
    finally:
        client.delete_registered_model(name)
