"""gate: move ``production`` to the candidate only if every gate passes on the compare
results of the same pipeline, and record why either way. ``gate.rollback=true`` moves
``production`` back to the version recorded before the last promotion."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from jobs.core.contract import GATE_TAG
from jobs.core.errors import Refused, UserError
from jobs.core.faults import pause_point
from jobs.core.results import AlignResult, CompareResult, GateResult
from jobs.eval import judges, stats
from jobs.eval.pipeline_judge import judge_agreement
from jobs.stages import release
from jobs.stages.common import finish, recorded, reuse, stage_run
from jobs.stages.context import StageContext
from jobs.store import prompts, tracking


@dataclass(frozen=True)
class Gate:
    name: str
    value: float | None
    threshold: float
    rule: str  # ">=" or "<="
    passed: bool
    note: str = ""  # what the value rests on, or why it is missing

    @property
    def needs(self) -> str:
        """The rule and threshold as said: a sequential look's boundary to 6 places, a config's value as written."""
        return f"{self.rule} {round(self.threshold, 6)}"

    def line(self) -> str:
        shown = "missing" if self.value is None else f"{self.value:.4f}"
        return (f"{'PASS' if self.passed else 'FAIL'}  {self.name:<34} {shown:>9} {self.needs}"
                + (f"  ({self.note[:160]})" if self.note else ""))


def _gate(name: str, value: float | None, rule: str, threshold: float, note: str = "") -> Gate:
    return Gate(name, value, float(threshold), rule, stats.check_passes(value, rule, float(threshold)), note)


JUDGE_GATE = "judge_kappa"


def judge_gate(align_result: AlignResult | None, g: Any) -> list[Gate]:
    """The judge compare used must agree with the experts: its held-out kappa, measured by align
    on enough labels, at least ``gate.min_judge_kappa`` (null: no expert check)."""
    if g.get("min_judge_kappa") is None:
        return []
    kappa, basis = judge_agreement(align_result)
    return [_gate(JUDGE_GATE, kappa, ">=", float(g.min_judge_kappa), basis)]


def evaluate_gates(compare: CompareResult, g: Any, align_result: AlignResult | None = None) -> list[Gate]:
    """Every gate's value and threshold, from compare's and align's results and the gate config.
    A figure compare did not record counts as not measured (an error rate as 1.0): a refusal."""
    rates = (compare.baseline_error_rate, compare.candidate_error_rate)
    error_rate = max(1.0 if r is None else r for r in rates)
    alpha, alpha_note = gain_alpha(compare, g)
    gates = [_gate(name, value, rule, threshold, alpha_note if name.startswith("alpha") else "")
             for name, value, rule, threshold in stats.gain_checks(compare.delta, compare.p_value, compare.ci_low,
                                                                   compare.regressions, g, alpha)]
    gates.append(_gate("max_error_rate", error_rate, "<=", g.max_error_rate))
    floors, regressions = scorer_gates(compare, g)
    slice_floors, slice_regressions = slice_gates(compare, g)
    return gates + floors + slice_floors + no_regression(regressions + slice_regressions, g) + judge_gate(align_result, g)


def gain_alpha(compare: CompareResult, g: Any) -> tuple[float, str]:
    """The McNemar level the gain is tested at: ``gate.alpha`` for a fixed compare; for a
    sequential one, the boundary of the look it stopped at, which spends the same alpha over
    the looks (jobs/eval/sequential.py), so testing its last look at ``gate.alpha`` would not."""
    seq = compare.sequential
    if not seq:
        return float(g.alpha), ""
    return float(seq["nominal"]), (f"sequential: look {seq['looks_run']} of {seq['max_looks']}'s boundary, "
                                   f"gate.alpha {float(g.alpha):g} spent over the looks; {seq['action']}")


Regression = tuple[str, float | None, str]  # (gate name, one-sided p that the candidate is worse, note)


def scorer_gates(compare: CompareResult, g: Any) -> tuple[list[Gate], list[Regression]]:
    """``gate.hard_gates``: each scorer's candidate mean at least ``min``, and its no-regression
    test. A scorer that failed on more than ``max_error_rate`` of an arm's rows is not measured;
    on fewer, the figure says how many rows it rests on."""
    means = (compare.scorer_means or {}).get("candidate", {})
    floors, regressions = [], []
    for hard in g.get("hard_gates") or []:
        scorer = str(hard["scorer"])
        failed, note = scorer_errors(compare, scorer, float(g.max_error_rate))
        if hard.get("min") is not None:
            mean = None if failed else means.get(scorer, means.get(judges.assessment_name(scorer)))
            floors.append(_gate(f"hard:{scorer}", mean, ">=", float(hard["min"]), note))
        if hard.get("no_regression", True):
            test = (compare.scorer_tests or {}).get(scorer)
            p = None if failed or not test or not test.get("pairs") else float(test["p_worse"])
            regressions.append((f"no_regression:{scorer}", p, note or ("" if test else f"compare recorded no paired "
                                                                         f"values of {scorer}")))
    return floors, regressions


def slice_gates(compare: CompareResult, g: Any) -> tuple[list[Gate], list[Regression]]:
    """``gate.slices``: each slice's candidate pass rate at least ``min``, and its no-regression test."""
    floors, regressions = [], []
    for spec in g.get("slices") or []:
        name = str(spec["slice"])
        t = (compare.slices or {}).get(name)
        note = (f"compare recorded no slice '{name}'; rerun compare with force=true" if t is None
                else f"{t['where']}: {t['questions']} question{'' if t['questions'] == 1 else 's'}, {t['pairs']} run pairs")
        if spec.get("min") is not None:
            floors.append(_gate(f"slice:{name}", None if t is None else t["candidate_pass_rate"], ">=",
                                float(spec["min"]), note))
        if spec.get("no_regression", True):
            p = None if t is None or not t["pairs"] else float(t["p_worse"])
            regressions.append((f"no_regression:slice:{name}", p, note))
    return floors, regressions


def no_regression(tests: list[Regression], g: Any) -> list[Gate]:
    """The no-regression gates: each passes unless its test finds the candidate significantly
    worse. They decide one promotion together, so their p-values are Holm-adjusted: the chance
    that any of them refuses a candidate that is no worse stays at most ``regression_alpha``.
    (A false promotion needs the gain test to err, whatever these say: its alpha bounds it.)"""
    adjusted = stats.holm({name: p for name, p, _ in tests if p is not None})
    holm = f"Holm-adjusted one-sided p over {len(adjusted)} tests"
    return [_gate(name, adjusted.get(name), ">=", float(g.regression_alpha), note if name not in adjusted
                  else f"{holm}; {note}" if note else holm) for name, _, note in tests]


def scorer_errors(compare: CompareResult, scorer: str, max_error_rate: float) -> tuple[bool, str]:
    """(whether the scorer failed on more than ``max_error_rate`` of an arm's rows, so its figures
    are not measured; why, or what they rest on): the rows it failed on in each arm and the
    first error, from compare's per-scorer counts ("" when it failed on none)."""
    counts = compare.scorer_counts or {}
    parts, first, failed = [], None, False
    for arm in ("candidate", "baseline"):
        c = (counts.get(arm) or {}).get(scorer) or (counts.get(arm) or {}).get(judges.assessment_name(scorer))
        if c and c.get("errors"):
            rows = c["errors"] + c["judged"]
            parts.append(f"{c['errors']} of {rows} {arm} rows failed")
            first = first or c.get("first_error")
            failed = failed or c["errors"] > max_error_rate * rows
    if not parts:
        return False, ""
    return failed, (f"{scorer} {', '.join(parts)}" + ("" if failed else f" (within max_error_rate {max_error_rate})")
                    + f"; first error: {' '.join(str(first).split())[:300]}")


def decide(gates: list[Gate]) -> tuple[str, list[str]]:
    failed = [f"{x.name} {'not measured' if x.value is None else f'{x.value:.4f}'} (needs {x.needs})"
              + (f": {x.note}" if x.note else "") for x in gates if not x.passed]
    return ("promote" if not failed else "refuse"), failed


def check(cfg: Any) -> None:
    """The gate reads only MLflow; its thresholds are checked by the root schema (GateSettings).
    A hard gate's scorer must be one compare measures (judge.scorers): on any other
    scorer the gate could only refuse, so the config is refused before the first stage."""
    if cfg.gate.get("rollback"):
        return  # a rollback decides nothing
    listed = [judges.scorer_name(s) for s in cfg.judge.get("scorers") or []]
    measured = {judges.assessment_name(s) for s in listed}
    for i, hard in enumerate(cfg.gate.get("hard_gates") or []):
        scorer = str(hard["scorer"])
        if judges.assessment_name(scorer) not in measured:
            raise UserError(f"gate.hard_gates[{i}]: scorer '{scorer}' is not in judge.scorers {listed}, so "
                            f"compare never measures it and the gate could only refuse; add it: "
                            f"judge.scorers=[{','.join([*listed, scorer])}]")
    slices = dict(cfg.dataset.get("slices") or {})
    for i, spec in enumerate(cfg.gate.get("slices") or []):
        if str(spec["slice"]) not in slices:
            raise UserError(f"gate.slices[{i}]: slice '{spec['slice']}' is not in dataset.slices {sorted(slices)}; "
                            f"define it in the dataset config (slices: {{{spec['slice']}: <expectations key>=<value>}}) "
                            f"or with '+dataset.slices.{spec['slice']}=\"<key>=<value>\"'")


def compare_result(ctx: StageContext) -> tuple[Any, CompareResult, AlignResult | None]:
    """The pipeline's compare results, checked against the versions the pipeline now records."""
    pid = ctx.pipeline_id
    ctx.needs("compare")
    run = ctx.store.latest_result(pid, "compare")
    if run is None:
        recorded(ctx, "compare")  # raises, naming why the last compare recorded nothing, or to run it first
    compare = tracking.result_of(run)
    ctx.needs("optimize")
    candidate = tracking.pipeline_candidate(ctx.store.experiment_id, pid)
    if candidate != compare.candidate_version:
        raise UserError(f"stale compare results: compare used candidate v{compare.candidate_version} but the "
                        f"pipeline's candidate is now v{candidate}; rerun compare with force=true")
    ctx.needs("align")
    align = ctx.store.result(pid, "align")
    judge_version = (align.judge_version if align is not None else None) or "base"
    if compare.outcome == "compared" and str(compare.judge_version) != str(judge_version):
        raise UserError(f"stale compare results: compare used judge v{compare.judge_version} but align now "
                        f"records v{judge_version}; rerun compare with force=true")
    return run, compare, align


def record(name: str, version: Any, tags: dict[str, str]) -> None:
    """The decision's tags on the candidate version (when there is one) and on the gate's run."""
    tagged = {GATE_TAG + key: value for key, value in tags.items()}
    if version is not None:
        prompts.tag_version(name, version, tagged)
    tracking.log(tags=tagged)


REFERENCE = ("heldout_pass_rate", "heldout_rows", "judge_name", "judge_version", "compare_run_id")


def record_reference(name: str, compare: CompareResult, production: int) -> None:
    """What the monitor holds production to: the held-out pass rate compare measured for the
    version production now points at, the rows it rests on, and the judge that scored them."""
    arm = "candidate" if int(production) == int(compare.candidate_version) else "baseline"
    if arm == "baseline" and int(production) != int(compare.baseline_version):
        return  # production moved concurrently: compare measured neither arm as production
    rate = getattr(compare, f"{arm}_pass_rate")
    errors = getattr(compare, f"{arm}_errors") or 0
    if rate is None:
        return
    values = {"heldout_pass_rate": f"{rate:.6f}", "heldout_rows": str(int(compare.rows_per_arm or 0) - int(errors)),
              "judge_name": str(compare.judge_name), "judge_version": str(compare.judge_version),
              "compare_run_id": str(compare.run_id)}
    prompts.tag_version(name, production, {GATE_TAG + key: values[key] for key in REFERENCE})


def rollback(ctx: StageContext) -> GateResult:
    name = str(ctx.cfg.prompt.name)
    current = prompts.by_alias(name, "production")
    if current is None:
        raise UserError(f"prompt '{name}' has no production alias; nothing to roll back")
    previous = current.tags.get(GATE_TAG + "previous_production")
    if not previous:
        raise UserError(f"production (v{current.version}) has no recorded previous version; nothing to roll back to")
    recorded = current.tags.get(GATE_TAG + "previous_release")  # every prompt's production before the promotion
    target = {**(json.loads(recorded) if recorded else {}), name: int(previous)}
    with stage_run(ctx, tracking.inputs_hash("rollback", current.version)) as run:
        with prompts.alias_lock(name, "production"):  # the gate's lock: no promotion moves it meanwhile
            moved = release.move(ctx.cfg, "production", target)
        record(name, current.version, {"decision": "rolled_back", "rolled_back_to": previous,
                                       "pipeline_id": ctx.pipeline_id, "release": release.tag_value(moved)})
        ctx.say(f"production moved back from {release.describe(ctx.cfg, current.version)} to "
                f"{release.label(ctx.cfg, moved)}")
        return finish(ctx, GateResult(decision="rolled_back", from_version=int(current.version),
                                      to_version=int(previous), production=moved, run_id=run.info.run_id))


def run(ctx: StageContext) -> GateResult:
    cfg = ctx.cfg
    if cfg.gate.rollback:
        return rollback(ctx)
    compare_run, compare, align = compare_result(ctx)
    inputs = tracking.inputs_hash(compare_run.info.run_id, dict(cfg.gate), align.run_id if align is not None else None)
    if (done := reuse(ctx, inputs)) is not None:
        return done
    name = str(cfg.prompt.name)
    with stage_run(ctx, inputs) as run:
        if compare.outcome != "compared":  # nothing to promote; the judge's evidence is still reported
            gates = judge_gate(align, cfg.gate)
            why = recorded(ctx, "optimize").reason or "optimize found no gain on train"
            decision, reasons = "refuse", [f"no candidate: optimize: {why}", *decide(gates)[1]]
        else:
            gates = evaluate_gates(compare, cfg.gate, align)
            decision, reasons = decide(gates)
        decision, reasons, production = move_production(ctx, name, compare, decision, reasons)
        pause_point("gate.decided")  # the alias moved (if promoting), nothing recorded yet: the awkward moment
        result = record_decision(ctx, run, name, compare, compare_run.info.run_id, gates, decision, reasons, production)
    if decision != "promote" and cfg.gate.fail_on_refuse:
        raise Refused(f"the gate refused (gate.fail_on_refuse=true): {'; '.join(reasons)}")
    return result


def move_production(ctx: StageContext, name: str, compare: CompareResult, decision: str,
                    reasons: list[str]) -> tuple[str, list[str], int]:
    """Move ``production`` to the candidate under the alias lock when the gates said promote:
    (decision, reasons, the version production pointed at before)."""
    candidate, baseline, pid = compare.candidate_version, compare.baseline_version, ctx.pipeline_id
    with prompts.alias_lock(name, "production"):  # no other gate moves production between check and move
        production = int(prompts.by_alias(name, "production").version)
        if decision == "promote" and production == int(candidate) and \
                prompts.version(name, candidate).tags.get(GATE_TAG + "promoting_pipeline") == pid:
            production = int(baseline)  # this pipeline moved it before it was killed: record, don't move again
            ctx.say(f"production already points at v{candidate}, moved by an earlier attempt of this pipeline")
        elif decision == "promote" and production != int(baseline):
            decision, reasons = "refuse", [f"production moved concurrently: compare measured against "
                                           f"v{baseline}, production is now v{production}"]
        elif decision == "promote":
            prompts.tag_version(name, candidate, {GATE_TAG + "promoting_pipeline": pid,  # before the move
                                                  GATE_TAG + "previous_release": release.tag_value(
                                                      release.current(ctx.cfg, "production"))})
            release.point(ctx.cfg, "production", int(candidate))  # every prompt of the release, or none
    return decision, reasons, production


def record_decision(ctx: StageContext, run: Any, name: str, compare: CompareResult, compare_run_id: str,
                    gates: list[Gate], decision: str, reasons: list[str], production: int) -> GateResult:
    """The decision on the candidate version and the run, the monitor's reference, the lines people read."""
    candidate = compare.candidate_version
    record(name, candidate, {"decision": decision, "reasons": "; ".join(reasons) or "every gate passed",
                             "pipeline_id": ctx.pipeline_id, "previous_production": str(production),
                             "compare_run_id": compare_run_id, "gates": json.dumps([asdict(x) for x in gates]),
                             **({} if candidate is None else {"release": release.tag_value(
                                 {**release.of(ctx.cfg, candidate), name: int(candidate)})})})
    if compare.outcome == "compared":
        record_reference(name, compare, candidate if decision == "promote" else production)
    tracking.log(metrics={**{f"gate_{x.name.split(' ')[0].replace(':', '_')}": float(x.value)
                             for x in gates if x.value is not None},
                          "promoted": 1.0 if decision == "promote" else 0.0})
    for x in gates:
        print(x.line())
    ctx.say(f"PROMOTED: production {release.describe(ctx.cfg, production)} -> {release.describe(ctx.cfg, candidate)}"
            if decision == "promote" else f"REFUSED: production stays {release.describe(ctx.cfg, production)}; "
            + "; ".join(reasons))
    ctx.say(f"run: {ctx.store.run_link(run.info.run_id)}")
    return finish(ctx, GateResult(decision=decision, reasons=reasons, candidate_version=candidate,
                                  previous_production=production, gates=[asdict(x) for x in gates],
                                  production=release.current(ctx.cfg, "production"), run_id=run.info.run_id))
