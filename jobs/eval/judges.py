"""Judges from config: ``make_judge`` fields plus optional built-in MLflow scorers."""

from __future__ import annotations

from typing import Any, Literal

from jobs.core.errors import UserError

VALUE_TYPES = ("bool", "float", "categorical")


def check(judge_cfg: Any) -> None:
    name = str(judge_cfg.get("name") or "")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"judge.name '{name}' must be letters, digits, '_' or '-'; expert feedback uses this exact name")
    if judge_cfg.feedback_value_type not in VALUE_TYPES:
        raise UserError(f"judge.feedback_value_type '{judge_cfg.feedback_value_type}' is unknown; use one of {', '.join(VALUE_TYPES)}")
    if judge_cfg.feedback_value_type == "categorical" and not judge_cfg.get("categories"):
        raise UserError("judge.categories is empty; a categorical judge needs its allowed values, best first")
    instructions = str(judge_cfg.instructions or "")
    if "{{ outputs }}" not in instructions and "{{ trace }}" not in instructions:
        raise UserError("judge.instructions must mention {{ outputs }} (or {{ trace }}) so the judge sees the response")


def value_type(judge_cfg: Any) -> Any:
    kind = judge_cfg.feedback_value_type
    if kind == "bool":
        return bool
    if kind == "float":
        return float
    return Literal[tuple(judge_cfg.categories)]  # type: ignore[misc]


def passed(judge_cfg: Any, value: Any) -> bool | None:
    """Whether a judge value counts as a pass (None when there is no value)."""
    if value is None:
        return None
    kind = judge_cfg.feedback_value_type
    if kind == "bool":
        return str(value).lower() in ("true", "yes", "1") if not isinstance(value, bool) else value
    if kind == "float":
        return float(value) >= float(judge_cfg.get("pass_threshold", 0.5))
    return str(value) == str(judge_cfg.categories[0])


def category_for(categories: list[Any], share: float) -> Any:
    """The category for a response meeting ``share`` of its checks: the best when it meets
    every one, the worst below half, a middle one in between (the rubric expert and the
    simulator's judge both grade this way)."""
    if share >= 1.0:
        return categories[0]
    return categories[len(categories) // 2] if len(categories) > 2 and share >= 0.5 else categories[-1]


def score(judge_cfg: Any, value: Any) -> float | None:
    """A judge value as a number in [0, 1] for GEPA's search: a pass is 1; a categorical value
    by its rank (best 1, worst 0), so a partial answer counts between."""
    if value is None:
        return None
    kind = judge_cfg.feedback_value_type
    if kind == "bool":
        return 1.0 if passed(judge_cfg, value) else 0.0
    if kind == "float":
        return float(value)
    cats = [str(c) for c in judge_cfg.categories]
    if str(value) not in cats:
        return None
    return 1.0 - cats.index(str(value)) / max(1, len(cats) - 1)


def model_uri(judge_cfg: Any, endpoint: Any) -> str:
    return str(judge_cfg.get("model") or endpoint.uri(endpoint.judge_model))


def build(judge_cfg: Any, endpoint: Any):
    from mlflow.genai.judges import make_judge

    return make_judge(name=str(judge_cfg.name), instructions=str(judge_cfg.instructions),
                      feedback_value_type=value_type(judge_cfg), model=model_uri(judge_cfg, endpoint))


def builtin_scorers(names: list[str], endpoint: Any) -> list[Any]:
    import mlflow.genai.scorers as scorers

    out = []
    for name in names:
        cls = getattr(scorers, str(name), None)
        if cls is None:
            raise UserError(f"judge.builtin_scorers: MLflow has no scorer '{name}'; see mlflow.genai.scorers")
        out.append(cls(model=endpoint.uri(endpoint.judge_model)))
    return out
