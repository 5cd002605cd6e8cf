"""evaluate: run the agent with the seed prompt over a dataset split, score it with the
judge(s), prove that every row came back, and tag the OK traces for expert review."""

from __future__ import annotations

from typing import Any

from jobs.core.faults import pause_point
from jobs.core.results import EvaluateResult
from jobs.eval import agent, datasets, judges
from jobs.eval.runner import evaluate_records
from jobs.llm.endpoints import activate
from jobs.stages import shards as shards_
from jobs.stages.common import finish, recorded, reuse, say
from jobs.store import tracking

STAGE = "evaluate"


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    agent.check(cfg)
    datasets.from_config(cfg, str(cfg.evaluate.split))


def run(cfg: Any) -> EvaluateResult | None:
    split = str(cfg.evaluate.split)
    records = datasets.from_config(cfg, split)
    experiment_id = tracking.connect(cfg)
    prompt_name = str(cfg.prompt.name)
    seed_version = recorded(cfg, experiment_id, "register").seed_version
    inputs = tracking.inputs_hash(prompt_name, seed_version, split, [r.as_eval_row() for r in records],
                                  dict(cfg.judge), str(cfg.model.provider), cfg.model.agent_model)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    shards, index = int(cfg.evaluate.shards), cfg.evaluate.shard
    units = [("rows", r) for r in records]
    with activate(cfg, STAGE, experiment_id) as endpoint:
        import mlflow

        judge = judges.build(cfg.judge, endpoint)
        scorers = [judge] + judges.builtin_scorers(list(cfg.judge.builtin_scorers), endpoint)
        prompt_uri = f"prompts:/{prompt_name}/{seed_version}"

        def evaluate_rows(run_id: str, rows: list) -> tuple[dict, int]:
            return evaluate_records(cfg, endpoint, experiment_id, run_id, rows, prompt_uri, scorers,
                                    {"promptgate.split": split}, lambda m: say(STAGE, m))

        if index is not None:  # one shard's rows into a run of its own; the merge makes the result
            rows = [r for _, r in shards_.mine(units, shards, int(index))]
            say(STAGE, f"shard {int(index) + 1}/{shards}: {len(rows)} of {len(records)} rows")

            def shard(run_id: str) -> tuple[dict, int]:
                outcomes, retried = evaluate_rows(run_id, rows)
                return {"rows": outcomes}, retried

            shards_.run_shard(cfg, experiment_id, STAGE, inputs, int(index), shards, shard, lambda m: say(STAGE, m))
            return None
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            mlflow.log_params({"split": split, "rows": len(records), "prompt_uri": prompt_uri, "shards": shards,
                               "judge": cfg.judge.name, "max_workers": int(cfg.evaluate.max_workers)})
            if shards > 1:
                merged, retried, shard_runs = shards_.gather(cfg, experiment_id, STAGE, inputs, shards, units,
                                                    lambda m: say(STAGE, m))
                outcomes = merged.get("rows", {})
                shards_.link_traces(outcomes, run.info.run_id)  # the review queue finds them under this run
            else:
                outcomes, retried, shard_runs = *evaluate_rows(run.info.run_id, records), []
            pause_point("evaluate.scored")
            ok = [o for o in outcomes.values() if o.ok]
            errors = len(outcomes) - len(ok)
            passes = sum(1 for o in ok if judges.passed(cfg.judge, o.value))
            for o in ok:  # only OK traces with a judge value go to the experts
                mlflow.set_trace_tag(o.trace_id, tracking.TAG_REVIEW, "pending")
            metrics = {"rows": len(records), "scored": len(ok), "errors": errors, "retried_rows": retried,
                       "pass_rate": passes / len(ok) if ok else 0.0}
            mlflow.log_metrics(metrics)
            say(STAGE, f"{split}: {passes}/{len(ok)} passed {cfg.judge.name} (pass rate {metrics['pass_rate']:.2f}), "
                       f"{errors} errors, {retried} rows re-evaluated")
            say(STAGE, f"run: {tracking.run_link(cfg, experiment_id, run.info.run_id)}")
            say(STAGE, f"traces: {tracking.traces_link(cfg, experiment_id)}")
            return finish(EvaluateResult(**metrics, run_id=run.info.run_id, prompt_version=seed_version, split=split,
                                         reviewable=len(ok)), shard_runs)
