"""feedback: put expert labels on the traces evaluate tagged for review, as HUMAN
assessments under the judge's exact name. Sources: a label file, a rubric, or the UI.

Every label is read and checked before the first one is written, so bad input leaves
nothing half-written; labels that are already there are not written twice.
"""

from __future__ import annotations

import time
from typing import Any

from jobs.config.schemas import FileFeedback, RubricFeedback, UiFeedback, settings
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.files import read_text
from jobs.core.results import FeedbackResult
from jobs.eval import datasets, judges, labels
from jobs.stages.common import command, finish, reuse, say
from jobs.store import tracking
from jobs.store.traces import expectations_of, feedbacks, response_of

STAGE = "feedback"


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    source = settings(cfg, "feedback")  # the schema checks the source's keys, types and ranges
    if isinstance(source, RubricFeedback):
        labels.compile_rubric(cfg.feedback.criteria)
    elif isinstance(source, FileFeedback):
        read_label_file(cfg)
    elif isinstance(source, UiFeedback):
        split = str(cfg.evaluate.split)
        questions = len(datasets.from_config(cfg, split))
        if source.min_labels > questions:
            raise UserError(f"feedback.min_labels={source.min_labels} is above the {questions} questions of dataset.{split} "
                            f"that evaluate gives the experts; set feedback.min_labels to at most {questions}")


def read_label_file(cfg: Any) -> tuple[str, list[labels.Label]]:
    path = str(cfg.feedback.path)
    text = read_text(path, "label file", float(cfg.limits.max_file_mb))
    return labels.parse_file(text, path, str(cfg.judge.name), str(cfg.judge.feedback_value_type),
                             cfg.judge.get("categories"), str(cfg.feedback.expert_id), int(cfg.limits.max_record_kb * 1024))


def review_traces(experiment_id: str, pipeline_id: str, evaluate_run_id: str) -> list[Any]:
    """The traces tagged for review by the pipeline's finished evaluate run (not by an attempt
    that was killed), in question order."""
    import mlflow

    traces = mlflow.search_traces(
        locations=[experiment_id], run_id=evaluate_run_id, return_type="list", max_results=5000, include_spans=True,
        filter_string=f"tag.`{tracking.TAG_PIPELINE}` = '{pipeline_id}' AND tag.`{tracking.TAG_REVIEW}` = 'pending'",
    )
    return sorted(traces, key=lambda t: t.info.tags.get(tracking.TAG_QUESTION, ""))


def labels_for(cfg: Any, traces: list[Any]) -> list[tuple[Any, Any, str, str]]:
    """(trace, value, rationale, expert) for every trace the source labels."""
    source = str(cfg.feedback.source)
    if source == "rubric":
        criteria = labels.compile_rubric(cfg.feedback.criteria)
        out = []
        for t in traces:
            met, checked, why = labels.rubric_verdict(criteria, response_of(t), expectations_of(t))
            out.append((t, labels.rubric_value(cfg.judge, met, checked), why, str(cfg.feedback.expert_id)))
        return out
    key_col, rows = read_label_file(cfg)
    index = {(t.info.trace_id if key_col == "trace_id" else t.info.tags.get(tracking.TAG_QUESTION)): t for t in traces}
    out = []
    for lab in rows:
        trace = index.get(lab.key)
        if trace is None:
            raise UserError(f"{lab.where}: {key_col} '{lab.key}' is not among this pipeline's traces awaiting review "
                            f"(pipeline_id={cfg.pipeline_id}); check the id or the pipeline id")
        out.append((trace, lab.value, lab.rationale, lab.expert))
    return out


def wait_for_ui_labels(cfg: Any, experiment_id: str, traces: list[Any]) -> int:
    import mlflow

    name, need = str(cfg.judge.name), int(cfg.feedback.min_labels)
    say(STAGE, f"label at least {need} traces in the MLflow UI with a feedback named exactly '{name}':")
    for t in traces[:20]:
        say(STAGE, f"  {tracking.trace_link(cfg, experiment_id, t.info.trace_id)}")
    deadline = time.monotonic() + float(cfg.feedback.timeout_s)
    while True:
        have = sum(1 for t in traces if feedbacks(mlflow.get_trace(t.info.trace_id), name, "HUMAN"))
        say(STAGE, f"{have}/{need} labelled")
        if have >= need:
            return have
        if time.monotonic() > deadline:
            raise UserError(f"only {have} of {need} traces were labelled '{name}' within {cfg.feedback.timeout_s} s; "
                            "label more in the UI, lower feedback.min_labels, or raise feedback.timeout_s")
        time.sleep(float(cfg.feedback.poll_s))


def run(cfg: Any) -> FeedbackResult:
    experiment_id = tracking.connect(cfg)
    pid = str(cfg.pipeline_id)
    name = str(cfg.judge.name)
    evaluate_run = tracking.latest_result(experiment_id, pid, "evaluate")
    traces = review_traces(experiment_id, pid, evaluate_run.info.run_id) if evaluate_run else []
    if not traces:
        raise UserError(f"pipeline {pid} has no traces awaiting review; run `{command('evaluate', cfg)}` first")
    source = str(cfg.feedback.source)
    inputs = tracking.inputs_hash(source, dict(cfg.feedback), sorted(t.info.trace_id for t in traces), name)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    import mlflow
    from mlflow.entities import AssessmentSource

    planned = labels_for(cfg, traces) if source != "ui" else []  # all checked before anything is written
    written = skipped = 0
    if source == "ui":  # the experts label in the UI; the stage's run opens once they have
        if int(cfg.feedback.min_labels) > len(traces):
            raise UserError(f"feedback.min_labels={cfg.feedback.min_labels} but pipeline {pid} has only {len(traces)} "
                            f"traces awaiting review; set feedback.min_labels to at most {len(traces)}")
        written = wait_for_ui_labels(cfg, experiment_id, traces)
    with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
        for trace, value, why, expert in planned:
            if any(a.source.source_id == expert for a in feedbacks(trace, name, "HUMAN")):
                skipped += 1  # a rerun of this stage: that expert's label is already there
                continue
            mlflow.log_feedback(trace_id=trace.info.trace_id, name=name, value=value, rationale=why,
                                source=AssessmentSource(source_type="HUMAN", source_id=expert))
            written += 1
            pause_point("feedback.first_label")
        judge_said = {t.info.trace_id: next((a.feedback.value for a in feedbacks(t, name, "LLM_JUDGE")), None)
                      for t in traces}
        agree = [judges.passed(cfg.judge, judge_said[t.info.trace_id]) == judges.passed(cfg.judge, v)
                 for t, v, _w, _e in planned if judge_said[t.info.trace_id] is not None]
        expert_pass = sum(1 for _t, v, _w, _e in planned if judges.passed(cfg.judge, v))
        metrics = {"labels_written": written, "labels_skipped": skipped, "traces": len(traces),
                   "expert_pass_rate": expert_pass / len(planned) if planned else 0.0,
                   "raw_agreement_with_judge": sum(agree) / len(agree) if agree else 0.0}
        mlflow.log_metrics(metrics)
        mlflow.log_params({"source": source, "judge": name})
        say(STAGE, f"{written} expert labels written as '{name}' ({skipped} already there) from {source}; "
                   f"expert pass rate {metrics['expert_pass_rate']:.2f}, "
                   f"raw judge-expert agreement {metrics['raw_agreement_with_judge']:.2f}")
        say(STAGE, f"traces: {tracking.traces_link(cfg, experiment_id)}")
        return finish(FeedbackResult(**metrics, run_id=run.info.run_id, source=source))
