"""compare: evaluate the baseline (production at the start of the pipeline) and the
candidate on the held-out set with the recorded judge, n repeats per question, and pair
the outcomes: pass rates, the gain with a paired-bootstrap CI, an exact McNemar p-value,
regressions and improvements, errors per arm. Errors are neither passes nor failures.

Each arm is evaluated in a child run of the compare run, so MLflow's own paired comparison
(``mlflow.genai.compare_evaluations``) runs on the same two evaluations, asked about the
judge's pass/fail per row (``<judge>_passed``, which compare records beside the judge's value);
its figures are recorded next to promptgate's (``mlflow_comparison``) as a cross-check, not as
the decision. Each further scorer (``judge.scorers``) gets its means and a one-sided test of a
regression, and each ``dataset.slices`` slice its pass rates, gain and the same test."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.core.contract import TAG_ARM, TAG_ARM_DIGEST, TAG_JUDGED_BY, TAG_SPLIT
from jobs.core.errors import UserError
from jobs.core.results import CompareResult, scorer_table, slice_lines
from jobs.eval import agent, datasets, judges, stats
from jobs.eval.agent import REPEAT_KEY
from jobs.eval.datasets import Record
from jobs.eval.pipeline_judge import recorded_judge, verdict_name, with_verdict
from jobs.eval.runner import (
    RowOutcome,
    compare_evaluations,
    evaluate_records,
    other_scorers,
    rejudge_records,
    scorer_counts,
    traced_agent,
)
from jobs.eval.sequential import LookDecision, SequentialPlan, decide_look
from jobs.stages import release
from jobs.stages import shards as shards_
from jobs.stages.common import failure_cause, finish, log_lineage, nothing_measured, recorded, reuse, stage_run
from jobs.stages.context import StageContext, llm
from jobs.stages.shards import ShardResult
from jobs.store import traces as store_traces
from jobs.store import tracking

ARMS = ("baseline", "candidate")


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    agent.check(cfg)
    split = str(cfg.compare.split)
    held = datasets.from_config(cfg, split)
    datasets.check_slices(held, dict(cfg.dataset.get("slices") or {}), split,
                          [str(g["slice"]) for g in cfg.gate.get("slices") or []])
    if split == "train":
        raise UserError("compare.split=train: compare must prove the gain on questions the optimizer did not see; "
                        "use compare.split=heldout")
    shared = datasets.shared_questions(datasets.from_config(cfg, "train"), held, agent.input_key(cfg.agent))
    if shared:
        train_record, held_record = shared[0]
        raise UserError(f"{held_record.where}: this {split} question is also in the train set ({train_record.where}); "
                        f"{len(shared)} {split} question(s) are shared, so the gate's held-out proof would mean nothing; "
                        "remove them from one of the files")


def repeated(records: list[Record], n: int) -> list[Record]:
    return [Record(f"{r.id}#{k}", {**r.inputs, REPEAT_KEY: k}, r.expectations, r.where, r.origin)  # origin: the arm's lineage
            for r in records for k in range(n)]


def by_question(outcomes: dict[str, RowOutcome], judge_cfg: Any, n_repeats: int) -> tuple[dict[str, list], int]:
    """Outcomes per question by repeat index (None where the row errored), and the error count."""
    per: dict[str, list[bool | None]] = {}
    errors = 0
    for rid, o in outcomes.items():
        qid, _, k = rid.rpartition("#")
        verdict = judges.passed(judge_cfg, o.value) if o.ok else None
        per.setdefault(qid, [None] * n_repeats)[int(k)] = verdict
        errors += verdict is None
    return per, errors


def as_number(v: Any) -> float | None:
    """A scorer's value as a number: booleans and yes/no ratings as 1/0; None for anything else
    (a categorical rating has no mean)."""
    if isinstance(v, (bool, int, float)):
        return float(v)
    if isinstance(v, str) and v.lower() in ("yes", "no", "true", "false"):
        return 1.0 if v.lower() in ("yes", "true") else 0.0
    return None


def scorer_means(outcomes: dict[str, RowOutcome], names: dict[str, str]) -> dict[str, float]:
    """Each other scorer's mean over the rows it gave a number on, keyed by the config's name
    (``names``: assessment name -> config name, as ``scorer_counts``)."""
    sums: dict[str, list[float]] = {}
    for o in outcomes.values():
        for name, v in o.scores.items():
            if name in names and (x := as_number(v)) is not None:
                sums.setdefault(names[name], []).append(x)
    return {k: sum(v) / len(v) for k, v in sums.items() if v}


def scorer_tests(outcomes: dict[str, dict[str, RowOutcome]], names: dict[str, str]) -> dict[str, dict]:
    """Per other scorer, the one-sided paired test that the candidate is worse, over the run
    pairs (question, repeat k of both arms: the same sampling seed) both arms gave a number on."""
    base, cand = outcomes["baseline"], outcomes["candidate"]
    out = {}
    for name, shown in names.items():
        pairs = [(b, c) for rid, o in base.items() if rid in cand
                 and (b := as_number(o.scores.get(name))) is not None
                 and (c := as_number(cand[rid].scores.get(name))) is not None]
        out[shown] = stats.worse_p(pairs)
    return out


def slice_table(records: list[Record], slices: dict[str, Any], base: dict, cand: dict) -> dict[str, dict]:
    """Each ``dataset.slices`` slice's figures (``stats.slice_summary``), with its rule."""
    members = datasets.slice_members(records, slices)
    return {name: {"where": str(slices[name]), **stats.slice_summary(base, cand, ids)} for name, ids in members.items()}


def per_question_csv(records: list[Record], base: dict, cand: dict, key: str) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["question_id", "question", "baseline_pass_share", "candidate_pass_share", "baseline_runs",
                "candidate_runs", "change"])
    for r in records:
        b = [x for x in base.get(r.id, []) if x is not None]
        c = [x for x in cand.get(r.id, []) if x is not None]
        sb = sum(b) / len(b) if b else None
        sc = sum(c) / len(c) if c else None
        change = ("error" if sb is None or sc is None else "regressed" if sb >= 0.5 > sc
                  else "improved" if sc >= 0.5 > sb else "same")
        w.writerow([r.id, r.text(key), "" if sb is None else f"{sb:.3f}",  # a conversation: its last user turn
                    "" if sc is None else f"{sc:.3f}", len(b), len(c), change])
    return out.getvalue()


def mlflow_comparison(baseline_run: str, candidate_run: str, judge_name: str, level: float) -> dict[str, Any]:
    """MLflow's paired comparison of the two arms' evaluation runs, asked about the outcome the
    gate decides on: the judge's pass/fail verdict per run pair (``<judge>_passed``)."""
    try:
        found = compare_evaluations(baseline_run, candidate_run, level)
    except Exception as e:  # noqa: BLE001 - an experimental API: a failure is recorded, the decision is promptgate's
        return {"status": f"failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    verdict = verdict_name(judge_name)
    s = found.scorers.get(verdict)
    if s is None:
        return {"status": f"not compared: MLflow found no {verdict} values in both runs"}
    return {"status": s.status, "measures": f"{verdict}: the judge's pass/fail per run pair", "method": s.method,
            "n_paired": s.n_paired, "discordant": s.n_nonzero, "baseline_mean": s.baseline_mean,
            "candidate_mean": s.candidate_mean, "diff": s.diff, "ci_low": s.ci_low, "ci_high": s.ci_high,
            "p_value": s.p_value,
            "unpaired": len(found.unpaired_baseline_trace_ids) + len(found.unpaired_candidate_trace_ids)}


def cross_check(arm_runs: dict[str, str], judge_name: str, level: float, shards: int,
                reused: dict[str, Any] | None) -> dict[str, Any]:
    """``mlflow_comparison`` of the two arm runs, where both hold the judge values of their rows:
    compare_evaluations takes them from the run that scored them, which is not the arm's run
    when shards scored them, or when the baseline's rows were reused as judged before."""
    if shards > 1:
        return {"status": f"not run: the arms were evaluated in {shards} shards' runs, and compare_evaluations takes "
                          "the judge's values from the one run that scored them"}
    if reused and not reused["rejudged"]:
        return {"status": f"not run: the baseline's {reused['rows']} rows were reused as compare "
                          f"{reused['from_compare']} judged them, so their judge values are that compare's run's"}
    return mlflow_comparison(arm_runs["baseline"], arm_runs["candidate"], judge_name, level)


def comparison_line(m: dict[str, Any], s: dict) -> str:
    """MLflow's figures beside promptgate's on the same quantity, and whether they agree."""
    if m.get("status") != "ok":
        return f"MLflow compare_evaluations: {m.get('status')}"
    same = abs(m["diff"] - s["delta"]) < 1e-9 and m["n_paired"] == s["pairs"]
    return (f"MLflow compare_evaluations (cross-check, on {m['measures']}): diff {m['diff']:+.3f} over "
            f"{m['n_paired']} run pairs, BCa CI [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}], {m['method']} "
            f"p={m['p_value']:.4f}, {m['unpaired']} unpaired; promptgate {s['delta']:+.3f} over {s['pairs']} pairs, "
            f"exact McNemar p={s['p_value']:.4f}: " + ("the same gain" if same else
                                                       "the gains differ: promptgate averages per question, "
                                                       "MLflow per run pair, and some runs errored"))


def compact_table(s: dict, errors: dict[str, int], rows: int) -> str:
    return "\n".join([
        f"{'arm':<10} {'pass rate':>9} {'errors':>7}",
        f"{'baseline':<10} {s['base_pass_rate']:>9.3f} {errors['baseline']:>4}/{rows}",
        f"{'candidate':<10} {s['cand_pass_rate']:>9.3f} {errors['candidate']:>4}/{rows}",
        f"gain {s['delta']:+.3f}  CI [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]  McNemar p={s['p_value']:.4f}  "
        f"regressed {len(s['regressed'])} {s['regressed'][:6]}  improved {len(s['improved'])}",
    ])


def gain_metrics(s: dict, base_err: int, cand_err: int, rows: int) -> dict[str, float]:
    """The figures compare logs from ``stats.paired_summary`` and each arm's errors over ``rows``."""
    return {"baseline_pass_rate": s["base_pass_rate"], "candidate_pass_rate": s["cand_pass_rate"],
            "delta": s["delta"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "p_value": s["p_value"],
            "regressions": len(s["regressed"]), "improvements": len(s["improved"]),
            "baseline_errors": base_err, "candidate_errors": cand_err,
            "baseline_error_rate": base_err / rows, "candidate_error_rate": cand_err / rows}


def recorded_figures(metrics: dict[str, float]) -> dict[str, Any]:
    """The figures as the result records them, and the gate reads them back: floats to 4 places."""
    return {k: round(float(v), 4) if isinstance(v, float) else v for k, v in metrics.items()}


@dataclass(frozen=True)
class Plan:
    """What compare measures: the two versions on the held-out rows, each repeated n times."""

    name: str  # the prompt
    versions: dict[str, int]  # arm -> prompt version
    records: list[Record]  # held-out questions
    rows: list[Record]  # the questions x repeats
    inputs: str  # the inputs hash
    digests: dict[str, str]  # arm -> what its rows measure (``arm_digest``): an earlier arm run of the same is reusable
    judged_by: str  # the judge and scorers that score the rows (``judged_by``)

    @property
    def units(self) -> list[tuple[str, Record]]:
        return [(arm, r) for arm in ARMS for r in self.rows]


def run(ctx: StageContext) -> CompareResult | ShardResult:
    cfg, c = ctx.cfg, ctx.cfg.compare
    records = datasets.from_config(cfg, str(c.split))
    name = str(cfg.prompt.name)
    baseline_version = recorded(ctx, "register").production_version
    optimized = recorded(ctx, "optimize")  # optimize must have run for this pipeline
    candidate_version = tracking.pipeline_candidate(ctx.store.experiment_id, ctx.pipeline_id)
    ctx.needs("align")
    align_run = ctx.store.latest_result(ctx.pipeline_id, "align")
    work = {k: v for k, v in dict(c).items() if k not in ("shards", "shard")}  # how the work is split changes no outcome
    inputs = tracking.inputs_hash(name, baseline_version, candidate_version,
                                  align_run.info.run_id if align_run else "base", work, dict(cfg.judge),
                                  dict(cfg.dataset.get("slices") or {}),
                                  [r.as_eval_row() for r in records], str(cfg.model.provider), cfg.model.agent_model)
    if (done := reuse(ctx, inputs)) is not None:
        return done
    if candidate_version is None:
        return no_candidate(ctx, inputs, baseline_version, optimized.reason or "optimize found no gain on train")
    versions = dict(zip(ARMS, (baseline_version, candidate_version)))
    plan = Plan(name, versions, records, repeated(records, int(c.n_repeats)), inputs,
                {arm: arm_digest(cfg, v, records) for arm, v in versions.items()}, "")
    with llm(ctx) as endpoint:
        predicts = {arm: traced_agent(cfg, endpoint, ctx.pipeline_id, release.uris(cfg, v), plan.rows,
                                      {TAG_ARM: arm, TAG_SPLIT: str(c.split)}) for arm, v in versions.items()}
        judge, judge_info = recorded_judge(cfg.judge, tracking.result_of(align_run), ctx.store.experiment_id, endpoint)
        scorers = [with_verdict(judge, cfg.judge)] + judges.further_scorers(list(cfg.judge.scorers), endpoint)
        plan = replace(plan, judged_by=judged_by(cfg, judge_info))

        def evaluate_arm(run_id: str, arm: str, arm_rows: list[Record]) -> tuple[dict[str, RowOutcome], int]:
            return evaluate_records(cfg, ctx.store.experiment_id, run_id, arm_rows, predicts[arm], scorers, ctx.say)

        source_traces: dict[str, list] = {}  # an earlier arm run's traces, read once for every look

        def rejudge_arm(run_id: str, source_run: str, rows: dict[str, RowOutcome]) -> dict[str, RowOutcome]:
            if source_run not in source_traces:
                source_traces[source_run] = store_traces.search(ctx.store.experiment_id, "", run_id=source_run,
                                                                max_results=10000)
            return rejudge_records(cfg, ctx.store.experiment_id, run_id, source_traces[source_run], rows, scorers)

        if c.shard is not None:
            return one_shard(ctx, plan, int(c.shard), evaluate_arm)
        return both_arms(ctx, plan, judge_info, evaluate_arm, rejudge_arm)


def no_candidate(ctx: StageContext, inputs: str, baseline_version: int, why: str) -> CompareResult | ShardResult:
    """Optimize kept no candidate (``why``: its reason): nothing to compare (a shard has nothing to evaluate)."""
    if ctx.cfg.compare.shard is not None:
        ctx.say("this pipeline has no candidate: the shard has nothing to evaluate")
        return ShardResult(index=int(ctx.cfg.compare.shard), shards=int(ctx.cfg.compare.shards))
    with stage_run(ctx, inputs) as run:
        ctx.say(f"this pipeline has no candidate (optimize: {why}); nothing to compare")
        return finish(ctx, CompareResult(outcome="no_candidate", baseline_version=baseline_version,
                                         run_id=run.info.run_id))


EvaluateArm = Callable[[str, str, list[Record]], tuple[dict[str, RowOutcome], int]]
RejudgeArm = Callable[[str, str, dict[str, RowOutcome]], dict[str, RowOutcome]]  # (run, source run, rows)


def arm_digest(cfg: Any, version: int, records: list[Record]) -> str:
    """What an arm's rows measure: the release (prompt versions are immutable), the held-out rows,
    the agent's and the model's settings. Two arm runs with the same digest ran the same agent on
    the same questions, run k with sampling seed k, so either's rows stand for the other's."""
    from omegaconf import OmegaConf

    settings = [OmegaConf.to_container(cfg[k], resolve=True) for k in ("agent", "model")]
    return tracking.inputs_hash("arm", release.uris(cfg, version), [r.as_eval_row() for r in records], *settings)


def judged_by(cfg: Any, judge_info: dict) -> str:
    """The judge version and the scorers that score an arm's rows."""
    from omegaconf import OmegaConf

    return tracking.inputs_hash(judge_info, OmegaConf.to_container(cfg.judge, resolve=True))


@dataclass(frozen=True)
class Measured:
    """An earlier compare's arm run of the same digest, and the rows it measured."""

    run_id: str
    compare_run: str  # the compare run it is an arm of
    rows: dict[str, RowOutcome]
    judged_by: str


def measured_before(ctx: StageContext, digest: str) -> Measured | None:
    """The newest finished arm run of ``digest`` whose rows were recorded (``force=true``: none)."""
    if ctx.cfg.force:
        return None
    for r in tracking.measured_arms(ctx.store.experiment_id, digest):
        try:
            rows = tracking.load_dict(r.info.run_id, ROWS_ARTIFACT)
        except Exception:  # noqa: BLE001 - an arm run without its rows (an older promptgate) is not reusable
            continue
        return Measured(r.info.run_id, r.data.tags.get("mlflow.parentRunId", r.info.run_id),
                        {k: RowOutcome(**v) for k, v in rows.items()}, r.data.tags.get(TAG_JUDGED_BY, ""))
    return None


ROWS_ARTIFACT = "rows.json"  # an arm run's row outcomes, what a later compare of the same digest reuses


def arm_rows(arm: str, rows: list[Record], prior: Measured | None, run_id: str, judged: str,
             evaluate_arm: EvaluateArm, rejudge_arm: RejudgeArm) -> tuple[dict[str, RowOutcome], int, bool]:
    """One look's rows of an arm: those ``prior`` measured without an error are reused (their
    traces linked to this arm's run; re-judged when another judge or scorers score them), the
    rest are measured. Returns the outcomes, how many were reused and whether they were re-judged."""
    have = {r.id: prior.rows[r.id] for r in rows if prior is not None and r.id in prior.rows
            and prior.rows[r.id].ok and prior.rows[r.id].trace_id}
    found: dict[str, RowOutcome] = {}
    rejudged = bool(have) and prior is not None and prior.judged_by != judged
    if have:
        if rejudged:
            found = rejudge_arm(run_id, prior.run_id, have)
        else:
            store_traces.link_to_run([o.trace_id for o in have.values() if o.trace_id], run_id)
            found = dict(have)
    todo = [r for r in rows if r.id not in found]  # not measured before, or not re-judged: measured now
    if todo:
        fresh, _ = evaluate_arm(run_id, arm, todo)
        found.update(fresh)
    return found, len(rows) - len(todo), rejudged


def one_shard(ctx: StageContext, plan: Plan, index: int, evaluate_arm: EvaluateArm) -> ShardResult:
    """The shard worker: this shard's (arm, row) pairs into a run of its own; the merge makes the result."""
    shards = int(ctx.cfg.compare.shards)
    own = shards_.by_group(shards_.mine(plan.units, shards, index))
    ctx.say(f"shard {index + 1}/{shards}: " + ", ".join(f"{len(v)} {a} rows" for a, v in own.items()))

    def shard(run_id: str) -> tuple[dict, int]:
        log_lineage(run_id, plan.records)  # the run page's Datasets
        out, retried = {}, 0
        for arm, arm_rows in own.items():
            out[arm], n = evaluate_arm(run_id, arm, arm_rows)
            retried += n
        return out, retried

    return shards_.run_shard(ctx, plan.inputs, index, shards, shard)


def looks_of(rows: list[Record], n_repeats: int, design: str) -> list[list[Record]]:
    """The rows each look evaluates: every repeat at once (fixed), or repeat k of every question
    at look k + 1 (sequential)."""
    if design == "fixed":
        return [rows]
    return [[r for r in rows if r.inputs[REPEAT_KEY] == k] for k in range(n_repeats)]


def sequential_plan(cfg: Any) -> SequentialPlan:
    """The sequential rule from ``compare.sequential``, spending ``gate.alpha`` over ``compare.n_repeats`` looks."""
    s = cfg.compare.sequential
    return SequentialPlan(max_looks=int(cfg.compare.n_repeats), alpha=float(cfg.gate.alpha), spending=str(s.spending),
                          boundary=str(s.boundary), futility=str(s.futility),
                          futility_threshold=float(s.futility_threshold), ci_level=float(cfg.compare.ci_level))


def after_look(cfg: Any, look: int, outcomes: dict[str, dict[str, RowOutcome]], questions: int,
               seq: SequentialPlan, earlier: list[LookDecision]) -> tuple[LookDecision, dict]:
    """The sequential rule's decision after ``look`` looks, on the paired summary of every run so far."""
    c = cfg.compare
    base, _ = by_question(outcomes["baseline"], cfg.judge, look)
    cand, _ = by_question(outcomes["candidate"], cfg.judge, look)
    s = stats.paired_summary(base, cand, int(c.bootstrap), float(c.ci_level), int(c.seed))
    return decide_look(look, s, seq, cfg.gate, [d.boundary.fraction for d in earlier], questions), s


def sequential_record(seq: SequentialPlan, decisions: list[LookDecision], summaries: list[dict], rows_spent: int,
                      rows_planned: int) -> dict[str, Any]:
    """What the result records of a sequential compare: each look, where it stopped and why, the
    boundary the gate tests at, and the rows spent of the fixed design's."""
    last = decisions[-1]
    return {"rule": seq.describe(), "max_looks": seq.max_looks, "looks_run": last.look, "action": last.action,
            "why": last.why, "nominal": last.boundary.nominal, "z": round(last.boundary.z, 4),
            "rows_spent": rows_spent, "rows_planned": rows_planned,
            "looks": [{"look": d.look, "pairs": s["pairs"], "delta": round(s["delta"], 4),
                       "p_value": round(s["p_value"], 6), "ci_low": round(s["ci_low"], 4),
                       "nominal": d.boundary.nominal, "spent": d.boundary.spent, "action": d.action,
                       "conditional_power": d.conditional_power} for d, s in zip(decisions, summaries)]}


def both_arms(ctx: StageContext, plan: Plan, judge_info: dict, evaluate_arm: EvaluateArm,
              rejudge_arm: RejudgeArm) -> CompareResult:
    """Both arms in child runs of the compare run: evaluated here, look by look, or merged from
    the shards' runs (running any shard that has none); then the paired statistics."""
    c = ctx.cfg.compare
    with stage_run(ctx, plan.inputs) as run:
        tracking.log(params={"baseline_version": plan.versions["baseline"],
                             "candidate_version": plan.versions["candidate"], "n_repeats": int(c.n_repeats),
                             "questions": len(plan.records), "shards": int(c.shards), "design": str(c.design),
                             **judge_info})
        if int(c.shards) > 1:
            return merged_arms(ctx, run, plan, judge_info)
        return looked_arms(ctx, run, plan, judge_info, evaluate_arm, rejudge_arm)


def merged_arms(ctx: StageContext, run: Any, plan: Plan, judge_info: dict) -> CompareResult:
    """The shards' rows of each arm, linked into the arm's child run (the fixed design)."""
    merged, _, shard_runs = shards_.gather(ctx, plan.inputs, int(ctx.cfg.compare.shards), plan.units)
    outcomes = {arm: merged.get(arm, {}) for arm in ARMS}
    arm_runs = {}
    for arm in ARMS:
        with tracking.child_run(f"{run.info.run_name}-{arm}", {TAG_ARM: arm}) as arm_run:
            shards_.link_traces(outcomes[arm], arm_run.info.run_id)  # the arm's traces, from every shard
            log_lineage(arm_run.info.run_id, plan.records)
            arm_runs[arm] = arm_run.info.run_id
    return finish(ctx, measure(ctx, run, plan, judge_info, outcomes, arm_runs, int(ctx.cfg.compare.n_repeats)),
                  shard_runs)


@dataclass
class Arms:
    """What the looks have measured so far."""

    outcomes: dict[str, dict[str, RowOutcome]] = field(default_factory=lambda: {arm: {} for arm in ARMS})
    runs: dict[str, str] = field(default_factory=dict)  # arm -> its child run
    reused: int = 0  # baseline rows reused from an earlier compare
    rejudged: bool = False  # whether they were re-judged


def looked_arms(ctx: StageContext, run: Any, plan: Plan, judge_info: dict, evaluate_arm: EvaluateArm,
                rejudge_arm: RejudgeArm) -> CompareResult:
    """Both arms look by look (one look of every repeat in the fixed design), the sequential
    rule deciding after each whether to go on."""
    c = ctx.cfg.compare
    seq = sequential_plan(ctx.cfg) if str(c.design) == "sequential" else None
    if seq is not None:
        ctx.say(f"sequential compare: {seq.describe()}; compare.design=fixed runs every repeat")
    decisions: list[LookDecision] = []
    summaries: list[dict] = []
    spent = 0
    prior = measured_before(ctx, plan.digests["baseline"])  # the production arm, measured before
    arms = Arms()
    for look, rows in enumerate(looks_of(plan.rows, int(c.n_repeats), str(c.design)), start=1):
        for arm in ARMS:
            one_look(ctx, run, plan, arms, arm, rows, prior if arm == "baseline" else None, judge_info,
                     f"questions x {c.n_repeats} runs" if seq is None else
                     f"questions, look {look} of {seq.max_looks} (run {look} of each)", evaluate_arm, rejudge_arm)
        spent += len(rows)
        if seq is None:
            continue
        decision, summary = after_look(ctx.cfg, look, arms.outcomes, len(plan.records), seq, decisions)
        decisions.append(decision)
        summaries.append(summary)
        tracking.log(metrics={"look.delta": summary["delta"], "look.p_value": summary["p_value"],
                              "look.boundary": decision.boundary.nominal}, step=look)
        ctx.say(decision.why)
        if decision.stopped:
            break
    record = None if seq is None else sequential_record(seq, decisions, summaries, 2 * spent, 2 * len(plan.rows))
    repeats = int(c.n_repeats) if seq is None else decisions[-1].look
    took = None if not arms.reused or prior is None else {
        "arm": "baseline", "rows": arms.reused, "from_compare": prior.compare_run, "from_arm_run": prior.run_id,
        "rejudged": arms.rejudged}
    return finish(ctx, measure(ctx, run, plan, judge_info, arms.outcomes, arms.runs, repeats, record, took))


def one_look(ctx: StageContext, run: Any, plan: Plan, arms: Arms, arm: str, rows: list[Record],
             prior: Measured | None, judge_info: dict, what: str, evaluate_arm: EvaluateArm,
             rejudge_arm: RejudgeArm) -> None:
    """One arm's rows of one look in its child run (started at the first look, resumed after),
    whose row outcomes it records for a later compare to reuse."""
    tags = {TAG_ARM: arm, TAG_ARM_DIGEST: plan.digests[arm], TAG_JUDGED_BY: plan.judged_by}
    with tracking.child_run(f"{run.info.run_name}-{arm}", tags, arms.runs.get(arm)) as arm_run:
        if arm not in arms.runs:  # the run page's Datasets, once
            log_lineage(arm_run.info.run_id, plan.records)
        ctx.say(f"{arm} {release.describe(ctx.cfg, plan.versions[arm])}: {len(plan.records)} held-out {what}")
        found, n_reused, rejudged = arm_rows(arm, rows, prior, arm_run.info.run_id, plan.judged_by, evaluate_arm,
                                             rejudge_arm)
        if n_reused and prior is not None:
            arms.reused, arms.rejudged = arms.reused + n_reused, rejudged
            ctx.say(f"{arm}: {n_reused} traces reused from compare {prior.compare_run}"
                    + (f", re-judged with {judge_info['judge_name']} v{judge_info['judge_version']}"
                       if rejudged else ", judged by the same judge") + "; force=true measures afresh")
        arms.outcomes[arm].update(found)
        tracking.log_files(dicts={ROWS_ARTIFACT: {k: asdict(o) for k, o in arms.outcomes[arm].items()}})
        arms.runs[arm] = arm_run.info.run_id


def measure(ctx: StageContext, run: Any, plan: Plan, judge_info: dict, outcomes: dict[str, dict[str, RowOutcome]],
            arm_runs: dict[str, str], repeats: int, sequential: dict[str, Any] | None = None,
            reused: dict[str, Any] | None = None) -> CompareResult:
    """The paired statistics of the two arms over the ``repeats`` runs per question measured,
    logged with the per-question table and chart."""
    cfg, c = ctx.cfg, ctx.cfg.compare
    base, base_err = by_question(outcomes["baseline"], cfg.judge, repeats)
    cand, cand_err = by_question(outcomes["candidate"], cfg.judge, repeats)
    rows = repeats * len(plan.records)  # per arm
    s = stats.paired_summary(base, cand, int(c.bootstrap), float(c.ci_level), int(c.seed))
    if not s["pairs"]:  # a delta of 0 on no pairs means nothing: no figure, and why
        tracking.log(metrics={"baseline_errors": base_err, "candidate_errors": cand_err})
        failed = [o for arm in ARMS for o in outcomes[arm].values() if not o.ok]
        nothing_measured(ctx, f"compare judged 0 of {rows} (question, repeat) pairs in both arms "
                              f"(errors: baseline {base_err}, candidate {cand_err}): {failure_cause(ctx, failed)}")
    metrics = gain_metrics(s, base_err, cand_err, rows)
    tracking.log(metrics=metrics)
    cross = cross_check(arm_runs, judge_info["judge_name"], float(c.ci_level), int(c.shards), reused)
    tracking.log(metrics={f"mlflow_compare.{k}": float(v) for k, v in cross.items()
                          if k in ("diff", "ci_low", "ci_high", "p_value", "n_paired") and v is not None})
    tracking.log_files(texts={"per_question.csv": per_question_csv(plan.records, base, cand, agent.input_key(cfg.agent))})
    log_chart(ctx, plan, judge_info, base, cand, s, repeats)
    print(compact_table(s, {"baseline": base_err, "candidate": cand_err}, rows))
    names = other_scorers(cfg)
    counts = {arm: scorer_counts(outcomes[arm], names) for arm in ARMS}
    means = {arm: scorer_means(outcomes[arm], names) for arm in ARMS}
    tests = scorer_tests(outcomes, names)
    slices = slice_table(plan.records, dict(cfg.dataset.get("slices") or {}), base, cand)
    tracking.log(metrics={**{f"{arm}_{k}_errors": float(v["errors"]) for arm in ARMS for k, v in counts[arm].items()},
                          **{f"{arm}_{k}_mean": v for arm in ARMS for k, v in means[arm].items()},
                          **{f"slice.{k}.{arm}_pass_rate": v[f"{arm}_pass_rate"] for k, v in slices.items()
                             for arm in ARMS if v[f"{arm}_pass_rate"] is not None}})
    for line in scorer_table(counts, means, tests) + slice_lines(slices):
        print(line)
    print(comparison_line(cross, s))
    link = ctx.store.run_link(run.info.run_id)
    ctx.say(f"run: {link}  (chart: compare.png, table: per_question.csv)")
    return CompareResult(
        outcome="compared", baseline_version=plan.versions["baseline"], candidate_version=plan.versions["candidate"],
        **judge_info, n_repeats=repeats, questions=s["questions"], rows_per_arm=rows,
        **recorded_figures(metrics),
        pairs=s["pairs"], regressed=s["regressed"], improved=s["improved"],
        scorer_means=means, scorer_counts=counts, scorer_tests=tests, slices=slices, mlflow_comparison=cross,
        chart=f"{link}/artifacts/compare.png", design=str(c.design) if int(c.shards) == 1 else "fixed",
        sequential=sequential, reused=reused, run_id=run.info.run_id)


def log_chart(ctx: StageContext, plan: Plan, judge_info: dict, base: dict, cand: dict, s: dict, repeats: int) -> None:
    """Each question's pass share in both arms, with the gain and its CI, as compare.png."""
    from jobs.eval.charts import compare_chart

    ids = [r.id for r in plan.records]
    share = lambda d, q: stats.share([x for x in d.get(q, []) if x is not None])  # noqa: E731
    title = (f"{plan.name}: baseline v{plan.versions['baseline']} vs candidate v{plan.versions['candidate']} "
             f"({repeats} runs per question; judge {judge_info['judge_name']} "
             f"v{judge_info['judge_version']})")
    with tempfile.TemporaryDirectory() as tmp:
        chart = compare_chart(Path(tmp) / "compare.png", ids, [share(base, q) for q in ids],
                              [share(cand, q) for q in ids], s["delta"], (s["ci_low"], s["ci_high"]),
                              float(ctx.cfg.gate.min_delta), title)
        tracking.log_files(files=[str(chart)])
