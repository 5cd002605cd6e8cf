"""Reading what the stages need from MLflow traces: the judged fields and the assessments."""

from __future__ import annotations

from typing import Any


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
