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
        self.judge_errors = 0  # rows the judge gave no verdict on (malformed replies, failed calls)
        self.agent_errors = 0  # rows whose agent call failed: never judged
        self.first_error: str | None = None  # the first of either, for the stage's summary
        self._lock = threading.Lock()

    def failed(self, where: str, error: object) -> None:
        """Count a row that got no verdict (``where``: agent or judge), keeping the first error."""
        with self._lock:
            if where == "agent":
                self.agent_errors += 1
            else:
                self.judge_errors += 1
            if self.first_error is None:
                self.first_error = f"{where}: {' '.join(str(error).split())[:300]}"

    @property
    def judged(self) -> int:
        """Metric calls that ended in a verdict: what GEPA's scores rest on."""
        return self.used - self.agent_errors - self.judge_errors

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
AGENT_ERROR = "agent error (not judged; scored 0 for the search only)"
AGENT_FAILED = "promptgate: the agent call failed: "  # what the search's predict_fn returns for a failed call
PREDICT_FAILED = (AGENT_FAILED, "Failed to invoke the predict_fn")  # ours, and what MLflow writes for a raise


def agent_failed(outputs: Any) -> bool:
    """Whether GEPA's output for a row is a failed agent call rather than an answer."""
    return isinstance(outputs, str) and outputs.startswith(PREDICT_FAILED)


def budgeted_scorer(judge: Any, budget: MetricBudget, to_number: Any = None) -> Any:
    """The judge as an MLflow scorer that stops calling the judge once the budget is spent.
    GEPA needs a number for every row, so a row whose agent call failed (never judged: its
    "output" is an error message) or that the judge could not score (malformed reply, failed
    call, no value) counts 0 in the search and in ``budget.agent_errors`` or ``judge_errors``;
    no reported pass rate comes from these scores (compare scores the candidate afresh).
    ``to_number`` turns a categorical judge's value into the number GEPA aggregates."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name=judge.name)
    def budgeted(inputs: Any = None, outputs: Any = None, expectations: Any = None) -> Feedback:
        if not budget.take():
            return Feedback(name=judge.name, value=False, rationale=NOT_SCORED)
        if agent_failed(outputs):
            budget.failed("agent", outputs.removeprefix(AGENT_FAILED))
            return Feedback(name=judge.name, value=False, rationale=f"{AGENT_ERROR}: {outputs[:200]}")
        try:
            fb = judge(inputs=inputs, outputs=outputs, expectations=expectations)
        except Exception as e:  # noqa: BLE001 - any judge failure is one error row, not a crash
            fb = Feedback(name=judge.name, error=e)
        error = getattr(fb, "error", None)
        if error is not None or getattr(fb, "value", None) is None:
            why = getattr(error, "error_message", None) or error or "the judge gave no value"
            budget.failed("judge", why)
            return Feedback(name=judge.name, value=False, rationale=f"{JUDGE_ERROR}: {str(why)[:200]}")
        if to_number is not None:  # GEPA aggregates numbers only
            fb = Feedback(name=judge.name, value=to_number(fb.value), rationale=fb.rationale)
        return fb

    return budgeted


class GepaSummaryLogger:
    """GEPA's logger protocol, keeping one line per iteration (its best score so far)
    instead of GEPA's per-row score dumps; the progress bar shows the rest."""

    def log(self, message: str) -> None:
        if "Best valset aggregate score so far" in message or "Base program full valset score" in message:
            print(f"[optimize] GEPA {message.strip()}", flush=True)
