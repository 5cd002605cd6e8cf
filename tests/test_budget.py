"""The metric-call cap holds under concurrency, and the minimum budget is explained."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.eval import stats
from jobs.eval.datasets import Record
from jobs.eval.metric_cap import MetricBudget
from jobs.stages.optimize import minimum_budget, split_train


def test_budget_never_exceeds_its_cap_under_threads():
    budget = MetricBudget(37)
    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(lambda _: budget.take(), range(500)))
    assert granted == budget.used == 37 and budget.refused == 463
    assert budget(None) is True  # as a GEPA stop callback it now says stop


@pytest.mark.parametrize("used,stops", [
    (10, False),  # 40 - 10 - 8 = 22 left: the validation set (20) fits whole
    (12, False),  # 20 left: fits exactly
    (13, True),  # 19 left: the validation batch would be split
    (32, False),  # 0 left: the minibatches fit and the validation set is refused whole
    (33, True),  # the child's minibatch would be split
])
def test_gepa_iteration_starts_only_if_no_batch_is_split(used, stops):
    budget = MetricBudget(40, minibatch=4, n_val=20)
    for _ in range(used):
        budget.take()
    assert budget(None) is stops


def test_minimum_budget_and_split():
    records = [Record(f"r{i}", {"question": str(i)}, {"a": 1}) for i in range(20)]
    train, val = split_train(records, 0.0, 0)
    assert train is val and minimum_budget(len(val), 4) == 28
    train, val = split_train(records, 0.25, 0)
    assert len(val) == 5 and not {r.id for r in train} & {r.id for r in val}


@pytest.mark.parametrize("judge,expert,kappa", [
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
    ([1, 0, 1, 0], [1, 1, 0, 0], 0.0),
    # a classic textbook table: 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no -> kappa 0.4
    ([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15, [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, 0.4),
    ([1, 1, 1], [1, 1, 1], None),  # one class on both sides: undefined, never 1.0
    ([1, 1, 1], [0, 0, 0], 0.0),
    ([], [], None),
])
def test_cohen_kappa_known_values(judge, expert, kappa):
    got = stats.cohen_kappa([bool(x) for x in judge], [bool(x) for x in expert])
    assert got is None if kappa is None else got == pytest.approx(kappa)


def test_confusion_and_accuracy():
    c = stats.confusion([True, True, False, False], [True, False, True, False])
    assert c == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert stats.accuracy([True, False], [True, True]) == 0.5
