"""Model endpoints: point every client (openai SDK, langchain-openai, MLflow's judge adapter,
dspy/LiteLLM) at the configured OpenAI-compatible endpoint through the environment.

``model=sim`` starts the simulator for the stage when no running one is given.
"""

from __future__ import annotations

import faulthandler
import math
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jobs.core.errors import UserError, network_reason
from jobs.llm.compat import block_absent_pyspark, gateway_cache_only, narrow_import_hook_lock

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
    api_key: str  # what clients send as the key: the gateway holds the upstream's
    agent_base_url: str  # the agent's own /v1 URL at the gateway, so its calls count as the agent's

    def uri(self, model: str) -> str:
        """MLflow model URI for judges, MemAlign and GEPA."""
        return f"openai:/{model}"

    def embedding_uri(self) -> str:
        """MLflow model URI for MemAlign's embeddings (LiteLLM through dspy). An OpenAI-compatible
        server's embedding model (nomic-embed-text, bge-m3, ...) goes through LiteLLM's
        ``openai_like`` provider: its ``openai`` provider refuses MemAlign's ``dimensions`` for any
        model not named text-embedding-3 (UnsupportedParamsError, even with drop_params), while
        ``openai_like`` drops it, so the server's model answers in its own size."""
        if self.provider == "openai_compatible":
            return f"openai_like:/{self.embedding_model}"
        return self.uri(self.embedding_model)


OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",
               "MLFLOW_MODEL_CATALOG_URI": ""}  # nothing fetched from the network at import or by telemetry


def offline_hygiene() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    block_absent_pyspark()
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: how to see where a stage is stuck
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def check_reachable(base_url: str, api_key: str, timeout_s: float = 20) -> None:
    req = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UserError(f"LLM endpoint {base_url} refused the API key (HTTP {e.code}); check the key's environment variable") from None
        if e.code in (502, 504):  # the gateway could not reach its upstream
            detail = e.read().decode(errors="replace")
            raise UserError(f"the model endpoint behind the LLM gateway is not reachable ({detail[:160]}); "
                            "start it or fix model.base_url") from None
        return  # some gateways have no /models; the first real call will tell
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"LLM endpoint {base_url} is not reachable ({network_reason(e)}); start it or fix model.base_url") from None


FLAT_FIGURES = ("note: the agent ({module}) brings no simulator profile ({file} beside it), so the simulator "
                "cannot judge this domain's criteria and its figures will be flat; see docs/simulator.md")


def sim_settings(cfg: Any, own: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of a simulator started for this config: model.sim (with ``own`` over it) plus
    the domain's profile, saying once when the domain has none."""
    from jobs.sim.profile import PROFILE_FILE, sim_profile_path

    profile = sim_profile_path(cfg.agent)
    if profile is None:
        print(FLAT_FIGURES.format(module=cfg.agent.get("tools_module") or cfg.agent.get("_target_"), file=PROFILE_FILE), flush=True)
    else:
        from jobs.sim.profile import load

        load(profile)  # a bad profile is exit 2 here, not a simulator that never starts
    return {**dict(cfg.model.sim), **(own or {}), "profile": profile or ""}


@dataclass(frozen=True)
class Upstream:
    """Where the gateway forwards: the /v1 URL, its key (and the key's variable), and a
    simulator process this command started for it (None: a running server)."""

    base_url: str
    key_env: str
    key: str
    sim: Any = None


def upstream_endpoint(cfg: Any, own_sim: dict[str, Any] | None = None) -> Upstream:
    """The upstream endpoint of the config; with ``own_sim`` (or model=sim without base_url) a
    simulator of this command's own, with those settings over model.sim."""
    model_cfg = cfg.model
    base_url = None if own_sim is not None else model_cfg.get("base_url")
    key = os.environ.get(model_cfg.api_key_env)  # the user's key: read here, handed to the gateway process
    if model_cfg.provider == "sim":
        key = key or SIM_KEY
        if not base_url:
            from jobs.core.servers import start_sim

            proc, base_url = start_sim(sim_settings(cfg, own_sim))
            return Upstream(base_url, model_cfg.api_key_env, key, proc)
    else:
        if not key:
            raise UserError(f"model={model_cfg.provider} needs the API key in ${model_cfg.api_key_env}; export it or use model=sim")
        if not base_url:
            raise UserError(f"model.base_url is not set for model={model_cfg.provider}; give the endpoint's /v1 URL")
    check_reachable(base_url, key)
    return Upstream(base_url, model_cfg.api_key_env, key)


def start_local_gateway(cfg: Any, own_sim: dict[str, Any] | None = None) -> tuple[list[Any], str, str | None]:
    """A gateway of our own in front of the upstream (started too, for model=sim without
    base_url): its processes, its URL, and the URL of a simulator we started (or None)."""
    from jobs.core.servers import stop_process
    from jobs.gateway.client import start_gateway

    up = upstream_endpoint(cfg, own_sim)
    try:
        gateway, url = start_gateway(up.base_url, cfg.gateway, up.key_env, api_key=up.key)
    except Exception:
        if up.sim is not None:
            stop_process(up.sim.pid)
        raise
    return [p for p in (up.sim, gateway) if p is not None], url, up.base_url if up.sim is not None else None


JUDGE_TIMEOUT_ENV = "MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS"  # MLflow's judge adapter reads its timeout here
ROUTED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_LIKE_API_KEY", "OPENAI_LIKE_API_BASE",
              JUDGE_TIMEOUT_ENV)


def routing_env(base_url: str, key: str, timeout_s: float) -> dict[str, str]:
    """The variables the LLM libraries read their endpoint from: the openai SDK, langchain,
    MLflow's judge adapter and LiteLLM (``OPENAI_*``), LiteLLM's openai_like embeddings; and the
    judge adapter's timeout for one call."""
    return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": base_url, "OPENAI_API_BASE": base_url,
            "OPENAI_LIKE_API_KEY": key, "OPENAI_LIKE_API_BASE": base_url, JUDGE_TIMEOUT_ENV: str(math.ceil(timeout_s))}


def call_timeout_s(model_cfg: Any, session: Any) -> float:
    """How long a client waits for one call: model.request_timeout_s, raised above the longest
    the stage's gateway can take on it (its retries), so that the gateway, which retries,
    counts and reports, is the one that gives up; clients retry nothing (README, "Retries")."""
    from jobs.gateway.client import CLIENT_MARGIN_S

    worst = float(session.spend().get("worst_case_s") or 0.0)
    return max(float(model_cfg.request_timeout_s), worst + CLIENT_MARGIN_S)


@contextmanager
def activate(cfg: Any, stage: str, pipeline_id: str, spent: dict[str, float],
             own_sim: dict[str, Any] | None = None) -> Iterator[tuple[Endpoint, Any]]:
    """Point every client at this stage's session of the LLM gateway: (endpoint, session).

    With ``gateway.url`` set (``make run``, the cluster) the stage uses that gateway and needs
    neither the upstream URL nor its key. Otherwise (or with ``own_sim``: a simulator of this
    command's own) it starts the upstream and a gateway of its own for the stage. ``spent`` is
    what the pipeline's earlier stages spent, for the budgets.
    """
    from jobs.core.servers import stop_process
    from jobs.gateway import client as gateway

    offline_hygiene()
    narrow_import_hook_lock()
    gateway_cache_only()
    model_cfg = cfg.model
    procs: list[Any] = []
    saved = {k: os.environ.get(k) for k in ROUTED_ENV}
    session = None
    try:
        gateway_url = None if own_sim is not None else cfg.gateway.get("url")
        if not gateway_url:
            procs, gateway_url, _ = start_local_gateway(cfg, own_sim)
        session = gateway.open_session(cfg, stage, pipeline_id, str(gateway_url).rstrip("/"), spent)
        check_reachable(session.base_url, gateway.PLACEHOLDER_KEY)
        timeout_s = call_timeout_s(model_cfg, session)
        os.environ.update(routing_env(session.base_url, gateway.PLACEHOLDER_KEY, timeout_s))
        yield Endpoint(model_cfg.provider, session.base_url, model_cfg.agent_model, model_cfg.judge_model,
                       model_cfg.reflection_model, model_cfg.embedding_model, float(model_cfg.temperature),
                       timeout_s, gateway.PLACEHOLDER_KEY, session.agent_url), session
    finally:
        if session is not None:
            session.spend()  # keep the final figures before a gateway of our own stops
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for proc in reversed(procs):
            stop_process(proc.pid)
