"""``python -m jobs.pipeline [overrides]``: run every stage of the registry (jobs.core.contract),
in order, under one pipeline id, then print a summary with the MLflow UI links. This is what ``make run`` does.

With ``model=sim`` (the default when OPENAI_API_KEY is unset) one simulator serves all stages.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.config.compose import compose, new_pipeline_id
from jobs.core.contract import GATEWAY_URL_ENV, STAGES
from jobs.core.errors import EXIT_REFUSED, UserError, exit_code, one_line
from jobs.launch import warm
from jobs.launch.launchers import launcher_for, local_stage_env
from jobs.launch.warm import WarmStarter

BANNER = """\
+--------------------------------------------------------------------------+
| SIMULATED RUN: every LLM call goes to promptgate's deterministic         |
| simulator (model=sim). The numbers show that the pipeline works; they    |
| say nothing about the quality of any real model. Set OPENAI_API_KEY and  |
| model=openai (or model=openai_compatible) for real results.              |
+--------------------------------------------------------------------------+"""


def check_inputs(cfg: Any, stages: tuple[str, ...]) -> None:
    """Every stage's inputs and the relations between them (held-out disjoint from train,
    feedback.min_labels within evaluate's rows), before the first stage writes anything."""
    from jobs.config.entry import check_config
    from jobs.stages import load

    check_config(cfg)
    for stage in stages:
        load(stage).check(cfg)


def end_pipeline(cfg: Any, pipeline_id: str, failed_stage: str | None) -> None:
    """FINISHED, or FAILED naming the stage, on the pipeline's parent run (if a stage made one)."""
    from jobs.store import tracking

    try:
        status = tracking.end_pipeline_run(tracking.open_store(cfg).experiment_id, pipeline_id, failed_stage)
    except Exception as e:  # noqa: BLE001 - an interrupted or failed pipeline's own error matters more
        print(f"warning: could not end the run pipeline-{pipeline_id} ({e}); a rerun with this id ends it", file=sys.stderr)
        return
    if status:
        print(f"pipeline run pipeline-{pipeline_id}: {status}" + (f" at stage {failed_stage}" if failed_stage else ""),
              file=sys.stderr if failed_stage else sys.stdout, flush=True)


def waiting_for_reviewers(cfg: Any, pipeline_id: str) -> bool:
    """A feedback source that may end without a result (feedback=ui, wait=false) ended so."""
    from jobs.config.schemas import settings

    if not settings(cfg, "feedback").may_stop_the_pipeline:
        return False
    from jobs.store import tracking

    return tracking.open_store(cfg).result(pipeline_id, "feedback") is None


def summary(cfg: Any, pipeline_id: str, ran: list[str]) -> str:
    from jobs.core import spans
    from jobs.store import tracking

    store = tracking.open_store(cfg)
    lines = [f"\n=== promptgate pipeline {pipeline_id} ==="]
    totals: dict = {}
    for stage in ran:
        run = store.latest_result(pipeline_id, stage)
        result = tracking.result_of(run)
        if result is None:
            continue
        lines += stage_lines(cfg, stage, result)
        totals = spans.add(totals, result.spans) if result.spans else totals
        lines.append(f"{'':>9}  {store.run_link(run.info.run_id)}")
    if totals:
        lines += spans.table(totals)
    lines.append(f"   prompt: {store.prompt_link(str(cfg.prompt.name))}")
    lines.append(f"   traces: {store.traces_link()}")
    lines.append(f"       UI: {store.ui_base}")
    return "\n".join(lines)


def stage_lines(cfg: Any, stage: str, result: Any) -> list[str]:
    """A stage's lines in the summary: its headline (and warning), its spend, its time by kind."""
    from jobs.core import spans

    line, warning = result.headline(cfg.evidence)
    lines = [f"{stage:>9}: {line}"] + ([f"{'':>11}{warning}"] if warning else [])
    if result.spend:
        sp = result.spend
        lines.append(f"{'':>11}LLM spend: {sp['tokens']:.0f} tokens, ${sp['usd']:.4f}, {sp['upstream_calls']:.0f} upstream "
                     f"calls, {sp['cache_hits']:.0f} cache hits, {sp['faults']:.0f} faults retried or failed")
    if result.spans:
        lines.append(f"{'':>11}time by kind: {spans.line(result.spans)}")
    if result.agent_rows() and result.spans is not None and not (result.spans.get("agent") or {}).get("calls"):
        lines.append(f"{'':>11}NOTE: the agent ran {result.agent_rows()} rows and made no LLM call through the gateway: "
                     "its calls were not cached, budgeted or counted; send them to endpoint.base_url (README, "
                     "\"Bring your own agent\")")
    return lines


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


def pipeline_overrides(argv: list[str] | None) -> tuple[list[str], str]:
    """The overrides every stage gets, with ``model=sim`` when no key is set and a new
    ``pipeline_id`` unless one was given."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if not any(o.startswith("model=") for o in overrides) and not os.environ.get("OPENAI_API_KEY"):
        overrides.append("model=sim")
    pipeline_id = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None)
    if pipeline_id is None:
        pipeline_id = new_pipeline_id()
        overrides.append(f"pipeline_id={pipeline_id}")
    return overrides, pipeline_id


@dataclass
class LocalServers:
    """The servers the driver started for its stages (their processes and URLs) and the
    environment each stage process gets."""

    procs: list[Any] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # what each stage process gets (the process boundary)
    gateway_url: str | None = None
    sim_url: str | None = None
    warm: WarmStarter | None = None  # the warm starter local stages are forked from (jobs/launch/warm.py), if any


def start_servers(cfg: Any) -> LocalServers:
    """Check the MLflow server; for local stages, start the warm starter they are forked from
    (launcher.warm_start) and a gateway (and simulator) unless one runs."""
    from jobs.config.schemas import LocalSettings, settings
    from jobs.store.tracking import check_server

    servers = LocalServers(env={"MLFLOW_TRACKING_URI": str(cfg.mlflow.tracking_uri)})
    check_server(str(cfg.mlflow.tracking_uri), float(cfg.mlflow.connect_timeout_s))
    if not isinstance(settings(cfg, "launcher"), LocalSettings):  # pods: the cluster's gateway, a fresh pod each
        return servers
    from jobs.llm.endpoints import offline_hygiene, start_local_gateway

    offline_hygiene()  # before the starter imports LiteLLM: its model cost map from the package, not the network
    if not cfg.gateway.get("url"):
        servers.procs, servers.gateway_url, servers.sim_url = start_local_gateway(cfg)
        servers.env[GATEWAY_URL_ENV] = servers.gateway_url
        print(f"LLM gateway: {servers.gateway_url} (cache {cfg.gateway.cache} at {cfg.gateway.cache_uri})")
    if cfg.launcher.warm_start:
        servers.warm = warm.start(local_stage_env(servers.env), Path(cfg.state_dir) / "warm-starter.log")
    return servers


def main(argv: list[str] | None = None) -> int:
    overrides, pipeline_id = pipeline_overrides(argv)
    servers = LocalServers()
    try:
        cfg = compose(overrides)
        if cfg.model.provider == "sim":
            print(BANNER)
        check_inputs(cfg, STAGES)
        servers = start_servers(cfg)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return exit_code(e)
    try:
        return run_stages(cfg, overrides, pipeline_id, servers)
    finally:
        from jobs.core.servers import stop_process

        if servers.warm is not None:
            servers.warm.stop()
        for proc in reversed(servers.procs):
            stop_process(proc.pid)


def run_stages(cfg: Any, overrides: list[str], pipeline_id: str, servers: LocalServers) -> int:
    """Each stage of the registry in order, through the configured launcher; then the summary."""
    launcher = launcher_for(cfg, servers.env, pipeline_id, servers.warm)
    ran: list[str] = []
    code, stage, started = 0, "", time.monotonic()
    try:
        for stage in STAGES:
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
        end_pipeline(cfg, pipeline_id, None)
        print(summary(cfg, pipeline_id, ran))
        if servers.gateway_url:
            print(gateway_totals(servers.gateway_url))
        if servers.sim_url:
            print(simulator_faults(servers.sim_url))
        print(f"\nAll {len(ran)} stages finished in {time.monotonic() - started:.0f} s.")
        return code if ran and ran[-1] == "gate" else 0
    except BaseException:  # interrupted (Ctrl-C) or crashed: the stage that was running is named
        end_pipeline(cfg, pipeline_id, stage or "start")
        raise


if __name__ == "__main__":
    sys.exit(main())
