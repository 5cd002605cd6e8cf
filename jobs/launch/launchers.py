"""Launchers run one stage somewhere and return its exit code. ``launcher=local`` runs it
as a local process; ``launcher=kubernetes`` runs the same command as a Kubernetes Job.
Each launch has an id (``LAUNCH_ENV``): the stage tags the run holding its result with it,
and ``result()`` reads that result back from MLflow, the one channel from a stage back."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

from jobs.core.contract import LAUNCH_ENV, SHARDED_STAGES, STAGES, stage_command
from jobs.core.errors import EXIT_BAD_INPUT
from jobs.core.paths import ROOT
from jobs.core.results import StageResult
from jobs.launch import warm
from jobs.launch.warm import WarmStarter

# Stage processes hash strings the same way every run: MemAlign and the judges' distilled
# guidelines put Python sets into LLM requests, and a set's order follows the hash seed, so
# without this a rerun with unchanged inputs sends different requests and misses the cache.
# The jobs image sets the same variable (docker/jobs.Dockerfile).
STAGE_ENV = {"PYTHONHASHSEED": "0"}


def new_launch_id() -> str:
    return uuid.uuid4().hex


def launched_result(launch_id: str | None) -> StageResult | None:
    """The result the launched stage recorded in MLflow (None if it recorded none)."""
    if not launch_id:
        return None
    from jobs.store.tracking import launched_result as lookup

    return lookup(launch_id)


def local_stage_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a local stage process (and of the warm starter it may be forked from)."""
    return {**os.environ, **STAGE_ENV, **extra, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@dataclass
class LocalLauncher:
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the stage process
    warm: WarmStarter | None = None  # forks the stage with its imports done (launcher.warm_start); None: a new interpreter
    launch_id: str | None = None  # the last launch's id

    def run(self, stage: str, overrides: list[str]) -> int:
        cmd = stage_command(stage, overrides)
        cmd[0] = sys.executable
        self.launch_id = new_launch_id()
        env = local_stage_env({**self.env, LAUNCH_ENV: self.launch_id})
        if self.warm is not None:
            code = warm.run(self.warm, f"jobs.{stage}", overrides, env, os.getcwd())
            if code is not None:
                return code
        return subprocess.call(cmd, env=env, cwd=os.getcwd())

    def result(self) -> StageResult | None:
        return launched_result(self.launch_id)


@dataclass
class KubernetesLauncher:
    """Runs a stage as a Kubernetes Job with the official client: submit, stream the pod's
    logs, wait, return the stage's exit code. Ctrl-C deletes the Job it started."""

    spec: object  # the launcher config (conf/launcher/kubernetes.yaml)
    pipeline_id: str
    out: object = None  # where pod logs go (default: stdout)
    shards: dict[str, int] = field(default_factory=dict)  # the composed config's shard count per stage
    launch_id: str | None = None  # the last launch's id (also the Job name's suffix)

    def _clients(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            # the client reads $KUBECONFIG once at import; read it again for every launch
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        return client.BatchV1Api(), client.CoreV1Api()

    def result(self) -> StageResult | None:
        return launched_result(self.launch_id)

    def run(self, stage: str, overrides: list[str]) -> int:
        """Run the stage's Job; a sharded stage runs its Indexed Job of shards first. The merge
        Job runs even when a shard failed: it reruns that shard alone and proves the rows."""
        from jobs.launch.manifests import render_shard_job, render_stage_job, shard_count

        in_pod = [o for o in overrides if not o.lstrip("+~").startswith("launcher")]  # pods run their stage locally
        if stage in STAGES and not any(o.startswith("pipeline_id=") for o in in_pod):
            in_pod.append(f"pipeline_id={self.pipeline_id}")  # the one way a stage learns its pipeline
        shards = shard_count(stage, self.shards, in_pod)
        if shards > 1:
            in_pod.append(f"{stage}.shards={shards}")  # the pods split the rows the same way the merge counts them
            code = self._run_job(render_shard_job(stage, in_pod, self.pipeline_id, self.spec, new_launch_id(), shards),
                                 stage)
            if code == EXIT_BAD_INPUT:
                return code
        self.launch_id = new_launch_id()
        return self._run_job(render_stage_job(stage, in_pod, self.pipeline_id, self.spec, self.launch_id), stage)

    def _run_job(self, manifest: dict, stage: str) -> int:
        """Create the Job, stream its pods' logs, and return its exit code once it ends."""
        import time

        batch, core = self._clients()
        ns = str(self.spec.namespace)
        name = manifest["metadata"]["name"]
        out = self.out or sys.stdout
        batch.create_namespaced_job(ns, manifest)
        kind = f"Indexed Job of {manifest['spec']['completions']} shards" if "completions" in manifest["spec"] else "Job"
        print(f"[launcher] {kind} {ns}/{name} created for stage {stage}", file=out, flush=True)
        seen: set[str] = set()
        try:
            while True:
                for pod in core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items:
                    if pod.metadata.name in seen or pod.status.phase == "Pending":
                        continue
                    seen.add(pod.metadata.name)
                    self._stream(core, ns, pod.metadata.name, out)
                job = batch.read_namespaced_job_status(name, ns)
                done = {c.type for c in job.status.conditions or [] if c.status == "True"}
                if "Complete" in done:
                    return 0
                if "Failed" in done:
                    code = self._exit_code(core, ns, name)
                    failed = f", failed shards {job.status.failed_indexes}" if job.status.failed_indexes else ""
                    print(f"[launcher] Job {name} failed (exit code {code}{failed})", file=out, flush=True)
                    return code
                time.sleep(float(self.spec.poll_s))
        except KeyboardInterrupt:
            batch.delete_namespaced_job(name, ns, propagation_policy="Background")
            print(f"\n[launcher] interrupted: deleted Job {name}", file=out, flush=True)
            raise

    def _stream(self, core, ns: str, pod: str, out) -> None:
        resp = core.read_namespaced_pod_log(pod, ns, container="stage", follow=True, _preload_content=False)
        buffer = b""
        for chunk in resp.stream(1024):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                print(raw.decode("utf-8", "replace"), file=out, flush=True)
        if buffer:
            print(buffer.decode("utf-8", "replace"), file=out, flush=True)
        resp.release_conn()

    @staticmethod
    def _exit_code(core, ns: str, name: str) -> int:
        codes = []
        for pod in core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items:
            for status in pod.status.container_statuses or []:
                if status.state and status.state.terminated:
                    codes.append(status.state.terminated.exit_code)
        return codes[-1] if codes else 1


def shard_defaults(cfg) -> dict[str, int]:
    """The shard count the composed config gives each sharded stage."""
    return {stage: int(cfg[stage].shards) for stage in SHARDED_STAGES}


def launcher_for(cfg, env: dict[str, str], pipeline_id: str, warm_starter: WarmStarter | None = None):
    """The launcher the config's launcher option is typed as: a Job per stage, or a process
    (forked from ``warm_starter`` when there is one)."""
    from jobs.config.schemas import JobSettings, settings

    if isinstance(settings(cfg, "launcher"), JobSettings):
        return KubernetesLauncher(cfg.launcher, pipeline_id, shards=shard_defaults(cfg))
    return LocalLauncher(env=env, warm=warm_starter)
