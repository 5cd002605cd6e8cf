"""Decision quality of the compare statistics and the default gate, with no MLflow.

``make bench-gate``. Simulates held-out comparisons: each question has a true baseline pass
probability; the candidate adds a true gain (0 for A/A); every run is judged by a noisy
judge that flips a share of verdicts; each arm runs ``n_repeats`` times per question. The
same functions compare and gate use (jobs.eval.stats.paired_summary, jobs.stages.gate) decide.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from omegaconf import OmegaConf

from jobs.core.paths import CONF_DIR
from jobs.core.results import AlignResult, CompareResult
from jobs.eval import stats
from jobs.stages.gate import decide, evaluate_gates

MEASURED_JUDGE = {"measured": True, "judge_version": None, "kappa_before": 0.9, "holdout": 12}  # a judge the experts validated


def one_comparison(rng: np.random.Generator, n_questions: int, gain: float, n_repeats: int, judge_flip: float,
                   gate: object, n_boot: int) -> bool:
    p_base = rng.uniform(0.2, 0.6, n_questions)
    p_cand = np.clip(p_base + gain, 0.0, 1.0)
    base, cand = {}, {}
    for i in range(n_questions):
        for p, out in ((p_base[i], base), (p_cand[i], cand)):
            truth = rng.random(n_repeats) < p
            flips = rng.random(n_repeats) < judge_flip
            out[f"q{i}"] = list(truth ^ flips)
    s = stats.paired_summary(base, cand, n_boot=n_boot, seed=int(rng.integers(1 << 31)))
    compare = {"delta": s["delta"], "p_value": s["p_value"], "ci_low": s["ci_low"],
               "regressions": len(s["regressed"]), "baseline_error_rate": 0.0, "candidate_error_rate": 0.0}
    return decide(evaluate_gates(CompareResult(**compare), gate, AlignResult(**MEASURED_JUDGE)))[0] == "promote"


def rate(n_sims: int, **kw: object) -> float:
    rng = np.random.default_rng(kw.pop("seed"))  # type: ignore[arg-type]
    return sum(one_comparison(rng, **kw) for _ in range(n_sims)) / n_sims  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--aa-sims", type=int, default=1000)
    ap.add_argument("--power-sims", type=int, default=400)
    ap.add_argument("--judge-flip", type=float, default=0.05, help="share of verdicts the noisy judge flips")
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = ap.parse_args(argv)
    gate = OmegaConf.load(CONF_DIR / "gate" / "default.yaml")
    compare = OmegaConf.load(CONF_DIR / "pipeline.yaml").compare
    n_rep = int(compare.n_repeats)
    common = {"n_repeats": n_rep, "judge_flip": a.judge_flip, "gate": gate, "n_boot": a.bootstrap}
    print(f"Default gate: min_delta={gate.min_delta} alpha={gate.alpha} ci_low_min={gate.ci_low_min} "
          f"max_regressions={gate.max_regressions}; {n_rep} runs per question; judge flips {a.judge_flip:.0%} of verdicts;"
          f" baseline pass probabilities uniform in [0.2, 0.6]")
    fpr = rate(a.aa_sims, n_questions=a.questions, gain=0.0, seed=1, **common)
    print(f"\n{'true gain':>10} {'questions':>10} {'sims':>6} {'promoted':>9}")
    print(f"{'A/A +0':>10} {a.questions:>10} {a.aa_sims:>6} {fpr:>9.3f}   <- false promotion rate (must be <= alpha {gate.alpha})")
    powers = {}
    for gain in (0.10, 0.20, 0.30):
        powers[gain] = rate(a.power_sims, n_questions=a.questions, gain=gain, seed=int(gain * 100), **common)
        print(f"{f'+{gain * 100:.0f} pts':>10} {a.questions:>10} {a.power_sims:>6} {powers[gain]:>9.3f}   <- power")
    ok_fpr, ok_power = fpr <= float(gate.alpha), powers[0.20] >= 0.80
    print(f"\nfalse promotion <= alpha: {'yes' if ok_fpr else 'NO'};  power at +20 pts >= 0.80: {'yes' if ok_power else 'NO'}")
    if not ok_power:
        for n in (60, 80, 100, 120, 160, 200):
            p = rate(a.power_sims // 2, n_questions=n, gain=0.20, seed=n, **common)
            print(f"  power at +20 pts with {n} questions: {p:.3f}")
            if p >= 0.80:
                print(f"  -> about {n} held-out questions are needed for 80% power at +20 points")
                break
    return 0 if ok_fpr else 1


if __name__ == "__main__":
    sys.exit(main())
