"""Pure functions that build the ``batch/v1`` Job of a stage from the composed config.

The Job runs the same command as a local stage (``python -m jobs.<stage> <overrides>``),
so a stage is one command everywhere. Golden files in tests/golden/ pin the output.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.core.contract import EMIT_RESULT_ENV, stage_command

EXIT_BAD_INPUT = 2


@dataclass
class JobSettings:
    """How a stage runs as a Kubernetes Job: `launcher=kubernetes`, and the base of the Hydra
    launcher's config (hydra/launcher=kubernetes). Registered as launcher/kubernetes."""

    kind: str = "kubernetes"  # local | kubernetes
    namespace: str = "promptgate"  # namespace of the Jobs (the launcher's Role is limited to it)
    image: str = "${oc.env:IMG,promptgate-jobs:dev}"  # the jobs image (docker/jobs.Dockerfile)
    image_pull_policy: str = "IfNotPresent"  # Always for mutable tags
    service_account: str = "promptgate-stage"  # stage pods' account: no API rights, no token
    config_map: str = "promptgate-config"  # env of every stage pod (MLFLOW_TRACKING_URI, ...)
    secret_env: dict[str, str] = field(default_factory=dict)  # NAME: secret/key; none by default: the LLM key lives only in the gateway
    extra_env: dict[str, str] = field(default_factory=dict)  # plain env added to every stage pod
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})  # a stage pod asks for
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "3Gi"})  # a stage pod may use at most
    backoff_limit: int = 2  # pod retries after a crash (exit code 2, bad input, fails at once)
    active_deadline_seconds: int = 7200  # the longest a stage may run
    ttl_seconds_after_finished: int = 86400  # finished Jobs are cleaned up after a day
    poll_s: float = 2.0  # seconds between status checks while waiting


def register_configs() -> None:
    """Make `launcher=kubernetes` composable (called before every composition)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="launcher", name="kubernetes", node=JobSettings, provider="promptgate")
LABEL = "app.kubernetes.io"
CHECKOV_SKIPS = {  # policy checks this Job does not meet on purpose, with the reason next to it
    "checkov.io/skip1": "CKV_K8S_15=the image tag is set per launch (IMG); IfNotPresent lets dev clusters use locally loaded images",
    "checkov.io/skip2": "CKV_K8S_43=the image is chosen per launch (IMG); pin a digest there for prod",
}
CONTAINER = "stage"


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


def env_list(spec: Any, pipeline_id: str) -> list[dict]:
    env = [{"name": "PROMPTGATE_PIPELINE_ID", "value": pipeline_id},
           {"name": EMIT_RESULT_ENV, "value": "1"}]  # the launcher reads the result from the log
    for name, ref in (spec.get("secret_env") or {}).items():
        secret, _, key = str(ref).partition("/")
        env.append({"name": str(name), "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}})
    for name, value in (spec.get("extra_env") or {}).items():
        env.append({"name": str(name), "value": str(value)})
    return env


def render_stage_job(stage: str, overrides: list[str], pipeline_id: str, spec: Any, unique: str) -> dict:
    """The Job manifest for one stage. ``spec`` is the launcher config (conf/launcher/kubernetes.yaml)."""
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
        "env": env_list(spec, pipeline_id),
        "resources": {"requests": {k: str(v) for k, v in spec.requests.items()},
                      "limits": {k: str(v) for k, v in spec.limits.items()}},
        "securityContext": security,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(stage, pipeline_id, unique), "namespace": str(spec.namespace), "labels": lab,
                     "annotations": CHECKOV_SKIPS},
        "spec": {
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
