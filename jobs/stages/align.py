"""align: measure judge-vs-expert agreement on held-out labels, align the judge (MemAlign
by default, SIMBA as an option), measure again, and register the aligned judge only if
held-out agreement rose by at least ``aligner.min_gain`` and the judge changed. Later stages
use the judge version this stage records.

Agreement is measured only on at least ``aligner.min_holdout`` held-out labels with both
classes (pass and fail) among them; otherwise the stage records that agreement could not be
measured, registers nothing, and the gate refuses on that judge. A numeric judge's agreement is
also reported on its scale (``judge.scale``): mean absolute error and quadratic weighted kappa
of its values against the experts', each with the number of held-out pairs."""

from __future__ import annotations

import random
from typing import Any

from jobs.config.schemas import settings
from jobs.core.contract import TAG_ALIGN_MEASURED, TAG_PIPELINE, TAG_QUESTION, TAG_REVIEW_FROM
from jobs.core.errors import UserError
from jobs.core.judge_kinds import Numeric, kind_of
from jobs.core.results import AlignResult
from jobs.eval import judges, stats
from jobs.eval.pipeline_judge import NOT_ENOUGH
from jobs.stages.common import command, finish, reuse, stage_run
from jobs.stages.context import StageContext, llm
from jobs.store import traces, tracking
from jobs.store.traces import feedbacks, human_feedback_names, judge_fields


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    settings(cfg, "aligner")  # the schema checks names, types and ranges


def labelled_traces(ctx: StageContext, name: str) -> list[Any]:
    """The pipeline's traces, and production traces the monitor queued for review, that carry
    both the judge's and an expert's assessment under ``name``."""
    experiment_id, pipeline_id = ctx.store.experiment_id, ctx.pipeline_id
    found = traces.search(experiment_id, f"tag.`{TAG_PIPELINE}` = '{pipeline_id}'")
    # production traces the monitor sent to review, once an expert answered them: align learns from production too
    found += traces.search(experiment_id, f"tag.`{TAG_REVIEW_FROM}` = 'production'")
    both = sorted((t for t in found if feedbacks(t, name, "HUMAN") and feedbacks(t, name, "LLM_JUDGE")),
                  key=lambda t: t.info.tags.get(TAG_QUESTION, ""))  # a stable order: same split, same requests
    if both:
        return both
    other = sorted(set().union(*(human_feedback_names(t) for t in found)) - {name}) if found else []
    if other:
        raise UserError(f"expert labels of pipeline {pipeline_id} are named {', '.join(repr(o) for o in other)}, not the "
                        f"judge's name '{name}'; relabel them as '{name}' or set judge.name to match")
    raise UserError(f"pipeline {pipeline_id} has no expert labels named '{name}'; run `{command(ctx, 'feedback')}` first")


def expert_value(trace: Any, name: str) -> Any:
    return feedbacks(trace, name, "HUMAN")[-1].feedback.value


def split(traces: list[Any], expert: dict[str, bool], holdout_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded split, stratified by the expert's verdict so both parts see passes and fails."""
    rng = random.Random(seed)
    align_part, holdout = [], []
    for verdict in (True, False):
        group = sorted((t for t in traces if expert[t.info.trace_id] is verdict),  # by question: trace ids change per run
                       key=lambda t: (t.info.tags.get(TAG_QUESTION, ""), t.info.trace_id))
        rng.shuffle(group)
        k = round(len(group) * holdout_fraction)
        holdout += group[:k]
        align_part += group[k:]
    return align_part, holdout


def agreement(judge: Any, judge_cfg: Any, traces: list[Any], expert: dict[str, bool],
              on_scale: dict[str, float] | None = None) -> dict[str, Any]:
    """Score held-out traces with a judge and compare with the experts: on pass/fail, and for a
    numeric judge (``on_scale``: the experts' values) on its scale too (see ``scale_agreement``)."""
    said, truth, errors, values = [], [], 0, []
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
        if on_scale is not None:
            values.append((float(fb.value), on_scale[t.info.trace_id]))
    out = {"accuracy": stats.accuracy(said, truth), "kappa": stats.cohen_kappa(said, truth),
           "confusion": stats.confusion(said, truth), "n": len(said), "errors": errors, "verdicts": said}
    if on_scale is not None:
        out["scale"] = scale_agreement(kind_of(judge_cfg), values)
    return out


def scale_agreement(kind: Any, pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """A numeric judge's agreement on its own scale: mean absolute error (in the scale's units)
    and quadratic weighted kappa, on ``n`` held-out (judge, expert) value pairs."""
    said, truth = [j for j, _ in pairs], [e for _, e in pairs]
    return {"n": len(pairs), "low": kind.low, "high": kind.high, "mae": stats.mean_absolute_error(said, truth),
            "qwk": stats.quadratic_weighted_kappa(said, truth, kind.low, kind.high)}


def on_scale(judge_cfg: Any, labelled: list[Any], name: str) -> dict[str, float] | None:
    """The experts' values on a numeric judge's scale, by trace id; None for other kinds."""
    if not isinstance(kind_of(judge_cfg), Numeric):
        return None
    return {t.info.trace_id: float(expert_value(t, name)) for t in labelled}


def scale_line(m: dict[str, Any]) -> str:
    """``, on the 1-5 scale: MAE 0.52, weighted kappa 0.61 (n=10)`` for a numeric judge; else empty."""
    sc = m.get("scale")
    if not sc:
        return ""
    return (f"; on the scale {sc['low']:g}-{sc['high']:g}: mean absolute error {stats.fmt(sc['mae'])}, "
            f"quadratic weighted kappa {stats.fmt(sc['qwk'])} (n={sc['n']})")


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


def unmeasured(ctx: StageContext, inputs: str, name: str, n_labels: int, holdout: int, why: str) -> AlignResult:
    """Record that agreement could not be measured: no alignment, no judge registered."""
    with stage_run(ctx, inputs) as run:
        ctx.say(f"{why}; no judge registered. Collect more expert labels (both passes and fails) or lower "
                "aligner.holdout_fraction; the gate refuses on a judge with no agreement measured")
        tracking.log(params={"aligner": ctx.cfg.aligner.name, "labels": n_labels, "holdout": holdout},
                     tags={TAG_ALIGN_MEASURED: "false"})
        return finish(ctx, AlignResult(judge_name=name, aligned=False, measured=False, reason=why, labels=n_labels,
                                       holdout=holdout, run_id=run.info.run_id))


def run(ctx: StageContext) -> AlignResult:
    cfg, pid, name = ctx.cfg, ctx.pipeline_id, str(ctx.cfg.judge.name)
    labelled = labelled_traces(ctx, name)
    expert = {t.info.trace_id: bool(judges.passed(cfg.judge, expert_value(t, name))) for t in labelled}
    align_part, holdout = split(labelled, expert, float(cfg.aligner.holdout_fraction), int(cfg.aligner.seed))
    if len(align_part) < int(cfg.aligner.min_labels):  # the aligner cannot run at all: a config or data error
        raise UserError(f"{cfg.aligner.name} needs at least {cfg.aligner.min_labels} labelled traces to align on, but "
                        f"pipeline {pid} has {len(align_part)} after holding out {len(holdout)} of {len(labelled)}; "
                        "collect more expert labels or lower aligner.holdout_fraction")
    values = on_scale(cfg.judge, labelled, name)  # a numeric judge's labels on its scale count too
    inputs = tracking.inputs_hash(sorted(expert.items()), dict(cfg.judge), dict(cfg.aligner), cfg.model.judge_model,
                                  *([sorted(values.items())] if values else []))
    if (done := reuse(ctx, inputs)) is not None:
        return done
    if (gap := evidence_gap(holdout, expert, int(cfg.aligner.min_holdout))) is not None:
        return unmeasured(ctx, inputs, name, len(labelled), len(holdout), gap)
    with llm(ctx) as endpoint:
        base = judges.build(cfg.judge, endpoint)
        return align(ctx, inputs, base, labelled, align_part, holdout, expert, endpoint)


def align(ctx: StageContext, inputs: str, base: Any, labelled: list[Any], align_part: list[Any], holdout: list[Any],
          expert: dict[str, bool], endpoint: Any) -> AlignResult:
    """Agreement before, the aligner, agreement after, and the aligned judge registered if it gained."""
    cfg, name = ctx.cfg, str(ctx.cfg.judge.name)
    with stage_run(ctx, inputs) as run:
        ctx.say(f"{len(labelled)} expert labels: aligning on {len(align_part)}, measuring on {len(holdout)} held out")
        values = on_scale(cfg.judge, labelled, name)
        before = agreement(base, cfg.judge, holdout, expert, values)
        ctx.say(f"before: accuracy {stats.fmt(before['accuracy'])}, kappa {stats.fmt(before['kappa'])} on "
                f"{before['n']} held-out labels{scale_line(before)} ({cfg.aligner.name} next)")
        aligned = base.align(traces=align_part, optimizer=ctx.settings("aligner").build(endpoint))
        after = agreement(aligned, cfg.judge, holdout, expert, values)
        ctx.say(f"after:  accuracy {stats.fmt(after['accuracy'])}, kappa {stats.fmt(after['kappa'])} on "
                f"{after['n']}{scale_line(after)}")
        changed_text = str(getattr(aligned, "instructions", "")) != str(getattr(base, "instructions", ""))
        register, reason = should_register(float(cfg.aligner.min_gain), before, after, changed_text)
        version = None
        if register:
            version = aligned.register(name=name).scorer_version
            ctx.say(f"registered aligned judge '{name}' v{version}: {reason}")
        else:
            ctx.say(f"kept the base judge, registered nothing: {reason}")
        figures = log_agreement(ctx, before, after, aligned, len(labelled), len(holdout))
        ctx.say(f"run: {ctx.store.run_link(run.info.run_id)}")
        return finish(ctx, AlignResult(
            judge_name=name, judge_version=version, aligned=register, measured=True, reason=reason,
            **{k: None if v is None else round(v, 4) for k, v in figures.items()},
            holdout_scored=min(before["n"], after["n"]), labels=len(labelled), holdout=len(holdout),
            run_id=run.info.run_id))


def log_agreement(ctx: StageContext, before: dict, after: dict, aligned: Any, labels: int,
                  holdout: int) -> dict[str, float | None]:
    """The agreement figures and tables on the run, the table printed; returns the figures."""
    figures = {"accuracy_before": before["accuracy"], "kappa_before": before["kappa"],
               "accuracy_after": after["accuracy"], "kappa_after": after["kappa"]}
    for label, m in (("before", before), ("after", after)):  # a numeric judge: agreement on its scale too
        if sc := m.get("scale"):
            figures.update({f"scale_mae_{label}": sc["mae"], f"scale_qwk_{label}": sc["qwk"],
                            f"scale_n_{label}": sc["n"]})
    tracking.log(metrics={**{k: v for k, v in figures.items() if v is not None},
                          "judge_errors": before["errors"] + after["errors"]},
                 params={"aligner": ctx.cfg.aligner.name, "labels": labels, "holdout": holdout},
                 tags={TAG_ALIGN_MEASURED: "true"})
    tracking.log_files(texts={"agreement.csv": table(before, after)},
                       dicts={"agreement.json": {"before": before, "after": after,
                                                 "guidelines": getattr(aligned, "instructions", "")}})
    print(table(before, after).replace(",", "\t"), end="")
    return figures
