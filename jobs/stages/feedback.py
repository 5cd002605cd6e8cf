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
from jobs.core.contract import TAG_PIPELINE, TAG_QUESTION, TAG_REVIEW
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.files import read_text
from jobs.core.judge_kinds import Numeric, kind_of
from jobs.core.results import FeedbackResult
from jobs.eval import datasets, judges, labels
from jobs.stages.common import command, finish, recorded, reuse, stage_run
from jobs.stages.context import StageContext
from jobs.store import reviews, traces, tracking
from jobs.store.traces import expectations_of, feedbacks, response_of


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
                             cfg.judge.get("categories"), str(cfg.feedback.expert_id), int(cfg.limits.max_record_kb * 1024),
                             scale=kind_scale(cfg.judge))


def kind_scale(judge_cfg: Any) -> list[float] | None:
    """A float judge's declared range (judge.scale, [0, 1] when not given); None for other kinds."""
    kind = kind_of(judge_cfg)
    return [kind.low, kind.high] if isinstance(kind, Numeric) else None


def review_traces(experiment_id: str, pipeline_id: str, evaluate_run_id: str) -> list[Any]:
    """The traces tagged for review by the pipeline's finished evaluate run (not by an attempt
    that was killed), in question order."""
    found = traces.search(experiment_id, f"tag.`{TAG_PIPELINE}` = '{pipeline_id}' AND tag.`{TAG_REVIEW}` = 'pending'",
                          run_id=evaluate_run_id)
    return sorted(found, key=lambda t: t.info.tags.get(TAG_QUESTION, ""))


def labels_for(ctx: StageContext, found: list[Any]) -> list[tuple[Any, Any, str, str]]:
    """(trace, value, rationale, expert) for every trace a rubric or a label file labels."""
    cfg = ctx.cfg
    if isinstance(ctx.settings("feedback"), RubricFeedback):
        criteria = labels.compile_rubric(cfg.feedback.criteria)
        out = []
        for t in found:
            met, checked, why = labels.rubric_verdict(criteria, response_of(t), expectations_of(t))
            out.append((t, labels.rubric_value(cfg.judge, met, checked), why, str(cfg.feedback.expert_id)))
        return out
    key_col, rows = read_label_file(cfg)
    index = {(t.info.trace_id if key_col == "trace_id" else t.info.tags.get(TAG_QUESTION)): t for t in found}
    out = []
    for lab in rows:
        trace = index.get(lab.key)
        if trace is None:
            raise UserError(f"{lab.where}: {key_col} '{lab.key}' is not among this pipeline's traces awaiting review "
                            f"(pipeline_id={ctx.pipeline_id}); check the id or the pipeline id")
        out.append((trace, lab.value, lab.rationale, lab.expert))
    return out


def open_queue(ctx: StageContext, found: list[Any]) -> None:
    """The judge's label schema and the pipeline's review queue holding its traces."""
    cfg, experiment_id = ctx.cfg, ctx.store.experiment_id
    name = str(cfg.feedback.queue or f"promptgate-{ctx.pipeline_id}")
    q = reviews.queue_traces(experiment_id, cfg.judge, name, list(cfg.feedback.reviewers),
                             [t.info.trace_id for t in found], ctx.store.ui_base)
    ctx.say(f"review queue '{name}' ({'new' if q.queue_created else 'reused'}, {q.added} traces added, "
            f"{len(found)} in all), question '{q.schema.name}' ({reviews.describe(q.schema.input)}"
            f"{', new' if q.schema_created else ''}), assigned to {', '.join(q.queue.users) or 'anyone with access'}")
    ctx.say(f"reviewers open: {q.link}")
    for other in reviews.other_feedback_schemas(experiment_id, str(cfg.judge.name)):
        ctx.say(f"WARNING: the experiment also asks reviewers '{other}'; those answers are not judge "
                f"'{cfg.judge.name}' labels and align will not use them")


def ui_answers(cfg: Any, found: list[Any]) -> list[tuple[Any, Any, str, str]]:
    """(trace, value, rationale, reviewer) for every trace a reviewer answered under the judge's name."""
    out = []
    for t in found:
        if human := feedbacks(t, str(cfg.judge.name), "HUMAN"):
            out.append((t, human[-1].feedback.value, human[-1].rationale or "", human[-1].source.source_id))
    return out


def report_misnamed(ctx: StageContext, found: list[Any]) -> None:
    """Answers under another name than the judge's are named, never silently dropped."""
    cfg = ctx.cfg
    for other, n in sorted(reviews.misnamed_answers(found, str(cfg.judge.name)).items()):
        ctx.say(f"WARNING: {n} trace(s) carry expert feedback named '{other}', not the judge's name "
                f"'{cfg.judge.name}'; they are not counted. Relabel them as '{cfg.judge.name}' or set judge.name")


def wait_for_ui_labels(ctx: StageContext, found: list[Any]) -> list[tuple[Any, Any, str, str]] | None:
    """The reviewers' answers once ``min_labels`` are in; None when ``feedback.wait=false`` and
    fewer are in (the pipeline stops with exit 0 and resumes with the same id)."""
    cfg = ctx.cfg
    name, need = str(cfg.judge.name), int(cfg.feedback.min_labels)
    deadline = time.monotonic() + float(cfg.feedback.timeout_s)
    for poll in itertools.count():
        fresh = [traces.get(t.info.trace_id) for t in found]
        answers = ui_answers(cfg, fresh)
        done = len(answers) >= need
        ctx.say(f"labels so far: {len(answers)} of {need} needed ({len(found)} traces in the queue)")
        if poll == 0 or done:  # misnamed answers: said when the wait starts and when it ends
            report_misnamed(ctx, fresh)
        if done:
            return answers
        if not cfg.feedback.wait:
            return None
        if time.monotonic() > deadline:
            raise UserError(f"only {len(answers)} of {need} traces were labelled '{name}' within {cfg.feedback.timeout_s} s; "
                            "label more in the review queue, lower feedback.min_labels, or raise feedback.timeout_s")
        time.sleep(float(cfg.feedback.poll_s))


def run(ctx: StageContext) -> FeedbackResult:
    cfg, pid, name = ctx.cfg, ctx.pipeline_id, str(ctx.cfg.judge.name)
    ctx.needs("evaluate")
    evaluate_run = ctx.store.latest_result(pid, "evaluate")
    if evaluate_run is None:
        recorded(ctx, "evaluate")  # raises: why the last evaluate recorded nothing, or to run it first
    found = review_traces(ctx.store.experiment_id, pid, evaluate_run.info.run_id)
    if not found:
        raise UserError(f"pipeline {pid} has no traces awaiting review; run `{command(ctx, 'evaluate')}` first")
    source = ctx.settings("feedback")
    how = {k: v for k, v in dict(cfg.feedback).items() if k not in ("wait", "timeout_s", "poll_s")}  # not what is labelled
    inputs = tracking.inputs_hash(source.source, how, sorted(t.info.trace_id for t in found), name)
    if (done := reuse(ctx, inputs)) is not None:
        return done
    if isinstance(source, UiFeedback):  # the experts answer in MLflow's review queue; the run opens once they have
        answered = ui_labels(ctx, source, found)
        if answered is None:
            return FeedbackResult(source=source.source, traces=len(found))  # no run: nothing is recorded as done
        with stage_run(ctx, inputs) as run:
            return record(ctx, run, source.source, answered, found, written=len(answered), skipped=0)
    planned = labels_for(ctx, found)  # all checked before anything is written
    with stage_run(ctx, inputs) as run:
        written, skipped = write_labels(ctx, planned)
        return record(ctx, run, source.source, planned, found, written, skipped)


def ui_labels(ctx: StageContext, source: UiFeedback, found: list[Any]) -> list[tuple[Any, Any, str, str]] | None:
    """The review queue set up and the reviewers' answers once enough are in (None: not waiting)."""
    if source.min_labels > len(found):
        raise UserError(f"feedback.min_labels={source.min_labels} but pipeline {ctx.pipeline_id} has only {len(found)} "
                        f"traces awaiting review; set feedback.min_labels to at most {len(found)}")
    open_queue(ctx, found)
    answered = wait_for_ui_labels(ctx, found)
    if answered is None:
        ctx.say(f"WAITING for expert labels (feedback.wait=false); once they are in, rerun with "
                f"pipeline_id={ctx.pipeline_id} to resume: finished stages are reused")
    return answered


def write_labels(ctx: StageContext, planned: list[tuple[Any, Any, str, str]]) -> tuple[int, int]:
    """Each label as a HUMAN assessment under the judge's name, once per expert: (written, skipped)."""
    name = str(ctx.cfg.judge.name)
    written = skipped = 0
    for trace, value, why, expert in planned:
        if any(a.source.source_id == expert for a in feedbacks(trace, name, "HUMAN")):
            skipped += 1  # a rerun of this stage: that expert's label is already there
            continue
        traces.log_feedback(trace.info.trace_id, name, value, why, "HUMAN", expert)
        written += 1
        pause_point("feedback.first_label")
    return written, skipped


def record(ctx: StageContext, run: Any, source: str, planned: list, found: list[Any], written: int,
           skipped: int) -> FeedbackResult:
    """The labels' figures on the stage's run, and the result."""
    judge_cfg, name = ctx.cfg.judge, str(ctx.cfg.judge.name)
    judge_said = {t.info.trace_id: next((a.feedback.value for a in feedbacks(t, name, "LLM_JUDGE")), None)
                  for t in found}
    agree = [judges.passed(judge_cfg, judge_said[t.info.trace_id]) == judges.passed(judge_cfg, v)
             for t, v, _w, _e in planned if judge_said[t.info.trace_id] is not None]
    expert_pass = sum(1 for _t, v, _w, _e in planned if judges.passed(judge_cfg, v))
    metrics = {"labels_written": written, "labels_skipped": skipped, "traces": len(found),
               "expert_pass_rate": expert_pass / len(planned) if planned else 0.0,
               "raw_agreement_with_judge": sum(agree) / len(agree) if agree else 0.0}
    tracking.log(metrics=metrics, params={"source": source, "judge": name})
    ctx.say(f"{written} expert labels written as '{name}' ({skipped} already there) from {source}; "
            f"expert pass rate {metrics['expert_pass_rate']:.2f}, "
            f"raw judge-expert agreement {metrics['raw_agreement_with_judge']:.2f}")
    if (scale := kind_scale(judge_cfg)) is not None and planned:  # a numeric judge: the labels on its scale
        values = [float(v) for _t, v, _w, _e in planned]
        ctx.say(f"expert labels on the judge's scale {scale[0]:g}-{scale[1]:g}: mean {sum(values) / len(values):.2f}, "
                f"from {min(values):g} to {max(values):g} (n={len(values)})")
    ctx.say(f"traces: {ctx.store.traces_link()}")
    return finish(ctx, FeedbackResult(**metrics, run_id=run.info.run_id, source=source))
