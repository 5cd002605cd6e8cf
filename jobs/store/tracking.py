"""MLflow lookups shared by the stages: the server check, the pipeline's runs, UI links.

Stages find each other's outputs through run tags (``promptgate.pipeline_id``,
``promptgate.stage``); nothing is passed between stages as files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jobs.core.contract import (  # noqa: F401 - the tags are tracking's API too
    RESULT_TAG,
    TAG_ARM_DIGEST,
    TAG_FAILED_STAGE,
    TAG_FAILURE,
    TAG_INPUTS,
    TAG_LAUNCH,
    TAG_PARENT_RUN,
    TAG_PIPELINE,
    TAG_QUESTION,
    TAG_REVIEW,
    TAG_SHARD,
    TAG_STAGE,
    TAG_SWEEP_BEST,
    TAG_SWEEP_POINT,
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


MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # MLflow's client reads these from the environment
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def connect(tracking_uri: str, experiment: str, timeout_s: float) -> str:
    """Check the server, point the mlflow client at it, and return the experiment id."""
    check_server(tracking_uri, timeout_s)
    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.set_experiment(experiment).experiment_id


@dataclass(frozen=True)
class Store:
    """A stage's MLflow: the server, the experiment it writes to, and the UI links people follow."""

    tracking_uri: str
    experiment_id: str
    ui_base: str  # the UI's base URL (mlflow.ui_url, else the tracking URI)

    def run_link(self, run_id: str) -> str:
        return f"{self.ui_base}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def traces_link(self) -> str:
        return f"{self.ui_base}/#/experiments/{self.experiment_id}/traces"

    def trace_link(self, trace_id: str) -> str:
        return f"{self.traces_link()}?selectedEvaluationId={trace_id}"

    def prompt_link(self, name: str) -> str:
        return f"{self.ui_base}/#/prompts/{name}"

    def find_runs(self, pipeline_id: str, stage: str, status: str | None = "FINISHED") -> list[Any]:
        return find_runs(self.experiment_id, pipeline_id, stage, status)

    def latest_result(self, pipeline_id: str, stage: str, inputs: str | None = None) -> Any | None:
        """The newest finished run of a stage that recorded a result (with these inputs, if given)."""
        return latest_result(self.experiment_id, pipeline_id, stage, inputs)

    def result(self, pipeline_id: str, stage: str) -> StageResult | None:
        return result_of(self.latest_result(pipeline_id, stage))

    def failure(self, pipeline_id: str, stage: str) -> str | None:
        """Why the stage's newest run recorded no result, when it ended FAILED saying so."""
        runs = find_runs(self.experiment_id, pipeline_id, stage, status=None)
        newest = runs[0] if runs else None
        if newest is None or newest.info.status != "FAILED":
            return None
        return newest.data.tags.get(TAG_FAILURE)


def open_store(cfg: Any) -> Store:
    """Connect to the configured server and experiment (once per stage process)."""
    m = cfg.mlflow
    experiment_id = connect(str(m.tracking_uri), str(m.experiment), float(m.connect_timeout_s))
    return Store(str(m.tracking_uri), experiment_id, str(m.get("ui_url") or m.tracking_uri).rstrip("/"))


def inputs_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _filter(pipeline_id: str, stage: str, status: str | None = None) -> str:
    f = f"tags.`{TAG_PIPELINE}` = '{pipeline_id}' AND tags.`{TAG_STAGE}` = '{stage}'"
    return f + (f" AND attributes.status = '{status}'" if status else "")


def find_runs(experiment_id: str, pipeline_id: str, stage: str, status: str | None = "FINISHED") -> list[Any]:
    """The pipeline's runs of a stage, newest first."""
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_runs([experiment_id], _filter(pipeline_id, stage, status),
                                      order_by=["attributes.start_time DESC"], max_results=50)


def measured_arms(experiment_id: str, digest: str) -> list[Any]:
    """Finished compare arm runs of any pipeline whose rows measured ``digest``, newest first (the
    arm runs of the compare under way are still running, so never their own source)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_runs([experiment_id], f"tags.`{TAG_ARM_DIGEST}` = '{digest}' AND "
                                      "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                      max_results=10)


def pipeline_runs(experiment_id: str, pipeline_id: str) -> list[Any]:
    """Every run of the pipeline: its stages', their shards', compare's arms, the parent."""
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_runs([experiment_id], f"tags.`{TAG_PIPELINE}` = '{pipeline_id}'", max_results=1000)


def result_of(run: Any | None) -> StageResult | None:
    """The result a stage run recorded, typed by its stage; None when there is none."""
    if run is None or RESULT_TAG not in run.data.tags or run.data.tags.get(TAG_STAGE) is None:
        return None
    return decode(run.data.tags[TAG_STAGE], run.data.tags[RESULT_TAG])


def record_result(result: StageResult, launch_id: str | None) -> None:
    """Write a stage's result on the active run (the one function that writes results)."""
    import mlflow

    mlflow.set_tag(RESULT_TAG, encode(result))
    mark_launch(mlflow.active_run().info.run_id, launch_id)


def mark_launch(run_id: str, launch_id: str | None) -> None:
    """Tag the run that holds this stage's result with the launcher's id, when a launcher gave one."""
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


def fail_active_runs(experiment_id: str, pipeline_id: str, stage: str) -> list[str]:
    """Mark this process's open runs (a stage's, a compare arm's) and the pipeline run FAILED,
    for a stage stopped by Ctrl-C before it can unwind; returns the run ids."""
    import mlflow

    ended = []
    while (run := mlflow.active_run()) is not None:
        mlflow.end_run("FAILED")
        ended.append(run.info.run_id)
    if ended:
        end_pipeline_run(experiment_id, pipeline_id, stage)
    return ended


@contextmanager
def stage_run(experiment_id: str, pipeline_id: str, stage: str, inputs: str,
              end_metrics: Callable[[], dict[str, float]] | None = None) -> Iterator[Any]:
    """An MLflow run for one stage, nested under the pipeline run, tagged for lookups.
    ``end_metrics`` is logged as the run ends, whether the stage finished or not (its spend)."""
    import mlflow

    parent = pipeline_run_id(experiment_id, pipeline_id)
    tags = {TAG_PIPELINE: pipeline_id, TAG_STAGE: stage, TAG_INPUTS: inputs, TAG_PARENT_RUN: parent}
    kill_orphans(experiment_id, pipeline_id, stage, inputs)
    failed = True
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}-{pipeline_id}", tags=tags) as run:
            try:
                yield run
            finally:
                if end_metrics is not None:
                    mlflow.log_metrics(end_metrics())
        failed = False
    finally:  # the pipeline run is RUNNING only while one of its stages runs
        try:
            end_pipeline_run(experiment_id, pipeline_id, stage if failed else None)
        except Exception as e:  # noqa: BLE001 - bookkeeping must not hide the stage's own outcome
            print(f"warning: could not end the run pipeline-{pipeline_id} ({e}); the driver or a rerun ends it",
                  file=sys.stderr)


@contextmanager
def child_run(name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[Any]:
    """A run nested in the active one (compare's arms): no stage tag, so never taken for a result.
    With ``run_id``, that child run again (a sequential compare's next look)."""
    import mlflow

    started = mlflow.start_run(run_id=run_id, nested=True) if run_id else mlflow.start_run(
        run_name=name, nested=True, tags=tags)
    with started as run:
        yield run


@contextmanager
def shard_run(experiment_id: str, pipeline_id: str, stage_tag: str, inputs: str, shard: str, name: str,
              end_metrics: Callable[[], dict[str, float]] | None = None) -> Iterator[Any]:
    """The run of one shard of a stage, under the pipeline run, tagged with its index."""
    import mlflow

    tags = {TAG_PIPELINE: pipeline_id, TAG_STAGE: stage_tag, TAG_INPUTS: inputs, TAG_SHARD: shard,
            TAG_PARENT_RUN: pipeline_run_id(experiment_id, pipeline_id)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
        yield run
        if end_metrics is not None:
            mlflow.log_metrics(end_metrics())


def log(metrics: dict[str, float] | None = None, params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None, step: int | None = None) -> None:
    """Metrics (at ``step``, a history such as a sequential compare's looks), params and tags on the active run."""
    import mlflow

    if metrics:
        mlflow.log_metrics(metrics, step=step)
    if params:
        mlflow.log_params(params)
    if tags:
        mlflow.set_tags(tags)


def log_files(texts: dict[str, str] | None = None, dicts: dict[str, Any] | None = None,
              files: list[str] | None = None) -> None:
    """Artifacts of the active run: texts and JSON by artifact name, local files as they are."""
    import mlflow

    for name, text in (texts or {}).items():
        mlflow.log_text(text, name)
    for name, value in (dicts or {}).items():
        mlflow.log_dict(value, name)
    for path in files or []:
        mlflow.log_artifact(path)


def load_dict(run_id: str, name: str) -> Any:
    """A JSON artifact of a run."""
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{name}")


def log_metric_to(run_id: str, key: str, value: float, step: int) -> None:
    """One metric point on another run than the active one (a series on a parent run)."""
    from mlflow.tracking import MlflowClient

    MlflowClient().log_metric(run_id, key, value, step=step)


def run_status(run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(run_id).info.status


def terminate(run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, status)


def experiment_id_of(name: str) -> str | None:
    """The id of an experiment by name; None when there is none."""
    from mlflow import MlflowClient

    found = MlflowClient().get_experiment_by_name(name)
    return None if found is None else found.experiment_id


def pipeline_spent(experiment_id: str, pipeline_id: str, units: tuple[str, ...]) -> dict[str, float]:
    """What this pipeline's earlier stage runs spent upstream, from their ``spend.<unit>`` metrics."""
    runs = pipeline_runs(experiment_id, pipeline_id)
    return {unit: sum(float(r.data.metrics.get(f"spend.{unit}", 0.0)) for r in runs) for unit in units}


def kill_orphans(experiment_id: str, pipeline_id: str, stage: str, inputs: str) -> None:
    """Mark runs of an earlier attempt at the same work that never ended (a killed process
    or pod) as KILLED, so the UI and lookups don't take them for live runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in find_runs(experiment_id, pipeline_id, stage, status="RUNNING"):
        if run.data.tags.get(TAG_INPUTS) == inputs:
            client.set_terminated(run.info.run_id, "KILLED")


def pipeline_candidate(experiment_id: str, pipeline_id: str) -> int | None:
    """The candidate version this pipeline's optimize produced: its newest run that is not a
    sweep point, or a sweep's best point. None when there is none (no gain on train)."""
    for run in find_runs(experiment_id, pipeline_id, "optimize"):
        tags = run.data.tags
        if tags.get(TAG_SWEEP_POINT) == "true" and tags.get(TAG_SWEEP_BEST) != "true":
            continue
        result = result_of(run)
        return result.candidate_version if result is not None else None
    return None
