"""optimize: search for a better system prompt with GEPA (mlflow.genai.optimize_prompts),
scored by the judge that align recorded, under a hard cap on metric calls. Registers the
candidate and points the ``candidate`` alias at it only if it beats the seed on train."""

from __future__ import annotations

import difflib
import json
import random
from dataclasses import replace
from typing import Any

from jobs.config.schemas import settings
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.results import OptimizeResult
from jobs.eval import agent, datasets, judges
from jobs.eval.datasets import Record
from jobs.eval.metric_cap import GepaSummaryLogger, MetricBudget, budgeted_scorer
from jobs.eval.stats import fmt
from jobs.llm.endpoints import activate
from jobs.stages.common import finish, recorded, reuse, say
from jobs.store import tracking

STAGE = "optimize"
TAG = "promptgate."


def split_train(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """GEPA's train and validation parts; with no fraction it validates on the whole train set."""
    if val_fraction <= 0:
        return records, records
    shuffled = sorted(records, key=lambda r: r.id)
    random.Random(seed).shuffle(shuffled)
    k = max(1, round(len(records) * val_fraction))
    return shuffled[k:], shuffled[:k]


def minimum_budget(n_val: int, minibatch: int) -> int:
    """Metric calls one GEPA iteration needs: the seed on the validation set, then the
    parent and the child on one minibatch."""
    return n_val + 2 * minibatch


def check(cfg: Any) -> None:
    agent.check(cfg)
    o = settings(cfg, "optimizer")  # the schema checks names, types and ranges
    records = datasets.from_config(cfg, "train")
    for r in records:
        if not r.expectations:
            raise UserError(f"{r.where}: the train record '{r.id}' has no expectations; GEPA needs expectations on every "
                            "training record")
    train, val = split_train(records, float(o.val_fraction), int(o.seed))
    minibatch = int(o.minibatch_size)
    if minibatch < 1 or minibatch > len(train):
        raise UserError(f"optimizer.minibatch_size={minibatch} must be between 1 and the {len(train)} training records")
    need = minimum_budget(len(val), minibatch)
    if int(o.max_metric_calls) < need:
        raise UserError(f"optimizer.max_metric_calls={o.max_metric_calls} is below what one GEPA iteration needs: "
                        f"{need} ({len(val)} validation rows + 2 x minibatch {minibatch}); set it to at least {need}")


def prompt_diff(before: str, after: str) -> str:
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "baseline", "candidate", lineterm=""))


def in_sweep(cfg: Any) -> bool:
    """A sweep point (local multirun, or a pod a sweep launcher started) leaves the alias alone."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return bool(cfg.get("sweep_point")) or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)


def sweep_overrides() -> str:
    from hydra.core.hydra_config import HydraConfig

    return " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""


def earlier_twins(name: str, produced: Any, pipeline_id: str, seed_version: int, started_ms: int) -> list[Any]:
    """Versions an interrupted earlier attempt left with this same text: optimize_prompts registers
    before we can tag, so a SIGKILL leaves an untagged version, or one this pipeline's optimize tagged."""
    def leftover(v: Any) -> bool:
        untagged = not any(k.startswith(TAG) for k in v.tags)
        ours = v.tags.get(TAG + "pipeline_id") == pipeline_id and TAG + "source_run_id" in v.tags
        return (untagged or ours) and int(v.version) != seed_version and v.creation_timestamp < started_ms

    return sorted((v for v in tracking.prompt_versions(name) if int(v.version) < int(produced.version)
                   and v.template.strip() == produced.template.strip() and leftover(v)), key=lambda v: int(v.version))


def already_live(client: Any, name: str, text: str, seed_version: Any) -> str | None:
    """Which of the seed, ``baseline`` and ``production`` already holds this text (None: none
    does): such a candidate would only be compared with itself."""
    from mlflow.exceptions import MlflowException

    holders = [(f"the seed v{seed_version}", client.get_prompt_version(name, str(seed_version)))]
    for alias in ("baseline", "production"):
        try:
            holders.append((f"{alias} v{{}}", client.get_prompt_version_by_alias(name, alias)))
        except MlflowException:
            continue
    for label, version in holders:
        if version.template.strip() == text.strip():
            return label.format(version.version)
    return None


def drop_versions(client: Any, name: str, versions: list[Any], why: str) -> None:
    for v in versions:
        client.delete_prompt_version(name, str(v.version))
        say(STAGE, f"deleted v{v.version}: {why}")


def run(cfg: Any) -> OptimizeResult:
    o = cfg.optimizer
    records = datasets.from_config(cfg, "train")
    train, val = split_train(records, float(o.val_fraction), int(o.seed))
    experiment_id = tracking.connect(cfg)
    name = str(cfg.prompt.name)
    seed_version = recorded(cfg, experiment_id, "register").seed_version
    align_run = tracking.latest_result(experiment_id, str(cfg.pipeline_id), "align")  # a new alignment: optimize again
    inputs = tracking.inputs_hash(name, seed_version, [r.as_eval_row() for r in records], dict(o), dict(cfg.judge),
                                  str(cfg.model.provider), cfg.model.agent_model,
                                  align_run.info.run_id if align_run else "base")
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    with activate(cfg, STAGE, experiment_id) as endpoint:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.genai.optimize import GepaPromptOptimizer

        from jobs.eval.agent import build_predict_fn
        from jobs.stages.align import recorded_judge

        client = MlflowClient()
        judge, judge_info = recorded_judge(cfg, experiment_id, endpoint)
        cap = int(o.max_metric_calls)
        to_number = None if str(cfg.judge.feedback_value_type) == "bool" else (lambda v: judges.score(cfg.judge, v) or 0.0)
        budget = MetricBudget(cap, minibatch=int(o.minibatch_size), n_val=len(val))
        seed_uri = f"prompts:/{name}/{seed_version}"
        seed_text = mlflow.genai.load_prompt(seed_uri).template
        predict = build_predict_fn(cfg.agent, endpoint, seed_uri)

        def predict_fn(**kw: Any) -> str:
            if budget.spent:  # no agent calls for rows that will not be scored
                return "(not run: the max_metric_calls budget is spent)"
            return predict(**kw)

        gepa_kwargs: dict[str, Any] = {"reflection_minibatch_size": int(o.minibatch_size), "seed": int(o.seed),
                                       "stop_callbacks": [budget], "logger": GepaSummaryLogger()}
        if val is not train:
            gepa_kwargs["valset"] = [r.as_eval_row() for r in val]
        optimizer = GepaPromptOptimizer(reflection_model=str(o.get("reflection_model") or endpoint.uri(endpoint.reflection_model)),
                                        max_metric_calls=cap, display_progress_bar=True, gepa_kwargs=gepa_kwargs)
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            mlflow.set_tags({TAG + "overrides": sweep_overrides(), TAG + "sweep_point": str(in_sweep(cfg)).lower()})
            mlflow.log_params({"max_metric_calls": cap, "minibatch_size": int(o.minibatch_size), "train": len(train),
                               "val": len(val), "judge": judge_info["judge_name"],
                               "judge_version": judge_info["judge_version"], "seed_version": seed_version})
            say(STAGE, f"GEPA on {len(train)} train / {len(val)} validation rows, judge {judge_info['judge_name']} "
                       f"v{judge_info['judge_version']}, at most {cap} metric calls")
            result = mlflow.genai.optimize_prompts(predict_fn=predict_fn, train_data=[r.as_eval_row() for r in train],
                                                   prompt_uris=[seed_uri], optimizer=optimizer,
                                                   scorers=[budgeted_scorer(judge, budget, to_number)])
            produced = result.optimized_prompts[0]
            pause_point("optimize.registered")
            initial, final = result.initial_eval_score, result.final_eval_score
            same_as = already_live(client, name, produced.template, seed_version)
            gained = initial is not None and final is not None and final > initial
            improved = gained and same_as is None
            metrics = {"initial_train_score": initial or 0.0, "final_train_score": final or 0.0,
                       "metric_calls": budget.used, "metric_calls_refused": budget.refused, "max_metric_calls": cap,
                       "judge_errors": budget.judge_errors}
            mlflow.log_metrics(metrics)
            outcome = OptimizeResult(**metrics, **judge_info, seed_version=seed_version, run_id=run.info.run_id,
                                     train_rows=len(train), val_rows=len(val))
            twins = earlier_twins(name, produced, str(cfg.pipeline_id), int(seed_version), run.info.start_time)
            if not improved:
                # optimize_prompts registers its result unconditionally; keep the registry clean
                drop_versions(client, name, [produced, *twins], "no candidate to keep")
                why = (f"GEPA's best prompt is the text of {same_as}" if gained
                       else f"no candidate beat the seed on train ({fmt(initial)} -> {fmt(final)})")
                say(STAGE, f"{why}; nothing registered")
                mlflow.set_tag(TAG + "outcome", "no_improvement")
                return finish(replace(outcome, outcome="no_improvement", reason=why))
            if twins:  # keep the oldest copy, so a rerun adds no duplicate
                drop_versions(client, name, [produced, *twins[1:]], f"v{twins[0].version} already holds this text")
                produced = twins[0]
            tags = {"initial_train_score": f"{initial:.4f}", "final_train_score": f"{final:.4f}",
                    "metric_calls": str(budget.used), "max_metric_calls": str(cap), "judge_name": judge_info["judge_name"],
                    "judge_version": str(judge_info["judge_version"]), "pipeline_id": str(cfg.pipeline_id),
                    "optimizer": json.dumps(dict(o), sort_keys=True), "source_run_id": run.info.run_id}
            for key, value in tags.items():
                client.set_prompt_version_tag(name, produced.version, TAG + key, value)
            if not in_sweep(cfg):  # in a sweep the summary points the alias at the best point
                mlflow.genai.set_prompt_alias(name, alias="candidate", version=int(produced.version))
            mlflow.set_tag(TAG + "outcome", "candidate")
            say(STAGE, f"train score {initial:.3f} -> {final:.3f} with {budget.used}/{cap} metric calls; "
                       f"candidate v{produced.version}{'' if in_sweep(cfg) else ' (alias candidate)'}")
            print(prompt_diff(seed_text, produced.template))
            say(STAGE, f"run: {tracking.run_link(cfg, experiment_id, run.info.run_id)}")
            return finish(replace(outcome, outcome="candidate", candidate_version=int(produced.version)))
