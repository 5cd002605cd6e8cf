"""Judge kinds: what a judge's ``feedback_value_type`` means, one small type per kind.

A judge gives pass/fail (``bool``), a number in a range (``float``; ``judge.scale: [low, high]``,
0..1 when not given, held as the kind's ``low``/``high``; ``pass_threshold`` must lie on it) or
one of its categories, best first (``categorical``).
Every question the pipeline asks of a value type is answered by its kind: how to parse an
expert's label, whether a value passes, its score in [0, 1] for the optimizer, whether it is
too close to call, the rubric expert's value for the checks met, the reviewer's widget (plain
data: the store builds MLflow's input from it) and the python type ``make_judge`` is given.
``kind_of(judge_cfg)`` builds the kind of a judge config node (OmegaConf or a dict).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from jobs.core.errors import UserError

TRUE = {"true", "yes", "1", "pass", "passed", "good", "y"}  # what an expert's yes/no label may say
FALSE = {"false", "no", "0", "fail", "failed", "bad", "n"}


def category_for(categories: list[Any], share: float) -> Any:
    """The category for a response meeting ``share`` of its checks: the best when it meets
    every one, the worst below half, a middle one in between (the rubric expert and the
    simulator's judge both grade this way)."""
    if share >= 1.0:
        return categories[0]
    return categories[len(categories) // 2] if len(categories) > 2 and share >= 0.5 else categories[-1]


@dataclass(frozen=True)
class JudgeKind:
    """The answers every kind gives; ``None`` values (no verdict) pass through as ``None``."""

    NAME: ClassVar[str]  # the config's judge.feedback_value_type

    @classmethod
    def from_config(cls, judge_cfg: Any) -> JudgeKind:
        return cls()

    def value_type(self) -> Any:
        """The python type for ``make_judge(feedback_value_type=...)``."""
        raise NotImplementedError

    def parse(self, value: Any, where: str) -> Any:
        """An expert's label as a value of this kind; a UserError naming ``where`` otherwise."""
        raise NotImplementedError

    def passed(self, value: Any) -> bool | None:
        """Whether a value counts as a pass (None when there is no value)."""
        return None if value is None else self._passed(value)

    def score(self, value: Any) -> float | None:
        """A value as a number in [0, 1] for the optimizer's search (None when there is none)."""
        return None if value is None else self._score(value)

    def score_fn(self) -> Callable[[Any], float] | None:
        """What the optimizer turns a judge value into a number with; None when it takes the
        value as it is."""
        return lambda value: self.score(value) or 0.0

    def borderline(self, value: Any, margin: float) -> bool:
        """A pass too close to call."""
        return False

    def value_for(self, share: float) -> Any:
        """The value for a response meeting ``share`` (0..1) of its checks."""
        raise NotImplementedError

    def rubric_value(self, met: int, checked: int) -> Any:
        """The rubric expert's verdict for ``met`` of ``checked`` checks (none checked: all met)."""
        return self.value_for(met / checked if checked else 1.0)

    def widget(self) -> dict[str, Any]:
        """The reviewer's widget as plain data: ``input`` names it, the rest are its settings."""
        raise NotImplementedError

    def describe_scale(self) -> str:
        """A sentence on the judge's scale for its instructions; empty for kinds without one."""
        return ""

    def _passed(self, value: Any) -> bool:
        raise NotImplementedError

    def _score(self, value: Any) -> float | None:
        raise NotImplementedError


@dataclass(frozen=True)
class PassFail(JudgeKind):
    """A yes/no verdict."""

    NAME: ClassVar[str] = "bool"
    positive_label: str = "Pass"  # the reviewer's two buttons
    negative_label: str = "Fail"

    def value_type(self) -> Any:
        return bool

    def parse(self, value: Any, where: str) -> Any:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise UserError(f"{where}: value '{value}' is not a yes/no label; use true or false")

    def score_fn(self) -> Callable[[Any], float] | None:
        return None  # the optimizer takes a pass/fail as it is

    def value_for(self, share: float) -> Any:
        return share >= 1.0

    def widget(self) -> dict[str, Any]:
        return {"input": "pass_fail", "positive_label": self.positive_label, "negative_label": self.negative_label}

    def _passed(self, value: Any) -> bool:
        return value if isinstance(value, bool) else str(value).lower() in ("true", "yes", "1")

    def _score(self, value: Any) -> float | None:
        return 1.0 if self._passed(value) else 0.0


@dataclass(frozen=True)
class Numeric(JudgeKind):
    """A number from ``low`` to ``high``; at or above ``threshold`` it passes."""

    NAME: ClassVar[str] = "float"
    low: float = 0.0
    high: float = 1.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"a numeric judge's range needs low < high, got {self.low}..{self.high}")

    @classmethod
    def from_config(cls, judge_cfg: Any) -> JudgeKind:
        low, high = scale_of(judge_cfg)
        threshold = judge_cfg.get("pass_threshold", 0.5)
        threshold = 0.5 if threshold is None else float(threshold)
        if not low <= threshold <= high:
            declare = "" if judge_cfg.get("scale") is not None else ", or declare the judge's range as judge.scale, e.g. [1, 5]"
            raise UserError(f"judge.pass_threshold={threshold:g} is outside judge.scale [{low:g}, {high:g}]; no value "
                            f"of the judge can reach it: set judge.pass_threshold between {low:g} and {high:g}{declare}")
        return cls(low=low, high=high, threshold=threshold)

    def describe_scale(self) -> str:
        """The sentence the judge's instructions end with (the simulator's judge reads it)."""
        return (f"Give the result as a number on a scale from {self.low:g} to {self.high:g}, where {self.low:g} is the "
                f"worst and {self.high:g} the best.")

    def value_type(self) -> Any:
        return float

    def parse(self, value: Any, where: str) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: value '{value}' is not a number; the judge's feedback type is float") from None
        if not self.low <= number <= self.high:
            raise UserError(f"{where}: value {number:g} is outside the judge's scale {self.low:g} to {self.high:g} "
                            "(judge.scale); give a value on that scale")
        return number

    def borderline(self, value: Any, margin: float) -> bool:
        return abs(float(value) - self.threshold) <= margin

    def value_for(self, share: float) -> Any:
        return round(self.low + share * (self.high - self.low), 3)

    def widget(self) -> dict[str, Any]:
        return {"input": "numeric", "min_value": self.low, "max_value": self.high}

    def _passed(self, value: Any) -> bool:
        return float(value) >= self.threshold

    def _score(self, value: Any) -> float | None:
        # low is 0 and high is 1, whatever the scale; a judge's number off its scale (a 6 on 1-5) is clipped
        return min(1.0, max(0.0, (float(value) - self.low) / (self.high - self.low)))


@dataclass(frozen=True)
class Categorical(JudgeKind):
    """One of ``options``, best first: the best passes; a middle one is borderline."""

    NAME: ClassVar[str] = "categorical"
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.options:
            raise UserError("judge.categories is empty; a categorical judge needs its allowed values, best first")
        if any(not option.strip() for option in self.options):
            raise UserError(f"judge.categories {list(self.options)} has an empty category; give every category a "
                            "name, best first")
        if (twice := next((o for i, o in enumerate(self.options) if o in self.options[:i]), None)) is not None:
            raise UserError(f"judge.categories {list(self.options)} has '{twice}' twice; list each category once, "
                            "best first")

    @classmethod
    def from_config(cls, judge_cfg: Any) -> JudgeKind:
        return cls(options=tuple("" if c is None else str(c) for c in judge_cfg.get("categories") or ()))

    def value_type(self) -> Any:
        return Literal[self.options]  # type: ignore[valid-type]

    def parse(self, value: Any, where: str) -> Any:
        if str(value) not in self.options:
            raise UserError(f"{where}: value '{value}' is not one of the judge's categories {list(self.options)}")
        return str(value)

    def borderline(self, value: Any, margin: float) -> bool:
        return str(value) in self.options[1:-1]

    def value_for(self, share: float) -> Any:
        return category_for(list(self.options), share)

    def widget(self) -> dict[str, Any]:
        return {"input": "categorical", "options": list(self.options)}

    def _passed(self, value: Any) -> bool:
        return str(value) == self.options[0]

    def _score(self, value: Any) -> float | None:
        if str(value) not in self.options:
            return None
        return 1.0 - self.options.index(str(value)) / max(1, len(self.options) - 1)


def scale_of(judge_cfg: Any) -> tuple[float, float]:
    """A numeric judge's declared range ``judge.scale: [low, high]``; [0, 1] when not given."""
    scale = judge_cfg.get("scale")
    if scale is None:
        return 0.0, 1.0
    try:
        low, high = (float(x) for x in scale)
    except (TypeError, ValueError):
        raise UserError(f"judge.scale={scale} must be two numbers [low, high], like [1, 5]") from None
    if not low < high:
        raise UserError(f"judge.scale [{low:g}, {high:g}] needs low < high, like [1, 5]")
    return low, high


def instructions(judge_cfg: Any) -> str:
    """The judge's instructions as the judge (and a reviewer) is given them: a numeric judge's end
    with its scale (``describe_scale``), so it answers on the range its threshold and labels use."""
    scale = kind_of(judge_cfg).describe_scale()
    return f"{str(judge_cfg.get('instructions')).rstrip()}\n{scale}\n" if scale else str(judge_cfg.get("instructions"))


KINDS: dict[str, type[JudgeKind]] = {k.NAME: k for k in (PassFail, Numeric, Categorical)}
VALUE_TYPES = tuple(KINDS)


def kind_of(judge_cfg: Any) -> JudgeKind:
    """The kind of a judge config node (``feedback_value_type``, ``categories``, ``pass_threshold``)."""
    name = judge_cfg.get("feedback_value_type", "bool")
    if str(name) not in KINDS:
        raise UserError(f"judge.feedback_value_type '{name}' is unknown; use one of {', '.join(VALUE_TYPES)}")
    return KINDS[str(name)].from_config(judge_cfg)
