"""Session-wide real servers on ephemeral loopback ports: moto's S3 server, an MLflow
server (SQLite backend, artifacts proxied to S3 on moto) and the simulator. They start
once per test session; tests keep their own work small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from jobs.config.schemas import JobSettings, register_schemas
from jobs.core.paths import ROOT
from jobs.core.servers import free_port, start_mlflow, start_sim, stop_process
from jobs.gateway.client import start_gateway
from jobs.gateway.server import MISS_LOG_ENV
from jobs.launch import warm
from jobs.launch.launchers import STAGE_ENV
from jobs.llm.endpoints import OFFLINE_ENV
from tests.support import fake_kube_api

register_schemas()  # tests compose configs directly, as every stage does after registering them

ARTIFACT_BUCKET = "promptgate-artifacts"
DATA_BUCKET = "promptgate-data"
FAKE_API_KEY = "sk-promptgate-FAKE-7f3a9c2e41d8b6a05e1f"  # recognisable; the secrets scan looks for it
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
MODEL_OPTIONS = ", ".join(sorted(p.stem for p in (ROOT / "conf/model").glob("*.yaml")))  # as Hydra lists them
SESSION_PROMPT = "baseball-hitting-assistant"  # the prompt the session pipeline registers (conf default)
BASEBALL_PROFILE = str(ROOT / "jobs/domains/baseball/sim_profile.yaml")  # what the session simulator knows


def pytest_collection_modifyitems(items):
    """A test that needs the session's servers (directly or through a fixture) is an
    integration test, whatever its module says: ``make test-fast`` leaves it out. Modules
    with slow tests run first."""
    for item in items:
        if "servers" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
    # modules with long end-to-end runs first: make test's two processes take whole modules in
    # this order, so the longest start early instead of leaving one process alone at the end
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: a module's own order stays


@dataclass
class Servers:
    mlflow_uri: str
    sim_url: str
    s3_endpoint: str
    state_dir: Path
    gateway_url: str
    warm: warm.WarmStarter | None = None  # stages are forked from it, as make run's are (jobs/launch/warm.py)

    @property
    def stage_log(self) -> Path:
        """Everything the stages run through ``stage`` printed (the secrets scan reads it)."""
        return self.state_dir / "stage-output.log"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a stage process that talks to these servers."""
        env = {**os.environ, **STAGE_ENV, **S3_KEYS, "MLFLOW_TRACKING_URI": self.mlflow_uri, "PROMPTGATE_SIM_URL": self.sim_url,
               "AWS_ENDPOINT_URL": self.s3_endpoint, "PROMPTGATE_STATE_DIR": str(self.state_dir),
               "PYTHONPATH": str(ROOT), "PROMPTGATE_GATEWAY_URL": self.gateway_url,
               "OPENAI_API_KEY": FAKE_API_KEY}
        env.update(extra)
        return env

    def stage(self, stage: str, *overrides: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """Run ``python -m jobs.<stage>`` as a real process, forked from the warm starter as
        ``make run`` forks its stages (a new interpreter where it cannot be), with a launch id as
        launchers give one (``printed_result`` reads the result back by it)."""
        from jobs.core.contract import LAUNCH_ENV

        launch_id = uuid.uuid4().hex
        cmd, stage_env = [sys.executable, "-m", f"jobs.{stage}", *overrides], self.env(**{LAUNCH_ENV: launch_id, **env})
        forked = self.warm and warm.run_captured(self.warm, f"jobs.{stage}", list(overrides), stage_env, str(ROOT), timeout)
        if forked:
            proc = subprocess.CompletedProcess(cmd, *forked)
        else:
            proc = subprocess.run(cmd, env=stage_env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        proc.launch_id = launch_id
        self.keep_log(f"{stage} {' '.join(overrides)}", proc.stdout, proc.stderr)
        return proc

    def keep_log(self, what: str, *texts: str) -> None:
        with open(self.stage_log, "a") as f:
            f.write(f"=== {what}\n" + "\n".join(t or "" for t in texts) + "\n")

    def gateway_misses(self) -> list[dict]:
        """Every request the session gateway sent upstream, oldest first (stage, key, body)."""
        path = self.state_dir / "gateway-misses.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def gateway_stats(self) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(self.gateway_url + "/gateway/stats", timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_KEYS.items() if k != "AWS_DEFAULT_REGION"},
                      region_name="us-east-1")
    for bucket in (ARTIFACT_BUCKET, DATA_BUCKET):
        s3.create_bucket(Bucket=bucket)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def sim_url():
    proc, url = start_sim({"seed": 7, "profile": BASEBALL_PROFILE})
    yield url
    stop_process(proc.pid)


def gateway_settings(cache_uri: str, **kw) -> SimpleNamespace:
    """What conf/gateway holds, for starting a gateway outside a stage."""
    return SimpleNamespace(**{"cache_uri": cache_uri, "max_retries": 4, "backoff_s": 0.05, "timeout_s": 30, **kw})


@pytest.fixture(scope="session")
def servers(tmp_path_factory, s3_endpoint, sim_url):
    state = tmp_path_factory.mktemp("state")
    starter = warm.start({**os.environ, **STAGE_ENV, **OFFLINE_ENV, "PYTHONPATH": str(ROOT)}, state / "warm-starter.log")
    env = {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    mlflow_proc, uri = start_mlflow(state, free_port(), artifacts=f"s3://{ARTIFACT_BUCKET}/mlflow", env=env,
                                   timeout_s=900)  # ~30 s normally; minutes on a loaded 2-core machine
    os.environ["PROMPTGATE_FAKE_KEY"] = FAKE_API_KEY  # the gateway's upstream key, as a user would export it
    os.environ[MISS_LOG_ENV] = str(state / "gateway-misses.jsonl")  # what went upstream, to explain a cache miss
    gateway_proc, gateway_url = start_gateway(sim_url, gateway_settings(str(state / "llm-cache")), "PROMPTGATE_FAKE_KEY")
    yield Servers(uri, sim_url, s3_endpoint, state, gateway_url, starter)
    if starter is not None:
        starter.stop()
    stop_process(gateway_proc.pid)
    stop_process(mlflow_proc.pid)


@pytest.fixture(scope="session")
def mlflow_client(servers):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(servers.mlflow_uri)
    os.environ["MLFLOW_TRACKING_URI"] = servers.mlflow_uri
    return MlflowClient(servers.mlflow_uri)


def stage_result(client, pid: str, stage: str):
    """The latest finished run of a pipeline's stage and the result it recorded."""
    import json

    from jobs.core.contract import RESULT_TAG
    from jobs.store import tracking

    exp = client.get_experiment_by_name("promptgate-baseball").experiment_id
    run = tracking.latest_result(exp, pid, stage)
    return run, json.loads(run.data.tags[RESULT_TAG])


def printed_result(proc: subprocess.CompletedProcess) -> dict:
    """The result a stage run by ``Servers.stage`` recorded, read back by its launch id as
    launchers read it, with its fields as a dict."""
    import json

    from jobs.core.results import encode
    from jobs.launch.launchers import launched_result

    result = launched_result(proc.launch_id)
    assert result is not None, f"the stage recorded no result for launch {proc.launch_id}: {proc.stderr[-1500:]}"
    return json.loads(encode(result))


def first_questions(tmp_path: Path, n: int, source: str | Path = "data/baseball/heldout.jsonl") -> Path:
    """The first ``n`` records of a domain's question set as a file of their own: the held-out
    set of a test whose subject is not compare's figures, so its compare costs n rows per arm and
    repeat instead of the whole set's."""
    path = tmp_path / f"first-{n}-{Path(source).name}"
    path.write_text("\n".join((ROOT / source).read_text().splitlines()[:n]) + "\n")
    return path


def new_pipeline_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_pipeline(servers: Servers, pid: str, *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The whole pipeline through its driver (``python -m jobs.pipeline``, what ``make run`` runs)
    under ``pid``; it must end with exit 0."""
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"pipeline_id={pid}", *overrides],
                          env=servers.env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    servers.keep_log(f"pipeline {pid}", proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def foundation(servers):
    """register -> evaluate -> feedback once for the session, as `make run` runs them."""
    pid = new_pipeline_id("found")
    results = {}
    for stage in ("register", "evaluate", "feedback"):
        proc = servers.stage(stage, f"pipeline_id={pid}")
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results[stage] = proc
    return pid, results


@pytest.fixture(scope="session")
def learned(servers, foundation):
    """align -> optimize on the foundation pipeline, as `make run` runs them."""
    pid, results = foundation
    for stage in ("align", "optimize"):
        proc = servers.stage(stage, f"pipeline_id={pid}")
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results[stage] = proc
    from mlflow import MlflowClient

    # the alias is shared by every pipeline of the prompt: note where it pointed right after optimize
    results["candidate_alias"] = int(MlflowClient(servers.mlflow_uri).get_prompt_version_by_alias(
        SESSION_PROMPT, "candidate").version)
    return pid, results


COMPARE_OVERRIDES = ("compare.n_repeats=2",)  # fewer runs than the default 5, to keep the suite short


@pytest.fixture()
def sweep_pipeline(servers):
    """A pipeline of its own for sweeps (register only: optimize then scores with the base
    judge), so sweep points do not become the shared pipeline's latest results."""
    pid = new_pipeline_id("sweep")
    proc = servers.stage("register", f"pipeline_id={pid}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pid


@pytest.fixture(scope="session")
def decided(servers, learned):
    """compare -> gate on the learned pipeline."""
    pid, results = learned
    for stage in ("compare", "gate"):
        proc = servers.stage(stage, f"pipeline_id={pid}", *COMPARE_OVERRIDES)
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results[stage] = proc
    return pid, results


def labelled_traces(pid, n, name, with_judge=True):
    """Traces of a made-up pipeline carrying expert (and judge) feedback under ``name``."""
    import mlflow
    from mlflow.entities import AssessmentSource

    mlflow.set_experiment("promptgate-baseball")
    ids = []
    for i in range(n):
        with mlflow.start_span(name="agent") as span:
            span.set_inputs({"question": f"q{i}"})
            span.set_outputs("Recommendation: swing.")
            mlflow.update_current_trace(tags={"promptgate.pipeline_id": pid})
            ids.append(span.trace_id)
    mlflow.flush_trace_async_logging()
    for i, tid in enumerate(ids):
        mlflow.log_feedback(trace_id=tid, name=name, value=i % 2 == 0, rationale="x",
                            source=AssessmentSource(source_type="HUMAN", source_id="ann"))
        if with_judge:
            mlflow.log_feedback(trace_id=tid, name=name, value=True, rationale="y",
                                source=AssessmentSource(source_type="LLM_JUDGE", source_id="judge"))
    return ids


@pytest.fixture()
def fake_cluster(servers, tmp_path, monkeypatch):
    """The fake API with the test servers as the cluster's services (its ConfigMap)."""
    env = servers.env()
    cluster_env = {k: env[k] for k in ("MLFLOW_TRACKING_URI", "PROMPTGATE_SIM_URL", "AWS_ENDPOINT_URL",
                                       "PROMPTGATE_STATE_DIR", "PYTHONPATH", "AWS_ACCESS_KEY_ID",
                                       "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    httpd, url = fake_kube_api.start(cluster_env, str(ROOT))
    kubeconfig = fake_kube_api.write_kubeconfig(tmp_path / "kubeconfig", url)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield httpd.cluster, kubeconfig
    httpd.shutdown()


def fast_settings(**kw):
    return OmegaConf.merge(OmegaConf.structured(JobSettings), {"poll_s": 0.3, **kw})
