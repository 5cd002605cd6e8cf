"""compare: evaluate the baseline (production at the start of the pipeline) and the
candidate on the held-out set with the recorded judge, n repeats per question, and pair
the outcomes: pass rates, the gain with a paired-bootstrap CI, an exact McNemar p-value,
regressions and improvements, errors per arm. Errors are neither passes nor failures.

Each arm is evaluated in a child run of the compare run, so MLflow's own paired comparison
(``mlflow.genai.compare_evaluations``) runs on the same two evaluations; its figures are
recorded next to promptgate's (``mlflow_comparison``) as a cross-check, not as the decision."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Any

from jobs.core.errors import UserError
from jobs.core.results import CompareResult
from jobs.eval import agent, datasets, judges, stats
from jobs.eval.agent import REPEAT_KEY
from jobs.eval.datasets import Record
from jobs.eval.runner import RowOutcome, evaluate_records
from jobs.llm.endpoints import activate
from jobs.stages import shards as shards_
from jobs.stages.common import finish, recorded, reuse, say
from jobs.store import tracking

STAGE = "compare"
ARMS = ("baseline", "candidate")


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    agent.check(cfg)
    split = str(cfg.compare.split)
    held = datasets.from_config(cfg, split)
    if split == "train":
        raise UserError("compare.split=train: compare must prove the gain on questions the optimizer did not see; "
                        "use compare.split=heldout")
    shared = datasets.shared_questions(datasets.from_config(cfg, "train"), held, str(cfg.agent.input_key))
    if shared:
        train_record, held_record = shared[0]
        raise UserError(f"{held_record.where}: this {split} question is also in the train set ({train_record.where}); "
                        f"{len(shared)} {split} question(s) are shared, so the gate's held-out proof would mean nothing; "
                        "remove them from one of the files")


def repeated(records: list[Record], n: int) -> list[Record]:
    return [Record(f"{r.id}#{k}", {**r.inputs, REPEAT_KEY: k}, r.expectations, r.where) for r in records for k in range(n)]


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


def scorer_means(outcomes: dict[str, RowOutcome]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for o in outcomes.values():
        for name, v in o.scores.items():
            if isinstance(v, (bool, int, float)):
                sums.setdefault(name, []).append(float(v))
            elif isinstance(v, str) and v.lower() in ("yes", "no", "true", "false"):
                sums.setdefault(name, []).append(1.0 if v.lower() in ("yes", "true") else 0.0)
    return {k: sum(v) / len(v) for k, v in sums.items() if v}


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
        w.writerow([r.id, r.inputs.get(key, ""), "" if sb is None else f"{sb:.3f}",
                    "" if sc is None else f"{sc:.3f}", len(b), len(c), change])
    return out.getvalue()


def mlflow_comparison(baseline_run: str, candidate_run: str, judge_name: str, level: float) -> dict[str, Any]:
    """MLflow's paired comparison of the two arms' evaluation runs, for the judge."""
    from mlflow.genai import compare_evaluations

    try:
        found = compare_evaluations(candidate_run_id=candidate_run, baseline_run_id=baseline_run, confidence_level=level)
    except Exception as e:  # noqa: BLE001 - an experimental API: a failure is recorded, the decision is promptgate's
        return {"status": f"failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    s = found.scorers.get(judge_name)
    if s is None:
        return {"status": "not compared: the judge's values are not numbers MLflow can pair"}
    return {"status": s.status, "method": s.method, "n_paired": s.n_paired, "discordant": s.n_nonzero,
            "baseline_mean": s.baseline_mean, "candidate_mean": s.candidate_mean, "diff": s.diff,
            "ci_low": s.ci_low, "ci_high": s.ci_high, "p_value": s.p_value,
            "unpaired": len(found.unpaired_baseline_trace_ids) + len(found.unpaired_candidate_trace_ids)}


def comparison_line(m: dict[str, Any]) -> str:
    if m.get("status") != "ok":
        return f"MLflow compare_evaluations: {m.get('status')}"
    return (f"MLflow compare_evaluations (cross-check): diff {m['diff']:+.3f} over {m['n_paired']} run pairs, "
            f"BCa CI [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}], {m['method']} p={m['p_value']:.4f}, "
            f"{m['unpaired']} unpaired")


def compact_table(s: dict, errors: dict[str, int], rows: int) -> str:
    return "\n".join([
        f"{'arm':<10} {'pass rate':>9} {'errors':>7}",
        f"{'baseline':<10} {s['base_pass_rate']:>9.3f} {errors['baseline']:>4}/{rows}",
        f"{'candidate':<10} {s['cand_pass_rate']:>9.3f} {errors['candidate']:>4}/{rows}",
        f"gain {s['delta']:+.3f}  CI [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]  McNemar p={s['p_value']:.4f}  "
        f"regressed {len(s['regressed'])} {s['regressed'][:6]}  improved {len(s['improved'])}",
    ])


def run(cfg: Any) -> CompareResult | None:
    c = cfg.compare
    records = datasets.from_config(cfg, str(c.split))
    experiment_id = tracking.connect(cfg)
    name = str(cfg.prompt.name)
    baseline_version = recorded(cfg, experiment_id, "register").production_version
    recorded(cfg, experiment_id, "optimize")  # optimize must have run for this pipeline
    candidate_version = tracking.pipeline_candidate(experiment_id, str(cfg.pipeline_id))
    align_run = tracking.latest_result(experiment_id, str(cfg.pipeline_id), "align")
    judge_key = align_run.info.run_id if align_run else "base"
    work = {k: v for k, v in dict(c).items() if k not in ("shards", "shard")}  # how the work is split changes no outcome
    inputs = tracking.inputs_hash(name, baseline_version, candidate_version, judge_key, work, dict(cfg.judge),
                                  [r.as_eval_row() for r in records], str(cfg.model.provider), cfg.model.agent_model)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done
    if candidate_version is None and c.shard is not None:
        say(STAGE, "this pipeline has no candidate: the shard has nothing to evaluate")
        return None
    if candidate_version is None:
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            say(STAGE, "this pipeline has no candidate (optimize found no gain on train); nothing to compare")
            return finish(CompareResult(outcome="no_candidate", baseline_version=baseline_version,
                                        run_id=run.info.run_id))

    with activate(cfg, STAGE, experiment_id) as endpoint:
        import mlflow

        from jobs.stages.align import recorded_judge

        judge, judge_info = recorded_judge(cfg, experiment_id, endpoint)
        scorers = [judge] + judges.builtin_scorers(list(cfg.judge.builtin_scorers), endpoint)
        rows = repeated(records, int(c.n_repeats))
        versions = dict(zip(ARMS, (baseline_version, candidate_version)))
        shards, index = int(c.shards), c.shard
        units = [(arm, r) for arm in ARMS for r in rows]

        def evaluate_arm(run_id: str, arm: str, arm_rows: list[Record]) -> tuple[dict[str, RowOutcome], int]:
            return evaluate_records(cfg, endpoint, experiment_id, run_id, arm_rows, f"prompts:/{name}/{versions[arm]}",
                                    scorers, {"promptgate.arm": arm, "promptgate.split": str(c.split)},
                                    lambda m: say(STAGE, m))

        if index is not None:  # one shard's (arm, row) pairs into a run of its own; the merge makes the result
            own = shards_.by_group(shards_.mine(units, shards, int(index)))
            say(STAGE, f"shard {int(index) + 1}/{shards}: " + ", ".join(f"{len(v)} {a} rows" for a, v in own.items()))

            def shard(run_id: str) -> tuple[dict, int]:
                out, retried = {}, 0
                for arm, arm_rows in own.items():
                    out[arm], n = evaluate_arm(run_id, arm, arm_rows)
                    retried += n
                return out, retried

            shards_.run_shard(cfg, experiment_id, STAGE, inputs, int(index), shards, shard, lambda m: say(STAGE, m))
            return None
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            mlflow.log_params({"baseline_version": baseline_version, "candidate_version": candidate_version,
                               "n_repeats": int(c.n_repeats), "questions": len(records), "shards": shards, **judge_info})
            outcomes: dict[str, dict[str, RowOutcome]] = {}
            shard_runs: list = []
            if shards > 1:
                merged, _, shard_runs = shards_.gather(cfg, experiment_id, STAGE, inputs, shards, units, lambda m: say(STAGE, m))
                outcomes = {arm: merged.get(arm, {}) for arm in ARMS}
            arm_runs = {}
            for arm in ARMS:
                with mlflow.start_run(run_name=f"{run.info.run_name}-{arm}", nested=True,
                                      tags={"promptgate.arm": arm}) as arm_run:  # no stage tag: not a stage result
                    if shards > 1:
                        shards_.link_traces(outcomes[arm], arm_run.info.run_id)  # the arm's traces, from every shard
                    else:
                        say(STAGE, f"{arm} v{versions[arm]}: {len(records)} held-out questions x {c.n_repeats} runs")
                        outcomes[arm], _ = evaluate_arm(arm_run.info.run_id, arm, rows)
                    arm_runs[arm] = arm_run.info.run_id
            base, base_err = by_question(outcomes["baseline"], cfg.judge, int(c.n_repeats))
            cand, cand_err = by_question(outcomes["candidate"], cfg.judge, int(c.n_repeats))
            s = stats.paired_summary(base, cand, int(c.bootstrap), float(c.ci_level), int(c.seed))
            errors = {"baseline": base_err, "candidate": cand_err}
            means = {arm: scorer_means(outcomes[arm]) for arm in ARMS}
            metrics = {"baseline_pass_rate": s["base_pass_rate"], "candidate_pass_rate": s["cand_pass_rate"],
                       "delta": s["delta"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "p_value": s["p_value"],
                       "regressions": len(s["regressed"]), "improvements": len(s["improved"]),
                       "baseline_errors": base_err, "candidate_errors": cand_err,
                       "baseline_error_rate": base_err / len(rows), "candidate_error_rate": cand_err / len(rows)}
            mlflow.log_metrics(metrics)
            cross = mlflow_comparison(arm_runs["baseline"], arm_runs["candidate"], judge_info["judge_name"],
                                      float(c.ci_level)) if shards == 1 else {
                "status": f"not run: the arms were evaluated in {shards} shards' runs, and compare_evaluations takes "
                          "the judge's values from the one run that scored them"}
            mlflow.log_metrics({f"mlflow_compare.{k}": float(v) for k, v in cross.items()
                                if k in ("diff", "ci_low", "ci_high", "p_value", "n_paired") and v is not None})
            mlflow.log_text(per_question_csv(records, base, cand, str(cfg.agent.input_key)), "per_question.csv")
            with tempfile.TemporaryDirectory() as tmp:
                from jobs.eval.charts import compare_chart

                ids = [r.id for r in records]
                share = lambda d, q: stats.share([x for x in d.get(q, []) if x is not None])  # noqa: E731
                chart = compare_chart(Path(tmp) / "compare.png", ids, [share(base, q) for q in ids],
                                      [share(cand, q) for q in ids], s["delta"], (s["ci_low"], s["ci_high"]),
                                      float(cfg.gate.min_delta),
                                      f"{name}: baseline v{baseline_version} vs candidate v{candidate_version} "
                                      f"({c.n_repeats} runs per question; judge {judge_info['judge_name']} "
                                      f"v{judge_info['judge_version']})")
                mlflow.log_artifact(str(chart))
            print(compact_table(s, errors, len(rows)))
            print(comparison_line(cross))
            link = tracking.run_link(cfg, experiment_id, run.info.run_id)
            say(STAGE, f"run: {link}  (chart: compare.png, table: per_question.csv)")
            return finish(CompareResult(
                outcome="compared", baseline_version=baseline_version, candidate_version=candidate_version,
                **judge_info, n_repeats=int(c.n_repeats), questions=s["questions"], rows_per_arm=len(rows),
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
                pairs=s["pairs"], regressed=s["regressed"], improved=s["improved"], scorer_means=means,
                mlflow_comparison=cross,
                chart=f"{link}/artifacts/compare.png", run_id=run.info.run_id,
            ), shard_runs)
