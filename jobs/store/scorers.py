"""Registered judges (MLflow scorers): a version by number, and the sampling config that
records in the experiment's Judges tab which judge watches production."""

from __future__ import annotations

from typing import Any


def load(name: str, version: int, experiment_id: str) -> Any:
    """A registered judge version."""
    from mlflow.genai.scorers import get_scorer

    return get_scorer(name=name, version=int(version), experiment_id=experiment_id)


def watch(judge: Any, name: str, experiment_id: str, sample_rate: float, filter_string: str) -> str:
    """Register ``judge`` (if no version is) with a sampling config over ``filter_string``, and
    say how it watches. MLflow's server scores by itself only with judges on its own AI gateway
    (`gateway:/` models); for any other model the config is kept at rate 0."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai.scorers import ScorerSamplingConfig, get_scorer

    try:
        registered = get_scorer(name=name, experiment_id=experiment_id)
    except MlflowException:
        registered = None
    if registered is None:  # the base judge watches until align registers a version
        registered = judge.register(name=name, experiment_id=experiment_id)
    try:
        registered.start(name=name, experiment_id=experiment_id,
                         sampling_config=ScorerSamplingConfig(sample_rate=sample_rate, filter_string=filter_string))
        return f"sample rate {sample_rate}"
    except MlflowException as e:
        if "gateway model" not in str(e):
            raise
        registered.update(name=name, experiment_id=experiment_id,
                          sampling_config=ScorerSamplingConfig(sample_rate=0.0, filter_string=filter_string))
        return "server-side sampling off (its model is not an MLflow gateway model); this stage scores"
