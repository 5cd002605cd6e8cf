"""TEST DOUBLE: a loopback fake of the Kubernetes API, for tests only.

It implements just what promptgate's launchers use (create, get, watch-free polling and
delete of Jobs; list pods; read pod logs) and plays the kubelet: a created Job's container
command runs as a local process with the Job's env (plus ``cluster_env``, standing in for
the ConfigMap), its output is the pod log, and the Job's status follows the exit code with
``backoffLimit`` retries and the ``podFailurePolicy`` FailJob rule on exit codes. An Indexed
Job runs one process per index with the index in its annotation (read through the downward
API) and ``$(VAR)`` expanded in its args, retried per index up to ``backoffLimitPerIndex``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

NOW = lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # noqa: E731


class Cluster:
    def __init__(self, cluster_env: dict[str, str], cwd: str):
        self.cluster_env = cluster_env
        self.cwd = cwd
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[str, bytearray] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    # ------------------------------------------------------------- kubelet
    def start_job(self, ns: str, job: dict) -> None:
        threading.Thread(target=self._run_job, args=(ns, job), daemon=True).start()

    def _run_job(self, ns: str, job: dict) -> None:
        """One pod at a time with ``backoffLimit`` retries; an Indexed Job runs its indexes side
        by side, each with ``backoffLimitPerIndex`` retries, and fails if any index failed."""
        name, spec = job["metadata"]["name"], job["spec"]
        if spec.get("completionMode") != "Indexed":
            outcome, failed = self._run_index(ns, job, None, int(spec.get("backoffLimit", 6)))
            if outcome == "deleted":
                return
            if outcome == "succeeded":
                return self._job_status(ns, name, succeeded=1, failed=failed, condition="Complete")
            return self._job_status(ns, name, failed=failed, condition="Failed", reason=outcome)
        results: dict[int, tuple[str, int]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, self._run_index(ns, job, i, int(spec.get("backoffLimitPerIndex", 6))))) for i in range(spec["completions"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(outcome == "deleted" for outcome, _ in results.values()):
            return
        bad = sorted(i for i, (outcome, _) in results.items() if outcome != "succeeded")
        failed = sum(n for _, n in results.values())
        with self.lock:
            if (ns, name) in self.jobs:
                self.jobs[(ns, name)]["status"] = {
                    "succeeded": len(results) - len(bad), "failed": failed, "active": 0, "startTime": NOW(),
                    "completedIndexes": ",".join(str(i) for i in sorted(set(results) - set(bad))),
                    **({"failedIndexes": ",".join(map(str, bad))} if bad else {}),
                    "conditions": [{"type": "Failed" if bad else "Complete", "status": "True",
                                    "reason": "FailedIndexes" if bad else "Completed", "lastTransitionTime": NOW()}]}

    def _run_index(self, ns: str, job: dict, index: int | None, retries: int) -> tuple[str, int]:
        """Run one pod (of one index) until it succeeds or its retries are spent; returns the
        outcome (succeeded, PodFailurePolicy, BackoffLimitExceeded or deleted) and the failures."""
        name, spec = job["metadata"]["name"], job["spec"]
        container = spec["template"]["spec"]["containers"][0]
        fail_codes = {v for r in spec.get("podFailurePolicy", {}).get("rules", []) if r["action"] == "FailJob"
                      for v in r.get("onExitCodes", {}).get("values", [])}
        annotations = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None else {}
        env = {**os.environ, **self.cluster_env}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif (ref := e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")).startswith("metadata.annotations"):
                env[e["name"]] = annotations.get(ref.split("'")[1], "")  # the downward API, as the kubelet fills it
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        expand = lambda a: re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)  # noqa: E731
        cmd = [expand(a) for a in list(container["command"]) + list(container.get("args", []))]
        if cmd[0] == "python":
            cmd[0] = sys.executable
        key = name if index is None else f"{name}#{index}"
        failed = 0
        while (ns, name) in self.jobs:
            pod = f"{name}-{'' if index is None else f'{index}-'}{uuid.uuid4().hex[:5]}"
            self._set_pod(ns, pod, name, "Running", None)
            if index is None:
                self._job_status(ns, name, active=1, failed=failed)
            self.logs[pod] = bytearray()
            proc = subprocess.Popen(cmd, env=env, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.procs[key] = proc
            for chunk in iter(functools.partial(proc.stdout.read1, 4096), b""):  # type: ignore[union-attr]
                self.logs[pod].extend(chunk)
            code = proc.wait()
            self._set_pod(ns, pod, name, "Succeeded" if code == 0 else "Failed", code)
            if (ns, name) not in self.jobs:
                return "deleted", failed
            if code == 0:
                return "succeeded", failed
            failed += 1
            if code in fail_codes:
                return "PodFailurePolicy", failed
            if failed > retries:
                return "BackoffLimitExceeded", failed
        return "deleted", failed

    def _set_pod(self, ns: str, pod: str, job: str, phase: str, code: int | None) -> None:
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}} if code is not None \
            else {"running": {"startedAt": NOW()}}
        with self.lock:
            self.pods[(ns, pod)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"job-name": job, "batch.kubernetes.io/job-name": job}},
                "status": {"phase": phase, "containerStatuses": [{
                    "name": "stage", "image": "fake", "imageID": "fake", "ready": phase == "Running",
                    "restartCount": 0, "state": state}]},
            }

    def _job_status(self, ns: str, name: str, active: int = 0, succeeded: int = 0, failed: int = 0,
                    condition: str | None = None, reason: str | None = None) -> None:
        with self.lock:
            job = self.jobs.get((ns, name))
            if job is None:
                return
            status: dict[str, Any] = {"active": active, "succeeded": succeeded, "failed": failed, "startTime": NOW()}
            if condition:
                status["conditions"] = [{"type": condition, "status": "True", "reason": reason or condition,
                                         "lastTransitionTime": NOW()}]
            job["status"] = status

    def delete_job(self, ns: str, name: str) -> dict | None:
        with self.lock:
            job = self.jobs.pop((ns, name), None)
        for key, proc in list(self.procs.items()):
            if (key == name or key.startswith(name + "#")) and proc.poll() is None:
                proc.kill()
        if job is not None:
            self.deleted.append(name)
        return job


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; a log stream ends when the pod's process does

    @property
    def cluster(self) -> Cluster:
        return self.server.cluster  # type: ignore[attr-defined]

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                         "message": f"{what} not found", "code": 404})

    def do_POST(self) -> None:  # noqa: N802
        m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", urlparse(self.path).path)
        if not m:
            return self._not_found(self.path)
        job = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        ns, name = m.group(1), job["metadata"]["name"]
        job["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=NOW())
        job["status"] = {}
        with self.cluster.lock:
            self.cluster.jobs[(ns, name)] = job
        self.cluster.start_job(ns, job)
        self._json(201, job)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if m := re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+?)(/status)?", url.path):
            job = self.cluster.jobs.get((m.group(1), m.group(2)))
            return self._json(200, job) if job else self._not_found(f"job {m.group(2)}")
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", url.path):
            selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if "=" in kv)
            with self.cluster.lock:
                items = [p for (ns, _), p in self.cluster.pods.items() if ns == m.group(1)
                         and all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())]
            return self._json(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", url.path):
            return self._stream_log(m.group(1), m.group(2), query.get("follow", ["false"])[0] == "true")
        self._not_found(self.path)

    def _stream_log(self, ns: str, pod: str, follow: bool) -> None:
        if pod not in self.cluster.logs:
            return self._not_found(f"pod {pod}")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent = 0
        while True:
            buf = self.cluster.logs[pod]
            if len(buf) > sent:
                self.wfile.write(bytes(buf[sent:]))
                self.wfile.flush()
                sent = len(buf)
            phase = self.cluster.pods.get((ns, pod), {}).get("status", {}).get("phase")
            if not follow or (phase in ("Succeeded", "Failed") and sent == len(self.cluster.logs[pod])):
                return
            time.sleep(0.1)

    def do_DELETE(self) -> None:  # noqa: N802
        m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)", urlparse(self.path).path)
        job = self.cluster.delete_job(m.group(1), m.group(2)) if m else None
        if job is None:
            return self._not_found(self.path)
        self._json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})


def start(cluster_env: dict[str, str], cwd: str) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.cluster = Cluster(cluster_env, cwd)  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "promptgate"}}],
    }))
    return path
