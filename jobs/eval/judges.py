"""Judges from config: ``make_judge`` fields plus optional built-in MLflow scorers."""

from __future__ import annotations

import re
from typing import Any

from jobs.core import judge_kinds
from jobs.core.errors import UserError
from jobs.core.judge_kinds import kind_of


def check(judge_cfg: Any) -> None:
    name = str(judge_cfg.get("name") or "")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"judge.name '{name}' must be letters, digits, '_' or '-'; expert feedback uses this exact name")
    kind_of(judge_cfg)  # an unknown value type, or a categorical judge without categories, is refused
    instructions = str(judge_cfg.instructions or "")
    if "{{ outputs }}" not in instructions and "{{ trace }}" not in instructions:
        raise UserError("judge.instructions must mention {{ outputs }} (or {{ trace }}) so the judge sees the response")


def value_type(judge_cfg: Any) -> Any:
    return kind_of(judge_cfg).value_type()


def passed(judge_cfg: Any, value: Any) -> bool | None:
    """Whether a judge value counts as a pass (None when there is no value)."""
    return kind_of(judge_cfg).passed(value)


def category_for(categories: list[Any], share: float) -> Any:
    """The category for a response meeting ``share`` of its checks (see ``judge_kinds.category_for``)."""
    return judge_kinds.category_for(categories, share)


def score(judge_cfg: Any, value: Any) -> float | None:
    """A judge value as a number in [0, 1] for GEPA's search: a pass is 1; a categorical value
    by its rank (best 1, worst 0), so a partial answer counts between."""
    return kind_of(judge_cfg).score(value)


def model_uri(judge_cfg: Any, endpoint: Any) -> str:
    return str(judge_cfg.get("model") or endpoint.uri(endpoint.judge_model))


def instructions(judge_cfg: Any) -> str:
    """The judge's instructions with a numeric judge's scale (see ``judge_kinds.instructions``)."""
    return judge_kinds.instructions(judge_cfg)


def build(judge_cfg: Any, endpoint: Any):
    from mlflow.genai.judges import make_judge

    return make_judge(name=str(judge_cfg.name), instructions=instructions(judge_cfg),
                      feedback_value_type=value_type(judge_cfg), model=model_uri(judge_cfg, endpoint))


def assessment_name(scorer: Any) -> str:
    """The name MLflow records a built-in scorer's values under (its ``name``; compare's scorer
    means are keyed by it): the class name in snake case, ``Safety`` -> ``safety``,
    ``RelevanceToQuery`` -> ``relevance_to_query``. A name already in that form is kept."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(scorer)).lower()


def scorer_name(spec: Any) -> str:
    """A ``judge.scorers`` entry's name: the class name (``Safety``), or a mapping's
    ``name`` (its ``class`` when it has none): ``{class: Guidelines, name: Polite, guidelines: [...]}``."""
    if isinstance(spec, str):
        return spec
    return str(spec.get("name") or spec.get("class") or "")


def further_scorers(names: list[Any], endpoint: Any) -> list[Any]:
    """The built-in MLflow scorers ``judge.scorers`` lists: a class name (``Safety``), or
    a mapping with ``class`` and the scorer's own settings (``guidelines: [...]`` for
    ``Guidelines``) and optionally ``name``. Each records under ``assessment_name`` of its name."""
    import mlflow.genai.scorers as scorers

    out = []
    for spec in names:
        if isinstance(spec, str):
            cls_name, settings = spec, {}
        else:
            from omegaconf import OmegaConf

            settings = OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else dict(spec)
            cls_name = str(settings.pop("class", None) or settings.pop("name", ""))
        cls = getattr(scorers, cls_name, None)
        if cls is None or not isinstance(cls, type):
            raise UserError(f"judge.scorers: MLflow has no scorer '{cls_name}'; see mlflow.genai.scorers "
                            "(give a class name, or {class: Guidelines, guidelines: [...]})")
        if "name" in settings:
            settings["name"] = assessment_name(settings["name"])
        try:
            out.append(cls(model=endpoint.uri(endpoint.judge_model), **settings))
        except (TypeError, ValueError) as e:
            raise UserError(f"judge.scorers: {cls_name}({', '.join(settings)}): {e}") from None
    return out


NOT_JUDGED = "not judged: the agent call failed (the row is an error)"


def skip_failed_rows(judge: Any) -> Any:
    """The judge as a scorer that leaves a row whose agent call failed unjudged. MLflow 3.18's
    judges otherwise fall back to reading the failed trace with tools when ``outputs`` is None,
    spending judge calls on a crash (on a small local model, minutes per row) that the row's
    ERROR state already makes an error."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name=judge.name)
    def unless_failed(inputs: Any = None, outputs: Any = None, expectations: Any = None, trace: Any = None) -> Any:
        state = str(getattr(getattr(getattr(trace, "info", None), "state", None), "value", "OK"))
        if outputs is None and state != "OK":
            return Feedback(name=judge.name, error=NOT_JUDGED)
        return judge.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)

    return unless_failed
