"""Agreement statistics between a judge and experts: on pass/fail (kappa), and for a numeric
judge on its scale (mean absolute error, quadratic weighted kappa)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.core.results import fmt  # noqa: F401 - figures for people, as the headlines print them


def confusion(judge: Sequence[bool], expert: Sequence[bool]) -> dict[str, int]:
    """Counts keyed ``judge_expert``: tp = both pass, tn = both fail, fp = judge passes what
    the expert fails, fn = judge fails what the expert passes."""
    pairs = list(zip(judge, expert))
    return {
        "tp": sum(1 for j, e in pairs if j and e),
        "tn": sum(1 for j, e in pairs if not j and not e),
        "fp": sum(1 for j, e in pairs if j and not e),
        "fn": sum(1 for j, e in pairs if not j and e),
    }


def accuracy(judge: Sequence[bool], expert: Sequence[bool]) -> float | None:
    pairs = list(zip(judge, expert))
    return sum(1 for j, e in pairs if j == e) / len(pairs) if pairs else None


def cohen_kappa(judge: Sequence[bool], expert: Sequence[bool]) -> float | None:
    """Cohen's kappa for two raters on a binary label; None (undefined) when there are no
    pairs or chance agreement is total (both raters gave one and the same single label), since
    agreement on one class says nothing about telling the classes apart."""
    c = confusion(judge, expert)
    n = sum(c.values())
    if n == 0:
        return None
    po = (c["tp"] + c["tn"]) / n
    judge_yes, expert_yes = (c["tp"] + c["fp"]) / n, (c["tp"] + c["fn"]) / n
    pe = judge_yes * expert_yes + (1 - judge_yes) * (1 - expert_yes)
    if pe >= 1.0:
        return None
    return (po - pe) / (1 - pe)


# ---------------------------------------------------------------- agreement on a numeric scale
def mean_absolute_error(judge: Sequence[float], expert: Sequence[float]) -> float | None:
    """Mean |judge - expert| over the pairs, in the scale's own units; None with no pairs."""
    pairs = list(zip(judge, expert))
    return sum(abs(float(j) - float(e)) for j, e in pairs) / len(pairs) if pairs else None


def quadratic_weighted_kappa(judge: Sequence[float], expert: Sequence[float], low: float, high: float,
                             steps: int | None = None) -> float | None:
    """Cohen's kappa with quadratic weights on a numeric scale from ``low`` to ``high``, its
    values binned to ``steps`` evenly spaced points (default: the whole numbers of the scale
    when its ends are whole, else 5), each value rounded to the nearest point. None when there
    are no pairs or both raters gave one and the same single point (chance agreement total)."""
    pairs = list(zip(judge, expert))
    if not pairs or not low < high:
        return None
    if steps is None:
        steps = int(high - low) + 1 if float(low).is_integer() and float(high).is_integer() and high - low <= 20 else 5
    steps = max(2, steps)

    def point(x: float) -> int:
        return min(steps - 1, max(0, round((float(x) - low) / (high - low) * (steps - 1))))

    binned = [(point(j), point(e)) for j, e in pairs]
    n = len(binned)
    weight = [[(i - k) ** 2 / (steps - 1) ** 2 for k in range(steps)] for i in range(steps)]
    judge_marg = [sum(1 for j, _ in binned if j == i) / n for i in range(steps)]
    expert_marg = [sum(1 for _, e in binned if e == i) / n for i in range(steps)]
    observed = sum(weight[j][e] for j, e in binned) / n
    expected = sum(weight[i][k] * judge_marg[i] * expert_marg[k] for i in range(steps) for k in range(steps))
    if expected == 0:
        return None
    return 1 - observed / expected


# ---------------------------------------------------------------- paired comparison
def share(xs: Sequence[bool]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs (b: pass->fail, c: fail->pass)."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_ci(base: Sequence[float], cand: Sequence[float], n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile CI of mean(cand - base), resampling whole questions (pairs) with replacement."""
    import numpy as np

    diffs = np.asarray(cand, dtype=float) - np.asarray(base, dtype=float)
    if diffs.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diffs.size, size=(n_boot, diffs.size))
    means = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_summary(base: dict[str, list[bool | None]], cand: dict[str, list[bool | None]], n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> dict:
    """Pair two arms per question and per run. ``base``/``cand`` map a question to its
    outcomes by repeat index (run k of both arms used the same sampling seed), ``None``
    where the row errored; errors are neither passes nor failures.

    - pass rates: over all scored runs of each arm;
    - delta and its paired-bootstrap CI: mean over questions of the per-question pass-share
      difference, resampling whole questions (runs of a question are not independent);
    - McNemar: exact test on the discordant run pairs (under "no difference" each
      discordant pair is equally likely either way, whatever the question's difficulty);
    - regressed / improved: questions whose majority verdict went pass->fail / fail->pass.
    """
    def scored(xs: list[bool | None]) -> list[bool]:
        return [x for x in xs if x is not None]

    questions = sorted(q for q in base if scored(base[q]) and scored(cand.get(q, [])))
    share_b = [sum(scored(base[q])) / len(scored(base[q])) for q in questions]
    share_c = [sum(scored(cand[q])) / len(scored(cand[q])) for q in questions]
    regressed = [q for q, b, c in zip(questions, share_b, share_c) if b >= 0.5 > c]
    improved = [q for q, b, c in zip(questions, share_b, share_c) if c >= 0.5 > b]
    pairs = [(x, y) for q in questions for x, y in zip(base[q], cand[q]) if x is not None and y is not None]
    worse = sum(1 for x, y in pairs if x and not y)
    better = sum(1 for x, y in pairs if y and not x)
    low, high = paired_bootstrap_ci(share_b, share_c, n_boot, level, seed)
    rows_b = [x for q in base for x in scored(base[q])]
    rows_c = [x for q in cand for x in scored(cand[q])]
    n = len(questions)
    return {
        "questions": n,
        "pairs": len(pairs),
        "base_pass_rate": sum(rows_b) / len(rows_b) if rows_b else 0.0,
        "cand_pass_rate": sum(rows_c) / len(rows_c) if rows_c else 0.0,
        "delta": (sum(share_c) - sum(share_b)) / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "discordant_worse": worse,
        "discordant_better": better,
        "p_value": exact_mcnemar(worse, better),
        "regressed": regressed,
        "improved": improved,
    }


def worse_p(pairs: Sequence[tuple[float, float]]) -> dict:
    """One-sided exact sign test that the candidate is worse than the baseline on paired values
    (baseline, candidate): under "no difference" a pair that differs is equally likely to go
    either way, so the p-value is P(at least ``worse`` of the ``worse + better`` differing pairs
    go down). Ties say nothing and are dropped; on 0/1 values this is McNemar's test, one-sided."""
    worse = sum(1 for b, c in pairs if c < b)
    better = sum(1 for b, c in pairs if c > b)
    if worse + better == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(worse, worse + better, 0.5, alternative="greater").pvalue)
    return {"pairs": len(pairs), "worse": worse, "better": better, "p_worse": p}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: rejecting each test whose adjusted p is below alpha
    keeps the chance of any false rejection in the family at most alpha, whatever the tests'
    dependence."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m, running, out = len(ordered), 0.0, {}
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def slice_summary(base: dict[str, list[bool | None]], cand: dict[str, list[bool | None]],
                  questions: Sequence[str]) -> dict:
    """One slice of the held-out set (``questions``): both arms' pass rates over its scored runs,
    the gain (as ``paired_summary``), the questions that regressed, and the one-sided test that
    the candidate is worse on its run pairs (``worse_p``)."""
    qs = [q for q in questions if q in base]
    s = paired_summary({q: base[q] for q in qs}, {q: cand.get(q, []) for q in qs}, n_boot=1)
    t = worse_p([(float(x), float(y)) for q in qs for x, y in zip(base[q], cand.get(q, []))
                 if x is not None and y is not None])
    return {"questions": s["questions"], "pairs": s["pairs"], "baseline_pass_rate": s["base_pass_rate"] if s["pairs"] else None,
            "candidate_pass_rate": s["cand_pass_rate"] if s["pairs"] else None, "delta": s["delta"] if s["pairs"] else None,
            "regressed": s["regressed"], "worse": t["worse"], "better": t["better"], "p_worse": t["p_worse"]}


# ---------------------------------------------------------------- production drift
def lower_rate_p(passes: int, n: int, ref_passes: int, ref_n: int) -> float:
    """One-sided Fisher exact p-value that a window of ``n`` traces with ``passes`` passes has a
    lower pass rate than the reference (``ref_passes`` of ``ref_n``). Both samples' sizes count:
    a small window, or a reference on few rows, needs a larger drop to reach significance."""
    from scipy.stats import fisher_exact

    table = [[passes, n - passes], [ref_passes, ref_n - ref_passes]]
    return float(fisher_exact(table, alternative="less").pvalue)


GainCheck = tuple[str, "float | None", str, float]  # (gate name, value, rule ">=" or "<=", threshold)


def gain_checks(delta: float | None, p_value: float | None, ci_low: float | None, regressions: int | None,
                gate_cfg: Any, alpha: float) -> list[GainCheck]:
    """The gate's tests of the gain, at McNemar level ``alpha`` (the gate's ``alpha`` in the fixed
    design, a look's boundary in the sequential one): the gate and each sequential look decide
    with these same four."""
    g = (lambda k: gate_cfg[k]) if isinstance(gate_cfg, Mapping) else (lambda k: getattr(gate_cfg, k))
    return [("min_delta", delta, ">=", float(g("min_delta"))),
            ("alpha (McNemar p)", p_value, "<=", float(alpha)),
            ("ci_low_min", ci_low, ">=", float(g("ci_low_min"))),
            ("max_regressions", None if regressions is None else float(regressions), "<=", float(g("max_regressions")))]


def check_passes(value: float | None, rule: str, threshold: float) -> bool:
    """A figure passes its rule; a missing figure never does."""
    return value is not None and (value >= threshold if rule == ">=" else value <= threshold)
