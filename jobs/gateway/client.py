"""A stage's side of the gateway: start or find it, open the stage's session with its cache
mode, budgets, prices, per-kind max_tokens and the endpoint's capabilities, and settle up at
the end (spend and non-200 replies as run metrics; exit 2 when a budget was crossed)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from jobs.core.contract import AGENT_PATH
from jobs.core.errors import UserError, network_reason

PLACEHOLDER_KEY = "promptgate-gateway"  # what clients send; only the gateway holds the upstream key
SPEND_METRICS = ("tokens", "prompt_tokens", "completion_tokens", "usd", "requests", "cache_hits", "upstream_calls",
                 "faults", "retries", "exhausted", "malformed", "refused")
UNITS = ("tokens", "usd")
CLIENT_MARGIN_S = 10.0  # a client waits this much longer than the gateway's worst case, so the gateway gives up first


class BudgetExceeded(UserError):
    """A budget was crossed: the stage stops with exit 2, naming the budget."""


def _call(url: str, body: Any | None = None, timeout_s: float = 10) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())


def check_budget_config(budget: Any) -> None:
    """Budgets are positive numbers or null, in known units, for known stages (no heavy imports)."""
    from jobs.core.contract import STAGES

    for scope in ("pipeline", "stage"):
        for unit, value in (budget.get(scope) or {}).items():
            where = f"budget.{scope}.{unit}"
            if unit not in UNITS:
                raise UserError(f"{where}: unknown unit '{unit}'; budgets are in {' or '.join(UNITS)}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise UserError(f"{where}={value} must be a positive number or null (no limit)")
    for stage, limits in (budget.get("per_stage") or {}).items():
        if stage not in STAGES:
            raise UserError(f"budget.per_stage.{stage}: unknown stage; stages are {', '.join(STAGES)}")
        for unit, value in (limits or {}).items():
            if unit not in UNITS or (value is not None and (not isinstance(value, (int, float)) or value <= 0)):
                raise UserError(f"budget.per_stage.{stage}.{unit}={value}: give tokens or usd as a positive number")


def check_gateway_config(gw: Any) -> None:
    """The cache mode, store URI and retry settings make sense (no heavy imports)."""
    from urllib.parse import urlparse

    from jobs.gateway.cache import MODES

    if gw.cache not in MODES:
        raise UserError(f"gateway.cache={gw.cache}: use one of {', '.join(MODES)}")
    scheme = urlparse(str(gw.cache_uri)).scheme
    if scheme not in ("", "s3", "redis", "rediss", "file"):
        raise UserError(f"gateway.cache_uri={gw.cache_uri}: use a folder, s3://bucket/prefix or redis://host:port/db")
    if int(gw.max_retries) < 0 or float(gw.backoff_s) < 0 or float(gw.get("retry_after_max_s", 0)) < 0 \
            or float(gw.timeout_s) <= 0:
        raise UserError("gateway.max_retries, gateway.backoff_s and gateway.retry_after_max_s must not be negative, "
                        "and gateway.timeout_s must be positive")
    url = gw.get("url")
    if url and urlparse(str(url)).scheme not in ("http", "https"):
        raise UserError(f"gateway.url={url}: give the gateway's http:// or https:// base URL")


def limits_for(cfg: Any, stage: str, spent: dict[str, float], pipeline_id: str) -> dict[str, list]:
    """The tightest of the stage's own budget and what is left of the pipeline's, per unit."""
    b = cfg.budget
    out: dict[str, list] = {}
    for unit in UNITS:
        options = []
        per_stage = ((b.get("per_stage") or {}).get(stage) or {}).get(unit)
        if per_stage is not None:
            options.append((float(per_stage), f"budget.per_stage.{stage}.{unit}"))
        elif (b.stage or {}).get(unit) is not None:
            options.append((float(b.stage[unit]), f"budget.stage.{unit}"))
        if (b.pipeline or {}).get(unit) is not None:
            left = float(b.pipeline[unit]) - spent[unit]
            if left <= 0:
                raise BudgetExceeded(f"budget.pipeline.{unit}={b.pipeline[unit]} is already spent by pipeline "
                                     f"{pipeline_id} ({spent[unit]:g} {unit}); raise it or start a new pipeline_id")
            options.append((left, f"budget.pipeline.{unit} ({b.pipeline[unit]} for the pipeline, {left:g} left)"))
        if options:
            out[unit] = list(min(options))
    return out


def gateway_settings(gw: Any, upstream: str = "") -> Any:
    """The gateway's settings from conf/gateway (or anything with its attributes); keys it lacks
    keep the gateway's defaults."""
    from jobs.gateway.server import GatewaySettings

    d = GatewaySettings(upstream=upstream)
    return GatewaySettings(upstream=upstream, cache_uri=str(gw.cache_uri), max_retries=int(gw.max_retries),
                           backoff_s=float(gw.backoff_s), timeout_s=float(gw.timeout_s),
                           retry_after_max_s=float(getattr(gw, "retry_after_max_s", d.retry_after_max_s)))


def start_gateway(upstream: str, gw: Any, api_key_env: str, timeout_s: float = 20,
                  api_key: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start a gateway on a free loopback port; returns the process and its base URL. The
    upstream key reaches it in ``api_key_env``: this process's, or ``api_key`` when given."""
    from jobs.core.servers import start_server_process

    s = gateway_settings(gw, upstream)
    args = ["--upstream", upstream, "--api-key-env", api_key_env, "--cache-uri", s.cache_uri,
            "--max-retries", str(s.max_retries), "--backoff-s", str(s.backoff_s), "--timeout-s", str(s.timeout_s),
            "--retry-after-max-s", str(s.retry_after_max_s)]
    env = {api_key_env: api_key} if api_key is not None else None
    return start_server_process("jobs.gateway", args, "GATEWAY_URL", "/health", timeout_s, env=env)


@dataclass
class Session:
    """One stage's account at the gateway."""

    gateway_url: str
    sid: str
    stage: str
    last: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.gateway_url}/s/{self.sid}/v1"

    @property
    def agent_url(self) -> str:
        """The agent's own path to the session: its calls count as the agent's whatever they send."""
        return f"{self.gateway_url}/s/{self.sid}{AGENT_PATH}/v1"

    def spend(self) -> dict:
        try:
            self.last = _call(f"{self.gateway_url}/gateway/sessions/{self.sid}")
        except (urllib.error.URLError, OSError):
            pass  # the gateway is gone: keep the last figures
        return self.last

    def check(self) -> None:
        """Raise BudgetExceeded when a budget was crossed; call before writing results."""
        tripped = self.spend().get("tripped")
        if tripped:
            raise BudgetExceeded(f"stage {self.stage} stopped: {tripped}. Raise the budget or lower the work "
                                 "(e.g. optimizer.max_metric_calls, compare.n_repeats)")

    def figures(self, s: dict | None = None) -> dict:
        s = self.spend() if s is None else s
        return {k: float(s.get(k, 0)) for k in SPEND_METRICS}

    def by_kind(self, s: dict | None = None) -> dict[str, dict[str, float]]:
        """Calls, seconds, tokens and USD per kind of call (agent, judge, reflection, embeddings),
        with this process's tool calls, which never reach the gateway."""
        from jobs.core import spans

        s = self.spend() if s is None else s
        return spans.add(s.get("by_kind"), {k: v for k, v in spans.snapshot().items() if k == "tools"})

    def failures(self, s: dict | None = None) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
        """The non-200 replies the clients got, (kind -> status -> count, kind -> first error line)."""
        s = self.spend() if s is None else s
        return dict(s.get("errors") or {}), dict(s.get("first_error") or {})

    def metrics(self) -> dict[str, float]:
        """Spend, the per-kind figures and the non-200 replies by kind and status
        (``gateway.errors.<kind>.<status>``) as the run metrics they are logged as."""
        from jobs.core import spans

        s = self.spend()  # one snapshot: one request to the gateway, and figures that agree with each other
        errors = {f"gateway.errors.{kind}.{status}": float(n) for kind, counts in self.failures(s)[0].items()
                  for status, n in counts.items()}
        return {**{metric_name(k): v for k, v in self.figures(s).items()}, **spans.metrics(self.by_kind(s)), **errors}


def metric_name(figure: str) -> str:
    """The run metric a spend figure is logged as."""
    return f"spend.{figure}" if figure in ("tokens", "prompt_tokens", "completion_tokens", "usd") else f"gateway.{figure}"


def spend_of_runs(runs: list) -> dict[str, float]:
    """The spend figures several runs logged, added up (a sharded stage's shards)."""
    return {k: sum(float(r.data.metrics.get(metric_name(k), 0.0)) for r in runs) for k in SPEND_METRICS}


def kinds_of_runs(runs: list) -> dict[str, dict[str, float]]:
    """The per-kind figures several runs logged, added up."""
    from jobs.core import spans

    return spans.from_metrics([r.data.metrics for r in runs])


def open_session(cfg: Any, stage: str, pipeline_id: str, gateway_url: str, spent: dict[str, float]) -> Session:
    """The stage's account at the gateway: its cache mode, its budgets (what is left of the
    pipeline's, given what its earlier stages ``spent``) and the model's prices."""
    limits = limits_for(cfg, stage, spent, pipeline_id)
    sid = f"{stage}-{uuid.uuid4().hex[:12]}"
    spec = {"pipeline": pipeline_id, "stage": stage, "cache": str(cfg.gateway.cache), "limits": limits,
            "prices": {k: list(v) for k, v in (cfg.model.get("prices") or {}).items()},
            "roles": {"agent": str(cfg.model.agent_model), "judge": str(cfg.model.judge_model),
                      "reflection": str(cfg.model.reflection_model)},  # how the gateway tells calls apart
            "max_tokens": {str(k): int(v) for k, v in (cfg.model.get("max_tokens") or {}).items()},
            "capabilities": {str(k): v for k, v in (cfg.model.get("capabilities") or {}).items()}}
    try:
        _call(f"{gateway_url}/gateway/sessions/{sid}", spec)
    except urllib.error.HTTPError as e:
        raise UserError(f"LLM gateway {gateway_url} refused the session: {e.read().decode(errors='replace')[:200]}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"LLM gateway {gateway_url} is not reachable ({network_reason(e)}); start it with "
                        "`make run`, or set gateway.url=null to start one for the stage") from None
    return Session(gateway_url, sid, stage)
