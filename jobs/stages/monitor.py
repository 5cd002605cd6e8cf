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

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobs.core.contract import TAG_PROMPT_VERSION, TAG_REVIEW, TAG_REVIEW_FROM
from jobs.core.errors import UserError
from jobs.core.faults import pause_point
from jobs.core.results import MonitorResult, fmt
from jobs.eval import judges, stats
from jobs.stages.common import finish, say
from jobs.stages.gate import TAG as GATE_TAG
from jobs.store import tracking

STAGE = "monitor"
TAG_SCORED = "promptgate.monitored"  # on a trace: the judge version that scored it ("name@version")
TAG_SCORED_RUN = "promptgate.monitored_by"  # on a trace: the monitor run whose window counts it
META_RUN, META_JUDGE = "promptgate.monitor_run", "promptgate.monitor_judge"  # on the verdict (assessment metadata)
TAG_DRIFT = "promptgate.monitor.drift"
OVERLAP_MS = 60_000  # traces can be exported after newer ones: look back this far, skip the scored


def check(cfg: Any) -> None:
    judges.check(cfg.judge)


def monitor_id(cfg: Any) -> str:
    """The id that groups the monitor's runs under one parent run in the UI."""
    return str(cfg.pipeline_id) if str(cfg.pipeline_id) != "adhoc" else f"production-{cfg.prompt.name}"


def reference(name: str) -> tuple[int, dict[str, str]]:
    """Production's version and what its gate recorded (held-out pass rate, rows, judge)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient().get_prompt_version_by_alias(name, "production")
    except MlflowException:
        raise UserError(f"prompt '{name}' has no production alias; run the pipeline first (make run)") from None
    rec = {k[len(GATE_TAG):]: v for k, v in (version.tags or {}).items() if k.startswith(GATE_TAG)}
    if "heldout_pass_rate" not in rec:
        raise UserError(f"production v{version.version} of '{name}' has no held-out pass rate recorded by a gate; "
                        "run the pipeline up to its gate (make run) so the monitor has a reference")
    return int(version.version), rec


def prior_verdict(trace: Any, scored_tag: str) -> tuple[str, Any] | None:
    """(the monitor run that judged this trace, its value) for this judge version, if one did."""
    for a in reversed(trace.info.assessments or []):
        meta = a.metadata or {}
        if meta.get(META_JUDGE) == scored_tag and getattr(a, "feedback", None) is not None:
            return trace.info.tags.get(TAG_SCORED_RUN) or meta.get(META_RUN), a.feedback.value
    return None


def pending(cfg: Any, experiment_id: str, since_ms: int, scored_tag: str) -> tuple[list[Any], dict[str, Any], list[Any]]:
    """Production traces from ``since_ms`` on (with an overlap), oldest first, as (to judge, verdicts
    to count again, all found): a trace a finished monitor run counted is left alone; one judged by
    a run that was killed before it recorded its window keeps that verdict and is counted now."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    f = f"{cfg.monitor.filter} AND trace.timestamp_ms >= {max(0, since_ms - OVERLAP_MS)}"
    try:
        found = mlflow.search_traces(locations=[experiment_id], filter_string=f, order_by=["timestamp_ms ASC"],
                                     max_results=int(cfg.monitor.max_traces) * 2, return_type="list", include_spans=True)
    except MlflowException as e:
        raise UserError(f"monitor.filter \"{cfg.monitor.filter}\" is not a trace filter MLflow accepts "
                        f"({' '.join(str(e).split())[:200]}); write it as in search_traces, e.g. "
                        "tags.`promptgate.traffic` = 'production'") from None
    status: dict[str, str] = {}  # run id -> status, asked once per run

    def finished(run_id: str | None) -> bool:
        if run_id and run_id not in status:
            status[run_id] = MlflowClient().get_run(run_id).info.status
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


def production_experiment(cfg: Any, experiment_id: str) -> str:
    """The experiment holding production's traces: ``monitor.experiment``, else the pipeline's."""
    name = cfg.monitor.get("experiment")
    if not name:
        return experiment_id
    from mlflow import MlflowClient

    found = MlflowClient().get_experiment_by_name(str(name))
    if found is None:
        raise UserError(f"monitor.experiment '{name}' does not exist on {cfg.mlflow.tracking_uri}; "
                        "name the experiment your deployed agent logs its traces to")
    return found.experiment_id


def borderline(judge_cfg: Any, value: Any, margin: float) -> bool:
    """A pass too close to call: a float near the threshold, a categorical value between best and worst."""
    kind = judge_cfg.feedback_value_type
    if kind == "float":
        return abs(float(value) - float(judge_cfg.pass_threshold)) <= margin
    if kind == "categorical":
        cats = [str(c) for c in judge_cfg.categories]
        return str(value) in cats[1:-1]
    return False


def mark_counted(client: Any, trace_id: str, run_id: str, scored_tag: str) -> None:
    client.set_trace_tag(trace_id, TAG_SCORED, scored_tag)
    client.set_trace_tag(trace_id, TAG_SCORED_RUN, run_id)


def score(cfg: Any, judge: Any, traces: list[Any], run_id: str, scored_tag: str) -> dict[str, Any]:
    """Judge each trace, log the verdict on it, tag it scored: trace id -> value (None: error)."""
    import mlflow
    from mlflow import MlflowClient

    from jobs.store.traces import judge_fields

    client = MlflowClient()

    def one(trace: Any) -> tuple[str, Any]:
        tid = trace.info.trace_id
        try:
            fb = judge(**judge_fields(trace))
        except Exception as e:  # noqa: BLE001 - an error is counted, not a verdict
            say(STAGE, f"could not score {tid}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
            return tid, None
        if fb.value is None or getattr(fb, "error", None):
            return tid, None
        fb.metadata = {**(fb.metadata or {}), META_RUN: run_id, META_JUDGE: scored_tag}
        mlflow.log_assessment(trace_id=tid, assessment=fb)  # the verdict, then the tags: a kill between keeps it
        mark_counted(client, tid, run_id, scored_tag)
        return tid, fb.value

    with ThreadPoolExecutor(max_workers=int(cfg.monitor.max_workers)) as pool:
        return dict(pool.map(one, traces))


def queue_for_review(cfg: Any, experiment_id: str, trace_ids: list[str]) -> int:
    """Failing and borderline production traces into the monitor's review queue."""
    if not trace_ids:
        return 0
    from mlflow import MlflowClient

    from jobs.store import reviews

    schema, _ = reviews.ensure_label_schema(experiment_id, cfg.judge)
    reviewers = list(cfg.feedback.get("reviewers") or [])
    queue, _ = reviews.ensure_queue(experiment_id, str(cfg.monitor.queue), reviewers, schema.schema_id)
    client = MlflowClient()
    for tid in trace_ids:
        client.set_trace_tag(tid, TAG_REVIEW, "pending")
        client.set_trace_tag(tid, TAG_REVIEW_FROM, "production")
    added = reviews.add_traces(queue.queue_id, trace_ids)
    say(STAGE, f"{added} failing or borderline traces added to review queue '{cfg.monitor.queue}': "
               f"{reviews.queue_link(tracking.ui_base(cfg), experiment_id, queue.queue_id)}")
    return added


def register_sampling(cfg: Any, experiment_id: str, judge: Any, info: dict) -> str:
    """Record in MLflow which judge watches the experiment (the Judges tab): the scorer with a
    sampling config over the production filter. MLflow's server scores by itself only with
    judges on its own AI gateway (`gateway:/` models); for any other model the config is kept
    at rate 0, and this stage is the scorer."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai.scorers import ScorerSamplingConfig, get_scorer

    name = info["judge_name"]
    try:
        registered = get_scorer(name=name, experiment_id=experiment_id)
    except MlflowException:
        registered = None
    if registered is None:  # the base judge watches until align registers a version
        registered = judge.register(name=name, experiment_id=experiment_id)
    config = ScorerSamplingConfig(sample_rate=float(cfg.monitor.sample_rate), filter_string=str(cfg.monitor.filter))
    try:
        registered.start(name=name, experiment_id=experiment_id, sampling_config=config)
        return f"sample rate {cfg.monitor.sample_rate}"
    except MlflowException as e:
        if "gateway model" not in str(e):
            raise
        registered.update(name=name, experiment_id=experiment_id,
                          sampling_config=ScorerSamplingConfig(sample_rate=0.0, filter_string=str(cfg.monitor.filter)))
        return "server-side sampling off (its model is not an MLflow gateway model); this stage scores"


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


def run(cfg: Any) -> MonitorResult:
    experiment_id = tracking.connect(cfg)
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(cfg, {"pipeline_id": monitor_id(cfg)})
    traces_in = production_experiment(cfg, experiment_id)
    name = str(cfg.prompt.name)
    version, ref = reference(name)
    ref_rate, ref_rows = float(ref["heldout_pass_rate"]), int(ref["heldout_rows"])
    prev = tracking.result_of(tracking.latest_result(experiment_id, monitor_id(cfg), STAGE))
    since = int(prev.checkpoint_ms or 0) if prev is not None else 0

    import mlflow
    from mlflow import MlflowClient

    from jobs.llm.endpoints import activate
    from jobs.stages.align import judge_version

    inputs = tracking.inputs_hash(name, version, ref, since)
    with activate(cfg, STAGE, experiment_id) as endpoint:
        judge, info = judge_version(cfg, experiment_id, endpoint, ref.get("judge_name", str(cfg.judge.name)),
                                    ref.get("judge_version", "base"))
        scored_tag = f"{info['judge_name']}@{info['judge_version']}"
        to_judge, recovered, traces = pending(cfg, traces_in, since, scored_tag)
        say(STAGE, f"production v{version}: {len(to_judge)} new traces since checkpoint {since}"
                   f"{f' and {len(recovered)} judged by a run that did not finish' if recovered else ''} "
                   f"(filter: {cfg.monitor.filter}); judge {info['judge_name']} v{info['judge_version']}, "
                   f"the one the last gate relied on")
        with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
            watching = register_sampling(cfg, experiment_id, judge, info)
            values = score(cfg, judge, to_judge, run.info.run_id, scored_tag)
            pause_point("monitor.scored")
            client = MlflowClient()
            for tid in recovered:  # this run's window counts them now, and no later one
                mark_counted(client, tid, run.info.run_id, scored_tag)
            values.update(recovered)
            other = {t.info.trace_id for t in traces if t.info.tags.get(TAG_PROMPT_VERSION, str(version)) != str(version)}
            verdicts = {tid: judges.passed(cfg.judge, v) for tid, v in values.items() if v is not None}
            errors = sum(1 for v in values.values() if v is None)
            review = [tid for tid, v in values.items() if v is not None
                      and (not verdicts[tid] or borderline(cfg.judge, v, float(cfg.monitor.borderline)))]
            queued = queue_for_review(cfg, traces_in, review)
            if other:
                say(STAGE, f"{len(other)} traces were answered by another prompt version than production "
                           f"v{version}: judged, not counted in its window")
            mine = {tid: v for tid, v in verdicts.items() if tid not in other}
            checkpoint = max([since] + [int(t.info.timestamp_ms) for t in traces])
            first = min([int(t.info.timestamp_ms) for t in traces], default=checkpoint)
            start, passes, n = window(prev, version, sum(mine.values()), len(mine), first)
            drift, drop, p, why = verdict(cfg, passes, n, ref_rate, ref_rows)
            rate = passes / n if n else None
            metrics = {"new_traces": len(to_judge), "recovered": len(recovered), "errors": errors, "window_traces": n, "queued": queued,
                       **({"window_pass_rate": rate} if rate is not None else {}),
                       "reference_pass_rate": ref_rate, **({"p_value": p, "drop": drop} if p is not None else {})}
            mlflow.log_metrics(metrics)
            mlflow.log_params({"production_version": version, "judge": scored_tag, "filter": cfg.monitor.filter,
                               "min_window": cfg.monitor.min_window, "alpha": cfg.monitor.alpha})
            mlflow.set_tags({TAG_DRIFT: "not judged" if drift is None else str(drift).lower(),
                             "promptgate.monitor.checkpoint_ms": str(checkpoint)})
            if drift is not None:  # one point per judged window on the parent run: MLflow charts the series
                parent = run.data.tags.get("mlflow.parentRunId")
                MlflowClient().log_metric(parent, "window_pass_rate", rate, step=len(judged_windows(experiment_id, cfg)))
            if drift:
                MlflowClient().set_prompt_version_tag(name, version, TAG_DRIFT, f"{rate:.3f} on {n} traces vs {ref_rate:.3f} "
                                                      f"held-out; p={p:.4f}; run {run.info.run_id}")
            say(STAGE, f"judge registered for the experiment ({watching})")
            say(STAGE, f"window: {n} traces ({passes} pass, {errors} errors this run), pass rate {fmt(rate)}; "
                       f"held-out {ref_rate:.3f} on {ref_rows} rows (gate of production v{version})")
            say(STAGE, "DRIFT: the pass rate dropped significantly; " + why if drift else
                ("no drift: " + why if drift is not None else "drift NOT JUDGED: " + why))
            say(STAGE, f"run: {tracking.run_link(cfg, experiment_id, run.info.run_id)}")
            result = finish(MonitorResult(
                run_id=run.info.run_id, production_version=version, judge_name=info["judge_name"],
                judge_version=info["judge_version"], new_traces=len(to_judge), errors=errors, window_start_ms=start,
                window_traces=n, window_passes=passes, window_pass_rate=rate, reference_pass_rate=ref_rate,
                reference_rows=ref_rows, drop=drop, p_value=p, drift=drift, reason=why, queued=queued,
                checkpoint_ms=checkpoint))
    print(result.headline(cfg.evidence)[0])
    if drift and int(cfg.monitor.drift_exit_code):
        sys.exit(int(cfg.monitor.drift_exit_code))
    return result


def judged_windows(experiment_id: str, cfg: Any) -> list[Any]:
    return [r for r in tracking.find_runs(experiment_id, monitor_id(cfg), STAGE)
            if r.data.tags.get(TAG_DRIFT) in ("true", "false")]

