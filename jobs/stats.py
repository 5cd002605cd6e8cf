"""Agreement statistics between a judge and experts (binary pass/fail)."""

from __future__ import annotations

from typing import Sequence


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


def accuracy(judge: Sequence[bool], expert: Sequence[bool]) -> float:
    pairs = list(zip(judge, expert))
    return sum(1 for j, e in pairs if j == e) / len(pairs) if pairs else 0.0


def cohen_kappa(judge: Sequence[bool], expert: Sequence[bool]) -> float:
    """Cohen's kappa for two raters on a binary label. When chance agreement is total
    (both raters always give the same single label) kappa is 1.0 if they agree, else 0.0."""
    c = confusion(judge, expert)
    n = sum(c.values())
    if n == 0:
        return 0.0
    po = (c["tp"] + c["tn"]) / n
    judge_yes, expert_yes = (c["tp"] + c["fp"]) / n, (c["tp"] + c["fn"]) / n
    pe = judge_yes * expert_yes + (1 - judge_yes) * (1 - expert_yes)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


# ---------------------------------------------------------------- paired comparison
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


def paired_summary(base: dict[str, list[bool]], cand: dict[str, list[bool]], n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> dict:
    """Pair two arms per question. ``base``/``cand`` map a question to its non-error
    outcomes over repeats. A question counts as passed when at least half its repeats pass.

    Returns pass rates (over all scored repeats), their difference (mean of per-question
    pass shares), a paired-bootstrap CI, the exact McNemar p-value on question-level
    outcomes, and the questions that regressed or improved.
    """
    questions = sorted(q for q in base if base[q] and cand.get(q))
    share_b = [sum(base[q]) / len(base[q]) for q in questions]
    share_c = [sum(cand[q]) / len(cand[q]) for q in questions]
    pass_b = [s >= 0.5 for s in share_b]
    pass_c = [s >= 0.5 for s in share_c]
    regressed = [q for q, b, c in zip(questions, pass_b, pass_c) if b and not c]
    improved = [q for q, b, c in zip(questions, pass_b, pass_c) if c and not b]
    low, high = paired_bootstrap_ci(share_b, share_c, n_boot, level, seed)
    rows_b = [x for q in base for x in base[q]]
    rows_c = [x for q in cand for x in cand[q]]
    n = len(questions)
    return {
        "questions": n,
        "base_pass_rate": sum(rows_b) / len(rows_b) if rows_b else 0.0,
        "cand_pass_rate": sum(rows_c) / len(rows_c) if rows_c else 0.0,
        "delta": (sum(share_c) - sum(share_b)) / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "p_value": exact_mcnemar(len(regressed), len(improved)),
        "regressed": regressed,
        "improved": improved,
    }
