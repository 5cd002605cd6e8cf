"""feedback: put expert labels on the traces evaluate tagged for review, as HUMAN
assessments under the judge's exact name. Sources: a label file, a rubric, or MLflow's review
queue (``feedback=ui``: a question named as the judge, the traces, the reviewers).

Every label is read and checked before the first one is written, so bad input leaves
nothing half-written; labels that are already there are not written twice.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from jobs.config.schemas import FileFeedback, RubricFeedback, UiFeedback, settings
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.files import read_text
from jobs.core.results import FeedbackResult
from jobs.eval import datasets, judges, labels
from jobs.stages.common import command, finish, reuse, say
from jobs.store import reviews, tracking
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
        reviews.check_judge(cfg.judge)
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


def open_queue(cfg: Any, experiment_id: str, traces: list[Any]) -> tuple[Any, str]:
    """The judge's label schema and the pipeline's review queue holding its traces: (queue, link)."""
    schema, made = reviews.ensure_label_schema(experiment_id, cfg.judge)
    name = str(cfg.feedback.queue or f"promptgate-{cfg.pipeline_id}")
    queue, created = reviews.ensure_queue(experiment_id, name, list(cfg.feedback.reviewers), schema.schema_id)
    added = reviews.add_traces(queue.queue_id, [t.info.trace_id for t in traces])
    link = reviews.queue_link(tracking.ui_base(cfg), experiment_id, queue.queue_id)
    say(STAGE, f"review queue '{name}' ({'new' if created else 'reused'}, {added} traces added, {len(traces)} in all), "
               f"question '{schema.name}' ({reviews.describe(schema.input)}{', new' if made else ''}), "
               f"assigned to {', '.join(queue.users) or 'anyone with access'}")
    say(STAGE, f"reviewers open: {link}")
    for other in reviews.other_feedback_schemas(experiment_id, str(cfg.judge.name)):
        say(STAGE, f"WARNING: the experiment also asks reviewers '{other}'; those answers are not judge "
                   f"'{cfg.judge.name}' labels and align will not use them")
    return queue, link


def ui_answers(cfg: Any, traces: list[Any]) -> list[tuple[Any, Any, str, str]]:
    """(trace, value, rationale, reviewer) for every trace a reviewer answered under the judge's name."""
    out = []
    for t in traces:
        if human := feedbacks(t, str(cfg.judge.name), "HUMAN"):
            out.append((t, human[-1].feedback.value, human[-1].rationale or "", human[-1].source.source_id))
    return out


def report_misnamed(cfg: Any, traces: list[Any]) -> None:
    """Answers under another name than the judge's are named, never silently dropped."""
    for other, n in sorted(reviews.misnamed_answers(traces, str(cfg.judge.name)).items()):
        say(STAGE, f"WARNING: {n} trace(s) carry expert feedback named '{other}', not the judge's name "
                   f"'{cfg.judge.name}'; they are not counted. Relabel them as '{cfg.judge.name}' or set judge.name")


def wait_for_ui_labels(cfg: Any, traces: list[Any]) -> list[tuple[Any, Any, str, str]] | None:
    """The reviewers' answers once ``min_labels`` are in; None when ``feedback.wait=false`` and
    fewer are in (the pipeline stops with exit 0 and resumes with the same id)."""
    import mlflow

    name, need = str(cfg.judge.name), int(cfg.feedback.min_labels)
    deadline = time.monotonic() + float(cfg.feedback.timeout_s)
    for poll in itertools.count():
        fresh = [mlflow.get_trace(t.info.trace_id) for t in traces]
        answers = ui_answers(cfg, fresh)
        done = len(answers) >= need
        say(STAGE, f"labels so far: {len(answers)} of {need} needed ({len(traces)} traces in the queue)")
        if poll == 0 or done:  # misnamed answers: said when the wait starts and when it ends
            report_misnamed(cfg, fresh)
        if done:
            return answers
        if not cfg.feedback.wait:
            return None
        if time.monotonic() > deadline:
            raise UserError(f"only {len(answers)} of {need} traces were labelled '{name}' within {cfg.feedback.timeout_s} s; "
                            "label more in the review queue, lower feedback.min_labels, or raise feedback.timeout_s")
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
    how = {k: v for k, v in dict(cfg.feedback).items() if k not in ("wait", "timeout_s", "poll_s")}  # not what is labelled
    inputs = tracking.inputs_hash(source, how, sorted(t.info.trace_id for t in traces), name)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    import mlflow
    from mlflow.entities import AssessmentSource

    written = skipped = 0
    if source == "ui":  # the experts answer in MLflow's review queue; the stage's run opens once they have
        if int(cfg.feedback.min_labels) > len(traces):
            raise UserError(f"feedback.min_labels={cfg.feedback.min_labels} but pipeline {pid} has only {len(traces)} "
                            f"traces awaiting review; set feedback.min_labels to at most {len(traces)}")
        open_queue(cfg, experiment_id, traces)
        answered = wait_for_ui_labels(cfg, traces)
        if answered is None:
            say(STAGE, f"WAITING for expert labels (feedback.wait=false); once they are in, rerun with "
                       f"pipeline_id={pid} to resume: finished stages are reused")
            return FeedbackResult(source=source, traces=len(traces))  # no run: nothing is recorded as done
        planned, written = answered, len(answered)
    else:
        planned = labels_for(cfg, traces)  # all checked before anything is written
    with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
        for trace, value, why, expert in planned if source != "ui" else []:
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
