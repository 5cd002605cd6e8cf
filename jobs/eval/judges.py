"""Judges from config: ``make_judge`` fields, plus further scorers (MLflow built-ins or custom judges)."""

from __future__ import annotations

import re
from typing import Any

from jobs.core import judge_kinds
from jobs.core.errors import UserError
from jobs.core.judge_kinds import kind_of


def check(judge_cfg: Any) -> None:
    """The domain judge and every ``judge.scorers`` entry, before anything heavy is imported:
    a UserError naming the key and the fix (see ``check_scorers``)."""
    _check_judge(judge_cfg, "judge")
    check_scorers(judge_cfg)


def _check_judge(judge_cfg: Any, where: str) -> None:
    """A make_judge judge's fields (the domain judge at ``judge``, a custom one at ``judge.scorers[i]``)."""
    name = str(judge_cfg.get("name") or "")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"{where}.name '{name}' must be letters, digits, '_' or '-'; "
                        + ("expert feedback uses this exact name" if where == "judge" else "its values are recorded under it"))
    try:
        kind_of(judge_cfg)  # an unknown value type, or a categorical judge without categories, is refused
    except UserError as e:
        if where == "judge":
            raise
        raise UserError(str(e).replace("judge.", f"{where}.")) from None
    instructions = str(judge_cfg.get("instructions") or "")
    if "{{ outputs }}" not in instructions and "{{ trace }}" not in instructions:
        raise UserError(f"{where}.instructions must mention {{{{ outputs }}}} (or {{{{ trace }}}}) so the judge sees the response")


CUSTOM_KEYS = ("name", "instructions", "feedback_value_type", "categories", "scale", "pass_threshold", "model")
CUSTOM_EXAMPLE = "{name: concise, instructions: 'Is the response in {{ outputs }} under 80 words?'}"


def is_custom(spec: Any) -> bool:
    """Whether a ``judge.scorers`` entry is a custom judge (a mapping with ``instructions``)."""
    return not isinstance(spec, str) and spec.get("instructions") is not None


def check_scorers(judge_cfg: Any) -> None:
    """Each ``judge.scorers`` entry: an MLflow class name, a mapping with ``class`` (and that
    scorer's settings), or a custom judge (``name`` and ``instructions``, with the domain judge's
    optional fields), never both ``class`` and ``instructions`` nor neither. A custom judge gets
    the domain judge's checks. Every entry records under a name of its own."""
    judge = assessment_name(str(judge_cfg.get("name") or ""))
    taken = {judge: "the domain judge (judge.name)", f"{judge}_passed": "the domain judge's verdict in compare"}
    for i, spec in enumerate(judge_cfg.get("scorers") or []):
        where = f"judge.scorers[{i}]"
        if not isinstance(spec, str):
            if not hasattr(spec, "get") or not hasattr(spec, "keys"):
                raise UserError(f"{where} is {spec!r}; give an MLflow scorer's class name ([Safety]), "
                                f"{{class: Guidelines, guidelines: [...]}} or a custom judge {CUSTOM_EXAMPLE}")
            has_class, has_instructions = spec.get("class") is not None, spec.get("instructions") is not None
            if has_class and has_instructions:
                raise UserError(f"{where} has both class and instructions; give class for an MLflow scorer "
                                "({class: Guidelines, guidelines: [...]}) or instructions for a custom judge "
                                f"{CUSTOM_EXAMPLE}, not both")
            if not has_class and not has_instructions:
                raise UserError(f"{where} has neither class nor instructions; give class for an MLflow scorer "
                                f"({{class: Guidelines, guidelines: [...]}}) or a custom judge {CUSTOM_EXAMPLE}")
            if has_instructions:
                unknown = sorted(set(map(str, spec.keys())) - set(CUSTOM_KEYS))
                if unknown:
                    raise UserError(f"{where}: a custom judge has no key(s) {unknown}; allowed: {', '.join(CUSTOM_KEYS)}")
                _check_judge(spec, where)
        name = scorer_name(spec)
        if not name:
            raise UserError(f"{where} has no name; give a class name ([Safety]) or name: ...")
        recorded = assessment_name(name)
        if recorded in taken:
            raise UserError(f"{where}: the name '{name}' is already {taken[recorded]}'s (both would be recorded as "
                            f"'{recorded}'); give {where} a name of its own (name: ...)")
        taken[recorded] = where


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
    """A make_judge judge from its config fields: the domain judge, or a custom judge of ``judge.scorers``."""
    from mlflow.genai.judges import make_judge

    return make_judge(name=str(judge_cfg.get("name")), instructions=instructions(judge_cfg),
                      feedback_value_type=value_type(judge_cfg), model=model_uri(judge_cfg, endpoint))


def assessment_name(scorer: Any) -> str:
    """The name MLflow records a built-in scorer's values under (its ``name``; compare's scorer
    means are keyed by it): the class name in snake case, ``Safety`` -> ``safety``,
    ``RelevanceToQuery`` -> ``relevance_to_query``. A name already in that form is kept."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(scorer)).lower()


def scorer_name(spec: Any) -> str:
    """A ``judge.scorers`` entry's name: the class name (``Safety``), or a mapping's ``name``
    (its ``class`` when it has none): ``{class: Guidelines, name: Polite, guidelines: [...]}``,
    ``{name: concise, instructions: ...}``."""
    if isinstance(spec, str):
        return spec
    return str(spec.get("name") or spec.get("class") or "")


def further_scorers(names: list[Any], endpoint: Any) -> list[Any]:
    """The scorers ``judge.scorers`` lists beside the domain judge (``check`` has checked them):

    * an MLflow built-in class name (``Safety``; ``ToolCallCorrectness`` and ``ToolCallEfficiency``
      read the agent's TOOL spans from its trace);
    * a mapping with ``class``, the scorer's own settings (``guidelines: [...]`` for
      ``Guidelines``) and optionally ``name``;
    * a custom judge: a mapping with ``name`` and ``instructions`` and the domain judge's optional
      fields (``feedback_value_type``, ``categories``, ``scale``, ``pass_threshold``, ``model``),
      built by ``build`` with MLflow's ``make_judge``.

    Each records under ``assessment_name`` of its name."""
    import mlflow.genai.scorers as scorers
    from omegaconf import OmegaConf

    out = []
    for spec in names:
        if isinstance(spec, str):
            cls_name, settings = spec, {}
        else:
            settings = OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else dict(spec)
            if is_custom(settings):
                out.append(build(OmegaConf.create({**settings, "name": assessment_name(settings["name"])}), endpoint))
                continue
            cls_name = str(settings.pop("class", None) or "")
        cls = getattr(scorers, cls_name, None)
        if cls is None or not isinstance(cls, type):
            raise UserError(f"judge.scorers: MLflow has no scorer '{cls_name}'; see mlflow.genai.scorers "
                            f"(give a class name, {{class: Guidelines, guidelines: [...]}} or a custom judge {CUSTOM_EXAMPLE})")
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
