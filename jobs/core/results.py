"""What each stage hands on: one dataclass per stage result, with the headline people look for
first. A stage records its result on its MLflow run (``encode``, in ``stages.common.finish``);
everything that reads one (later stages, the pipeline summary, launchers, sweeps) goes through
``decode``. That run tag is the one channel from a stage, local process or Kubernetes Job, back
to whoever launched it.

Every field has a default: a measurement that is missing reads as None, which every gate
treats as "not measured", never as a pass. ``decode`` ignores keys it does not know, so runs
recorded by an older promptgate stay readable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


def _few(n: Any, floor: Any, what: str) -> str | None:
    if n is None or int(n) >= int(floor):
        return None
    return f"WARNING: this rests on {n} {what}, fewer than {floor} (evidence.*); read it as a hint, not a result"


def scorer_lines(counts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per other scorer: ``safety: 24 judged, 0 errors``, with the first error when it failed."""
    out = []
    for name, c in counts.items():
        line = f"{name}: {c.get('judged', 0)} judged, {c.get('errors', 0)} errors"
        out.append(line + (f" (first: {' '.join(str(c['first_error']).split())[:200]})" if c.get("errors") else ""))
    return out


def scorer_failures(*counts: dict[str, dict[str, Any]]) -> str:
    """``; scorer errors: Safety 24`` when another scorer failed on some row (summed over the
    given arms), else "": a figure's "0 errors" never stands alone while a scorer failed."""
    failed: dict[str, int] = {}
    for arm in counts:
        for name, c in (arm or {}).items():
            if c.get("errors"):
                failed[name] = failed.get(name, 0) + int(c["errors"])
    return ("; scorer errors: " + ", ".join(f"{k} {v}" for k, v in failed.items())) if failed else ""


def scorer_table(counts: dict[str, dict[str, dict[str, Any]]], means: dict[str, dict[str, float]],
                 tests: dict[str, dict[str, Any]]) -> list[str]:
    """compare's other scorers, one line each: both arms' means, the one-sided p that the
    candidate is worse, and each arm's errors (with the first error when one failed)."""
    names = list(dict.fromkeys([*(counts.get("baseline") or {}), *(counts.get("candidate") or {})]))
    if not names:
        return []
    rows = [f"{'scorer':<22} {'baseline':>8} {'candidate':>9} {'worse p':>8} {'pairs':>6}  errors (baseline, candidate)"]
    for name in names:
        c = {arm: (counts.get(arm) or {}).get(name) or {} for arm in ("baseline", "candidate")}
        m = {arm: (means.get(arm) or {}).get(name) for arm in ("baseline", "candidate")}
        t = tests.get(name) or {}
        p = "-" if not t.get("pairs") else f"{t['p_worse']:.4f}"  # no pair: nothing tested
        errors = ", ".join(f"{c[a].get('errors', 0)}/{c[a].get('errors', 0) + c[a].get('judged', 0)}" for a in c)
        first = next((c[a]["first_error"] for a in c if c[a].get("errors")), None)
        rows.append(f"{name:<22} {fmt(m['baseline']):>8} {fmt(m['candidate']):>9} {p:>8} {t.get('pairs', 0):>6}  {errors}"
                    + (f" (first: {' '.join(str(first).split())[:160]})" if first else ""))
    return rows


def slice_lines(table: dict[str, dict]) -> list[str]:
    """The per-slice table people read: questions, both arms' pass rates, the gain."""
    if not table:
        return []
    rows = [f"{'slice':<16} {'where':<24} {'questions':>9} {'baseline':>8} {'candidate':>9} {'gain':>7} {'worse p':>8}"]
    for name, t in table.items():  # "undefined" where no question of the slice was scored in both arms
        gain = "undefined" if t["delta"] is None else f"{t['delta']:+.3f}"
        rows.append(f"{name:<16} {t['where']:<24} {t['questions']:>9} {fmt(t['baseline_pass_rate']):>8} "
                    f"{fmt(t['candidate_pass_rate']):>9} {gain:>7} {t['p_worse']:>8.4f}")
    return rows


def fmt(x: float | None, digits: int = 3) -> str:
    """A figure for people: ``undefined`` when it could not be computed."""
    return "undefined" if x is None else f"{x:.{digits}f}"


@dataclass
class StageResult:
    STAGE: ClassVar[str] = ""
    run_id: str | None = None  # the MLflow run that recorded it
    spend: dict[str, float] | None = None  # the stage's LLM spend (gateway figures), when it made calls
    spans: dict[str, dict[str, float]] | None = None  # calls, seconds, tokens, usd per kind: agent, tools, judge, ...

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        """(the figure people look for first, with the sample it rests on; a warning when that
        sample is below the config's ``evidence`` floors)."""
        return None, None

    def agent_rows(self) -> int:
        """Rows this stage ran the agent on (the summary checks that its calls reached the gateway)."""
        return 0


@dataclass
class RegisterResult(StageResult):
    STAGE: ClassVar[str] = "register"
    prompt_name: str | None = None
    seed_version: int | None = None
    created: bool | None = None  # whether this run registered the seed text as a new version
    production_version: int | None = None  # the baseline that compare and gate use
    baseline_version: int | None = None
    companions: dict[str, int] = field(default_factory=dict)  # the seed release's other prompts: name -> version

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        others = "".join(f" with {n} v{v}" for n, v in self.companions.items())
        return f"prompt {self.prompt_name} seed v{self.seed_version}{others}, production v{self.production_version}", None


@dataclass
class EvaluateResult(StageResult):
    STAGE: ClassVar[str] = "evaluate"
    rows: int | None = None
    scored: int | None = None  # rows the judge scored without error
    errors: int | None = None
    retried_rows: int | None = None
    pass_rate: float | None = None
    prompt_version: int | None = None
    split: str | None = None
    reviewable: int | None = None  # traces tagged for expert review
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)  # other scorer -> judged, errors, first_error

    def agent_rows(self) -> int:
        return int(self.rows or 0)

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        return (f"v{self.prompt_version}: train pass rate {fmt(self.pass_rate)} on {self.scored} judged rows "
                f"({self.errors} errors{scorer_failures(self.scorers)})" + "".join(f"\n{'':>11}{line}" for line in scorer_lines(self.scorers)),
                _few(self.scored, evidence.min_rows, "judged rows"))


@dataclass
class FeedbackResult(StageResult):
    STAGE: ClassVar[str] = "feedback"
    labels_written: int | None = None
    labels_skipped: int | None = None  # already there from an earlier attempt
    traces: int | None = None
    expert_pass_rate: float | None = None
    raw_agreement_with_judge: float | None = None
    source: str | None = None

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        return f"{self.labels_written} expert labels; expert pass rate {fmt(self.expert_pass_rate)}", None


@dataclass
class AlignResult(StageResult):
    STAGE: ClassVar[str] = "align"
    judge_name: str | None = None
    judge_version: int | None = None  # the registered aligned judge; None: the base judge is used
    aligned: bool | None = None
    measured: bool | None = None  # False: too few held-out labels to measure agreement
    reason: str | None = None
    kappa_before: float | None = None
    kappa_after: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    holdout_scored: int | None = None  # held-out labels both judges scored
    labels: int | None = None
    holdout: int | None = None
    # a numeric judge only: agreement on its scale (judge.scale), on scale_n_* held-out value pairs
    scale_mae_before: float | None = None  # mean |judge - expert|, in the scale's units
    scale_mae_after: float | None = None
    scale_qwk_before: float | None = None  # quadratic weighted kappa on the scale
    scale_qwk_after: float | None = None
    scale_n_before: int | None = None
    scale_n_after: int | None = None

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        if self.measured is False:
            return f"judge-expert agreement NOT MEASURED: {self.reason}; no judge registered", None
        judge = (f"aligned judge v{self.judge_version} registered" if self.judge_version
                 else f"base judge kept ({self.reason or ''})")
        n = self.holdout_scored if self.holdout_scored is not None else self.holdout
        return (f"judge-expert agreement on {n} held-out labels (of {self.labels}): kappa {fmt(self.kappa_before)} -> "
                f"{fmt(self.kappa_after)}, accuracy {fmt(self.accuracy_before)} -> {fmt(self.accuracy_after)}"
                f"{self.scale_words()}; {judge}",
                _few(n, evidence.min_holdout_labels, "held-out expert labels"))

    def scale_words(self) -> str:
        """A numeric judge's agreement on its scale, for the headline; empty for other kinds."""
        if self.scale_n_before is None:
            return ""
        return (f"; on the judge's scale: mean absolute error {fmt(self.scale_mae_before)} -> "
                f"{fmt(self.scale_mae_after)}, weighted kappa {fmt(self.scale_qwk_before)} -> "
                f"{fmt(self.scale_qwk_after)} (n={self.scale_n_before} -> {self.scale_n_after})")


@dataclass
class OptimizeResult(StageResult):
    STAGE: ClassVar[str] = "optimize"
    outcome: str | None = None  # candidate | no_improvement
    candidate_version: int | None = None
    reason: str | None = None  # why there is no candidate
    initial_train_score: float | None = None
    final_train_score: float | None = None
    metric_calls: int | None = None
    metric_calls_refused: int | None = None
    max_metric_calls: int | None = None
    judge_errors: int | None = None  # metric calls the judge gave no verdict on
    agent_errors: int | None = None  # metric calls whose agent call failed (never judged)
    judge_name: str | None = None
    judge_version: int | str | None = None  # "base": the judge from config, not an aligned version
    seed_version: int | None = None
    train_rows: int | None = None
    val_rows: int | None = None

    def agent_rows(self) -> int:
        return int(self.metric_calls or 0)

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        cand = (f"candidate v{self.candidate_version}" if self.candidate_version
                else f"NO CANDIDATE: {self.reason or 'no gain on train'}")
        failed = (self.agent_errors or 0) + (self.judge_errors or 0)
        errors = f" ({self.agent_errors or 0} agent, {self.judge_errors or 0} judge errors)" if failed else ""
        return (f"from v{self.seed_version}: train score {fmt(self.initial_train_score)} -> {fmt(self.final_train_score)} on "
                f"{self.val_rows if self.val_rows is not None else '?'} validation rows, "
                f"{self.metric_calls}/{self.max_metric_calls} metric calls{errors}; {cand}",
                _few(self.val_rows, evidence.min_rows, "validation rows"))


@dataclass
class CompareResult(StageResult):
    STAGE: ClassVar[str] = "compare"
    outcome: str | None = None  # compared | no_candidate
    baseline_version: int | None = None
    candidate_version: int | None = None
    judge_name: str | None = None
    judge_version: int | str | None = None  # "base": the judge from config, not an aligned version
    n_repeats: int | None = None
    questions: int | None = None
    rows_per_arm: int | None = None
    pairs: int | None = None  # (question, repeat) pairs both arms scored: what McNemar counts on
    baseline_pass_rate: float | None = None
    candidate_pass_rate: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # exact McNemar
    regressions: int | None = None
    improvements: int | None = None
    baseline_errors: int | None = None
    candidate_errors: int | None = None
    baseline_error_rate: float | None = None
    candidate_error_rate: float | None = None
    regressed: list[str] = field(default_factory=list)
    improved: list[str] = field(default_factory=list)
    scorer_means: dict[str, dict[str, float]] = field(default_factory=dict)  # arm -> scorer -> mean
    scorer_counts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # arm -> scorer -> judged, errors, first_error
    scorer_tests: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer -> pairs, worse, better, p_worse
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset.slices name -> where, questions, pass rates, delta, p_worse
    chart: str | None = None
    mlflow_comparison: dict[str, Any] | None = None  # mlflow.genai.compare_evaluations on the same runs
    design: str | None = None  # compare.design: fixed | sequential
    sequential: dict[str, Any] | None = None  # sequential design: looks, stopping look, its boundary, rows spent
    reused: dict[str, Any] | None = None  # baseline rows reused from an earlier compare: how many, from which run, re-judged

    def agent_rows(self) -> int:
        """Rows the agent ran for: both arms' rows but those reused from an earlier compare."""
        if self.outcome != "compared":
            return 0
        return 2 * int(self.rows_per_arm or 0) - int((self.reused or {}).get("rows", 0))

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        if self.outcome != "compared":
            return "no candidate to compare", None
        return (f"held-out pass rate {fmt(self.baseline_pass_rate)} (v{self.baseline_version}) -> "
                f"{fmt(self.candidate_pass_rate)} (v{self.candidate_version}) on {self.questions} questions x "
                f"{self.n_repeats} runs, gain {self.delta:+.3f} CI [{self.ci_low:+.3f}, {self.ci_high:+.3f}], "
                f"McNemar p={self.p_value:.4f}, {self.regressions} regressed, errors {self.baseline_errors}/"
                f"{self.candidate_errors}{scorer_failures(*self.scorer_counts.values())}; judge {self.judge_name} "
                f"v{self.judge_version}{self._cross_check()}{self._spent()}\n"
                f"{'':>11}chart: {self.chart}{self._scorer_lines()}",
                _few(self.questions, evidence.min_questions, "held-out questions"))

    def _spent(self) -> str:
        """How the rows were come by: the sequential design's stopping look, the reused baseline."""
        out = ""
        if seq := self.sequential:
            out += (f"\n{'':>11}sequential: look {seq['looks_run']} of {seq['max_looks']}, {seq['action']}, "
                    f"{seq['rows_spent']} of {seq['rows_planned']} rows; McNemar tested at {seq['nominal']:.4g}")
        if r := self.reused:
            out += (f"\n{'':>11}{r['arm']}: {r['rows']} traces reused from compare {r['from_compare']}"
                    + (f", re-judged with v{self.judge_version}" if r["rejudged"] else ""))
        return out

    def _scorer_lines(self) -> str:
        lines = scorer_table(self.scorer_counts, self.scorer_means, self.scorer_tests) + slice_lines(self.slices)
        return "".join(f"\n{'':>11}{line}" for line in lines)

    def _cross_check(self) -> str:
        m = self.mlflow_comparison or {}
        if m.get("status") != "ok":
            return ""
        return (f"\n{'':>11}MLflow compare_evaluations on the same runs' {m.get('measures', 'judge values')}: diff {m['diff']:+.3f} "
                f"CI [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}], {m['method']} p={m['p_value']:.4f}")


@dataclass
class GateResult(StageResult):
    STAGE: ClassVar[str] = "gate"
    decision: str | None = None  # promote | refuse | rolled_back
    reasons: list[str] = field(default_factory=list)
    candidate_version: int | None = None
    previous_production: int | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)  # each gate's value, rule and threshold
    from_version: int | None = None  # a rollback's
    to_version: int | None = None
    production: dict[str, int] = field(default_factory=dict)  # every prompt's production version afterwards

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        every = (f" (production: {', '.join(f'{n} v{v}' for n, v in self.production.items())})"
                 if len(self.production) > 1 else "")  # a release of several prompts
        if self.decision == "rolled_back":
            return f"ROLLED BACK: production v{self.from_version} -> v{self.to_version}{every}", None
        if self.decision == "promote":
            return f"PROMOTED: production v{self.previous_production} -> v{self.candidate_version}{every}", None
        return f"REFUSED: production stays v{self.previous_production}{every}; " + "; ".join(self.reasons), None


@dataclass
class MonitorResult(StageResult):
    STAGE: ClassVar[str] = "monitor"
    production_version: int | None = None
    judge_name: str | None = None
    judge_version: int | str | None = None  # the judge the last gate relied on
    new_traces: int | None = None  # production traces this run scored
    errors: int | None = None  # traces the judge could not score
    window_start_ms: int | None = None  # the window: traces since the last judged window (a small one carries over)
    window_traces: int | None = None  # scored traces in the window
    window_passes: int | None = None
    window_pass_rate: float | None = None
    reference_pass_rate: float | None = None  # held-out pass rate the gate recorded for production
    reference_rows: int | None = None
    drop: float | None = None  # reference minus window pass rate
    p_value: float | None = None  # one-sided Fisher exact test of a lower pass rate
    drift: bool | None = None  # None: not judged (too few traces)
    reason: str | None = None
    queued: int | None = None  # failing and borderline traces added to the review queue
    checkpoint_ms: int | None = None  # newest trace scored so far: the next run starts there

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        window = (f"window pass rate {fmt(self.window_pass_rate)} on {self.window_traces} traces vs held-out "
                  f"{fmt(self.reference_pass_rate)} on {self.reference_rows} rows")
        if self.drift is None:
            return f"{window}: drift NOT JUDGED ({self.reason})", None
        verdict = "DRIFT" if self.drift else "no drift"
        return f"{window}: {verdict} (drop {self.drop:+.3f}, one-sided Fisher p={self.p_value:.4f})", None


@dataclass
class TrafficResult(StageResult):
    """Simulated production's requests: traces outside any run, so nothing is recorded on a run."""

    STAGE: ClassVar[str] = "traffic"
    answered: int | None = None
    requests: int | None = None
    production_version: int | None = None

    def headline(self, evidence: Any) -> tuple[str | None, str | None]:
        return f"production v{self.production_version} answered {self.answered} of {self.requests} requests", None


RESULT_TYPES: dict[str, type[StageResult]] = {
    cls.STAGE: cls for cls in (RegisterResult, EvaluateResult, FeedbackResult, AlignResult, OptimizeResult,
                               CompareResult, GateResult, MonitorResult, TrafficResult)}


def encode(result: StageResult) -> str:
    """The result as the JSON its run records."""
    return json.dumps(asdict(result), sort_keys=True, default=str)


def decode(stage: str, text: str | None) -> StageResult | None:
    """A recorded result as its stage's type; None when nothing was recorded."""
    if not text:
        return None
    data = json.loads(text)
    cls = RESULT_TYPES[stage]
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})
