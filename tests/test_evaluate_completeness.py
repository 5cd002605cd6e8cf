"""No dataset row is lost without a message: rows that come back without a trace or a
judge value are evaluated again, and rows that never come back are named."""

from __future__ import annotations

import pytest

from jobs.core.errors import IncompleteResult
from jobs.eval.datasets import Record
from jobs.eval.runner import RowOutcome, evaluate_complete

RECORDS = [Record(f"r{i}", {"question": f"q{i}"}) for i in range(10)]


def outcome(r: Record) -> RowOutcome:
    return RowOutcome(r.id, f"tr-{r.id}", "OK", True, "fine", None)


def test_rows_dropped_once_are_evaluated_again(capsys):
    calls = []

    def run_once(batch):  # like the server answering 400 on two trace exports the first time
        calls.append([r.id for r in batch])
        return {r.id: outcome(r) for r in batch if len(calls) > 1 or r.id not in ("r3", "r7")}

    outcomes, retried = evaluate_complete(RECORDS, run_once, max_attempts=3)
    assert sorted(outcomes) == sorted(r.id for r in RECORDS)
    assert calls[1] == ["r3", "r7"] and retried == 2
    assert "2 of 10 rows came back without a trace or judge value (r3, r7)" in capsys.readouterr().out


def test_rows_that_never_come_back_fail_loudly_by_name():
    def run_once(batch):
        return {r.id: outcome(r) for r in batch if r.id != "r5"}

    with pytest.raises(IncompleteResult, match=r"1 dataset rows never came back .* after 3 attempts: r5"):
        evaluate_complete(RECORDS, run_once, max_attempts=3)


def test_or_are_recorded_as_errors_when_configured():
    outcomes, _ = evaluate_complete(RECORDS, lambda b: {r.id: outcome(r) for r in b if r.id != "r5"}, 2, "record")
    assert outcomes["r5"].state == "ERROR" and outcomes["r5"].error.startswith("lost")
