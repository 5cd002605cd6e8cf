"""The cluster path without a cluster: rendered overlays validated against the Kubernetes
schemas, policy scans (checkov, hadolint), golden stage Jobs, and the launchers against a
loopback fake of the Kubernetes API (a test double that runs pods as local processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from jobs.config.schemas import JobSettings
from jobs.core.contract import STAGES
from jobs.core.paths import ROOT
from jobs.launch.launchers import KubernetesLauncher
from jobs.launch.manifests import job_name, render_cron_job, render_shard_job, render_stage_job

from .conftest import COMPARE_OVERRIDES, fast_settings, stage_result

TOOLS = ROOT / ".venv-tools" / "bin"
GOLDEN = Path(__file__).parent / "golden"
KINDS = {
    "dev": {"ConfigMap": 1, "Deployment": 2, "Job": 1, "LimitRange": 1, "Namespace": 1, "NetworkPolicy": 6,
            "ResourceQuota": 1, "Role": 1, "RoleBinding": 1, "Secret": 4, "Service": 4, "ServiceAccount": 3,
            "StatefulSet": 2},
    "prod": {"ConfigMap": 1, "Deployment": 2, "Job": 1, "LimitRange": 1, "Namespace": 1, "NetworkPolicy": 5,
             "ResourceQuota": 1, "Role": 1, "RoleBinding": 1, "Secret": 3, "Service": 3, "ServiceAccount": 3,
             "StatefulSet": 1},
    "tenant": {"ConfigMap": 1, "Deployment": 2, "Job": 1, "LimitRange": 1, "LocalQueue": 1, "Namespace": 1,
               "NetworkPolicy": 5, "ResourceQuota": 1, "Role": 1, "RoleBinding": 1, "Secret": 3, "Service": 3,
               "ServiceAccount": 3, "StatefulSet": 1},
}
CRD_GROUPS = ("kueue.x-k8s.io/",)  # not in the Kubernetes schemas: kubernetes-validate warns and skips them


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make test does)")
    return str(path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Every overlay rendered with kustomize, secrets generated from the committed examples."""
    work = tmp_path_factory.mktemp("k8s")
    shutil.copytree(ROOT / "k8s", work / "k8s")
    out = {}
    for overlay in KINDS:
        for example in (work / "k8s/overlays" / overlay).glob("*.env.example"):
            shutil.copy(example, example.with_suffix(""))
        proc = subprocess.run(["kubectl", "kustomize", str(work / "k8s/overlays" / overlay)], capture_output=True,
                              text=True, check=True)
        out[overlay] = work / f"{overlay}.yaml"
        out[overlay].write_text(proc.stdout)
    return out


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.tools
@pytest.mark.parametrize("overlay", sorted(KINDS))
def test_overlay_renders_the_expected_objects_and_validates(rendered, overlay):
    objects = docs(rendered[overlay])
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    assert kinds == KINDS[overlay]
    proc = subprocess.run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", str(rendered[overlay])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == len([o for o in objects if not o["apiVersion"].startswith(CRD_GROUPS)])


def test_a_tenant_gets_its_own_namespace_quota_and_queue(rendered):
    objects = docs(rendered["tenant"])
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"} == {"promptgate-team-a"}
    assert {o["metadata"]["namespace"] for o in namespaced} == {"promptgate-team-a"}
    quota = next(o for o in objects if o["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"]["requests.cpu"] == "4" and quota["spec"]["hard"]["count/jobs.batch"] == "20"
    queue = next(o for o in objects if o["kind"] == "LocalQueue")
    assert queue["metadata"]["name"] == "team-a" and queue["spec"] == {"clusterQueue": "promptgate"}
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert {s["namespace"] for s in binding["subjects"]} == {"promptgate-team-a"}


@pytest.mark.parametrize("overlay", sorted(KINDS))
def test_every_object_is_labelled_and_every_pod_is_restricted(rendered, overlay):
    for o in docs(rendered[overlay]):
        labels = o["metadata"].get("labels", {})
        assert {"app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "app.kubernetes.io/component"} <= set(labels), o["metadata"]["name"]
        pod = (o.get("spec", {}).get("template") or {}).get("spec")
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("overlay", sorted(KINDS))
def test_every_job_has_a_deadline(rendered, overlay):
    jobs = [o for o in docs(rendered[overlay]) if o["kind"] == "Job"]
    assert jobs and all(o["spec"]["activeDeadlineSeconds"] > 0 for o in jobs)


def test_launcher_role_is_limited_to_jobs_and_pod_logs(rendered):
    role = next(o for o in docs(rendered["dev"]) if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "promptgate"
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("jobs",), ("create", "get", "list", "watch", "delete")), (("pods",), ("get", "list", "watch")),
        (("pods/log",), ("get",))}


@pytest.mark.tools
def test_checkov_finds_no_failed_check(rendered, tmp_path):
    scan = tmp_path / "rendered"
    scan.mkdir()
    for overlay, path in rendered.items():
        shutil.copy(path, scan / f"{overlay}.yaml")
    for golden in GOLDEN.glob("*job-*.yaml"):  # the stage Jobs the launcher submits and the monitor's CronJob
        shutil.copy(golden, scan / golden.name)
    for target, framework in ((scan, "kubernetes"), (ROOT / "docker", "dockerfile")):
        proc = subprocess.run([tool("checkov"), "-d", str(target), "--framework", framework, "-o", "json",
                               "--skip-download"], capture_output=True, text=True)
        report = json.loads(proc.stdout)
        report = report[0] if isinstance(report, list) else report
        failed = [f"{f['check_id']} {f['resource']}" for f in report["results"]["failed_checks"]]
        assert report["summary"]["failed"] == 0, failed
        for skipped in report["results"]["skipped_checks"]:  # every skip says why, next to the resource
            assert len(skipped["check_result"].get("suppress_comment") or "") > 20, skipped["check_id"]


@pytest.mark.tools
def test_dockerfiles_pass_hadolint():
    proc = subprocess.run([tool("hadolint"), *map(str, sorted((ROOT / "docker").glob("*.Dockerfile")))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ stage Jobs
SETTINGS = OmegaConf.merge(OmegaConf.structured(JobSettings), {"image": "registry.example/promptgate-jobs:1.0"})


def matches_golden(manifest: dict, name: str) -> None:
    """The manifest equals tests/golden/<name> (UPDATE_GOLDEN=1 rewrites it) and validates
    against the Kubernetes 1.32 schemas."""
    text = yaml.safe_dump(manifest, sort_keys=False)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs; rerun with UPDATE_GOLDEN=1 if the change is intended"
    proc = subprocess.run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", str(golden)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.tools
@pytest.mark.parametrize("stage", STAGES)
def test_rendered_stage_job_matches_its_golden_file(stage):
    job = render_stage_job(stage, ["pipeline_id=golden", "evaluate.max_workers=2"], "golden", SETTINGS, "fixed")
    matches_golden(job, f"job-{stage}.yaml")


@pytest.mark.tools
def test_a_queued_job_is_suspended_with_kueues_label():
    """With launcher.queue set, Kueue admits the Job: created suspended, labelled with its LocalQueue."""
    spec = OmegaConf.merge(SETTINGS, {"queue": "team-a"})
    job = render_stage_job("evaluate", ["pipeline_id=golden", "evaluate.max_workers=2"], "golden", spec, "fixed")
    matches_golden(job, "job-evaluate-queued.yaml")
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "suspend" not in render_stage_job("evaluate", [], "golden", SETTINGS, "fixed")["spec"]  # no queue: runs at once


@pytest.mark.tools
def test_a_sharded_stage_renders_an_indexed_job():
    """evaluate.shards=4: one Indexed Job whose pods each get their shard through the downward
    API, retried per shard, with exit 2 still failing the whole Job."""
    job = render_shard_job("evaluate", ["pipeline_id=golden", "evaluate.shards=4"], "golden", SETTINGS, "fixed", 4)
    matches_golden(job, "job-evaluate-shards.yaml")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert "backoffLimit" not in spec and spec["backoffLimitPerIndex"] == SETTINGS.backoff_limit
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][-1] == "evaluate.shard=$(PROMPTGATE_SHARD)"
    assert {"name": "PROMPTGATE_SHARD", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} in container["env"]


@pytest.mark.tools
def test_the_monitor_renders_a_cronjob_that_does_not_retry_a_drift():
    """make job STAGE=monitor: a CronJob on monitor.schedule, one run at a time, whose drift exit
    code (3) fails the Job like bad input (2) instead of being retried."""
    job = render_cron_job(["monitor.min_window=40"], SETTINGS, "*/15 * * * *", 3, "baseball-hitting-assistant")
    matches_golden(job, "cronjob-monitor.yaml")
    spec = job["spec"]
    assert (spec["schedule"], spec["concurrencyPolicy"]) == ("*/15 * * * *", "Forbid")
    rule = spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][0]
    assert (rule["action"], rule["onExitCodes"]["values"]) == ("FailJob", [2, 3])
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["python", "-m", "jobs.monitor", "monitor.min_window=40"]
    printed = subprocess.run([sys.executable, "-m", "jobs.launch.render", "monitor", "monitor.schedule=0 * * * *"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["spec"]["schedule"] == "0 * * * *"


def test_make_job_prints_the_shards_then_the_merge():
    run = lambda *a: subprocess.run([sys.executable, "-m", "jobs.launch.render", "evaluate", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT, timeout=120)
    shards, merge = run("pipeline_id=x", "evaluate.shards=3"), run("--merge", "pipeline_id=x", "evaluate.shards=3")
    assert shards.returncode == merge.returncode == 0, shards.stderr + merge.stderr
    assert yaml.safe_load(shards.stdout)["spec"]["completions"] == 3
    assert "make job STAGE=evaluate MERGE=1" in shards.stderr
    assert "completionMode" not in yaml.safe_load(merge.stdout)["spec"]


def test_job_names_are_dns_safe_unique_and_short():
    long_id = "Pipeline_With.Odd/Chars-" + "x" * 80
    a, b = job_name("optimize", long_id, "1"), job_name("optimize", long_id, "2")
    assert a != b and len(a) <= 63 and a == a.lower()
    assert all(ch.isalnum() or ch == "-" for ch in a) and a[0].isalnum() and a[-1].isalnum()


# ------------------------------------------------------------------ launchers on the fake API
def test_stage_exiting_2_fails_the_job_without_retries(fake_cluster):
    cluster, _ = fake_cluster
    code = KubernetesLauncher(fast_settings(backoff_limit=3), "k8s-bad").run("evaluate", ["dataset.train=/nope.jsonl"])
    assert code == 2
    (job,) = [j for (ns, name), j in cluster.jobs.items() if "k8s-bad" in name]
    assert job["status"]["conditions"][0]["reason"] == "PodFailurePolicy"
    assert len([p for p in cluster.pods.values() if p["metadata"]["labels"]["job-name"] == job["metadata"]["name"]]) == 1


def test_crashing_pod_is_retried_up_to_backoff_limit(fake_cluster):
    cluster, _ = fake_cluster
    code = KubernetesLauncher(fast_settings(backoff_limit=2), "k8s-crash").run("no_such_stage", [])
    assert code == 1
    (name,) = [n for (_, n) in cluster.jobs if "k8s-crash" in n]
    assert cluster.jobs[("promptgate", name)]["status"]["conditions"][0]["reason"] == "BackoffLimitExceeded"
    assert len([p for p in cluster.pods.values() if p["metadata"]["labels"]["job-name"] == name]) == 3


def test_ctrl_c_deletes_the_job(fake_cluster, servers):
    cluster, kubeconfig = fake_cluster
    code = ("from omegaconf import OmegaConf; from jobs.config.schemas import JobSettings; from jobs.launch.launchers import "
            "KubernetesLauncher; KubernetesLauncher(OmegaConf.merge(OmegaConf.structured(JobSettings), "
            "{'poll_s': 0.3}), 'k8s-int').run('sim', [])")  # the simulator never exits by itself
    proc = subprocess.Popen([sys.executable, "-c", code], env={**servers.env(), "KUBECONFIG": str(kubeconfig)},
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not any("k8s-int" in n for (_, n) in cluster.jobs) or not cluster.procs:
        assert time.monotonic() < deadline, "the Job never started"
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted: deleted Job pg-sim-k8s-int" in out
    assert any("k8s-int" in n for n in cluster.deleted)
    assert not any("k8s-int" in n for (_, n) in cluster.jobs)
    assert all(p.poll() is not None for n, p in cluster.procs.items() if "k8s-int" in n)


def test_pipeline_runs_as_kubernetes_jobs(fake_cluster, servers, decided, mlflow_client):
    """`make pipeline LAUNCHER=kubernetes` on the session's pipeline: every stage runs in a
    pod (here, a process the fake starts) and reuses the finished result MLflow holds."""
    cluster, kubeconfig = fake_cluster
    pid, _ = decided
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", "launcher=kubernetes", "launcher.poll_s=0.5",
                           f"pipeline_id={pid}", *COMPARE_OVERRIDES],
                          env={**servers.env(), "KUBECONFIG": str(kubeconfig)}, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in STAGES:
        assert f"[launcher] Job promptgate/pg-{stage}-" in proc.stdout
    assert proc.stdout.count("reusing it") == 7
    _, gate = stage_result(mlflow_client, pid, "gate")
    printed = "PROMOTED" if gate["decision"] == "promote" else "REFUSED"
    assert f"gate: {printed}" in proc.stdout.split("=== promptgate pipeline")[1]


def test_sweep_runs_each_point_as_a_job_two_at_a_time(fake_cluster, servers, sweep_pipeline, mlflow_client):
    cluster, kubeconfig = fake_cluster
    pid = sweep_pipeline
    proc = subprocess.run([sys.executable, "-m", "jobs.optimize", "-m", "hydra/launcher=kubernetes",
                           "hydra.launcher.parallelism=2", "hydra.launcher.poll_s=0.5", f"pipeline_id={pid}",
                           "optimizer.max_metric_calls=40,48"],
                          env={**servers.env(), "KUBECONFIG": str(kubeconfig)}, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 jobs of optimize as Kubernetes Jobs in promptgate, 2 at a time" in proc.stdout
    assert "=== sweep summary ===" in proc.stdout
    names = [n for (_, n) in cluster.jobs if n.startswith("pg-optimize-")]
    assert len(names) == 2
    args = [cluster.jobs[("promptgate", n)]["spec"]["template"]["spec"]["containers"][0]["args"] for n in names]
    assert sorted(a for arg in args for a in arg if a.startswith("optimizer.max_metric_calls")) == [
        "optimizer.max_metric_calls=40", "optimizer.max_metric_calls=48"]
    assert all("sweep_point=true" in a for a in args)


def test_the_sweep_launcher_runs_each_point_with_its_own_config(tmp_path, monkeypatch):
    """Each point is composed as Hydra's launchers do (load_sweep_config): its pipeline id,
    shard counts and tracking URI come from its own overrides, and its JobReturn carries its
    config (without the hydra node), its hydra config and its number, as run_job's would."""
    import json

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    import jobs.launch.launchers as launchers
    import jobs.store.sweeps as store_sweeps
    from hydra_plugins.promptgate_kubernetes_launcher.launcher import KubernetesHydraLauncher
    from jobs.config.schemas import register_schemas
    from jobs.core.paths import CONF_DIR

    ran, read_from = [], []

    class FakeJobs:  # a point's Job: exit 2 for pipeline p-b, else 0 and a result
        def __init__(self, spec, pipeline_id, out=None, shards=None):
            self.pipeline_id, self.shards = pipeline_id, shards

        def run(self, stage, overrides):
            ran.append((stage, self.pipeline_id, self.shards["compare"], overrides))
            return 2 if self.pipeline_id == "p-b" else 0

        def result(self):
            return {"outcome": "candidate", "pipeline": self.pipeline_id}

    monkeypatch.setattr(launchers, "KubernetesLauncher", FakeJobs)
    monkeypatch.setattr(store_sweeps, "connect_uri", read_from.append)
    register_schemas()
    points = [["pipeline_id=p-a", "compare.shards=3", "mlflow.tracking_uri=file:///a"], ["pipeline_id=p-b"]]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        master = compose(config_name="pipeline", return_hydra_config=True,
                         overrides=[f"hydra.sweep.dir={tmp_path}", "hydra.job.name=optimize"])
        launcher = KubernetesHydraLauncher(namespace="promptgate", parallelism=2)
        launcher.setup(hydra_context=HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None),
                       task_function=lambda cfg: None, config=master)
        a, b = launcher.launch(points, initial_job_idx=5)
    assert sorted(ran) == [("optimize", "p-a", 3, [*points[0], "sweep_point=true"]),
                           ("optimize", "p-b", 1, [*points[1], "sweep_point=true"])]
    assert read_from == ["file:///a"]  # only the point that exited 0 is read back, from its own server
    assert (a.status, a.return_value, b.status) == (JobStatus.COMPLETED, {"outcome": "candidate", "pipeline": "p-a"},
                                                    JobStatus.FAILED)
    assert (a.cfg.pipeline_id, a.cfg.compare.shards, b.cfg.pipeline_id) == ("p-a", 3, "p-b")
    assert "hydra" not in a.cfg and (a.hydra_cfg.hydra.job.num, b.hydra_cfg.hydra.job.num) == (5, 6)
    assert (a.overrides, a.task_name, a.working_dir) == (points[0], "optimize", str(tmp_path / "5"))
    assert json.loads((tmp_path / "6" / "result.json").read_text()) == {
        "num": 6, "overrides": "pipeline_id=p-b", "result": {"outcome": "failed (exit 2)"}}
