"""What a multirun sweep writes to MLflow: the tracking server its launcher reads the points'
results from, and the best point promoted (the prompt's ``candidate`` alias, TAG_SWEEP_BEST on
its run). The sweep callback and the Kubernetes launcher call these; mlflow loads only here."""

from __future__ import annotations

from jobs.core.contract import TAG_SWEEP_BEST

CANDIDATE_ALIAS = "candidate"


def connect_uri(uri: str) -> None:
    """Point the mlflow client at the tracking server (no server check, no experiment)."""
    import mlflow

    mlflow.set_tracking_uri(str(uri))


def promote_sweep_best(tracking_uri: str, prompt_name: str, version: int, run_id: str) -> None:
    """Point the prompt's ``candidate`` alias at the best point's version and tag its run."""
    import mlflow

    connect_uri(tracking_uri)
    mlflow.genai.set_prompt_alias(str(prompt_name), alias=CANDIDATE_ALIAS, version=int(version))
    mlflow.MlflowClient().set_tag(str(run_id), TAG_SWEEP_BEST, "true")
