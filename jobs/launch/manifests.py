"""Pure functions that build the ``batch/v1`` Job of a stage from the composed config.

The Job runs the same command as a local stage (``python -m jobs.<stage> <overrides>``),
so a stage is one command everywhere. Golden files in tests/golden/ pin the output.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from jobs.config.schemas import JobSettings  # noqa: F401 - the launcher config these functions read
from jobs.core.contract import LAUNCH_ENV, SHARDED_STAGES, stage_command
from jobs.core.errors import EXIT_BAD_INPUT

LABEL = "app.kubernetes.io"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # Kueue admits a suspended Job labelled with its LocalQueue
CHECKOV_SKIPS = {  # policy checks this Job does not meet on purpose, with the reason next to it
    "checkov.io/skip1": "CKV_K8S_15=the image tag is set per launch (IMG); IfNotPresent lets dev clusters use locally loaded images",
    "checkov.io/skip2": "CKV_K8S_43=the image is chosen per launch (IMG); pin a digest there for prod",
}
CONTAINER = "stage"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # set on each pod of an Indexed Job
SHARD_ENV = "PROMPTGATE_SHARD"  # the pod's index, expanded into the stage's `<stage>.shard=` argument


def dns_label(text: str, limit: int = 63) -> str:
    """Lower-case letters, digits and '-', starting and ending with an alphanumeric."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:limit].rstrip("-") or "x"


def job_name(stage: str, pipeline_id: str, unique: str) -> str:
    """``pg-<stage>-<pipeline>-<5 hex>``, at most 63 characters and unique per launch."""
    suffix = hashlib.sha256(f"{stage}/{pipeline_id}/{unique}".encode()).hexdigest()[:5]
    head = dns_label(f"pg-{stage}-{pipeline_id}", 63 - len(suffix) - 1)
    return f"{head}-{suffix}"


def labels(stage: str, pipeline_id: str) -> dict[str, str]:
    return {
        f"{LABEL}/name": "promptgate-stage",
        f"{LABEL}/component": "stage",
        f"{LABEL}/part-of": "promptgate",
        f"{LABEL}/managed-by": "promptgate-launcher",
        "promptgate/stage": dns_label(stage),
        "promptgate/pipeline-id": dns_label(pipeline_id),
    }


def env_list(spec: Any, launch_id: str) -> list[dict]:
    env = [{"name": LAUNCH_ENV, "value": launch_id}]  # the stage tags its result's run with it; the launcher reads it there
    for name, ref in (spec.get("secret_env") or {}).items():
        secret, _, key = str(ref).partition("/")
        env.append({"name": str(name), "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}})
    for name, value in (spec.get("extra_env") or {}).items():
        env.append({"name": str(name), "value": str(value)})
    return env


def render_stage_job(stage: str, overrides: list[str], pipeline_id: str, spec: Any, unique: str) -> dict:
    """The Job manifest for one stage. ``spec`` is the launcher config (conf/launcher/kubernetes.yaml);
    ``unique`` is the launch id: it names the Job and tags the stage's result in MLflow."""
    lab = labels(stage, pipeline_id)
    command = stage_command(stage, overrides)
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    container = {
        "name": CONTAINER,
        "image": str(spec.image),
        "imagePullPolicy": str(spec.image_pull_policy),
        "command": command[:3],
        "args": command[3:],
        "envFrom": [{"configMapRef": {"name": str(spec.config_map), "optional": True}}],
        "env": env_list(spec, unique),
        "resources": {"requests": {k: str(v) for k, v in spec.requests.items()},
                      "limits": {k: str(v) for k, v in spec.limits.items()}},
        "securityContext": security,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    queued = {"suspend": True} if spec.get("queue") else {}  # Kueue unsuspends it once the queue's quota admits it
    job_labels = {**lab, QUEUE_LABEL: str(spec.queue)} if queued else lab
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(stage, pipeline_id, unique), "namespace": str(spec.namespace), "labels": job_labels,
                     "annotations": CHECKOV_SKIPS},
        "spec": {
            **queued,
            "backoffLimit": int(spec.backoff_limit),
            "activeDeadlineSeconds": int(spec.active_deadline_seconds),
            "ttlSecondsAfterFinished": int(spec.ttl_seconds_after_finished),
            "podFailurePolicy": {"rules": [
                # a config or input error will fail the same way again: no retries
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": [EXIT_BAD_INPUT]}},
                # evictions and node drains are not the stage's fault: retry without counting
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {
                "metadata": {"labels": dict(lab)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": str(spec.service_account),
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
                },
            },
        },
    }


def shard_count(stage: str, defaults: dict[str, int], overrides: list[str]) -> int:
    """How many shards a stage's rows split into: its last ``<stage>.shards=`` override, else the
    composed config's value; 1 for a stage that does not shard or when one shard is asked for."""
    if stage not in SHARDED_STAGES or any(o.startswith(f"{stage}.shard=") for o in overrides):
        return 1
    given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith(f"{stage}.shards=")]
    return int(given[-1]) if given else int(defaults.get(stage, 1))


def render_shard_job(stage: str, overrides: list[str], pipeline_id: str, spec: Any, unique: str, shards: int) -> dict:
    """The Indexed Job that evaluates a stage's rows in ``shards`` pods, one shard each. The
    stage's ordinary Job runs after it and merges; it reruns any shard that did not finish."""
    job = render_stage_job(stage, [*overrides, f"{stage}.shard=$({SHARD_ENV})"], pipeline_id, spec, unique)
    job["metadata"]["name"] = job_name(f"{stage}-shards", pipeline_id, unique)
    job["metadata"]["labels"]["promptgate/shards"] = str(shards)
    rest = {k: v for k, v in job["spec"].items() if k != "backoffLimit"}  # retries are counted per shard instead
    body = job["spec"] = {
        "completionMode": "Indexed",  # each pod gets its shard's index
        "completions": shards,
        "parallelism": shards,
        "backoffLimitPerIndex": int(spec.backoff_limit),  # a failing shard is retried alone; the others go on
        "successPolicy": {"rules": [{"succeededIndexes": f"0-{shards - 1}"}]},  # done when every shard is
        **rest,
    }
    container = body["template"]["spec"]["containers"][0]
    container["env"].append({"name": SHARD_ENV, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
    return job


def render_cron_job(overrides: list[str], spec: Any, schedule: str, drift_exit_code: int, name: str) -> dict:
    """The monitor's ``batch/v1`` CronJob: the stage Job's pod on ``schedule``, one run at a time
    (the next starts from the last one's checkpoint). A flagged drift's exit code fails the Job
    without retries, as bad input does: it is a finding, and a retry would only repeat it."""
    job = render_stage_job("monitor", overrides, name, spec, "cron")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != LAUNCH_ENV]  # nobody waits for a launch id
    codes = sorted({EXIT_BAD_INPUT, *([int(drift_exit_code)] if int(drift_exit_code) else [])})
    job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] = codes
    job["spec"].pop("suspend", None)  # Kueue admits each Job the CronJob creates by the label it copies
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": dns_label(f"pg-monitor-{name}", 52), "namespace": meta["namespace"],
                     "labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": dict(meta["labels"])}, "spec": job["spec"]},
        },
    }
