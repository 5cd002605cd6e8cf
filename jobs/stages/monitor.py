"""monitor: the judge the last gate relied on, scoring production traces on a schedule.

Each run scores the traces that match ``monitor.filter`` and arrived since the last run's
checkpoint (each verdict names the run and judge version that gave it, so a rerun, even after
a kill, judges nothing twice and counts nothing twice), compares the
window's pass rate with the held-out pass rate the gate recorded for the production version
(one-sided Fisher exact test: both sample sizes count), and flags a significant drop as a
tag, in the summary and by ``monitor.drift_exit_code``. A window with fewer than
``monitor.min_window`` traces is not judged; its traces carry over into the next window.
Failing and borderline traces go to a review queue, so the next pipeline's align learns
from production. The judge is registered with MLflow's scorer sampling config, so the
Judges tab of the experiment shows which judge watches it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jobs.core.contract import (
    GATE_TAG,
    META_MONITOR_JUDGE,
    META_MONITOR_RUN,
    TAG_CHECKPOINT,
    TAG_DRIFT,
    TAG_MONITORED,
    TAG_MONITORED_BY,
    TAG_PARENT_RUN,
    TAG_PROMPT_VERSION,
    TAG_REVIEW,
    TAG_REVIEW_FROM,
)
from jobs.core.errors import Refused, UserError
from jobs.core.faults import pause_point
from jobs.core.judge_kinds import Numeric, kind_of
from jobs.core.results import MonitorResult, fmt
from jobs.eval import judges, stats
from jobs.eval.pipeline_judge import judge_version
from jobs.stages.common import finish, stage_run
from jobs.stages.context import StageContext, llm
from jobs.store import prompts, reviews, scorers, traces, tracking
from jobs.store.traces import judge_fields

OVERLAP_MS = 60_000  # traces can be exported after newer ones: look back this far, skip the scored


def check(cfg: Any) -> None:
    judges.check(cfg.judge)
    borderline_margin(cfg.judge, float(cfg.monitor.borderline))


def borderline_margin(judge_cfg: Any, margin: float) -> float:
    """``monitor.borderline``, in the judge's own units (points of ``judge.scale``): a float judge's
    value within it of ``pass_threshold`` is too close to call. A margin as wide as the scale would
    send every trace to review."""
    kind = kind_of(judge_cfg)
    if isinstance(kind, Numeric) and margin >= kind.high - kind.low:
        raise UserError(f"monitor.borderline={margin:g} is as wide as judge.scale [{kind.low:g}, {kind.high:g}], so every "
                        f"trace would be borderline; it is in the scale's points: set it below {kind.high - kind.low:g}, "
                        f"e.g. {0.15 * (kind.high - kind.low):g}")
    return margin


def pipeline_id(cfg: Any) -> str:
    """The id that groups the monitor's runs under one parent run in the UI (stage_main asks)."""
    return str(cfg.pipeline_id) if str(cfg.pipeline_id) != "adhoc" else f"production-{cfg.prompt.name}"


@dataclass(frozen=True)
class Reference:
    """What production is held to: its version and what its gate recorded for it."""

    version: int
    rate: float  # held-out pass rate
    rows: int  # the held-out rows it rests on
    judge_name: str
    judge_version: str
    recorded: dict[str, str]  # every tag the gate left on the version


def reference(name: str, default_judge: str) -> Reference:
    """Production's version and what its gate recorded (held-out pass rate, rows, judge)."""
    version = prompts.production(name)
    rec = {k[len(GATE_TAG):]: v for k, v in (version.tags or {}).items() if k.startswith(GATE_TAG)}
    if "heldout_pass_rate" not in rec:
        raise UserError(f"production v{version.version} of '{name}' has no held-out pass rate recorded by a gate; "
                        "run the pipeline up to its gate (make run) so the monitor has a reference")
    return Reference(int(version.version), float(rec["heldout_pass_rate"]), int(rec["heldout_rows"]),
                     rec.get("judge_name", default_judge), rec.get("judge_version", "base"), rec)


def prior_verdict(trace: Any, scored_tag: str) -> tuple[str, Any] | None:
    """(the monitor run that judged this trace, its value) for this judge version, if one did."""
    for a in reversed(trace.info.assessments or []):
        meta = a.metadata or {}
        if meta.get(META_MONITOR_JUDGE) == scored_tag and getattr(a, "feedback", None) is not None:
            return trace.info.tags.get(TAG_MONITORED_BY) or meta.get(META_MONITOR_RUN), a.feedback.value
    return None


def pending(cfg: Any, experiment_id: str, since_ms: int, scored_tag: str) -> tuple[list[Any], dict[str, Any], list[Any]]:
    """Production traces from ``since_ms`` on (with an overlap), oldest first, as (to judge, verdicts
    to count again, all found): a trace a finished monitor run counted is left alone; one judged by
    a run that was killed before it recorded its window keeps that verdict and is counted now."""
    found = traces.search_user_filter(experiment_id, "monitor.filter", str(cfg.monitor.filter),
                                      max(0, since_ms - OVERLAP_MS), int(cfg.monitor.max_traces) * 2)
    status: dict[str, str] = {}  # run id -> status, asked once per run

    def finished(run_id: str | None) -> bool:
        if run_id and run_id not in status:
            status[run_id] = tracking.run_status(run_id)
        return status.get(run_id or "") == "FINISHED"

    fresh, recovered = [], {}
    for t in found:
        prior = prior_verdict(t, scored_tag)
        if prior is None:
            fresh.append(t)
        elif not finished(prior[0]):
            recovered[t.info.trace_id] = prior[1]
    fresh = fresh[: int(cfg.monitor.max_traces)]
    keep = {t.info.trace_id for t in fresh} | set(recovered)
    return fresh, recovered, [t for t in found if t.info.trace_id in keep]


def production_experiment(ctx: StageContext) -> str:
    """The experiment holding production's traces: ``monitor.experiment``, else the pipeline's."""
    name = ctx.cfg.monitor.get("experiment")
    if not name:
        return ctx.store.experiment_id
    found = tracking.experiment_id_of(str(name))
    if found is None:
        raise UserError(f"monitor.experiment '{name}' does not exist on {ctx.store.tracking_uri}; "
                        "name the experiment your deployed agent logs its traces to")
    return found


def mark_counted(trace_id: str, run_id: str, scored_tag: str) -> None:
    traces.set_tags(trace_id, {TAG_MONITORED: scored_tag, TAG_MONITORED_BY: run_id})


def score(ctx: StageContext, judge: Any, to_judge: list[Any], run_id: str, scored_tag: str) -> dict[str, Any]:
    """Judge each trace, log the verdict on it, tag it scored: trace id -> value (None: error)."""
    def one(trace: Any) -> tuple[str, Any]:
        tid = trace.info.trace_id
        if str(getattr(trace.info.state, "value", trace.info.state)) != "OK":  # the agent failed: an error, not judged
            return tid, None
        try:
            fb = judge(**judge_fields(trace))
        except Exception as e:  # noqa: BLE001 - an error is counted, not a verdict
            ctx.say(f"could not score {tid}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
            return tid, None
        if fb.value is None or getattr(fb, "error", None):
            return tid, None
        traces.log_verdict(tid, fb, {META_MONITOR_RUN: run_id, META_MONITOR_JUDGE: scored_tag})
        mark_counted(tid, run_id, scored_tag)  # the verdict, then the tags: a kill between keeps it
        return tid, fb.value

    with ThreadPoolExecutor(max_workers=int(ctx.cfg.monitor.max_workers)) as pool:
        return dict(pool.map(one, to_judge))


def for_review(judge_cfg: Any, values: dict[str, Any], margin: float) -> list[str]:
    """The traces (of trace id -> judge value; None: an error) that go to review: failing ones, and
    passing ones too close to call, ``margin`` in the judge's own units (``borderline_margin``)."""
    kind, margin = kind_of(judge_cfg), borderline_margin(judge_cfg, margin)
    return [tid for tid, v in values.items() if v is not None and (not kind.passed(v) or kind.borderline(v, margin))]


def queue_for_review(ctx: StageContext, experiment_id: str, trace_ids: list[str]) -> int:
    """Failing and borderline production traces into the monitor's review queue."""
    if not trace_ids:
        return 0
    cfg = ctx.cfg
    q = reviews.queue_traces(experiment_id, cfg.judge, str(cfg.monitor.queue), list(cfg.feedback.get("reviewers") or []),
                             trace_ids, ctx.store.ui_base, {TAG_REVIEW: "pending", TAG_REVIEW_FROM: "production"})
    ctx.say(f"{q.added} failing or borderline traces added to review queue '{cfg.monitor.queue}': {q.link}")
    return q.added


def window(prev: MonitorResult | None, version: int, new_passes: int, new_scored: int,
           now_start: int) -> tuple[int, int, int]:
    """(start_ms, passes, scored) of the window: this run's traces plus those of earlier runs
    whose windows were too small to judge (``prev``: the last finished run's result), while
    production is the same version."""
    if prev is not None and prev.drift is None and prev.window_traces and prev.production_version == version:
        return int(prev.window_start_ms or now_start), new_passes + int(prev.window_passes or 0), \
            new_scored + int(prev.window_traces)
    return now_start, new_passes, new_scored


def verdict(cfg: Any, passes: int, n: int, ref_rate: float, ref_rows: int) -> tuple[bool | None, float | None, float | None, str]:
    """(drift, drop, p, reason); drift None when the window is too small to judge."""
    m = cfg.monitor
    if n == 0:
        return None, None, None, "no production traces in the window yet"
    if n < int(m.min_window):
        return None, None, None, (f"rests on {n} traces, fewer than monitor.min_window={m.min_window}; "
                                  "they carry over into the next window")
    rate = passes / n
    ref_passes = round(ref_rate * ref_rows)
    p = stats.lower_rate_p(passes, n, ref_passes, ref_rows)
    drop = ref_rate - rate
    drift = p < float(m.alpha) and drop >= float(m.min_drop)
    why = (f"p={p:.4f} {'<' if p < float(m.alpha) else '>='} monitor.alpha={m.alpha}, "
           f"drop {drop:+.3f} {'>=' if drop >= float(m.min_drop) else '<'} monitor.min_drop={m.min_drop}")
    return drift, drop, p, why


@dataclass(frozen=True)
class Scored:
    """What one monitor run found and judged."""

    values: dict[str, Any]  # trace id -> judge value (None: an error), this run's and recovered ones
    new_traces: int  # traces this run judged
    recovered: int  # verdicts of a killed run counted now
    other: set[str]  # traces answered by another prompt version: judged, not counted
    checkpoint: int  # newest trace timestamp seen
    first: int  # oldest trace timestamp seen


def run(ctx: StageContext) -> MonitorResult:
    traces_in = production_experiment(ctx)
    ref = reference(str(ctx.cfg.prompt.name), str(ctx.cfg.judge.name))
    prev = ctx.store.result(ctx.pipeline_id, ctx.stage)
    since = int(prev.checkpoint_ms or 0) if prev is not None else 0
    inputs = tracking.inputs_hash(str(ctx.cfg.prompt.name), ref.version, ref.recorded, since)
    with llm(ctx) as endpoint:
        judge, info = judge_version(ctx.cfg.judge, ctx.store.experiment_id, endpoint, ref.judge_name, ref.judge_version)
        scored_tag = f"{info['judge_name']}@{info['judge_version']}"
        to_judge, recovered, found = pending(ctx.cfg, traces_in, since, scored_tag)
        ctx.say(f"production v{ref.version}: {len(to_judge)} new traces since checkpoint {since}"
                f"{f' and {len(recovered)} judged by a run that did not finish' if recovered else ''} "
                f"(filter: {ctx.cfg.monitor.filter}); judge {info['judge_name']} v{info['judge_version']}, "
                f"the one the last gate relied on")
        with stage_run(ctx, inputs) as run:
            watching = scorers.watch(judge, info["judge_name"], ctx.store.experiment_id,
                                     float(ctx.cfg.monitor.sample_rate), str(ctx.cfg.monitor.filter))
            values = score(ctx, judge, to_judge, run.info.run_id, scored_tag)
            pause_point("monitor.scored")
            for tid in recovered:  # this run's window counts them now, and no later one
                mark_counted(tid, run.info.run_id, scored_tag)
            stamps = [int(t.info.timestamp_ms) for t in found]
            scored = Scored({**values, **recovered}, len(to_judge), len(recovered),
                             {t.info.trace_id for t in found
                              if t.info.tags.get(TAG_PROMPT_VERSION, str(ref.version)) != str(ref.version)},
                             max([since, *stamps]), min(stamps, default=max([since, *stamps])))
            result = judge_window(ctx, run, traces_in, ref, prev, info, scored)
            ctx.say(f"judge registered for the experiment ({watching})")
            report(ctx, run, ref, result)
            result = finish(ctx, result)
    print(result.headline(ctx.cfg.evidence)[0])
    if result.drift and int(ctx.cfg.monitor.drift_exit_code):
        raise Refused("the production pass rate dropped significantly", code=int(ctx.cfg.monitor.drift_exit_code))
    return result


def judge_window(ctx: StageContext, run: Any, traces_in: str, ref: Reference, prev: MonitorResult | None,
                 info: dict, w: Scored) -> MonitorResult:
    """Count the window, test it against the reference, queue failing traces, log it all."""
    m = ctx.cfg.monitor
    verdicts = {tid: judges.passed(ctx.cfg.judge, v) for tid, v in w.values.items() if v is not None}
    errors = sum(1 for v in w.values.values() if v is None)
    review = for_review(ctx.cfg.judge, w.values, float(m.borderline))
    queued = queue_for_review(ctx, traces_in, review)
    if w.other:
        ctx.say(f"{len(w.other)} traces were answered by another prompt version than production "
                f"v{ref.version}: judged, not counted in its window")
    mine = {tid: v for tid, v in verdicts.items() if tid not in w.other}
    start, passes, n = window(prev, ref.version, sum(mine.values()), len(mine), w.first)
    drift, drop, p, why = verdict(ctx.cfg, passes, n, ref.rate, ref.rows)
    rate = passes / n if n else None
    tracking.log(metrics={"new_traces": w.new_traces, "recovered": w.recovered, "errors": errors, "window_traces": n,
                          "queued": queued, **({"window_pass_rate": rate} if rate is not None else {}),
                          "reference_pass_rate": ref.rate, **({"p_value": p, "drop": drop} if p is not None else {})},
                 params={"production_version": ref.version, "judge": f"{info['judge_name']}@{info['judge_version']}",
                         "filter": m.filter, "min_window": m.min_window, "alpha": m.alpha},
                 tags={TAG_DRIFT: "not judged" if drift is None else str(drift).lower(),
                       TAG_CHECKPOINT: str(w.checkpoint)})
    return MonitorResult(
        run_id=run.info.run_id, production_version=ref.version, judge_name=info["judge_name"],
        judge_version=info["judge_version"], new_traces=w.new_traces, errors=errors, window_start_ms=start,
        window_traces=n, window_passes=passes, window_pass_rate=rate, reference_pass_rate=ref.rate,
        reference_rows=ref.rows, drop=drop, p_value=p, drift=drift, reason=why, queued=queued,
        checkpoint_ms=w.checkpoint)


def report(ctx: StageContext, run: Any, ref: Reference, r: MonitorResult) -> None:
    """A judged window as a point of the parent run's series; a drift on the prompt version; the verdict."""
    if r.drift is not None:  # one point per judged window on the parent run: MLflow charts the series
        tracking.log_metric_to(run.data.tags.get(TAG_PARENT_RUN), "window_pass_rate", r.window_pass_rate,
                               step=len(judged_windows(ctx)))
    if r.drift:
        prompts.tag_version(str(ctx.cfg.prompt.name), ref.version, {TAG_DRIFT: (
            f"{r.window_pass_rate:.3f} on {r.window_traces} traces vs {ref.rate:.3f} held-out; p={r.p_value:.4f}; "
            f"run {run.info.run_id}")})
    ctx.say(f"window: {r.window_traces} traces ({r.window_passes} pass, {r.errors} errors this run), pass rate "
            f"{fmt(r.window_pass_rate)}; held-out {ref.rate:.3f} on {ref.rows} rows (gate of production v{ref.version})")
    ctx.say("DRIFT: the pass rate dropped significantly; " + r.reason if r.drift else
            ("no drift: " + r.reason if r.drift is not None else "drift NOT JUDGED: " + r.reason))
    ctx.say(f"run: {ctx.store.run_link(run.info.run_id)}")


def judged_windows(ctx: StageContext) -> list[Any]:
    return [r for r in ctx.store.find_runs(ctx.pipeline_id, ctx.stage) if r.data.tags.get(TAG_DRIFT) in ("true", "false")]
