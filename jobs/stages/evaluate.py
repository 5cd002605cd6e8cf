"""evaluate: run the agent with the release optimize will start from (production; the seed
before the first promotion) over a dataset split, score it with the judge(s), prove that
every row came back, and tag the OK traces for expert review."""

from __future__ import annotations

from typing import Any

from jobs.core.contract import TAG_REVIEW, TAG_SPLIT
from jobs.core.faults import pause_point
from jobs.core.results import EvaluateResult, scorer_failures, scorer_lines
from jobs.eval import agent, datasets, judges
from jobs.eval.runner import evaluate_records, other_scorers, scorer_counts, traced_agent
from jobs.stages import release
from jobs.stages import shards as shards_
from jobs.stages.common import failure_cause, finish, log_lineage, nothing_measured, recorded, reuse, stage_run
from jobs.stages.context import StageContext, llm
from jobs.stages.shards import ShardResult
from jobs.store import traces, tracking


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    agent.check(cfg)
    datasets.from_config(cfg, str(cfg.evaluate.split))


def run(ctx: StageContext) -> EvaluateResult | ShardResult:
    cfg = ctx.cfg
    split = str(cfg.evaluate.split)
    records = datasets.from_config(cfg, split)
    prompt_name = str(cfg.prompt.name)
    version = release.start_version(cfg, recorded(ctx, "register"))  # what optimize will start from
    inputs = tracking.inputs_hash(prompt_name, version, split, [r.as_eval_row() for r in records],
                                  dict(cfg.judge), str(cfg.model.provider), cfg.model.agent_model)
    if (done := reuse(ctx, inputs)) is not None:
        return done
    shards, index = int(cfg.evaluate.shards), cfg.evaluate.shard
    units = [("rows", r) for r in records]
    prompt_uris = release.uris(cfg, version)
    with llm(ctx) as endpoint:
        predict = traced_agent(cfg, endpoint, ctx.pipeline_id, prompt_uris, records, {TAG_SPLIT: split})
        scorers = [judges.build(cfg.judge, endpoint)] + judges.further_scorers(list(cfg.judge.scorers), endpoint)

        def evaluate_rows(run_id: str, rows: list) -> tuple[dict, int]:
            log_lineage(run_id, rows)  # the run page's Datasets
            return evaluate_records(cfg, ctx.store.experiment_id, run_id, rows, predict, scorers, ctx.say)

        if index is not None:  # one shard's rows into a run of its own; the merge makes the result
            rows = [r for _, r in shards_.mine(units, shards, int(index))]
            ctx.say(f"shard {int(index) + 1}/{shards}: {len(rows)} of {len(records)} rows")

            def shard(run_id: str) -> tuple[dict, int]:
                outcomes, retried = evaluate_rows(run_id, rows)
                return {"rows": outcomes}, retried

            return shards_.run_shard(ctx, inputs, int(index), shards, shard)
        with stage_run(ctx, inputs) as run:
            tracking.log(params={"split": split, "rows": len(records), "prompt_uri": prompt_uris[str(cfg.prompt.role)],
                                 "release": release.describe(cfg, version), "shards": shards,
                                 "judge": cfg.judge.name, "max_workers": int(cfg.evaluate.max_workers)})
            if shards > 1:
                log_lineage(run.info.run_id, records)  # the merge run's; each shard run logs its own
                merged, retried, shard_runs = shards_.gather(ctx, inputs, shards, units)
                outcomes = merged.get("rows", {})
                shards_.link_traces(outcomes, run.info.run_id)  # the review queue finds them under this run
            else:
                outcomes, retried, shard_runs = *evaluate_rows(run.info.run_id, records), []
            pause_point("evaluate.scored")
            return finish(ctx, summarize(ctx, run, outcomes, len(records), retried, version), shard_runs)


def summarize(ctx: StageContext, run: Any, outcomes: dict, rows: int, retried: int, version: int) -> EvaluateResult:
    """Tag the OK traces for the experts, log the figures, say them, and build the result."""
    cfg, split = ctx.cfg, str(ctx.cfg.evaluate.split)
    ok = [o for o in outcomes.values() if o.ok]
    errors = len(outcomes) - len(ok)
    if not ok:  # a pass rate of 0/0 means nothing: no figure, and the reason where later stages look
        tracking.log(metrics={"rows": rows, "scored": 0, "errors": errors, "retried_rows": retried})
        nothing_measured(ctx, f"{ctx.stage} judged 0 of {rows} rows: "
                              f"{failure_cause(ctx, (o for o in outcomes.values() if not o.ok))}")
    passes = sum(1 for o in ok if judges.passed(cfg.judge, o.value))
    for o in ok:  # only OK traces with a judge value go to the experts
        traces.set_tags(o.trace_id, {TAG_REVIEW: "pending"})
    metrics = {"rows": rows, "scored": len(ok), "errors": errors, "retried_rows": retried,
               "pass_rate": passes / len(ok) if ok else 0.0}
    counts = scorer_counts(outcomes, other_scorers(cfg))
    tracking.log(metrics={**metrics, **{f"{k}_errors": float(c["errors"]) for k, c in counts.items()}})
    ctx.say(f"{split}: {passes}/{len(ok)} passed {cfg.judge.name} (pass rate {metrics['pass_rate']:.2f}), "
            f"{errors} errors{scorer_failures(counts)}, {retried} rows re-evaluated")
    for line in scorer_lines(counts):
        ctx.say(line)
    ctx.say(f"run: {ctx.store.run_link(run.info.run_id)}")
    ctx.say(f"traces: {ctx.store.traces_link()}")
    return EvaluateResult(**metrics, run_id=run.info.run_id, prompt_version=version, split=split,
                          reviewable=len(ok), scorers=counts)
