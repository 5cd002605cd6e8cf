"""``make bench-reliability``: the cache cold vs warm, a pipeline under 20% injected faults, and
the kill-and-rerun matrix, all on a fresh MLflow server and simulator of their own.

Each pipeline runs ``python -m jobs.pipeline`` as a user would; the figures are read back from
what the pipeline printed and from MLflow. Wall times are only compared within this run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from jobs.core.contract import STAGES
from jobs.core.paths import ROOT
from jobs.core.servers import free_port, start_mlflow, start_sim, stop_process
from jobs.launch.launchers import STAGE_ENV
from jobs.store import tracking
from tests.support.audit import KILL_POINTS, duplicates, kill_at_pause

FAULTS = {"rate_429": 0.08, "rate_timeout": 0.04, "rate_malformed": 0.08, "timeout_s": 0.5}
SMALL = ["optimizer.max_metric_calls=36", "compare.n_repeats=2"]  # one GEPA iteration, two repeats: minutes, not hours
FAULT_RUN = ["optimizer=gepa_default", "compare.n_repeats=1"]  # enough GEPA iterations to find a candidate despite errors
JUDGE = "hitting_quality"
CACHE_LATENCIES_MS = (0, 1000)  # the simulator's own speed, then about a hosted model's per reply
PROFILE = str(ROOT / "jobs/domains/baseball/sim_profile.yaml")  # what the simulator knows of the example domain


def pipeline(env: dict[str, str], *overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", *overrides], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        sys.exit(f"pipeline {overrides} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc, time.monotonic() - t0


def upstream_calls(out: str) -> int:
    return int(re.search(r"(\d+) sent upstream", out).group(1))


def decision(out: str) -> str:
    m = re.search(r"^\s+gate: (PROMOTED|REFUSED)[^\n]*", out, re.M)
    return m.group(0).strip() if m else "no decision"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability_bench", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the state folder and print where it is")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="promptgate-bench-"))
    mlflow_proc, uri = start_mlflow(state, free_port(), timeout_s=900)
    sim_proc, sim_url = start_sim({"seed": 7, "profile": PROFILE})
    env = {**os.environ, **STAGE_ENV, "MLFLOW_TRACKING_URI": uri, "PROMPTGATE_STATE_DIR": str(state), "PYTHONPATH": str(ROOT),
           "PROMPTGATE_CACHE_URI": str(state / "llm-cache"), "PROMPTGATE_SIM_URL": sim_url}
    env.pop("PROMPTGATE_GATEWAY_URL", None)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        prompt = f"bench-{uuid.uuid4().hex[:6]}"
        base = [f"prompt.name={prompt}", "model=sim", *SMALL]

        # ---------------------------------------------------------------- cache
        print("\n== cache: a full pipeline, then the same inputs under a new pipeline id (a second `make run`) ==")
        print(f"{'upstream latency':<18}{'run':<6}{'upstream calls':>16}{'wall s':>9}  decision")
        reference, ratios = "", []
        for latency_ms in CACHE_LATENCIES_MS:
            lsim_proc, lsim_url = (None, sim_url) if not latency_ms else start_sim({"seed": 7, "latency_ms": latency_ms, "profile": PROFILE})
            lenv = {**env, "PROMPTGATE_SIM_URL": lsim_url, "PROMPTGATE_CACHE_URI": str(state / f"llm-cache-{latency_ms}ms")}
            # the kill matrix compares with "bench-cold"; the other latency gets a prompt of its own
            tag = "" if not latency_ms else f"-{latency_ms}ms"
            lbase = [f"prompt.name={prompt}{tag}", *base[1:]]
            try:
                cold, cold_s = pipeline(lenv, f"pipeline_id=bench-cold{tag}", "gateway.cache=readwrite", *lbase)
                # same prompt too: GEPA's reflection requests quote its name. The warm gate then finds
                # production already on the cold run's candidate, so its decision may differ by design.
                warm, warm_s = pipeline(lenv, f"pipeline_id=bench-warm{tag}", "gateway.cache=readwrite", *lbase)
            finally:
                if lsim_proc is not None:
                    stop_process(lsim_proc.pid)
            reference = reference or decision(cold.stdout)
            for run, out, secs in (("cold", cold.stdout, cold_s), ("warm", warm.stdout, warm_s)):
                print(f"{f'{latency_ms} ms':<18}{run:<6}{upstream_calls(out):>16}{secs:>9.0f}  {decision(out)}")
            ratios.append(f"{warm_s / cold_s:.2f} at {latency_ms} ms")
        print(f"warm/cold wall time: {', '.join(ratios)} (the rest of a run is process start-up and MLflow)")

        # ---------------------------------------------------------------- faults
        print("\n== faults: 8% 429s, 4% timeouts, 8% malformed judge JSON; cache off ==")
        fenv = {**env, "PROMPTGATE_SIM_URL": ""}  # a simulator of its own with the fault knobs
        fpid, fprompt = "bench-faults", f"bench-faults-{uuid.uuid4().hex[:6]}"
        faulty, _ = pipeline(fenv, f"pipeline_id={fpid}", f"prompt.name={fprompt}", "gateway.cache=off", "model=sim",
                             *FAULT_RUN, *[f"model.sim.{k}={v}" for k, v in FAULTS.items()])
        injected = json.loads(re.search(r"^simulator injected: (\{.*\})$", faulty.stdout, re.M).group(1))
        exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
        runs = client.search_runs([exp], f"tags.`{tracking.TAG_PIPELINE}` = '{fpid}'")
        got = {k: int(sum(r.data.metrics.get(f"gateway.{k}", 0) for r in runs))
               for k in ("faults", "retries", "exhausted", "malformed")}
        rows = {s: int(sum(r.data.metrics.get("errors", 0) + r.data.metrics.get("baseline_errors", 0)
                           + r.data.metrics.get("candidate_errors", 0) for r in runs
                           if r.data.tags.get(tracking.TAG_STAGE) == s and r.info.status == "FINISHED"))
                for s in ("evaluate", "compare")}
        transport = sum(n for k, n in injected.items() if not k.endswith(":malformed"))
        malformed = sum(n for k, n in injected.items() if k.endswith(":malformed"))
        print(f"injected by the simulator: {transport} transport faults (429/timeout), {malformed} malformed judge replies")
        print(f"recorded in MLflow:        {got['faults']} faults seen by the gateway ({got['retries']} retried, "
              f"{got['exhausted']} exhausted), {got['malformed']} malformed replies")
        print(f"ERROR rows: evaluate {rows['evaluate']}, compare {rows['compare']}; decision: {decision(faulty.stdout)}")
        print(f"match: {'yes' if (got['faults'], got['malformed']) == (transport, malformed) else 'NO'}")

        # ---------------------------------------------------------------- kill matrix
        print("\n== kill and rerun: SIGKILL after the stage's first write, rerun with the same pipeline id ==")
        print(f"{'stage killed':<14}{'duplicates found':>18}  decision matches the uninterrupted run")
        for killed in KILL_POINTS:
            pid, kprompt = f"bench-kill-{killed}", f"bench-kill-{killed}-{uuid.uuid4().hex[:6]}"
            overrides = [f"pipeline_id={pid}", f"prompt.name={kprompt}", "model=sim", *SMALL]
            for stage in STAGES:
                if stage == killed:
                    kill_at_pause(stage, overrides, env)
                proc = subprocess.run([sys.executable, "-m", f"jobs.{stage}", *overrides], env=env, cwd=ROOT,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{stage} failed after killing {killed}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            dups = duplicates(client, exp, pid, kprompt, JUDGE)
            mine = tracking.result_of(tracking.latest_result(exp, pid, "gate"))
            theirs = tracking.result_of(tracking.latest_result(exp, "bench-cold", "gate"))
            same = (mine.decision, mine.reasons) == (theirs.decision, theirs.reasons)
            print(f"{killed:<14}{sum(dups.values()):>18}  {'yes' if same else 'NO'} ({mine.decision})")
    finally:
        stop_process(sim_proc.pid)
        stop_process(mlflow_proc.pid)
        if args.keep:
            print(f"\nstate kept in {state}")


if __name__ == "__main__":
    main()
