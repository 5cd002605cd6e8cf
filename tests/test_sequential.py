"""The group-sequential compare design (jobs.eval.sequential): its boundaries spend no more than
alpha, one look is the fixed design, and each look's decision says why."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from jobs.core.paths import CONF_DIR
from jobs.eval import sequential, stats
from jobs.eval.sequential import SequentialPlan, boundaries, decide_look

GATE = OmegaConf.load(CONF_DIR / "gate" / "default.yaml")


def crossing_rate(zs: list[float], fractions: list[float], paths: int = 400_000, seed: int = 0) -> float:
    """Monte Carlo: the chance that a Brownian motion's standardised value crosses |Z| >= z_k at some look."""
    rng = np.random.default_rng(seed)
    steps = np.sqrt(np.diff([0.0, *fractions]))
    w = np.cumsum(rng.standard_normal((paths, len(fractions))) * steps, axis=1)
    return float(np.mean((np.abs(w / np.sqrt(fractions)) >= np.asarray(zs)).any(axis=1)))


@pytest.mark.parametrize("boundary", sequential.BOUNDARY)
def test_the_boundaries_are_monotone_and_spend_at_most_alpha(boundary):
    plan = SequentialPlan(max_looks=5, alpha=0.05, boundary=boundary)
    b = boundaries(plan)
    assert [x.fraction for x in b] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(x < y for x, y in zip([x.nominal for x in b], [x.nominal for x in b][1:]))  # looser look by look
    assert all(x > y for x, y in zip([x.z for x in b], [x.z for x in b][1:]))
    assert b[-1].spent == pytest.approx(0.05) and sum(x.increment for x in b) <= 0.05 + 1e-12
    assert b[0].spent == pytest.approx(2 - 2 * 0.9999941, abs=2e-6)  # alpha(0.2) = 2 - 2 Phi(1.96 / sqrt(0.2))
    if boundary == "increments":
        assert sum(x.nominal for x in b) <= 0.05 + 1e-12  # Bonferroni across looks
    assert crossing_rate([x.z for x in b], [x.fraction for x in b]) <= 0.05 + 0.002


def test_the_exact_boundaries_spend_all_of_alpha_and_match_published_values():
    b = boundaries(SequentialPlan())
    assert crossing_rate([x.z for x in b], [x.fraction for x in b]) == pytest.approx(0.05, abs=0.002)
    assert sum(x.nominal for x in b) > 0.05  # more than Bonferroni allows, and still alpha overall
    # the recursion on gsDesign's / ldbounds' Lan-DeMets O'Brien-Fleming one-sided 0.025, 5 equal looks
    from scipy.stats import norm

    t = [0.2, 0.4, 0.6, 0.8, 1.0]
    one_sided = [2 - 2 * norm.cdf(norm.isf(0.0125) / np.sqrt(x)) for x in t]
    zs = sequential.z_boundaries(t, [2 * a for a in one_sided])
    assert zs == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=0.002)


def summaries(n: int = 24) -> list[dict]:
    """Paired summaries of simulated compares (the bench's simulation) over a range of gains."""
    from bench.gate_bench import verdicts

    rng = np.random.default_rng(7)
    out = []
    for gain in (0.0, 0.05, 0.10, 0.15, 0.20, 0.30):
        for _ in range(n // 6):
            base, cand = verdicts(rng, 40, gain, 5, 0.05)
            out.append(stats.paired_summary(base, cand, n_boot=200, seed=int(rng.integers(1 << 31))))
    return out


def test_with_one_look_the_plan_is_the_fixed_design():
    from bench.gate_bench import promoted

    plan = SequentialPlan(max_looks=1)
    (only,) = boundaries(plan)
    assert only.fraction == 1.0 and only.spent == pytest.approx(0.05) and only.nominal == pytest.approx(0.05)
    assert only.z == pytest.approx(1.96, abs=1e-3)
    decided = [(decide_look(1, s, plan, GATE).action, promoted(s, GATE)) for s in summaries()]
    assert {a for a, _ in decided} == {"stop_efficacy", "stop_final"}  # both outcomes occur; never continue
    assert all((a == "stop_efficacy") == fixed for a, fixed in decided)


def test_a_huge_gain_stops_at_look_1_for_efficacy():
    base = {f"q{i}": [False] for i in range(40)}
    cand = {f"q{i}": [True] for i in range(40)}
    s = stats.paired_summary(base, cand, n_boot=200)
    d = decide_look(1, s, SequentialPlan(), GATE)
    assert d.action == "stop_efficacy" and d.stopped and d.look == 1
    assert d.boundary.nominal == pytest.approx(boundaries(SequentialPlan())[0].nominal)
    assert "stop for efficacy" in d.why and "McNemar p" in d.why and "<= the look's boundary" in d.why
    assert "look 1 of 5" in d.why and "information 20%" in d.why


def look2(delta: float, half_width: float = 0.08, p: float = 1.0) -> dict:
    """A look-2 summary of 40 questions (80 run pairs) with the gain and its 95% CI."""
    return {"questions": 40, "pairs": 80, "delta": delta, "ci_low": delta - half_width, "ci_high": delta + half_width,
            "p_value": p, "regressed": ["q1"] * 3}


def test_a_zero_gain_far_below_min_delta_stops_for_futility_when_the_rule_says_so():
    s = look2(0.0)
    d = decide_look(2, s, SequentialPlan(futility="conditional_power", futility_threshold=0.2), GATE)
    assert d.action == "stop_futility" and d.conditional_power is not None and d.conditional_power < 0.05
    assert "stop for futility" in d.why and "min_delta 0.1" in d.why and f"{d.conditional_power:.3f}" in d.why
    u = decide_look(2, s, SequentialPlan(futility="upper_bound"), GATE)
    assert u.action == "stop_futility" and "CI upper bound 0.080 < min_delta 0.1" in u.why
    n = decide_look(2, s, SequentialPlan(futility="none"), GATE)
    assert n.action == "continue" and "McNemar p 1 > the look's boundary" in n.why


def test_a_promising_gain_short_of_the_boundary_continues_and_says_why():
    d = decide_look(2, look2(0.15, p=0.01), SequentialPlan(), GATE)
    assert d.action == "continue" and not d.stopped
    assert "continue: McNemar p 0.01 > the look's boundary" in d.why
    assert f"conditional power {d.conditional_power:.3f} >= 0.2" in d.why and d.conditional_power > 0.5


def test_the_last_look_without_efficacy_ends_the_design():
    s = {**look2(0.05, p=0.2), "pairs": 200}
    d = decide_look(5, s, SequentialPlan(), GATE)
    assert d.action == "stop_final" and d.boundary.fraction == 1.0
    assert "the last look, no efficacy" in d.why and "gain 0.050 < min_delta 0.1" in d.why


def test_errored_rows_lower_the_information_and_the_alpha_spent():
    plan = SequentialPlan()
    full, short = look2(0.3, p=1e-4), {**look2(0.3, p=1e-4), "pairs": 70}
    a, b = decide_look(2, full, plan, GATE), decide_look(2, short, plan, GATE)
    assert b.boundary.fraction == pytest.approx(70 / 200) and b.boundary.spent < a.boundary.spent


def test_a_plan_refuses_unknown_settings():
    with pytest.raises(ValueError, match="futility must be one of"):
        SequentialPlan(futility="sometimes")
    with pytest.raises(ValueError, match="look must be in 1..5"):
        decide_look(6, look2(0.0), SequentialPlan(), GATE)


def test_gate_alpha_one_tests_no_p_value_at_any_look():
    """gate.alpha=1 (a gate that tests no p-value) is a plan whose every look's boundary is 1."""
    for spending in sequential.SPENDING:
        for boundary in sequential.BOUNDARY:
            plan = sequential.SequentialPlan(max_looks=3, alpha=1.0, spending=spending, boundary=boundary)
            assert [b.nominal for b in sequential.boundaries(plan)] == [1.0, 1.0, 1.0]
