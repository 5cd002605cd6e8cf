"""Evaluating records with mlflow.genai.evaluate so that no row is lost without a message.

Under load MLflow 3.17 with a SQLite server silently dropped rows (the server answered 400
on trace export while the database was locked; not re-measured on 3.18, and the check costs
nothing when nothing is lost). So every record carries its id as a trace
tag, the result is matched back by that id, and rows that came back without a trace or a
judge value are evaluated again; rows that never come back are named.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.core.errors import IncompleteResult
from jobs.eval.datasets import Record
from jobs.store import traces as store_traces
from jobs.store import tracking


@dataclass
class RowOutcome:
    record_id: str
    trace_id: str | None
    state: str  # OK or ERROR
    value: Any  # the judge's value, None when it gave none
    rationale: str | None
    error: str | None
    scores: dict[str, Any] = field(default_factory=dict)  # values of the other scorers
    score_errors: dict[str, str] = field(default_factory=dict)  # other scorer -> why it gave no value on this row

    @property
    def ok(self) -> bool:
        return self.state == "OK" and self.error is None


def _value(row: Any, col: str | None) -> Any:
    value = row.get(col) if col else None
    return None if value is not None and value != value else value  # NaN -> None


def _feedback_errors(trace: Any, run_id: str | None = None) -> dict[str, str]:
    """Each assessment name's first feedback error on the trace (of the evaluation in ``run_id``)."""
    out: dict[str, str] = {}
    for a in trace.info.assessments or []:
        fb = getattr(a, "feedback", None)
        if fb is not None and fb.error is not None and _from_run(a, run_id):
            out.setdefault(a.name, str(fb.error.error_message or fb.error.error_code))
    return out


def _from_run(assessment: Any, run_id: str | None) -> bool:
    """Whether an assessment was logged by the evaluation in ``run_id`` (any, when None): a trace
    re-judged by a later compare holds both compares' assessments."""
    return run_id is None or (assessment.metadata or {}).get(SOURCE_RUN_KEY) in (None, run_id)


SOURCE_RUN_KEY = "mlflow.assessment.sourceRunId"  # MLflow's AssessmentMetadataKey.SOURCE_RUN_ID


def outcomes_from(df: Any, judge_name: str, traces: dict[str, Any], others: list[str] | tuple[str, ...] = (),
                  run_id: str | None = None) -> dict[str, RowOutcome]:
    """Read ``result_df`` into one outcome per record it holds, matched by the record-id
    trace tag. A record with no row, no trace or no judge value is absent from the result.
    ``others`` are the assessment names of the other scorers: on a row whose agent call
    succeeded, one that gave no value is that scorer's error (its message, or "no value")."""
    cols = {c[: -len("/value")]: c for c in df.columns if c.endswith("/value")}
    out: dict[str, RowOutcome] = {}
    for _, row in df.iterrows():
        trace = traces.get(row.get("trace_id"))
        rid = trace.info.tags.get(tracking.TAG_QUESTION) if trace is not None else None
        if rid is None:
            continue
        value = _value(row, cols.get(judge_name, judge_name if judge_name in df.columns else None))
        error = rationale = None
        for a in trace.info.assessments or []:
            if a.name == judge_name and getattr(a, "feedback", None) is not None and _from_run(a, run_id):
                rationale = a.rationale
                if a.feedback.error is not None:
                    error = a.feedback.error.error_message or a.feedback.error.error_code
        state = str(getattr(trace.info.state, "value", trace.info.state))
        if value is None and error is None and state == "OK":
            continue  # no judge value: treat as lost and evaluate again
        scores = {name: _value(row, col) for name, col in cols.items() if name != judge_name}
        failed = _feedback_errors(trace, run_id)
        score_errors = {} if state != "OK" else {
            name: failed.get(name) or "no value" for name in others
            if name != judge_name and (scores.get(name) is None or name in failed)}
        out[rid] = RowOutcome(rid, row.get("trace_id"), state, value, rationale,
                              error or (None if state == "OK" else "agent error"), scores, score_errors)
    return out


def scorer_counts(outcomes: dict[str, RowOutcome], names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per other scorer (``names``: assessment name -> the config's name, which keys the
    result), over the rows whose agent call succeeded: how many it judged, how many it failed
    on, and the first failure's message."""
    out: dict[str, dict[str, Any]] = {}
    rows = [o for o in outcomes.values() if o.state == "OK"]
    for name, shown in names.items():
        failed = [o.score_errors[name] for o in rows if name in o.score_errors]
        out[shown] = {"judged": len(rows) - len(failed), "errors": len(failed), "first_error": failed[0] if failed else None}
    return out


def other_scorers(cfg: Any) -> dict[str, str]:
    """The other scorers' assessment names (what MLflow records their values under) -> the
    names the config gives them (``safety`` -> ``Safety``)."""
    from jobs.eval.judges import assessment_name, scorer_name

    names = [scorer_name(s) for s in cfg.judge.scorers or []]
    return {assessment_name(n): n for n in names}


def evaluate_complete(records: list[Record], run_once: Callable[[list[Record]], dict[str, RowOutcome]],
                      max_attempts: int, on_missing: str = "fail",
                      say: Callable[[str], None] = print) -> tuple[dict[str, RowOutcome], int]:
    """Evaluate until every record has an outcome, re-running only the missing ones.

    Returns the outcomes and how many rows needed another pass. Rows still missing after
    the last attempt raise IncompleteResult naming them, or are recorded as errors.
    """
    outcomes: dict[str, RowOutcome] = {}
    pending = list(records)
    retried = 0
    for attempt in range(1, max_attempts + 1):
        outcomes.update(run_once(pending))
        pending = [r for r in pending if r.id not in outcomes]
        if not pending:
            break
        if attempt < max_attempts:
            retried += len(pending)
            say(f"{len(pending)} of {len(records)} rows came back without a trace or judge value "
                f"({', '.join(r.id for r in pending[:8])}); evaluating them again (attempt {attempt + 1}/{max_attempts})")
    if pending:
        ids = ", ".join(r.id for r in pending)
        if on_missing != "record":
            raise IncompleteResult(f"{len(pending)} dataset rows never came back with a trace and a judge value after "
                                   f"{max_attempts} attempts: {ids}. The tracking server may be overloaded; lower "
                                   "evaluate.max_workers or raise evaluate.max_attempts")
        say(f"recording {len(pending)} rows that never came back as errors: {ids}")
        for r in pending:
            outcomes[r.id] = RowOutcome(r.id, None, "ERROR", None, None, "lost: no trace or judge value")
    return outcomes, retried


@functools.cache
def autolog_once(flavors: tuple[str, ...] | None = None) -> None:
    """Set MLflow's tracing of the agent once per process (compare evaluates two arms, a shard
    several). ``flavors`` (``agent.autolog``): the autolog flavors whose spans trace the agent;
    every other flavor of ``AUTOLOG_FLAVORS`` is disabled, because ``mlflow.genai.evaluate``
    switches on each one not explicitly disabled, and during evaluate every span is exported to
    the server on its own request: a LangChain agent over the openai SDK would log each LLM call
    twice (ChatOpenAI with a Completions child, 10 spans a row instead of 8). None: LangChain's on
    and the rest as evaluate sets them."""
    import mlflow

    from jobs.eval.agent import AUTOLOG_FLAVORS

    for flavor in AUTOLOG_FLAVORS if flavors is not None else ("langchain",):
        getattr(mlflow, flavor).autolog(log_traces=True, disable=flavors is not None and flavor not in flavors,
                                        silent=True)


def signature(inputs: dict[str, Any]) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


def traced_agent(cfg: Any, endpoint: Any, pipeline_id: str, prompt_uris: dict[str, str], records: list[Record],
                 tags: dict[str, str]) -> Callable[..., str]:
    """The agent with the prompts at ``prompt_uris`` (role -> URI), each row's trace tagged with
    the pipeline, ``tags`` and the question of ``records`` it answers. Built once per stage and
    arm, before any run: an agent that refuses its prompts stops the stage there."""
    from jobs.eval.agent import build_predict_fn

    by_inputs = {signature(r.inputs): r.id for r in records}
    base_tags = {tracking.TAG_PIPELINE: pipeline_id, **tags}

    def tags_for(inputs: dict[str, Any]) -> dict[str, str]:
        return {**base_tags, tracking.TAG_QUESTION: by_inputs.get(signature(inputs), "?")}

    return build_predict_fn(cfg.agent, endpoint, prompt_uris, tags_for)


def evaluate_records(cfg: Any, experiment_id: str, run_id: str, records: list[Record], predict: Callable[..., str],
                     scorers: list[Any], say: Callable[[str], None] = print) -> tuple[dict[str, RowOutcome], int]:
    """Run ``predict`` (``traced_agent``) over ``records`` inside the active run, score them, and
    return one outcome per record (see ``evaluate_complete``)."""
    import mlflow

    from jobs.eval.judges import skip_failed_rows

    flavors = cfg.agent.get("autolog")
    autolog_once(None if flavors is None else tuple(str(f) for f in flavors))
    judge_name = str(cfg.judge.name)

    guarded = [skip_failed_rows(s) for s in scorers]  # a failed agent call is an error, never judged
    others = [str(s.name) for s in scorers if str(s.name) != judge_name]

    def run_once(batch: list[Record]) -> dict[str, RowOutcome]:
        res = mlflow.genai.evaluate(data=[r.as_eval_row() for r in batch], predict_fn=predict, scorers=guarded)
        store_traces.flush()
        found = {t.info.trace_id: t for t in store_traces.search(experiment_id, "", run_id=run_id, max_results=10000,
                                                                 include_spans=False)}
        return outcomes_from(res.result_df, judge_name, found, others, run_id)

    workers_var = "MLFLOW_GENAI_EVAL_MAX_WORKERS"  # MLflow reads its row concurrency from the environment
    saved = os.environ.get(workers_var)
    os.environ[workers_var] = str(int(cfg.evaluate.max_workers))
    try:
        return evaluate_complete(records, run_once, int(cfg.evaluate.max_attempts), str(cfg.evaluate.on_missing), say)
    finally:  # leave the process's environment as it was
        if saved is None:
            os.environ.pop(workers_var, None)
        else:
            os.environ[workers_var] = saved


def compare_evaluations(baseline_run: str, candidate_run: str, level: float) -> Any:
    """MLflow's paired comparison of two evaluation runs (experimental in MLflow)."""
    from mlflow.genai import compare_evaluations as compare

    return compare(candidate_run_id=candidate_run, baseline_run_id=baseline_run, confidence_level=level)


def rejudge_records(cfg: Any, experiment_id: str, run_id: str, traces: list[Any], rows: dict[str, RowOutcome],
                    scorers: list[Any]) -> dict[str, RowOutcome]:
    """Score the ``traces`` of rows measured before (``rows``: record id -> outcome) with ``scorers``
    inside the active run, without running the agent: MLflow links the traces to the run and logs
    the new assessments on them. Rows that come back without a judge value are left out, so the
    caller measures them afresh."""
    import mlflow

    from jobs.eval.judges import skip_failed_rows

    ids = {o.trace_id for o in rows.values() if o.trace_id}
    wanted = [t for t in traces if t.info.trace_id in ids]
    if not wanted:
        return {}
    judge_name = str(cfg.judge.name)
    res = mlflow.genai.evaluate(data=wanted, scorers=[skip_failed_rows(s) for s in scorers])
    store_traces.flush()
    found = {t.info.trace_id: t for t in store_traces.search(experiment_id, "", run_id=run_id, max_results=10000,
                                                             include_spans=False)}
    others = [str(s.name) for s in scorers if str(s.name) != judge_name]
    return {rid: o for rid, o in outcomes_from(res.result_df, judge_name, found, others, run_id).items() if rid in rows}
