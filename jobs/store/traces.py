"""MLflow traces: searching them, reading the judged fields and assessments, writing tags,
feedback and expectations."""

from __future__ import annotations

from typing import Any

from jobs.core.contract import TAG_TRAFFIC
from jobs.core.errors import UserError


def _kind(source: Any) -> str:
    return str(getattr(source.source_type, "value", source.source_type))


def feedbacks(trace: Any, name: str, source_type: str) -> list[Any]:
    """Feedback assessments of a trace under one name from one kind of source (HUMAN, LLM_JUDGE)."""
    return [a for a in trace.info.assessments or []
            if a.name == name and getattr(a, "feedback", None) is not None and _kind(a.source) == source_type]


def human_feedback_names(trace: Any) -> set[str]:
    return {a.name for a in trace.info.assessments or []
            if getattr(a, "feedback", None) is not None and _kind(a.source) == "HUMAN"}


def root_span(trace: Any) -> Any | None:
    return next((s for s in trace.data.spans if s.parent_id is None), None)


def response_of(trace: Any) -> str:
    root = root_span(trace)
    out = root.outputs if root is not None else None
    return out if isinstance(out, str) else str(out or "")


def inputs_of(trace: Any) -> dict[str, Any]:
    root = root_span(trace)
    inputs = root.inputs if root is not None else None
    return inputs if isinstance(inputs, dict) else {"input": inputs}


def expectations_of(trace: Any) -> dict[str, Any]:
    return {a.name: a.expectation.value for a in trace.info.assessments or []
            if getattr(a, "expectation", None) is not None}


def judge_fields(trace: Any) -> dict[str, Any]:
    """Keyword arguments for calling a field-based judge on this trace."""
    return {"inputs": inputs_of(trace), "outputs": response_of(trace), "expectations": expectations_of(trace)}


def search(experiment_id: str, filter_string: str, run_id: str | None = None, include_spans: bool = True,
           max_results: int = 5000, order_by: list[str] | None = None) -> list[Any]:
    """Traces of an experiment matching a filter (of one run, if given)."""
    import mlflow

    return mlflow.search_traces(locations=[experiment_id], filter_string=filter_string or None, run_id=run_id,
                                return_type="list", max_results=max_results, include_spans=include_spans,
                                order_by=order_by)


def search_user_filter(experiment_id: str, key: str, user_filter: str, since_ms: int, max_results: int) -> list[Any]:
    """Traces matching a filter the user wrote (config ``key``), from ``since_ms`` on, oldest
    first; a filter MLflow rejects is bad input naming the key."""
    from mlflow.exceptions import MlflowException

    try:
        return search(experiment_id, f"{user_filter} AND trace.timestamp_ms >= {since_ms}",
                      max_results=max_results, order_by=["timestamp_ms ASC"])
    except MlflowException as e:
        raise UserError(f"{key} \"{user_filter}\" is not a trace filter MLflow accepts "
                        f"({' '.join(str(e).split())[:200]}); write it as in search_traces, e.g. "
                        f"tags.`{TAG_TRAFFIC}` = 'production'") from None


def get(trace_id: str) -> Any:
    import mlflow

    return mlflow.get_trace(trace_id)


def set_tags(trace_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_trace_tag(trace_id, key, value)


def log_feedback(trace_id: str, name: str, value: Any, rationale: str, source_type: str, source_id: str) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource

    mlflow.log_feedback(trace_id=trace_id, name=name, value=value, rationale=rationale,
                        source=AssessmentSource(source_type=source_type, source_id=source_id))


def log_verdict(trace_id: str, feedback: Any, metadata: dict[str, str]) -> None:
    """A judge's Feedback on a trace, with metadata saying who gave it."""
    import mlflow

    feedback.metadata = {**(feedback.metadata or {}), **metadata}
    mlflow.log_assessment(trace_id=trace_id, assessment=feedback)


def log_expectations(trace_id: str, expectations: dict[str, Any], source_id: str) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource

    source = AssessmentSource(source_type="CODE", source_id=source_id)
    for key, value in expectations.items():
        mlflow.log_expectation(trace_id=trace_id, name=key, value=value, source=source)


def active_trace_id() -> str | None:
    """The trace being written in this thread (inside a traced call)."""
    import mlflow

    return mlflow.get_active_trace_id()


def flush() -> None:
    """Traces are exported asynchronously: flush before tagging or assessing them."""
    import mlflow

    mlflow.flush_trace_async_logging()


def link_to_run(trace_ids: list[str], run_id: str) -> None:
    """Link traces to a run so that searching the run's traces finds them (at most 100 per call)."""
    from mlflow.tracking import MlflowClient

    for start in range(0, len(trace_ids), 100):
        MlflowClient().link_traces_to_run(trace_ids[start:start + 100], run_id)
