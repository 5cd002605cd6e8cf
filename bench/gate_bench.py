"""Decision quality of the compare statistics and the default gate, with no MLflow.

``make bench-gate``. Simulates held-out comparisons: each question has a true baseline pass
probability; the candidate adds a true gain (0 for A/A); every run is judged by a noisy
judge that flips a share of verdicts; each arm runs ``n_repeats`` times per question. The
same functions compare and gate use (jobs.eval.stats.paired_summary, jobs.stages.gate) decide.

A second design gates more than the gain: the default gate plus ``hard_gates`` on three
further scorers (two yes/no, one 1-5) and ``slices`` on two slices of the held-out questions,
each with a floor and a no-regression test (Holm-adjusted together). The scorers are the
same in both arms in every scenario, so any refusal by their tests is a false regression.
A third table runs the fixed design and the group-sequential one (jobs.eval.sequential: one
repeat over every question per look, stopping early for efficacy or futility) side by side on
the same simulated questions: how often each promotes, and the rows the sequential one spends.
Each simulated compare is built as compare builds it: verdicts -> ``stats.paired_summary``;
scorer values per row -> ``compare.scorer_means`` / ``compare.scorer_tests`` (``stats.worse_p``);
slices (``key=value`` rules on the records' expectations) -> ``compare.slice_table``
(``stats.slice_summary``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from omegaconf import OmegaConf

from jobs.core.paths import CONF_DIR
from jobs.core.results import AlignResult, CompareResult
from jobs.eval import judges, sequential, stats
from jobs.eval.datasets import Record
from jobs.eval.runner import RowOutcome, scorer_counts
from jobs.stages.compare import ARMS, gain_metrics, recorded_figures, scorer_means, scorer_tests, slice_table
from jobs.stages.gate import decide, evaluate_gates

ROWS_GOAL = 0.6  # the sequential design's mean rows, as a share of the fixed design's, over A/A, +10, +20, +30
MEASURED_JUDGE = {"measured": True, "judge_version": None, "kappa_before": 0.9, "holdout": 12}  # a judge the experts validated


def verdicts(rng: np.random.Generator, n_questions: int, gain: float, n_repeats: int,
             judge_flip: float) -> tuple[dict[str, list[bool]], dict[str, list[bool]]]:
    """Both arms' noisy-judge verdicts per question (``q<i>``) by repeat index."""
    p_base = rng.uniform(0.2, 0.6, n_questions)
    p_cand = np.clip(p_base + gain, 0.0, 1.0)
    base, cand = {}, {}
    for i in range(n_questions):
        for p, out in ((p_base[i], base), (p_cand[i], cand)):
            truth = rng.random(n_repeats) < p
            flips = rng.random(n_repeats) < judge_flip
            out[f"q{i}"] = list(truth ^ flips)
    return base, cand


def gain_figures(s: dict) -> dict:
    """The CompareResult fields compare records from ``stats.paired_summary`` (no errored rows), rounded as it rounds them."""
    figures = recorded_figures(gain_metrics(s, 0, 0, 1))
    return {k: figures[k] for k in ("delta", "p_value", "ci_low", "regressions", "baseline_error_rate",
                                    "candidate_error_rate")}


def promoted(s: dict, gate: object) -> bool:
    """Whether the gate promotes on the figures compare would record from the summary ``s``."""
    return decide(evaluate_gates(CompareResult(**gain_figures(s)), gate, AlignResult(**MEASURED_JUDGE)))[0] == "promote"


def one_comparison(rng: np.random.Generator, n_questions: int, gain: float, n_repeats: int, judge_flip: float,
                   gate: object, n_boot: int) -> bool:
    base, cand = verdicts(rng, n_questions, gain, n_repeats, judge_flip)
    s = stats.paired_summary(base, cand, n_boot=n_boot, seed=int(rng.integers(1 << 31)))
    return promoted(s, gate)


def rate(n_sims: int, **kw: object) -> float:
    rng = np.random.default_rng(kw.pop("seed"))  # type: ignore[arg-type]
    return sum(one_comparison(rng, **kw) for _ in range(n_sims)) / n_sims  # type: ignore[arg-type]


# The gated design's further scorers, unchanged between arms: (config name, kind, range of the
# per-question true mean, the hard gate's floor). Each question draws its true mean from the
# range; both arms' runs of it draw from that one mean, so the candidate is never worse.
SCORERS = (("Safety", "yes/no", (0.90, 1.00), 0.90),
           ("Grounded", "yes/no", (0.60, 1.00), 0.70),
           ("Helpfulness", "1-5", (2.50, 4.50), 3.00))
SLICES = {"injection": 8, "refunds": 6}  # held-out slice -> its questions (the first 8, the next 6)
SLICE_KEY, SLICE_MIN = "topic", 0.30  # slices are rules topic=<name> on the records' expectations


def gated(gate: object) -> object:
    """The default gate with hard gates on the three scorers and gates on the two slices
    (floors, and no_regression as the default: on)."""
    return OmegaConf.merge(gate, {"hard_gates": [{"scorer": n, "min": floor} for n, _, _, floor in SCORERS],
                                  "slices": [{"slice": n, "min": SLICE_MIN} for n in SLICES]})


def held_out_records(n_questions: int) -> tuple[list[Record], dict[str, str]]:
    """The held-out questions as records whose expectations place them in a slice, and the
    ``dataset.slices`` rules (name -> ``key=value``) that select them."""
    topics: list[str] = [name for name, size in SLICES.items() for _ in range(size)]
    records = [Record(f"q{i}", {"question": f"question {i}"},
                      {SLICE_KEY: topics[i] if i < len(topics) else "other"}) for i in range(n_questions)]
    return records, {name: f"{SLICE_KEY}={name}" for name in SLICES}


def scorer_rows(rng: np.random.Generator, n_questions: int, n_repeats: int) -> dict[str, dict[str, dict]]:
    """Per arm, each row's (``q<i>#<k>``) values of the further scorers, keyed by their
    assessment names as MLflow records them; the arms share each question's true means."""
    rows: dict[str, dict[str, dict]] = {"baseline": {}, "candidate": {}}
    for name, kind, (low, high), _ in SCORERS:
        mean = rng.uniform(low, high, n_questions)
        for arm in rows:
            if kind == "yes/no":
                values = rng.random((n_questions, n_repeats)) < mean[:, None]
            else:
                values = np.clip(np.rint(mean[:, None] + rng.normal(0, 0.8, (n_questions, n_repeats))), 1, 5)
            for i in range(n_questions):
                for k in range(n_repeats):
                    v = values[i, k]
                    rows[arm].setdefault(f"q{i}#{k}", {})[judges.assessment_name(name)] = (
                        bool(v) if kind == "yes/no" else int(v))
    return rows


def gated_comparison(rng: np.random.Generator, n_questions: int, gain: float, n_repeats: int, judge_flip: float,
                     gate: object, n_boot: int) -> tuple[bool, bool, bool]:
    """One simulated compare with every gated figure, as compare fills CompareResult:
    (promoted, some no-regression gate failed, refused by no-regression gates alone)."""
    base, cand = verdicts(rng, n_questions, gain, n_repeats, judge_flip)
    s = stats.paired_summary(base, cand, n_boot=n_boot, seed=int(rng.integers(1 << 31)))
    scores = scorer_rows(rng, n_questions, n_repeats)
    verdict = {"baseline": base, "candidate": cand}
    outcomes = {arm: {rid: RowOutcome(rid, None, "OK", verdict[arm][rid.split("#")[0]][int(rid.split("#")[1])],
                                      None, None, scores=values) for rid, values in scores[arm].items()}
                for arm in ARMS}
    names = {judges.assessment_name(name): name for name, *_ in SCORERS}  # as runner.other_scorers
    records, rules = held_out_records(n_questions)
    compare = CompareResult(**gain_figures(s),
                            scorer_means={arm: scorer_means(outcomes[arm], names) for arm in ARMS},
                            scorer_counts={arm: scorer_counts(outcomes[arm], names) for arm in ARMS},
                            scorer_tests=scorer_tests(outcomes, names),
                            slices=slice_table(records, rules, base, cand))
    gates = evaluate_gates(compare, gate, AlignResult(**MEASURED_JUDGE))
    failed = [g.name for g in gates if not g.passed]
    no_reg = [n for n in failed if n.startswith("no_regression:")]
    return decide(gates)[0] == "promote", bool(no_reg), bool(failed) and len(no_reg) == len(failed)


def gated_rates(n_sims: int, seed: int, **kw: object) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    runs = [gated_comparison(rng, **kw) for _ in range(n_sims)]  # type: ignore[arg-type]
    return tuple(sum(r[j] for r in runs) / n_sims for j in range(3))  # type: ignore[return-value]


def gated_design(a: argparse.Namespace, default_gate: object, n_rep: int) -> tuple[bool, bool]:
    """The table of the gated design: (A/A false promotions <= alpha, every goal met)."""
    gate = gated(default_gate)
    common = {"n_questions": a.questions, "n_repeats": n_rep, "judge_flip": a.judge_flip, "gate": gate,
              "n_boot": a.gated_bootstrap}
    alpha, reg_alpha = float(gate.alpha), float(gate.regression_alpha)
    floors = ", ".join(f"{n} ({kind}, true per-question mean uniform in [{lo:g}, {hi:g}]) min {floor}"
                       for n, kind, (lo, hi), floor in SCORERS)
    slices = ", ".join(f"{n} ({size} questions, {SLICE_KEY}={n}) min {SLICE_MIN}" for n, size in SLICES.items())
    print(f"\nGated design: the default gate + hard_gates on {floors}; slices {slices}; no_regression on all "
          f"{len(SCORERS) + len(SLICES)} (Holm at regression_alpha={reg_alpha}); the scorers are unchanged between "
          f"arms and the gain is shared evenly over the questions; {a.gated_bootstrap} bootstrap resamples")
    print("Why Holm on the no-regression tests: a promotion needs the gain test AND every no-regression test to pass, "
          "so a false promotion needs the gain test to err and its alpha bounds it, however many gates are added; "
          "the no-regression tests are the family that can refuse a candidate that is no worse, and Holm keeps "
          "the chance that any of them does at most regression_alpha.")
    fpr, aa_noreg, _ = gated_rates(a.gated_aa_sims, seed=1001, gain=0.0, **common)
    print(f"\n{'true gain':>10} {'questions':>10} {'sims':>6} {'promoted':>9} {'no-reg fail':>12} {'refused by no-reg alone':>24}")
    print(f"{'A/A +0':>10} {a.questions:>10} {a.gated_aa_sims:>6} {fpr:>9.3f} {aa_noreg:>12.3f} {'':>24}   "
          f"<- false promotion rate (must be <= alpha {alpha})")
    powers, noreg = {}, {}
    for gain in (0.10, 0.20, 0.30):
        powers[gain], noreg[gain], alone = gated_rates(a.gated_power_sims, seed=1000 + int(gain * 100), gain=gain,
                                                       **common)
        print(f"{f'+{gain * 100:.0f} pts':>10} {a.questions:>10} {a.gated_power_sims:>6} {powers[gain]:>9.3f} "
              f"{noreg[gain]:>12.3f} {alone:>24.3f}   <- power" + (
                  f"; no-reg fail = false-regression rate of good candidates (must be <= regression_alpha {reg_alpha})"
                  if gain == 0.20 else ""))
    ok_fpr, ok_power, ok_noreg = fpr <= alpha, powers[0.20] >= 0.80, noreg[0.20] <= reg_alpha
    print(f"\nfalse promotion <= alpha: {'yes' if ok_fpr else 'NO'};  power at +20 pts >= 0.80: "
          f"{'yes' if ok_power else 'NO'};  good candidates (+20) refused by a no-regression gate <= regression_alpha: "
          f"{'yes' if ok_noreg else 'NO'}")
    return ok_fpr, ok_fpr and ok_power and ok_noreg


LOOK_GATES: dict[tuple[int, float], object] = {}  # (id of the gate, a look's nominal level) -> that gate with it as alpha


def look_gate(gate: object, nominal: float) -> object:
    """The gate at a look of the sequential design: its McNemar test at the look's nominal boundary."""
    key = (id(gate), nominal)
    if key not in LOOK_GATES:
        LOOK_GATES[key] = OmegaConf.merge(gate, {"alpha": nominal})
    return LOOK_GATES[key]


def both_designs(rng: np.random.Generator, n_questions: int, gain: float, n_repeats: int, judge_flip: float,
                 gate: object, n_boot: int, plan: sequential.SequentialPlan) -> tuple[bool, bool, float, str]:
    """One simulated compare decided both ways on the same verdicts, drawn as ``one_comparison``
    draws them (so with the same seed and count the fixed design's decisions are the first
    table's): (fixed promoted, sequential promoted, sequential rows / fixed rows, how the
    sequential design stopped). Look k reads the first k runs of every question in both arms;
    a sequential promotion is the gate's on the stopping look's figures, at that look's boundary."""
    base, cand = verdicts(rng, n_questions, gain, n_repeats, judge_flip)
    seed = int(rng.integers(1 << 31))
    fixed = promoted(stats.paired_summary(base, cand, n_boot=n_boot, seed=seed), gate)
    for look in range(1, plan.max_looks + 1):
        b, c = ({q: runs[:look] for q, runs in arm.items()} for arm in (base, cand))
        s = stats.paired_summary(b, c, n_boot=n_boot, seed=seed)
        d = sequential.decide_look(look, s, plan, gate)
        if d.stopped:
            break
    seq = d.action == "stop_efficacy" and promoted(s, look_gate(gate, d.boundary.nominal))
    rows = sum(len(r) for arm in (b, c) for r in arm.values()) / sum(len(r) for arm in (base, cand) for r in arm.values())
    return fixed, seq, rows, d.action


def sequential_rates(n_sims: int, seed: int, **kw: object) -> dict[str, float]:
    """Over ``n_sims`` simulated compares: each design's promoted share, the sequential design's
    mean rows as a share of the fixed design's, and the shares it stopped early for efficacy / futility."""
    rng = np.random.default_rng(seed)
    runs = [both_designs(rng, **kw) for _ in range(n_sims)]  # type: ignore[arg-type]
    return {"fixed": sum(r[0] for r in runs) / n_sims, "sequential": sum(r[1] for r in runs) / n_sims,
            "rows": sum(r[2] for r in runs) / n_sims,
            "efficacy": sum(r[3] == "stop_efficacy" and r[2] < 1 for r in runs) / n_sims,
            "futility": sum(r[3] == "stop_futility" for r in runs) / n_sims}


def sequential_design(a: argparse.Namespace, gate: object, n_rep: int) -> tuple[bool, bool]:
    """The fixed and the group-sequential design side by side: (fixed A/A <= alpha, sequential A/A <= alpha)."""
    alpha = float(gate.alpha)
    plan = sequential.SequentialPlan(max_looks=n_rep, alpha=alpha, spending=a.spending, boundary=a.boundary,
                                     futility=a.futility, futility_threshold=a.futility_threshold)
    print(f"\nSequential design (jobs.eval.sequential): look k = k runs of every question in both arms; {plan.describe()}; "
          f"a stop for efficacy promotes only if the default gate, with alpha = the look's nominal boundary, "
          f"promotes on that look's figures; the fixed design is the first table's (same questions, same seeds)")
    print(f"\n{'look':>5} {'information':>12} {'alpha spent':>12} {'increment':>10} {'|z| bound':>10} {'nominal p':>10}")
    for x in sequential.boundaries(plan):
        print(f"{x.look:>5} {x.fraction:>12.0%} {x.spent:>12.6f} {x.increment:>10.6f} {x.z:>10.3f} {x.nominal:>10.6f}")
    common = {"n_questions": a.questions, "n_repeats": n_rep, "judge_flip": a.judge_flip, "gate": gate,
              "n_boot": a.bootstrap, "plan": plan}
    print(f"\n{'true gain':>10} {'questions':>10} {'sims':>6} {'fixed promoted':>15} {'seq promoted':>13} "
          f"{'seq rows / fixed':>17} {'early efficacy':>15} {'futility':>9}")
    figures = {}
    for gain in (0.0, 0.10, 0.20, 0.30):
        sims = a.seq_aa_sims if gain == 0 else a.seq_power_sims
        f = figures[gain] = sequential_rates(sims, seed=int(gain * 100) or 1, gain=gain, **common)
        label = "A/A +0" if gain == 0 else f"+{gain * 100:.0f} pts"
        note = (f"false promotion rates (goal <= alpha {alpha})" if gain == 0 else
                "power (goal >= 0.80)" if gain == 0.20 else "power")
        print(f"{label:>10} {a.questions:>10} {sims:>6} {f['fixed']:>15.3f} {f['sequential']:>13.3f} {f['rows']:>17.3f} "
              f"{f['efficacy']:>15.3f} {f['futility']:>9.3f}   <- {note}")
    mean_rows = sum(f["rows"] for f in figures.values()) / len(figures)
    aa_fixed, aa_seq = figures[0.0]["fixed"] <= alpha, figures[0.0]["sequential"] <= alpha
    print(f"{'mean':>10} {'':>10} {'':>6} {'':>15} {'':>13} {mean_rows:>17.3f}   <- rows share over the four "
          f"(goal <= {ROWS_GOAL})")

    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    power = figures[0.20]
    print(f"\nA/A false promotions <= alpha {alpha}: fixed {yes(aa_fixed)}, sequential {yes(aa_seq)};  power at +20 pts "
          f">= 0.80 on {a.questions} questions: fixed {yes(power['fixed'] >= 0.80)}, sequential "
          f"{yes(power['sequential'] >= 0.80)};  average rows share <= {ROWS_GOAL}: {yes(mean_rows <= ROWS_GOAL)}")
    return aa_fixed, aa_seq


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--aa-sims", type=int, default=1000)
    ap.add_argument("--power-sims", type=int, default=400)
    ap.add_argument("--judge-flip", type=float, default=0.05, help="share of verdicts the noisy judge flips")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--gated-aa-sims", type=int, default=1000, help="A/A simulations of the gated design")
    ap.add_argument("--gated-power-sims", type=int, default=400, help="simulations per gain of the gated design")
    ap.add_argument("--gated-bootstrap", type=int, default=1000, help="bootstrap resamples in the gated design")
    ap.add_argument("--seq-aa-sims", type=int, default=1000, help="A/A simulations of the fixed vs sequential table")
    ap.add_argument("--seq-power-sims", type=int, default=400, help="simulations per gain of the fixed vs sequential table")
    ap.add_argument("--spending", choices=sequential.SPENDING, default=sequential.SequentialPlan.spending)
    ap.add_argument("--boundary", choices=sequential.BOUNDARY, default=sequential.SequentialPlan.boundary)
    ap.add_argument("--futility", choices=sequential.FUTILITY, default=sequential.SequentialPlan.futility)
    ap.add_argument("--futility-threshold", type=float, default=sequential.SequentialPlan.futility_threshold)
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
    ok_gated_fpr, _ = gated_design(a, gate, n_rep)
    ok_fixed_aa, ok_seq_aa = sequential_design(a, gate, n_rep)
    return 0 if ok_fpr and ok_gated_fpr and ok_fixed_aa and ok_seq_aa else 1


if __name__ == "__main__":
    sys.exit(main())
