"""MLflow's review queues, as the experts see them: a label schema named exactly as the judge
(so a reviewer's answer is a HUMAN assessment under the judge's name) and a queue of traces
assigned to reviewers. Both APIs are experimental in MLflow (3.14+); everything promptgate
does with them goes through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.core.errors import UserError
from jobs.core.judge_kinds import instructions, kind_of
from jobs.store.traces import human_feedback_names

INSTRUCTION_MAX = 1000  # MLflow's limit on a label schema's instruction
# MLflow's input class for each widget a judge kind asks for (jobs.core.judge_kinds ``widget()``)
WIDGETS = {"pass_fail": "InputPassFail", "numeric": "InputNumeric", "categorical": "InputCategorical"}


def check_judge(judge_cfg: Any) -> None:
    """What MLflow's label schemas cannot carry, refused before anything is written."""
    cats = kind_of(judge_cfg).widget().get("options")  # only a categorical judge's widget has options
    if cats is not None and (len(cats) > 10 or any(not 1 <= len(c) <= 64 for c in cats)):
        raise UserError("judge.categories: a review queue question takes at most 10 categories of 1 to 64 "
                        "characters each; shorten them or use feedback=file")


def instruction(judge_cfg: Any) -> str:
    text = " ".join(instructions(judge_cfg).split())  # a numeric judge's with its scale
    return text if len(text) <= INSTRUCTION_MAX else text[: INSTRUCTION_MAX - 1] + "…"


def schema_input(judge_cfg: Any) -> Any:
    """The reviewer's widget for the judge's kind: pass/fail, a number in its range, or its categories."""
    from mlflow.genai import label_schemas

    settings = dict(kind_of(judge_cfg).widget())
    return getattr(label_schemas, WIDGETS[settings.pop("input")])(**settings)


def ensure_label_schema(experiment_id: str, judge_cfg: Any) -> tuple[Any, bool]:
    """The experiment's label schema named as the judge, created if absent: (schema, created).
    A schema of that name that asks for something else is refused, not silently reused."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai import label_schemas

    name = str(judge_cfg.name)
    wanted = schema_input(judge_cfg)
    try:
        found = label_schemas.get_label_schema(name, experiment_id=experiment_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        found = None
    if found is None:
        return label_schemas.create_label_schema(name, type="feedback", input=wanted, instruction=instruction(judge_cfg),
                                                 enable_comment=True, experiment_id=experiment_id), True
    if str(getattr(found.type, "value", found.type)) != "feedback" or type(found.input) is not type(wanted) or \
            _options(found.input) != _options(wanted):
        raise UserError(f"label schema '{name}' in this experiment asks for {describe(found.input)}, but judge '{name}' "
                        f"gives {describe(wanted)}; delete that question in the MLflow UI (Review > Manage questions) "
                        "or give the judge another name")
    return found, False


def _options(widget: Any) -> Any:
    """What a question asks beyond its type: the categories, or a number's range (a 0-1 question
    is not reused for a 1-5 judge)."""
    return tuple(getattr(widget, k, None) for k in ("options", "min_value", "max_value"))


def describe(widget: Any) -> str:
    """A widget in words; one found in the experiment may be of any MLflow input type."""
    say = {"InputPassFail": lambda: "pass/fail",
           "InputNumeric": lambda: f"a number from {widget.min_value} to {widget.max_value}",
           "InputCategorical": lambda: f"one of {', '.join(widget.options)}"}.get(type(widget).__name__)
    return say() if say else type(widget).__name__


def other_feedback_schemas(experiment_id: str, judge_name: str) -> list[str]:
    """Names of the experiment's feedback questions other than the judge's: answers to them are
    not the judge's labels, so the stage names them instead of ignoring them silently."""
    from mlflow.genai import label_schemas

    names, token = [], None
    while True:
        page = label_schemas.list_label_schemas(experiment_id, max_results=100, page_token=token)
        names += [s.name for s in page if s.name != judge_name and not s.is_default
                  and str(getattr(s.type, "value", s.type)) == "feedback"]
        token = page.token
        if not token:
            return sorted(names)


def ensure_queue(experiment_id: str, name: str, reviewers: list[str], schema_id: str) -> tuple[Any, bool]:
    """The named review queue, created (custom, the judge's question only) if absent: (queue, created).
    An existing queue gets the configured reviewers; its question must include the judge's."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai import review_queues

    try:
        queue = review_queues.get_review_queue(name=name, experiment_id=experiment_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return review_queues.create_review_queue(name, queue_type="custom", users=list(reviewers),
                                                 schema_ids=[schema_id], experiment_id=experiment_id), True
    if schema_id not in queue.schema_ids:
        raise UserError(f"review queue '{name}' exists without the judge's question; pick another queue name "
                        "(feedback.queue / monitor.queue) or add the question in the MLflow UI (queue settings)")
    if reviewers and sorted(queue.users) != sorted(reviewers):
        queue = review_queues.update_review_queue(queue.queue_id, users=list(reviewers))
    return queue, False


def add_traces(queue_id: str, trace_ids: list[str]) -> int:
    """Attach traces (idempotent: a trace already there keeps its status); how many were new."""
    from mlflow.genai import review_queues

    before = {i.item_id for i in items(queue_id)}
    new = [t for t in trace_ids if t not in before]
    for i in range(0, len(new), 100):
        review_queues.add_items_to_review_queue(queue_id, item_ids=new[i:i + 100])
    return len(new)


def items(queue_id: str) -> list[Any]:
    from mlflow.genai import review_queues

    out, token = [], None
    while True:
        page = review_queues.list_review_queue_items(queue_id, max_results=500, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def queue_link(ui_base: str, experiment_id: str, queue_id: str) -> str:
    return f"{ui_base}/#/experiments/{experiment_id}/review-queue?selectedQueueId={queue_id}"


@dataclass(frozen=True)
class Queued:
    """Traces put in a review queue: the queue, the judge's question, what was new, the link."""

    queue: Any
    schema: Any
    queue_created: bool
    schema_created: bool
    added: int  # traces that were not in the queue yet
    link: str  # the queue's page in the MLflow UI


def queue_traces(experiment_id: str, judge_cfg: Any, queue_name: str, reviewers: list[str], trace_ids: list[str],
                 ui_base: str, trace_tags: dict[str, str] | None = None) -> Queued:
    """The judge's label schema and the named queue (each created if absent), holding these
    traces; ``trace_tags`` go on each trace once the queue exists, before it is added."""
    from jobs.store.traces import set_tags

    schema, schema_created = ensure_label_schema(experiment_id, judge_cfg)
    queue, queue_created = ensure_queue(experiment_id, queue_name, reviewers, schema.schema_id)
    for trace_id in trace_ids if trace_tags else []:
        set_tags(trace_id, trace_tags)
    added = add_traces(queue.queue_id, trace_ids)
    return Queued(queue, schema, queue_created, schema_created, added, queue_link(ui_base, experiment_id, queue.queue_id))


def misnamed_answers(traces: list[Any], judge_name: str) -> dict[str, int]:
    """HUMAN feedback on these traces under a name other than the judge's: name -> traces."""
    counts: dict[str, int] = {}
    for t in traces:
        for name in human_feedback_names(t) - {judge_name}:
            counts[name] = counts.get(name, 0) + 1
    return counts
