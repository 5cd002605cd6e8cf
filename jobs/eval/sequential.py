"""A group-sequential compare: the repeats run in looks, and after each look the design may stop.

Look k holds k runs of every held-out question in both arms (one repeat over every question per
look), at most ``max_looks`` looks (compare.n_repeats). After each look ``decide_look`` reads
``stats.paired_summary`` of the runs so far and says continue, stop for efficacy, stop for
futility, or (at the last look, without efficacy) stop because the design is over.

Efficacy: the gate's own gain tests on the look's summary (delta >= min_delta, ci_low >= ci_low_min,
regressions <= max_regressions), with the McNemar test at the look's nominal boundary instead of
``gate.alpha``. The boundaries spend the gate's alpha over the looks with a Lan-DeMets spending
function (O'Brien-Fleming type by default, alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t)), t the
information fraction = run pairs so far / run pairs at the last look). What is spent is the
*two-sided* alpha, because the gate's alpha bounds a two-sided McNemar p-value: the chance that
any look's |Z| crosses its boundary under "no difference" is at most alpha, as in the fixed design,
and a false promotion (one direction only: the gate also needs delta >= min_delta > 0) about alpha/2
in both designs.

Boundaries (``boundary``): ``exact`` finds each look's z boundary by recursive numerical
integration (Armitage-McPherson-Rowe) so that the chance of first crossing at look k is exactly
the spent increment alpha(t_k) - alpha(t_{k-1}), treating the McNemar statistic as a Brownian
motion in the information fraction (under "no difference" each discordant pair goes either way
with probability 1/2, independently, so the statistic's increments are independent); the
nominal level is the two-sided normal p of that z. ``increments`` uses the spent increment itself
as the look's nominal level: Bonferroni across looks, valid whatever the looks' correlation, but
it wastes alpha (its levels sum to alpha; the exact ones sum to more and still keep the overall
error at alpha).

Futility (non-binding: stopping early only ever refuses, so it cannot raise the false promotion
rate, only cost power): ``conditional_power`` stops when the chance that the last look passes the
gate's gain tests, if the remaining runs gain exactly ``gate.min_delta`` (the smallest gain the gate
accepts), is below ``futility_threshold``; ``upper_bound`` stops when the upper end of the gain's
confidence interval is below ``gate.min_delta``; ``none`` never stops for futility. The conditional
power is a normal approximation on the delta scale (the standard error read off the bootstrap CI,
shrinking as 1/sqrt(t)); it ignores ``max_regressions``, so it overstates the chance, which errs on
the side of running on.

Pure: numpy and scipy are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SPENDING = ("obrien_fleming", "pocock")
BOUNDARY = ("exact", "increments")
FUTILITY = ("conditional_power", "upper_bound", "none")
ACTIONS = ("continue", "stop_efficacy", "stop_futility", "stop_final")
GRID = 601  # points of the integration grid per look (odd: Simpson's rule)
Z_CAP = 12.0  # a boundary no statistic crosses (nothing left to spend at the look)


@dataclass(frozen=True)
class SequentialPlan:
    max_looks: int = 5  # compare.n_repeats: look k has k runs per question
    alpha: float = 0.05  # two-sided McNemar alpha spent over the looks (gate.alpha)
    spending: str = "obrien_fleming"  # Lan-DeMets spending function: obrien_fleming | pocock
    boundary: str = "exact"  # exact (recursive integration) | increments (spent increment as nominal level)
    futility: str = "conditional_power"  # conditional_power | upper_bound | none
    futility_threshold: float = 0.2  # conditional_power: stop when the chance of passing at the last look is below this
    ci_level: float = 0.95  # level of the summary's bootstrap CI (compare.ci_level)

    def __post_init__(self) -> None:
        if self.max_looks < 1:
            raise ValueError(f"max_looks must be at least 1, not {self.max_looks}")
        if not 0 < self.alpha <= 1:  # gate.alpha=1 tests no p-value: every look's boundary is 1
            raise ValueError(f"alpha must be in (0, 1], not {self.alpha}")
        for field, value, allowed in (("spending", self.spending, SPENDING), ("boundary", self.boundary, BOUNDARY),
                                      ("futility", self.futility, FUTILITY)):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}, not '{value}'")

    @property
    def planned(self) -> tuple[float, ...]:
        """The information fractions of the looks when no row errors: k / max_looks."""
        return tuple(k / self.max_looks for k in range(1, self.max_looks + 1))

    def describe(self) -> str:
        spend = {"obrien_fleming": "O'Brien-Fleming-type", "pocock": "Pocock-type"}[self.spending]
        how = {"exact": "exact boundaries by recursive integration",
               "increments": "each look's spent increment as its nominal level (Bonferroni across looks)"}
        stop = {"conditional_power": f"stop when the conditional power under the min_delta alternative is below "
                                     f"{self.futility_threshold:g}",
                "upper_bound": f"stop when the gain's {self.ci_level:.0%} CI upper bound is below min_delta",
                "none": "none"}
        return (f"at most {self.max_looks} looks; efficacy: Lan-DeMets {spend} spending of the two-sided alpha "
                f"{self.alpha:g}, {how[self.boundary]}; futility: {stop[self.futility]}")


@dataclass(frozen=True)
class Boundary:
    look: int
    fraction: float  # information fraction t_k
    spent: float  # alpha(t_k): alpha spent up to and including this look
    increment: float  # alpha(t_k) - alpha(t_{k-1})
    z: float  # |Z| boundary
    nominal: float  # two-sided p-value threshold of the look's McNemar test


@dataclass(frozen=True)
class LookDecision:
    look: int
    action: str  # one of ACTIONS
    boundary: Boundary  # the efficacy boundary used at this look
    why: str  # the decision in words
    conditional_power: float | None = None  # futility rule conditional_power: the figure it compared

    @property
    def stopped(self) -> bool:
        return self.action != "continue"


def spent(plan: SequentialPlan, t: float) -> float:
    """alpha(t): the two-sided alpha spent by information fraction t (0 at 0, alpha at 1)."""
    from scipy.stats import norm

    t = min(max(float(t), 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if plan.spending == "pocock":
        return plan.alpha * math.log(1 + (math.e - 1) * t)
    return float(2 - 2 * norm.cdf(norm.isf(plan.alpha / 2) / math.sqrt(t)))


def boundaries(plan: SequentialPlan, fractions: Sequence[float] | None = None) -> list[Boundary]:
    """The efficacy boundary of each look at the information fractions ``fractions`` (strictly
    increasing in (0, 1]; default: the planned k / max_looks). The last look of the plan spends
    whatever is left: its fraction counts as 1."""
    t = [float(x) for x in (plan.planned if fractions is None else fractions)]
    if len(t) > plan.max_looks or any(not 0 < x <= 1 for x in t) or any(b <= a for a, b in zip(t, t[1:])):
        raise ValueError(f"information fractions must be at most {plan.max_looks}, strictly increasing in (0, 1]: {t}")
    if len(t) == plan.max_looks:
        t[-1] = 1.0
    return list(_boundaries(plan, tuple(t)))


@lru_cache(maxsize=256)
def _boundaries(plan: SequentialPlan, t: tuple[float, ...]) -> tuple[Boundary, ...]:
    from scipy.stats import norm

    cumulative = [spent(plan, x) for x in t]
    increments = [b - a for a, b in zip([0.0, *cumulative], cumulative)]
    if plan.alpha >= 1:  # a McNemar test at level 1 always passes: at every look, as in the fixed design
        return tuple(Boundary(k + 1, t[k], cumulative[k], increments[k], 0.0, 1.0) for k in range(len(t)))
    if plan.boundary == "increments":
        nominal = increments
        zs = [float(norm.isf(a / 2)) if a > 0 else Z_CAP for a in nominal]
    else:
        zs = z_boundaries(t, cumulative)
        nominal = [float(2 * norm.sf(z)) for z in zs]
    return tuple(Boundary(k + 1, t[k], cumulative[k], increments[k], zs[k], nominal[k]) for k in range(len(t)))


def z_boundaries(fractions: Sequence[float], cumulative: Sequence[float]) -> list[float]:
    """Symmetric |Z| boundaries c_k such that a Brownian motion's standardised value Z_k = W(t_k) /
    sqrt(t_k) first leaves (-c_k, c_k) at look k with probability cumulative[k] - cumulative[k-1]:
    the density of the paths still inside is carried from look to look on a grid (Simpson's rule)."""
    import numpy as np
    from scipy.optimize import brentq
    from scipy.stats import norm

    zs: list[float] = []
    grid = mass = None  # the grid of W at the previous look, and the continuing paths' density times weights
    prev_t, prev_a = 0.0, 0.0
    for t, a in zip(fractions, cumulative):
        inc, step = a - prev_a, math.sqrt(t - prev_t)
        if grid is None:
            z = float(norm.isf(inc / 2)) if inc > 0 else Z_CAP
        else:
            def excess(z: float, g: Any, m: Any, s: float, t: float, inc: float) -> float:
                """The chance of first crossing |Z| = z at this look, less what is to be spent there."""
                b = z * math.sqrt(t)
                return float(m @ (norm.sf((b - g) / s) + norm.cdf((-b - g) / s))) - inc

            args = (grid, mass, step, t, inc)
            z = Z_CAP if inc <= 0 or excess(Z_CAP, *args) >= 0 else 0.0 if excess(1e-6, *args) <= 0 else float(
                brentq(excess, 1e-6, Z_CAP, args=args, xtol=1e-10))  # 0: more to spend than the paths left hold
        b = z * math.sqrt(t)
        new = np.linspace(-b, b, GRID)
        weights = np.ones(GRID)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        weights *= (new[1] - new[0]) / 3
        if grid is None:
            density = norm.pdf(new / math.sqrt(t)) / math.sqrt(t)
        else:
            density = mass @ norm.pdf((new[None, :] - grid[:, None]) / step) / step
        grid, mass = new, density * weights
        zs.append(z)
        prev_t, prev_a = t, a
    return zs


def _cfg(g: Any, name: str) -> Any:
    return g[name] if isinstance(g, Mapping) else getattr(g, name)


def fraction(look: int, summary: dict, plan: SequentialPlan, questions: int | None = None) -> float:
    """The look's information fraction: run pairs so far / run pairs at the last look (every
    question, ``max_looks`` runs each; ``questions`` default: the summary's); the last look counts as 1."""
    if look == plan.max_looks:
        return 1.0
    n = questions if questions is not None else int(summary["questions"])
    return min(1.0, int(summary["pairs"]) / (n * plan.max_looks)) if n else look / plan.max_looks


def conditional_power(summary: dict, t: float, final: Boundary, plan: SequentialPlan, g: Any) -> float:
    """The chance that the last look passes the gate's gain tests if the remaining runs gain exactly
    ``min_delta``: the final delta D = t * d + (1 - t) * D_rest, with D_rest ~ N(min_delta, se^2 t / (1 - t))
    (se: the standard error of the gain now, from the bootstrap CI), must reach min_delta, the CI's
    lower end must reach ci_low_min, and D / se_final must reach the last look's z boundary
    (se_final = se * sqrt(t))."""
    from scipy.stats import norm

    if t >= 1.0:
        return 1.0 if float(summary["delta"]) >= float(_cfg(g, "min_delta")) else 0.0
    z_ci = float(norm.isf((1 - plan.ci_level) / 2))
    se = max((float(summary["ci_high"]) - float(summary["ci_low"])) / (2 * z_ci), 1e-9)
    se_final = se * math.sqrt(t)
    needed = max(float(_cfg(g, "min_delta")), float(_cfg(g, "ci_low_min")) + z_ci * se_final, final.z * se_final)
    rest = 1.0 - t
    mean = t * float(summary["delta"]) + rest * float(_cfg(g, "min_delta"))
    return float(norm.sf((needed - mean) / (se * math.sqrt(t * rest))))


def decide_look(look: int, summary: dict, plan: SequentialPlan, gate_cfg: Any,
                fractions: Sequence[float] | None = None, questions: int | None = None) -> LookDecision:
    """What to do after look ``look`` (1-based) given ``stats.paired_summary`` of its runs so far.

    ``fractions``: the information fractions of the earlier looks (default: as planned, k / max_looks);
    this look's is its run pairs over the last look's (``fraction``). ``gate_cfg``: the gate's config
    (min_delta, ci_low_min, max_regressions; its alpha is replaced by the look's boundary)."""
    if not 1 <= look <= plan.max_looks:
        raise ValueError(f"look must be in 1..{plan.max_looks}, not {look}")
    earlier = list(plan.planned[:look - 1] if fractions is None else fractions[:look - 1])
    t = fraction(look, summary, plan, questions)
    if earlier:
        t = max(t, min(1.0, earlier[-1] + 1e-6))  # a look with more errored rows still comes after the previous
    bound = boundaries(plan, [*earlier, t])[-1]
    final = bound if look == plan.max_looks else boundaries(plan, [*earlier, t, *[
        x for x in plan.planned[look:] if x > t]])[-1]
    from jobs.eval.stats import check_passes, gain_checks

    shown = {"alpha (McNemar p)": lambda v, t: f"McNemar p {v:.3g} {{}} the look's boundary {t:.3g} (|z| {bound.z:.2f})",
             "min_delta": lambda v, t: f"gain {v:.3f} {{}} min_delta {t:g}",
             "ci_low_min": lambda v, t: f"ci_low {v:.3f} {{}} ci_low_min {t:g}",
             "max_regressions": lambda v, t: f"{v:g} regressions {{}} max_regressions {t:g}"}
    checks = []
    for name, value, rule, threshold in gain_checks(float(summary["delta"]), float(summary["p_value"]),
                                                    float(summary["ci_low"]), len(summary["regressed"]), gate_cfg,
                                                    bound.nominal):
        ok = check_passes(value, rule, threshold)
        checks.append((ok, shown[name](value, threshold).format(rule if ok else {">=": "<", "<=": ">"}[rule])))
    delta, min_delta = float(summary["delta"]), float(_cfg(gate_cfg, "min_delta"))
    where = (f"look {look} of {plan.max_looks} ({summary['pairs']} run pairs, information {t:.0%}; "
             f"{bound.spent:.3g} of alpha {plan.alpha:g} spent so far)")
    failed = [text for ok, text in checks if not ok]
    if not failed:
        return LookDecision(look, "stop_efficacy", bound, f"{where}: stop for efficacy: every gain test passes: "
                            + "; ".join(text for _, text in checks))
    if look == plan.max_looks:
        return LookDecision(look, "stop_final", bound, f"{where}: the last look, no efficacy: " + "; ".join(failed))
    cp = None
    if plan.futility == "conditional_power":
        cp = conditional_power(summary, t, final, plan, gate_cfg)
        if cp < plan.futility_threshold:
            return LookDecision(look, "stop_futility", bound, (
                f"{where}: stop for futility: even if the remaining runs gained min_delta {min_delta:g}, the last "
                f"look would pass the gate's gain tests with probability {cp:.3f} < {plan.futility_threshold:g} "
                f"(gain so far {delta:.3f})"), cp)
    elif plan.futility == "upper_bound" and float(summary["ci_high"]) < min_delta:
        return LookDecision(look, "stop_futility", bound, (
            f"{where}: stop for futility: the gain's {plan.ci_level:.0%} CI upper bound "
            f"{float(summary['ci_high']):.3f} < min_delta {min_delta:g}, so the gain the gate needs is out of reach"))
    more = "" if cp is None else f"; conditional power {cp:.3f} >= {plan.futility_threshold:g}"
    return LookDecision(look, "continue", bound, f"{where}: continue: " + "; ".join(failed) + more, cp)
