"""Launchers run one stage somewhere and return its exit code. ``launcher=local`` runs it
as a local process; ``launcher=kubernetes`` runs the same command as a Kubernetes Job."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

from jobs.core.contract import EMIT_RESULT_ENV, RESULT_PREFIX, stage_command  # noqa: F401 - launchers' API
from jobs.core.paths import ROOT

# Stage processes hash strings the same way every run: MemAlign and the judges' distilled
# guidelines put Python sets into LLM requests, and a set's order follows the hash seed, so
# without this a rerun with unchanged inputs sends different requests and misses the cache.
# The jobs image sets the same variable (docker/jobs.Dockerfile).
STAGE_ENV = {"PYTHONHASHSEED": "0"}


@dataclass
class LocalLauncher:
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the stage process

    def run(self, stage: str, overrides: list[str]) -> int:
        cmd = stage_command(stage, overrides)
        cmd[0] = sys.executable
        env = {**os.environ, **STAGE_ENV, **self.env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.call(cmd, env=env, cwd=os.getcwd())


@dataclass
class KubernetesLauncher:
    """Runs a stage as a Kubernetes Job with the official client: submit, stream the pod's
    logs, wait, return the stage's exit code. Ctrl-C deletes the Job it started."""

    spec: object  # the launcher config (conf/launcher/kubernetes.yaml)
    pipeline_id: str
    out: object = None  # where pod logs go (default: stdout)
    last_result: dict | None = None  # the stage's result, read from its last log line

    def _clients(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            # the client reads $KUBECONFIG once at import; read it again for every launch
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        return client.BatchV1Api(), client.CoreV1Api()

    def run(self, stage: str, overrides: list[str]) -> int:
        import time
        import uuid

        from jobs.launch.manifests import render_stage_job

        batch, core = self._clients()
        ns = str(self.spec.namespace)
        in_pod = [o for o in overrides if not o.lstrip("+~").startswith("launcher")]  # pods run their stage locally
        manifest = render_stage_job(stage, in_pod, self.pipeline_id, self.spec, uuid.uuid4().hex)
        name = manifest["metadata"]["name"]
        out = self.out or sys.stdout
        batch.create_namespaced_job(ns, manifest)
        print(f"[launcher] Job {ns}/{name} created for stage {stage}", file=out, flush=True)
        seen: set[str] = set()
        self.last_result = None
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
                    print(f"[launcher] Job {name} failed (exit code {code})", file=out, flush=True)
                    return code
                time.sleep(float(self.spec.poll_s))
        except KeyboardInterrupt:
            batch.delete_namespaced_job(name, ns, propagation_policy="Background")
            print(f"\n[launcher] interrupted: deleted Job {name}", file=out, flush=True)
            raise

    def _stream(self, core, ns: str, pod: str, out) -> None:
        import json

        resp = core.read_namespaced_pod_log(pod, ns, container="stage", follow=True, _preload_content=False)
        buffer = b""
        for chunk in resp.stream(1024):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if line.startswith(RESULT_PREFIX):
                    self.last_result = json.loads(line[len(RESULT_PREFIX):])
                print(line, file=out, flush=True)
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


def launcher_for(cfg, env: dict[str, str], pipeline_id: str):
    """The launcher the config asks for."""
    if cfg.launcher.kind == "kubernetes":
        return KubernetesLauncher(cfg.launcher, pipeline_id)
    return LocalLauncher(env=env)
