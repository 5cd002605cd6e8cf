"""optimize: search for a better system prompt with GEPA (mlflow.genai.optimize_prompts),
scored by the judge that align recorded, under a hard cap on metric calls. Registers the
candidate and points the ``candidate`` alias at it only if it beats the seed on train."""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from jobs.config.schemas import settings
from jobs.core.contract import PROMPT_TAG, TAG_OUTCOME, TAG_OVERRIDES, TAG_RELEASE, TAG_SWEEP_POINT
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.judge_kinds import kind_of
from jobs.core.results import OptimizeResult
from jobs.eval import agent, datasets
from jobs.eval.agent import build_predict_fn
from jobs.eval.datasets import Record
from jobs.eval.gepa import search as gepa_search
from jobs.eval.metric_cap import MetricBudget
from jobs.eval.pipeline_judge import recorded_judge
from jobs.eval.stats import fmt
from jobs.stages import release
from jobs.stages.common import finish, log_lineage, nothing_measured, recorded, reuse, stage_run
from jobs.stages.context import StageContext, llm
from jobs.store import prompts, tracking

TAG = PROMPT_TAG  # tests read candidate tags by this name


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
    window = cfg.model.get("context_tokens")
    if window is not None and not o.reflection_model and int(window) < int(o.min_context_tokens):
        raise UserError(f"model.context_tokens={window} is below the {o.min_context_tokens} tokens GEPA's reflection "
                        "prompts need (optimizer.min_context_tokens: they quote a minibatch's traces); give "
                        "optimizer.reflection_model a model with a larger window, or stop the pipeline before optimize")
    need = minimum_budget(len(val), minibatch)
    if int(o.max_metric_calls) < need:
        raise UserError(f"optimizer.max_metric_calls={o.max_metric_calls} is below what one GEPA iteration needs: "
                        f"{need} ({len(val)} validation rows + 2 x minibatch {minibatch}); set it to at least {need}")


def prompt_diff(before: str, after: str) -> str:
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "baseline", "candidate", lineterm=""))


def earlier_twins(name: str, produced: Any, pipeline_id: str, seed_version: int, started_ms: int,
                  same_release: Callable[[Any], bool] = lambda v: True) -> list[Any]:
    """Versions an interrupted earlier attempt left with this same text: optimize_prompts registers
    before we can tag, so a SIGKILL leaves an untagged version, or one this pipeline's optimize tagged.
    With companions, a tagged one counts only if its whole release is the same (``same_release``):
    GEPA may have changed only a companion, and that earlier candidate is a release of its own."""
    def leftover(v: Any) -> bool:
        untagged = not any(k.startswith(PROMPT_TAG) for k in v.tags)
        ours = v.tags.get(PROMPT_TAG + "pipeline_id") == pipeline_id and PROMPT_TAG + "source_run_id" in v.tags
        return ((untagged or (ours and same_release(v))) and int(v.version) != seed_version
                and v.creation_timestamp < started_ms)

    return sorted((v for v in prompts.versions(name) if int(v.version) < int(produced.version)
                   and v.template.strip() == produced.template.strip() and leftover(v)), key=lambda v: int(v.version))


def already_live(cfg: Any, texts: dict[str, str], start_version: Any) -> str | None:
    """Which of the start, ``baseline`` and ``production`` already holds these texts (None: none
    does): such a candidate would only be compared with itself."""
    name = str(cfg.prompt.name)
    holders = [(f"the start v{start_version}", int(start_version))]
    for alias in ("baseline", "production"):
        if (found := prompts.by_alias(name, alias)) is not None:
            holders.append((f"{alias} v{found.version}", int(found.version)))
    for label, version in holders:
        if release.texts(cfg, version) == texts:
            return label
    return None


def drop_versions(name: str, versions: list[Any], why: str, say: Callable[[str], None]) -> None:
    for v in versions:
        prompts.delete_version(name, v.version)
        say(f"deleted v{v.version}: {why}")


@dataclass(frozen=True)
class Search:
    """One GEPA search: what it starts from and what it may spend."""

    name: str  # the release's first prompt
    seed_version: int  # the version GEPA starts from: production's, or the seed before the first promotion
    seed_texts: dict[str, str]  # prompt name -> text of every prompt of that release
    uris: dict[str, str]  # role -> URI of every prompt of that release
    train: list[Record]
    val: list[Record]
    judge_info: dict[str, Any]  # judge_name and judge_version


def run(ctx: StageContext) -> OptimizeResult:
    cfg, o = ctx.cfg, ctx.cfg.optimizer
    records = datasets.from_config(cfg, "train")
    train, val = split_train(records, float(o.val_fraction), int(o.seed))
    name = str(cfg.prompt.name)
    registered = recorded(ctx, "register")
    seed_version = release.start_version(cfg, registered)
    ctx.needs("align")
    align_run = ctx.store.latest_result(ctx.pipeline_id, "align")  # a new alignment: optimize again
    searched = {k: v for k, v in dict(o).items() if k != "start"}  # seed_version says where it starts
    inputs = tracking.inputs_hash(name, seed_version, [r.as_eval_row() for r in records], searched, dict(cfg.judge),
                                  str(cfg.model.provider), cfg.model.agent_model,
                                  align_run.info.run_id if align_run else "base")
    if (done := reuse(ctx, inputs)) is not None:
        return done
    with llm(ctx) as endpoint:
        judge, judge_info = recorded_judge(cfg.judge, tracking.result_of(align_run), ctx.store.experiment_id, endpoint)
        uris = release.uris(cfg, seed_version)
        search = Search(name, int(seed_version), release.texts(cfg, seed_version), uris, train, val, judge_info)
        predict = build_predict_fn(cfg.agent, endpoint, uris)  # before the run: a failure here leaves none
        budget = MetricBudget(int(o.max_metric_calls), minibatch=int(o.minibatch_size), n_val=len(val))
        with stage_run(ctx, inputs) as run:
            log_lineage(run.info.run_id, records)
            tracking.log(tags={TAG_OVERRIDES: " ".join(ctx.overrides), TAG_SWEEP_POINT: str(ctx.sweep_point).lower()},
                         params={"max_metric_calls": budget.cap, "minibatch_size": int(o.minibatch_size),
                                 "train": len(train), "val": len(val), "judge": judge_info["judge_name"],
                                 "judge_version": judge_info["judge_version"], "seed_version": seed_version,
                                 "start": str(o.get("start", "production"))})
            ctx.say(f"GEPA starts from {starting_point(cfg, registered)}; {len(train)} train / {len(val)} validation "
                    f"rows, judge {judge_info['judge_name']} v{judge_info['judge_version']}, at most {budget.cap} "
                    "metric calls")
            result = gepa(ctx, endpoint, search, predict, judge, budget)
            pause_point("optimize.registered")
            return keep_or_drop(ctx, run, search, result, budget)


def starting_point(cfg: Any, registered: Any) -> str:
    """Which version GEPA improves, and why that one."""
    start, seed, production = release.start_version(cfg, registered), int(registered.seed_version), \
        int(registered.production_version)
    if start == seed == production:
        return f"the seed {release.describe(cfg, start)}, which production holds"
    if start == seed:
        return f"the seed {release.describe(cfg, start)} with optimizer.start=seed (production is v{production})"
    return f"production {release.describe(cfg, start)}, compare's baseline (the seed is v{seed})"


def gepa(ctx: StageContext, endpoint: Any, search: Search, predict: Any, judge: Any, budget: MetricBudget) -> Any:
    """The search from the seed version, with the optimizer's settings."""
    o, judge_cfg = ctx.cfg.optimizer, ctx.cfg.judge
    to_number = kind_of(judge_cfg).score_fn()
    return gepa_search(predict, list(search.uris.values()),
                       [r.as_eval_row() for r in search.train],
                       None if search.val is search.train else [r.as_eval_row() for r in search.val],
                       judge, budget, to_number, str(o.get("reflection_model") or endpoint.uri(endpoint.reflection_model)),
                       int(o.minibatch_size), int(o.seed))


def no_gain_reason(ctx: StageContext, initial: float | None, final: float | None, start: int) -> str:
    """Why GEPA kept where it started (v``start``): its reflection calls failed (how many, the
    first error), or no candidate it proposed beat it."""
    seen = ctx.session.spend() if ctx.session is not None else {}
    errors, first = ctx.session.failures(seen) if ctx.session is not None else ({}, {})
    failed = sum((errors.get("reflection") or {}).values())
    no_gain = f"no candidate beat v{start} on train ({fmt(initial)} -> {fmt(final)})"
    if not failed:
        return no_gain
    calls = int((ctx.session.by_kind(seen).get("reflection") or {}).get("calls", failed))
    failures = f"{failed} of {calls} reflection calls failed ({first.get('reflection', 'no message')})"
    return f"GEPA produced no candidate: {failures}" if failed >= calls else f"{no_gain}; {failures}"


def split_result(search: Search, result: Any) -> tuple[Any, dict[str, Any]]:
    """(GEPA's new version of the first prompt, {companion name: its new version}): optimize_prompts
    registers a version of every prompt it was given, changed or not."""
    by_name = {p.name: p for p in result.optimized_prompts}
    return by_name[search.name], {n: p for n, p in by_name.items() if n != search.name}


def settle_companions(start: dict[str, int], companions: dict[str, Any], say: Callable[[str], None]) -> dict[str, int]:
    """Each companion's version in the candidate release: the start release's when GEPA left its
    text as it was (GEPA's copy deleted), else GEPA's new version."""
    out = {}
    for n, produced in companions.items():
        kept = prompts.version(n, start[n]) if n in start else None
        if kept is not None and kept.template.strip() == produced.template.strip():
            drop_versions(n, [produced], f"v{kept.version} already holds this text", say)
            out[n] = int(kept.version)
        else:
            out[n] = int(produced.version)
    return out


def keep_or_drop(ctx: StageContext, run: Any, search: Search, result: Any, budget: MetricBudget) -> OptimizeResult:
    """Keep GEPA's release as the candidate only if it beat the start on train and is not already live."""
    name, (produced, companions) = search.name, split_result(search, result)
    initial, final = result.initial_eval_score, result.final_eval_score
    texts = {name: produced.template.strip(), **{n: p.template.strip() for n, p in companions.items()}}
    same_as = already_live(ctx.cfg, texts, search.seed_version)
    gained = initial is not None and final is not None and final > initial
    metrics = {"initial_train_score": initial or 0.0, "final_train_score": final or 0.0,
               "metric_calls": budget.used, "metric_calls_refused": budget.refused, "max_metric_calls": budget.cap,
               "judge_errors": budget.judge_errors, "agent_errors": budget.agent_errors}
    tracking.log(metrics=metrics)
    outcome = OptimizeResult(**metrics, **search.judge_info, seed_version=search.seed_version, run_id=run.info.run_id,
                             train_rows=len(search.train), val_rows=len(search.val))
    twins = earlier_twins(name, produced, ctx.pipeline_id, search.seed_version, run.info.start_time,
                          lambda v: TAG_RELEASE not in v.tags or release.texts(ctx.cfg, v.version) == texts)

    def drop_all() -> None:  # optimize_prompts registers its result unconditionally; keep the registry clean
        drop_versions(name, [produced, *twins], "no candidate to keep", ctx.say)
        for n, p in companions.items():
            drop_versions(n, [p], "no candidate to keep", ctx.say)

    if budget.used and not budget.judged:  # GEPA's scores rest on no verdict at all
        drop_all()
        nothing_measured(ctx, f"GEPA judged 0 of {budget.used} metric calls ({budget.agent_errors} agent errors, "
                              f"{budget.judge_errors} judge errors); first: {budget.first_error}")
    if not gained or same_as is not None:
        drop_all()
        why = (f"GEPA's best prompt is the text of {same_as}" if gained
               else no_gain_reason(ctx, initial, final, search.seed_version))
        ctx.say(f"{why}; nothing registered")
        tracking.log(tags={TAG_OUTCOME: "no_improvement"})
        return finish(ctx, replace(outcome, outcome="no_improvement", reason=why))
    released = settle_companions(release.of(ctx.cfg, search.seed_version), companions, ctx.say)
    if twins:  # keep the oldest copy, so a rerun adds no duplicate
        drop_versions(name, [produced, *twins[1:]], f"v{twins[0].version} already holds this text", ctx.say)
        produced = twins[0]
    keep(ctx, run, search, produced, released, budget, (initial, final))
    return finish(ctx, replace(outcome, outcome="candidate", candidate_version=int(produced.version)))


def keep(ctx: StageContext, run: Any, search: Search, produced: Any, released: dict[str, int], budget: MetricBudget,
         scores: tuple[float, float]) -> None:
    """Tag the candidate release (scores, budget, judge, source run; its companions' versions) and
    point ``candidate`` at it."""
    name, (initial, final) = search.name, scores
    tags = {"initial_train_score": f"{initial:.4f}", "final_train_score": f"{final:.4f}",
            "metric_calls": str(budget.used), "max_metric_calls": str(budget.cap),
            "judge_name": search.judge_info["judge_name"], "judge_version": str(search.judge_info["judge_version"]),
            "pipeline_id": ctx.pipeline_id, "optimizer": json.dumps(dict(ctx.cfg.optimizer), sort_keys=True),
            "source_run_id": run.info.run_id}
    prompts.tag_version(name, produced.version, {PROMPT_TAG + k: v for k, v in tags.items()}
                        | ({TAG_RELEASE: release.tag_value(released)} if released else {}))
    if not ctx.sweep_point:  # in a sweep the summary points the alias at the best point
        prompts.set_alias(name, "candidate", int(produced.version))
    tracking.log(tags={TAG_OUTCOME: "candidate"})
    ctx.say(f"train score {initial:.3f} -> {final:.3f} with {budget.used}/{budget.cap} metric calls; "
            f"candidate {release.describe(ctx.cfg, produced.version)}{'' if ctx.sweep_point else ' (alias candidate)'}")
    for n, text in release.texts(ctx.cfg, produced.version).items():
        if text != search.seed_texts.get(n):
            if released:
                print(f"prompt '{n}':")
            print(prompt_diff(search.seed_texts[n], text))
    ctx.say(f"run: {ctx.store.run_link(run.info.run_id)}")
