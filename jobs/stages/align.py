"""align: measure judge-vs-expert agreement on held-out labels, align the judge (MemAlign
by default, SIMBA as an option), measure again, and register the aligned judge only if
held-out agreement rose by at least ``aligner.min_gain`` and the judge changed. Later stages
use the judge version this stage records.

Agreement is measured only on at least ``aligner.min_holdout`` held-out labels with both
classes (pass and fail) among them; otherwise the stage records that agreement could not be
measured, registers nothing, and the gate refuses on that judge."""

from __future__ import annotations

import random
from typing import Any

from jobs.config.schemas import settings
from jobs.core.contract import TAG_REVIEW_FROM
from jobs.core.errors import UserError
from jobs.core.results import AlignResult
from jobs.eval import judges, stats
from jobs.llm.compat import load_memalign_memory
from jobs.llm.endpoints import activate
from jobs.stages.common import command, finish, reuse, say
from jobs.store import tracking
from jobs.store.traces import feedbacks, human_feedback_names, judge_fields

STAGE = "align"
NOT_ENOUGH = "not enough held-out labels to measure agreement"


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    settings(cfg, "aligner")  # the schema checks names, types and ranges


def labelled_traces(cfg: Any, experiment_id: str, pipeline_id: str, name: str) -> list[Any]:
    """The pipeline's traces, and production traces the monitor queued for review, that carry
    both the judge's and an expert's assessment under ``name``."""
    import mlflow

    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=5000,
                                  filter_string=f"tag.`{tracking.TAG_PIPELINE}` = '{pipeline_id}'")
    # production traces the monitor sent to review, once an expert answered them: align learns from production too
    traces += mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=5000,
                                   filter_string=f"tag.`{TAG_REVIEW_FROM}` = 'production'")
    both = sorted((t for t in traces if feedbacks(t, name, "HUMAN") and feedbacks(t, name, "LLM_JUDGE")),
                  key=lambda t: t.info.tags.get(tracking.TAG_QUESTION, ""))  # a stable order: same split, same requests
    if both:
        return both
    other = sorted(set().union(*(human_feedback_names(t) for t in traces)) - {name}) if traces else []
    if other:
        raise UserError(f"expert labels of pipeline {pipeline_id} are named {', '.join(repr(o) for o in other)}, not the "
                        f"judge's name '{name}'; relabel them as '{name}' or set judge.name to match")
    raise UserError(f"pipeline {pipeline_id} has no expert labels named '{name}'; run `{command('feedback', cfg)}` first")


def expert_value(trace: Any, name: str) -> Any:
    return feedbacks(trace, name, "HUMAN")[-1].feedback.value


def split(traces: list[Any], expert: dict[str, bool], holdout_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded split, stratified by the expert's verdict so both parts see passes and fails."""
    rng = random.Random(seed)
    align_part, holdout = [], []
    for verdict in (True, False):
        group = sorted((t for t in traces if expert[t.info.trace_id] is verdict),  # by question: trace ids change per run
                       key=lambda t: (t.info.tags.get(tracking.TAG_QUESTION, ""), t.info.trace_id))
        rng.shuffle(group)
        k = round(len(group) * holdout_fraction)
        holdout += group[:k]
        align_part += group[k:]
    return align_part, holdout


def agreement(judge: Any, judge_cfg: Any, traces: list[Any], expert: dict[str, bool]) -> dict[str, Any]:
    """Score held-out traces with a judge and compare with the experts."""
    said, truth, errors = [], [], 0
    for t in traces:
        try:
            fb = judge(**judge_fields(t))
        except Exception:  # noqa: BLE001 - a malformed reply or exhausted retries: an error, not a verdict
            errors += 1
            continue
        verdict = judges.passed(judge_cfg, fb.value)
        if verdict is None:
            errors += 1
            continue
        said.append(verdict)
        truth.append(expert[t.info.trace_id])
    return {"accuracy": stats.accuracy(said, truth), "kappa": stats.cohen_kappa(said, truth),
            "confusion": stats.confusion(said, truth), "n": len(said), "errors": errors, "verdicts": said}


def evidence_gap(holdout: list[Any], expert: dict[str, bool], min_holdout: int) -> str | None:
    """Why the held-out labels cannot measure agreement, or None when they can."""
    passes = sum(1 for t in holdout if expert[t.info.trace_id])
    fails = len(holdout) - passes
    if len(holdout) < min_holdout:
        return f"{NOT_ENOUGH}: {len(holdout)} held out, aligner.min_holdout is {min_holdout}"
    if not passes or not fails:
        return f"{NOT_ENOUGH}: the {len(holdout)} held-out labels are all {'passes' if passes else 'fails'} (kappa is undefined)"
    return None


def should_register(min_gain: float, before: dict, after: dict, changed_text: bool) -> tuple[bool, str]:
    """Register only a judge that changed and agrees better with the experts by min_gain."""
    kb, ka = before["kappa"], after["kappa"]
    shift = f"({stats.fmt(kb)} -> {stats.fmt(ka)})"
    if kb is None or ka is None:
        return False, f"held-out kappa is undefined {shift}: the judge's errors left one class"
    if not changed_text and before["verdicts"] == after["verdicts"]:
        return False, f"alignment did not change the judge {shift}"
    if ka - kb < min_gain:
        return False, f"held-out kappa rose by {ka - kb:+.3f} {shift}, less than aligner.min_gain {min_gain}"
    return True, f"held-out kappa rose by {ka - kb:+.3f} {shift}"


def table(before: dict, after: dict) -> str:
    rows = [("judge", "n", "accuracy", "kappa", "tp", "tn", "fp", "fn")]
    for label, m in (("base", before), ("aligned", after)):
        c = m["confusion"]
        rows.append((label, m["n"], stats.fmt(m["accuracy"]), stats.fmt(m["kappa"]), c["tp"], c["tn"], c["fp"], c["fn"]))
    return "\n".join(",".join(str(x) for x in r) for r in rows) + "\n"


def unmeasured(cfg: Any, experiment_id: str, inputs: str, name: str, n_labels: int, holdout: int, why: str) -> AlignResult:
    """Record that agreement could not be measured: no alignment, no judge registered."""
    import mlflow

    with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
        say(STAGE, f"{why}; no judge registered. Collect more expert labels (both passes and fails) or lower "
                   "aligner.holdout_fraction; the gate refuses on a judge with no agreement measured")
        mlflow.log_params({"aligner": cfg.aligner.name, "labels": n_labels, "holdout": holdout})
        mlflow.set_tag("promptgate.align.measured", "false")
        return finish(AlignResult(judge_name=name, aligned=False, measured=False, reason=why, labels=n_labels,
                                  holdout=holdout, run_id=run.info.run_id))


def run(cfg: Any) -> AlignResult:
    experiment_id = tracking.connect(cfg)
    pid, name = str(cfg.pipeline_id), str(cfg.judge.name)
    traces = labelled_traces(cfg, experiment_id, pid, name)
    expert = {t.info.trace_id: bool(judges.passed(cfg.judge, expert_value(t, name))) for t in traces}
    align_part, holdout = split(traces, expert, float(cfg.aligner.holdout_fraction), int(cfg.aligner.seed))
    if len(align_part) < int(cfg.aligner.min_labels):  # the aligner cannot run at all: a config or data error
        raise UserError(f"{cfg.aligner.name} needs at least {cfg.aligner.min_labels} labelled traces to align on, but "
                        f"pipeline {pid} has {len(align_part)} after holding out {len(holdout)} of {len(traces)}; "
                        "collect more expert labels or lower aligner.holdout_fraction")
    inputs = tracking.inputs_hash(sorted(expert.items()), dict(cfg.judge), dict(cfg.aligner), cfg.model.judge_model)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done
    if (gap := evidence_gap(holdout, expert, int(cfg.aligner.min_holdout))) is not None:
        return unmeasured(cfg, experiment_id, inputs, name, len(traces), len(holdout), gap)

    with activate(cfg, STAGE, experiment_id) as endpoint:
        import mlflow

        base = judges.build(cfg.judge, endpoint)
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            say(STAGE, f"{len(traces)} expert labels: aligning on {len(align_part)}, measuring on {len(holdout)} held out")
            before = agreement(base, cfg.judge, holdout, expert)
            say(STAGE, f"before: accuracy {stats.fmt(before['accuracy'])}, kappa {stats.fmt(before['kappa'])} on {before['n']} "
                       f"held-out labels ({cfg.aligner.name} next)")
            aligned = base.align(traces=align_part, optimizer=settings(cfg, "aligner").build(endpoint))
            after = agreement(aligned, cfg.judge, holdout, expert)
            say(STAGE, f"after:  accuracy {stats.fmt(after['accuracy'])}, kappa {stats.fmt(after['kappa'])} on {after['n']}")
            changed_text = str(getattr(aligned, "instructions", "")) != str(getattr(base, "instructions", ""))
            register, reason = should_register(float(cfg.aligner.min_gain), before, after, changed_text)
            version = None
            if register:
                version = aligned.register(name=name).scorer_version
                say(STAGE, f"registered aligned judge '{name}' v{version}: {reason}")
            else:
                say(STAGE, f"kept the base judge, registered nothing: {reason}")
            mlflow.log_params({"aligner": cfg.aligner.name, "labels": len(traces), "holdout": len(holdout)})
            mlflow.set_tag("promptgate.align.measured", "true")
            figures = {"accuracy_before": before["accuracy"], "kappa_before": before["kappa"],
                       "accuracy_after": after["accuracy"], "kappa_after": after["kappa"]}
            mlflow.log_metrics({**{k: v for k, v in figures.items() if v is not None},
                                "judge_errors": before["errors"] + after["errors"]})
            mlflow.log_text(table(before, after), "agreement.csv")
            mlflow.log_dict({"before": before, "after": after, "guidelines": getattr(aligned, "instructions", "")},
                            "agreement.json")
            print(table(before, after).replace(",", "\t"), end="")
            say(STAGE, f"run: {tracking.run_link(cfg, experiment_id, run.info.run_id)}")
            return finish(AlignResult(
                judge_name=name, judge_version=version, aligned=register, measured=True, reason=reason,
                **{k: None if v is None else round(v, 4) for k, v in figures.items()},
                holdout_scored=min(before["n"], after["n"]),
                labels=len(traces), holdout=len(holdout), run_id=run.info.run_id,
            ))


def judge_agreement(align_result: AlignResult | None) -> tuple[float | None, str]:
    """The held-out kappa of the judge later stages use (the aligned one if registered, else
    the base judge), and what it rests on; None when align measured nothing."""
    if align_result is None:
        return None, "no align stage in this pipeline"
    if align_result.measured is False:
        return None, str(align_result.reason or NOT_ENOUGH)
    kappa = align_result.kappa_after if align_result.judge_version else align_result.kappa_before
    n = align_result.holdout_scored if align_result.holdout_scored is not None else align_result.holdout
    if kappa is None:
        return None, f"held-out kappa is undefined on {n} labels"
    return float(kappa), f"on {n} held-out labels"


def recorded_judge(cfg: Any, experiment_id: str, endpoint: Any) -> tuple[Any, dict]:
    """The judge later stages must use for this pipeline: the registered aligned version the
    align stage recorded, or the base judge from config when alignment kept it."""
    result = tracking.result_of(tracking.latest_result(experiment_id, str(cfg.pipeline_id), STAGE))
    if result is not None and result.judge_version:
        return judge_version(cfg, experiment_id, endpoint, result.judge_name, result.judge_version)
    return judge_version(cfg, experiment_id, endpoint, str(cfg.judge.name), "base")


def judge_version(cfg: Any, experiment_id: str, endpoint: Any, name: str, version: Any) -> tuple[Any, dict]:
    """A registered judge version (its MemAlign memory loaded), or the base judge from config for "base"."""
    if str(version) == "base":
        return judges.build(cfg.judge, endpoint), {"judge_name": str(cfg.judge.name), "judge_version": "base"}
    from mlflow.genai.scorers import get_scorer

    judge = load_memalign_memory(get_scorer(name=name, version=int(version), experiment_id=experiment_id))
    return judge, {"judge_name": name, "judge_version": int(version)}
