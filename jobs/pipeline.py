"""``python -m jobs.pipeline [overrides]``: run every stage that exists, in order, under one
pipeline id, then print a summary with the MLflow UI links. This is what ``make run`` does.

With ``model=sim`` (the default when OPENAI_API_KEY is unset) one simulator serves all stages.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from typing import Any

from jobs.core.contract import STAGES
from jobs.core.errors import EXIT_BAD_INPUT, EXIT_REFUSED
from jobs.launch.launchers import launcher_for

BANNER = """\
+--------------------------------------------------------------------------+
| SIMULATED RUN: every LLM call goes to promptgate's deterministic         |
| simulator (model=sim). The numbers show that the pipeline works; they    |
| say nothing about the quality of any real model. Set OPENAI_API_KEY and  |
| model=openai (or model=openai_compatible) for real results.              |
+--------------------------------------------------------------------------+"""


def available_stages() -> list[str]:
    return [s for s in STAGES if importlib.util.find_spec(f"jobs.{s}") is not None]


def new_pipeline_id() -> str:
    return time.strftime("pg-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from jobs.config.entry import CONFIG_NAME, check_overrides, with_user_configs
    from jobs.core.paths import CONF_DIR

    overrides = with_user_configs(overrides)
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=overrides)


def check_inputs(cfg: Any, stages: list[str]) -> None:
    """Every stage's inputs and the relations between them (held-out disjoint from train,
    feedback.min_labels within evaluate's rows), before the first stage writes anything."""
    from jobs.config.entry import check_config

    check_config(cfg)
    for stage in stages:
        importlib.import_module(f"jobs.stages.{stage}").check(cfg)


def end_pipeline(cfg: Any, pipeline_id: str, failed_stage: str | None) -> None:
    """FINISHED, or FAILED naming the stage, on the pipeline's parent run (if a stage made one)."""
    from jobs.store import tracking

    try:
        status = tracking.end_pipeline_run(tracking.connect(cfg), pipeline_id, failed_stage)
    except Exception as e:  # noqa: BLE001 - an interrupted or failed pipeline's own error matters more
        print(f"warning: could not end the run pipeline-{pipeline_id} ({e}); a rerun with this id ends it", file=sys.stderr)
        return
    if status:
        print(f"pipeline run pipeline-{pipeline_id}: {status}" + (f" at stage {failed_stage}" if failed_stage else ""),
              file=sys.stderr if failed_stage else sys.stdout, flush=True)


def waiting_for_reviewers(cfg: Any, pipeline_id: str) -> bool:
    """feedback=ui with wait=false exits 0 without a result until the reviewers are done."""
    if cfg.feedback.source != "ui" or cfg.feedback.wait:
        return False
    from jobs.store import tracking

    return tracking.latest_result(tracking.connect(cfg), pipeline_id, "feedback") is None


def summary(cfg: Any, pipeline_id: str, ran: list[str]) -> str:
    from jobs.core import spans
    from jobs.store import tracking

    experiment_id = tracking.connect(cfg)
    lines = [f"\n=== promptgate pipeline {pipeline_id} ==="]
    totals: dict = {}
    for stage in ran:
        run = tracking.latest_result(experiment_id, pipeline_id, stage)
        if tracking.result_of(run) is None:
            continue
        result = tracking.result_of(run)
        line, warning = result.headline(cfg.evidence)
        lines.append(f"{stage:>9}: {line}")
        if warning:
            lines.append(f"{'':>11}{warning}")
        if result.spend:
            sp = result.spend
            lines.append(f"{'':>11}LLM spend: {sp['tokens']:.0f} tokens, ${sp['usd']:.4f}, {sp['upstream_calls']:.0f} upstream "
                         f"calls, {sp['cache_hits']:.0f} cache hits, {sp['faults']:.0f} faults retried or failed")
        if result.spans:
            lines.append(f"{'':>11}time by kind: {spans.line(result.spans)}")
            totals = spans.add(totals, result.spans)
        lines.append(f"{'':>9}  {tracking.run_link(cfg, experiment_id, run.info.run_id)}")
    if totals:
        lines += spans.table(totals)
    lines.append(f"   prompt: {tracking.prompt_link(cfg, str(cfg.prompt.name))}")
    lines.append(f"   traces: {tracking.traces_link(cfg, experiment_id)}")
    lines.append(f"       UI: {tracking.ui_base(cfg)}")
    return "\n".join(lines)


def gateway_totals(url: str) -> str:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/gateway/stats", timeout=10) as r:
        t = json.loads(r.read())["totals"]
    return (f"LLM calls this run: {t['requests']} from the stages, {t['upstream_calls']} sent upstream, "
            f"{t['cache_hits']} answered from the cache; {t['prompt_tokens'] + t['completion_tokens']} tokens, "
            f"${t['usd']:.4f}; {t['faults']} upstream faults, {t['retries']} retries")


def simulator_faults(sim_url: str) -> str:
    """What a simulator this run started injected, for comparison with the gateway's counts in MLflow."""
    import json
    import urllib.request

    with urllib.request.urlopen(sim_url.rsplit("/v1", 1)[0] + "/sim/stats", timeout=10) as r:
        return "simulator injected: " + json.dumps(json.loads(r.read())["faults"], sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if not any(o.startswith("model=") for o in overrides) and not os.environ.get("OPENAI_API_KEY"):
        overrides.append("model=sim")
    pipeline_id = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None)
    if pipeline_id is None:
        pipeline_id = new_pipeline_id()
        overrides.append(f"pipeline_id={pipeline_id}")
    cfg = compose(overrides)  # exits 2 with one line on a bad override
    env: dict[str, str] = {"MLFLOW_TRACKING_URI": str(cfg.mlflow.tracking_uri)}
    if cfg.model.provider == "sim":
        print(BANNER)
    from jobs.core.errors import UserError
    from jobs.store.tracking import check_server

    try:
        check_inputs(cfg, available_stages())
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    procs: list[Any] = []
    sim_url = None
    try:
        check_server(str(cfg.mlflow.tracking_uri), float(cfg.mlflow.connect_timeout_s))
        if cfg.launcher.kind == "local" and not cfg.gateway.get("url"):  # in pods, the cluster's gateway serves
            from jobs.llm.endpoints import offline_hygiene, start_local_gateway

            offline_hygiene()
            procs, env["PROMPTGATE_GATEWAY_URL"], sim_url = start_local_gateway(cfg)
            print(f"LLM gateway: {env['PROMPTGATE_GATEWAY_URL']} (cache {cfg.gateway.cache} at {cfg.gateway.cache_uri})")
    except Exception as e:  # noqa: BLE001 - a UserError: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    launcher = launcher_for(cfg, env, pipeline_id)
    ran: list[str] = []
    code = 0
    started = time.monotonic()
    stage = ""
    try:
        for stage in available_stages():
            print(f"\n--- {stage} ({pipeline_id}) ---", flush=True)
            t0 = time.monotonic()
            code = launcher.run(stage, overrides)
            if code == EXIT_REFUSED and stage == "gate":  # a decision, not a crash
                ran.append(stage)
                break
            if code != 0:
                print(f"\nstage {stage} failed with exit code {code}; pipeline {pipeline_id} stopped. "
                      f"Rerun with pipeline_id={pipeline_id} to resume: finished stages are reused.", file=sys.stderr)
                end_pipeline(cfg, pipeline_id, stage)
                return code
            ran.append(stage)
            print(f"--- {stage} done in {time.monotonic() - t0:.0f} s ---", flush=True)
            if stage == "feedback" and waiting_for_reviewers(cfg, pipeline_id):
                end_pipeline(cfg, pipeline_id, None)
                print(f"\nPipeline {pipeline_id} is waiting for expert labels in its review queue (feedback.wait=false). "
                      f"Once they are in, rerun the same command with pipeline_id={pipeline_id}: finished stages are reused.")
                return 0
        os.environ.update(env)
        end_pipeline(cfg, pipeline_id, None)
        print(summary(cfg, pipeline_id, ran))
        if env.get("PROMPTGATE_GATEWAY_URL"):
            print(gateway_totals(env["PROMPTGATE_GATEWAY_URL"]))
        if sim_url:
            print(simulator_faults(sim_url))
        print(f"\nAll {len(ran)} stages finished in {time.monotonic() - started:.0f} s.")
        return code if ran and ran[-1] == "gate" else 0
    except BaseException:  # interrupted (Ctrl-C) or crashed: the stage that was running is named
        end_pipeline(cfg, pipeline_id, stage or "start")
        raise
    finally:
        from jobs.core.servers import stop_process

        for proc in reversed(procs):
            stop_process(proc.pid)


if __name__ == "__main__":
    sys.exit(main())
