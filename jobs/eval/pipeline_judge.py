"""Which judge a pipeline uses after align: the registered aligned version align recorded (its
MemAlign memory loaded), or the base judge from config when alignment kept it; and how far
that judge agrees with the experts. Compare, optimize, gate and the monitor all ask here."""

from __future__ import annotations

from typing import Any

from jobs.core.results import AlignResult
from jobs.eval import judges
from jobs.store import scorers

NOT_ENOUGH = "not enough held-out labels to measure agreement"


def judge_agreement(align_result: AlignResult | None) -> tuple[float | None, str]:
    """The held-out kappa of the judge later stages use (the aligned one if registered, else
    the base judge), and what it rests on; None when align measured nothing."""
    if align_result is None:
        return None, "no align stage in this pipeline"
    if align_result.measured is False:
        return None, str(align_result.reason or NOT_ENOUGH)
    kappa = align_result.kappa_after if align_result.judge_version else align_result.kappa_before
    n = align_result.holdout_scored if align_result.holdout_scored is not None else align_result.holdout
    if kappa is None:
        return None, f"held-out kappa is undefined on {n} labels"
    return float(kappa), f"on {n} held-out labels"


def recorded_judge(judge_cfg: Any, align_result: AlignResult | None, experiment_id: str,
                   endpoint: Any) -> tuple[Any, dict]:
    """The judge later stages must use: the version ``align_result`` registered, else the base judge."""
    if align_result is not None and align_result.judge_version:
        return judge_version(judge_cfg, experiment_id, endpoint, str(align_result.judge_name), align_result.judge_version)
    return judge_version(judge_cfg, experiment_id, endpoint, str(judge_cfg.name), "base")


def judge_version(judge_cfg: Any, experiment_id: str, endpoint: Any, name: str, version: Any) -> tuple[Any, dict]:
    """A registered judge version (its MemAlign memory loaded), or the base judge from config for "base"."""
    if str(version) == "base":
        return judges.build(judge_cfg, endpoint), {"judge_name": str(judge_cfg.name), "judge_version": "base"}
    from jobs.llm.compat import load_memalign_memory

    judge = load_memalign_memory(scorers.load(name, int(version), experiment_id))
    return judge, {"judge_name": name, "judge_version": int(version)}


def verdict_name(judge_name: str) -> str:
    """The assessment that holds a judge's pass/fail verdict on each compare row."""
    return f"{judge_name}_passed"


def with_verdict(judge: Any, judge_cfg: Any) -> Any:
    """The judge as a scorer that also records its verdict (``judges.passed``) as a boolean
    feedback ``<judge>_passed``: the outcome compare decides on, in the form MLflow's
    ``compare_evaluations`` pairs with McNemar's test, whatever the judge's kind (a 1-5 score or
    a category is not what the gate counts; its pass is)."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name=judge.name)
    def judged_with_verdict(inputs: Any = None, outputs: Any = None, expectations: Any = None, trace: Any = None) -> Any:
        feedback = judge.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)
        verdict = judges.passed(judge_cfg, feedback.value) if getattr(feedback, "error", None) is None else None
        if verdict is None:
            return feedback
        return [feedback, Feedback(name=verdict_name(judge.name), value=bool(verdict),
                                   rationale=f"{judge.name} {feedback.value!r}: {'pass' if verdict else 'fail'}")]

    return judged_with_verdict
