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
