"""Model endpoints: point every client (openai SDK, langchain-openai, MLflow's judge adapter,
dspy/LiteLLM) at the configured OpenAI-compatible endpoint through the environment.

``model=sim`` starts the simulator for the stage when no running one is given.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from jobs.errors import UserError, network_reason

SIM_KEY = "sim-key-not-a-secret"  # the simulator takes any key


@dataclass(frozen=True)
class Endpoint:
    provider: str
    base_url: str  # ends in /v1
    agent_model: str
    judge_model: str
    reflection_model: str
    embedding_model: str
    temperature: float
    timeout_s: float

    def uri(self, model: str) -> str:
        """MLflow model URI for judges, MemAlign and GEPA."""
        return f"openai:/{model}"


def offline_hygiene() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION", "true")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")  # no fetch from GitHub: the machine is offline
    os.environ.setdefault("DSPY_CACHEDIR", os.path.join(os.environ.get("PROMPTGATE_STATE_DIR", ".promptgate"), "dspy-cache"))


def check_reachable(base_url: str, api_key: str, timeout_s: float = 5) -> None:
    req = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UserError(f"LLM endpoint {base_url} refused the API key (HTTP {e.code}); check the key's environment variable") from None
        return  # some gateways have no /models; the first real call will tell
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"LLM endpoint {base_url} is not reachable ({network_reason(e)}); start it or fix model.base_url") from None


@contextmanager
def activate(model_cfg: Any) -> Iterator[Endpoint]:
    """Set the environment for the configured endpoint (starting the simulator if needed)."""
    offline_hygiene()
    proc = None
    base_url = model_cfg.get("base_url")
    provider = model_cfg.provider
    if provider == "sim":
        api_key = os.environ.get(model_cfg.api_key_env) or SIM_KEY
        if not base_url:
            from jobs.local_servers import start_sim, stop_process

            proc, base_url = start_sim(dict(model_cfg.sim))
    else:
        api_key = os.environ.get(model_cfg.api_key_env, "")
        if not api_key:
            raise UserError(f"model={provider} needs the API key in ${model_cfg.api_key_env}; export it or use model=sim")
        if not base_url:
            raise UserError(f"model.base_url is not set for model={provider}; give the endpoint's /v1 URL")
    check_reachable(base_url, api_key)
    saved = {k: os.environ.get(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")}
    os.environ.update(OPENAI_API_KEY=api_key, OPENAI_BASE_URL=base_url, OPENAI_API_BASE=base_url)
    try:
        yield Endpoint(provider, base_url, model_cfg.agent_model, model_cfg.judge_model, model_cfg.reflection_model,
                       model_cfg.embedding_model, float(model_cfg.temperature), float(model_cfg.request_timeout_s))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if proc is not None:
            stop_process(proc.pid)
