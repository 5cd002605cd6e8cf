"""A hard cap on metric calls (judged rows). GEPA checks its own budget only between
iterations and overshoots (12 asked, 18 used), so promptgate counts every call itself."""

from __future__ import annotations

import threading
from typing import Any


class MetricBudget:
    """Counts judged rows; refuses past the cap. Also a GEPA stop callback, asked before each
    iteration, that lets an iteration start only if the cap splits none of its batches: the
    parent and child minibatches must fit, and what is left must be nothing or the whole
    validation set. GEPA scores a batch's rows on parallel threads, so which rows of a split
    batch got through would depend on thread timing, and a rerun would miss the cache."""

    def __init__(self, cap: int, minibatch: int = 0, n_val: int = 0):
        self.cap = cap
        self.minibatch = minibatch
        self.n_val = n_val
        self.used = 0
        self.refused = 0
        self.judge_errors = 0  # malformed replies or exhausted retries
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.cap:
                self.refused += 1
                return False
            self.used += 1
            return True

    @property
    def spent(self) -> bool:
        return self.used >= self.cap

    def __call__(self, _gepa_state: Any = None) -> bool:  # GEPA's StopperProtocol, asked between iterations
        left_for_val = self.cap - self.used - 2 * self.minibatch
        return self.spent or left_for_val < 0 or 0 < left_for_val < self.n_val


NOT_SCORED = "not scored: the max_metric_calls budget is spent"


JUDGE_ERROR = "judge error (no verdict; scored 0 for the search only)"


def budgeted_scorer(judge: Any, budget: MetricBudget, to_number: Any = None) -> Any:
    """The judge as an MLflow scorer that stops calling the judge once the budget is spent.
    GEPA needs a number for every row, so a row the judge could not score (malformed reply,
    retries exhausted) counts 0 in the search and is counted in ``budget.judge_errors``; no
    reported pass rate comes from these scores (compare scores the candidate afresh).
    ``to_number`` turns a categorical judge's value into the number GEPA aggregates."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name=judge.name)
    def budgeted(inputs: Any = None, outputs: Any = None, expectations: Any = None) -> Feedback:
        if not budget.take():
            return Feedback(name=judge.name, value=False, rationale=NOT_SCORED)
        try:
            fb = judge(inputs=inputs, outputs=outputs, expectations=expectations)
            if to_number is not None and getattr(fb, "value", None) is not None:  # GEPA aggregates numbers only
                fb = Feedback(name=judge.name, value=to_number(fb.value), rationale=fb.rationale)
            return fb
        except Exception as e:  # noqa: BLE001 - any judge failure is one error row, not a crash
            with budget._lock:
                budget.judge_errors += 1
            return Feedback(name=judge.name, value=False, rationale=f"{JUDGE_ERROR}: {str(e)[:200]}")

    return budgeted


class GepaSummaryLogger:
    """GEPA's logger protocol, keeping one line per iteration (its best score so far)
    instead of GEPA's per-row score dumps; the progress bar shows the rest."""

    def log(self, message: str) -> None:
        if "Best valset aggregate score so far" in message or "Base program full valset score" in message:
            print(f"[optimize] GEPA {message.strip()}", flush=True)
