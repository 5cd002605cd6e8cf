"""evaluate: run the agent with the seed prompt over a dataset split, score it with the
judge(s), prove that every row came back, and tag the OK traces for expert review."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from jobs import datasets, judges, tracking
from jobs.datasets import Record
from jobs.errors import IncompleteResult
from jobs.models import activate
from jobs.stages.common import finish, recorded, reuse, say

STAGE = "evaluate"


@dataclass
class RowOutcome:
    record_id: str
    trace_id: str | None
    state: str  # OK or ERROR
    value: Any  # the judge's value, None when it gave none
    rationale: str | None
    error: str | None


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    datasets.from_config(cfg.dataset, str(cfg.evaluate.split))


def _column(df: Any, judge_name: str) -> str | None:
    for col in (f"{judge_name}/value", judge_name):
        if col in df.columns:
            return col
    return None


def outcomes_from(df: Any, records: list[Record], judge_name: str, traces: dict[str, Any]) -> dict[str, RowOutcome]:
    """Read mlflow.genai.evaluate's result_df into one outcome per dataset record it holds.

    Rows are matched to records through the question-id tag that predict_fn puts on each
    trace. A record with no row, no trace or no judge value is simply absent from the result.
    """
    col = _column(df, judge_name)
    out: dict[str, RowOutcome] = {}
    for _, row in df.iterrows():
        trace_id = row.get("trace_id")
        trace = traces.get(trace_id)
        if not trace_id or trace is None:
            continue
        rid = trace.info.tags.get(tracking.TAG_QUESTION)
        if rid is None:
            continue
        value = row.get(col) if col else None
        if value is not None and value != value:  # NaN
            value = None
        rationale = None
        error = None
        for a in trace.info.assessments or []:
            if a.name == judge_name and getattr(a, "feedback", None) is not None:
                rationale = a.rationale
                if a.feedback.error is not None:
                    error = a.feedback.error.error_message or a.feedback.error.error_code
        state = str(getattr(trace.info.state, "value", trace.info.state))
        if value is None and error is None and state == "OK":
            continue  # no judge value: treat as lost and evaluate again
        out[rid] = RowOutcome(rid, trace_id, state, value, rationale, error or (None if state == "OK" else "agent error"))
    return out


def evaluate_complete(records: list[Record], run_once: Callable[[list[Record]], dict[str, RowOutcome]],
                      max_attempts: int, on_missing: str = "fail") -> tuple[dict[str, RowOutcome], int]:
    """Evaluate until every record has an outcome, re-running only the missing ones.

    Returns the outcomes and how many rows needed another pass. Rows still missing after
    the last attempt raise IncompleteResult naming them, or are recorded as errors.
    """
    outcomes: dict[str, RowOutcome] = {}
    pending = list(records)
    retried = 0
    for attempt in range(1, max_attempts + 1):
        got = run_once(pending)
        outcomes.update(got)
        pending = [r for r in pending if r.id not in outcomes]
        if not pending:
            break
        if attempt < max_attempts:
            retried += len(pending)
            say(STAGE, f"{len(pending)} of {len(records)} rows came back without a trace or judge value "
                       f"({', '.join(r.id for r in pending[:8])}); evaluating them again (attempt {attempt + 1}/{max_attempts})")
    if pending:
        ids = ", ".join(r.id for r in pending)
        if on_missing != "record":
            raise IncompleteResult(f"{len(pending)} dataset rows never came back with a trace and a judge value after "
                                   f"{max_attempts} attempts: {ids}. The tracking server may be overloaded; lower "
                                   "evaluate.max_workers or raise evaluate.max_attempts")
        say(STAGE, f"recording {len(pending)} rows that never came back as errors: {ids}")
        for r in pending:
            outcomes[r.id] = RowOutcome(r.id, None, "ERROR", None, None, "lost: no trace or judge value")
    return outcomes, retried


def run(cfg: Any) -> dict:
    split = str(cfg.evaluate.split)
    records = datasets.from_config(cfg.dataset, split)
    experiment_id = tracking.connect(cfg)
    prompt_name = str(cfg.prompt.name)
    seed_version = recorded(cfg, experiment_id, "register", "seed_version")
    inputs = tracking.inputs_hash(prompt_name, seed_version, split, [r.as_eval_row() for r in records],
                                  dict(cfg.judge), str(cfg.model.provider), cfg.model.agent_model)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(int(cfg.evaluate.max_workers))
    with activate(cfg.model) as endpoint:
        import mlflow
        from jobs.agent import build_predict_fn

        judge = judges.build(cfg.judge, endpoint)
        scorers = [judge] + judges.builtin_scorers(list(cfg.judge.builtin_scorers), endpoint)
        by_question = {str(r.inputs.get(str(cfg.agent.input_key))): r.id for r in records}
        pid = str(cfg.pipeline_id)
        tags_for = lambda inp: {tracking.TAG_QUESTION: by_question.get(str(inp.get(str(cfg.agent.input_key))), "?"),  # noqa: E731
                                tracking.TAG_PIPELINE: pid, "promptgate.split": split}
        prompt_uri = f"prompts:/{prompt_name}/{seed_version}"
        predict = build_predict_fn(cfg.agent, endpoint, prompt_uri, tags_for)
        mlflow.langchain.autolog(log_traces=True, silent=True)

        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            mlflow.log_params({"split": split, "rows": len(records), "prompt_uri": prompt_uri,
                               "judge": cfg.judge.name, "max_workers": int(cfg.evaluate.max_workers)})

            def run_once(batch: list[Record]) -> dict[str, RowOutcome]:
                res = mlflow.genai.evaluate(data=[r.as_eval_row() for r in batch], predict_fn=predict, scorers=scorers)
                mlflow.flush_trace_async_logging()
                traces = {t.info.trace_id: t for t in mlflow.search_traces(
                    locations=[experiment_id], run_id=run.info.run_id, return_type="list", max_results=5000)}
                return outcomes_from(res.result_df, batch, str(cfg.judge.name), traces)

            outcomes, retried = evaluate_complete(records, run_once, int(cfg.evaluate.max_attempts),
                                                  str(cfg.evaluate.on_missing))
            ok = [o for o in outcomes.values() if o.state == "OK" and o.error is None]
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
            return finish(STAGE, {**metrics, "run_id": run.info.run_id, "prompt_version": seed_version, "split": split,
                                  "reviewable": len(ok)})
