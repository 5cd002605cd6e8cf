"""promptgate's LLM gateway: the one OpenAI-compatible front for every LLM call of every stage.

Each stage opens a *session* (``POST /gateway/sessions/<id>`` with its pipeline, stage, cache
mode, budget limits and prices) and sends its clients to ``/s/<id>/v1``. Per request the
gateway answers from the shared cache when it may, otherwise forwards upstream with urllib3's
``Retry`` (backoff on 429, 5xx and timeouts), counts tokens, dollars and faults per session,
and refuses further calls with HTTP 402 once a budget is crossed. ``GET /gateway/sessions/<id>``
returns a session's spend; ``GET /gateway/stats`` the totals; ``GET /health`` is what the
Deployment probes. Streamed calls (``"stream": true``) pass through chunk by chunk as they
arrive and are cached whole once complete. It is a Starlette app on uvicorn; calls run in its
thread pool, since the cache stores and urllib3 block. Why not the LiteLLM proxy: README,
"LLM gateway".

The upstream API key lives only in this process (read from the environment at start); clients
send a placeholder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.core.servers import AsgiServer
from jobs.gateway.cache import MODES, Store, open_store

FAULT_STATUSES = (429, 500, 502, 503, 504)
CACHE_IGNORED_FIELDS = ("stream_options", "user", "metadata")  # do not change the reply


@dataclass
class GatewaySettings:
    upstream: str  # the upstream /v1 URL
    api_key: str = ""  # sent upstream as the bearer token; never logged or returned
    cache_uri: str = ".promptgate/llm-cache"  # folder, s3://bucket/prefix or redis://host:port/db
    max_retries: int = 4  # retries per call on 429, 5xx and timeouts
    backoff_s: float = 0.2  # urllib3 backoff factor: waits backoff_s * 2**(retry-1)
    timeout_s: float = 60.0  # read timeout of one upstream attempt


@dataclass
class Spend:
    pipeline: str = ""
    stage: str = ""
    cache: str = "readwrite"
    limits: dict[str, Any] = field(default_factory=dict)  # {"tokens": [limit, name], "usd": [limit, name]}
    prices: dict[str, list[float]] = field(default_factory=dict)  # model -> [usd per 1M input, per 1M output]
    requests: int = 0  # calls the clients made
    cache_hits: int = 0
    upstream_calls: int = 0  # calls forwarded upstream (each may take several attempts)
    faults: int = 0  # upstream attempts answered 429/5xx or timed out
    retries: int = 0  # attempts repeated after a fault
    exhausted: int = 0  # calls that still failed after every retry
    malformed: int = 0  # JSON-mode replies whose content is not JSON
    refused: int = 0  # calls refused because a budget was crossed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    tripped: str | None = None  # the budget that was crossed, with the figures
    roles: dict[str, str] = field(default_factory=dict)  # kind -> model: agent, judge, reflection
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> calls, seconds, tokens, usd

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens, "usd": round(self.usd, 8)}


MISS_LOG_ENV = "PROMPTGATE_GATEWAY_MISS_LOG"  # a file: each request sent upstream, as a JSON line with its stage and key


# Ids minted afresh each run (trace, span and LangChain run ids): GEPA's reflection prompt
# quotes the traces with them, so a rerun's request differs only there.
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def cache_key(route: str, body: dict[str, Any]) -> str:
    """The request minus what does not change the reply: fields like ``user``, and UUIDs,
    which are masked. ``seed`` stays in: compare's repeat k and any sampled exploration send
    their own seed, so repeats never collapse. Upstream gets the request unchanged."""
    kept = {k: v for k, v in body.items() if k not in CACHE_IGNORED_FIELDS}
    text = RUN_ID.sub("<id>", json.dumps([route, kept], sort_keys=True))
    return hashlib.sha256(text.encode()).hexdigest()


def kind_of(route: str, body: dict[str, Any], roles: dict[str, str]) -> str:
    """What a call is for: the agent's calls bind its tools; reflection (GEPA, MemAlign's
    distillation) and judge calls are told apart by their model. A judge that uses the
    reflection model is counted as judge."""
    if route.endswith("embeddings"):
        return "embeddings"
    if body.get("tools"):
        return "agent"
    model = str(body.get("model", ""))
    if model == roles.get("reflection") and model != roles.get("judge"):
        return "reflection"
    if model == roles.get("agent") and model != roles.get("judge"):
        return "agent"
    return "judge"


def is_malformed(body: dict[str, Any], reply: dict[str, Any]) -> bool:
    """A reply to a JSON-mode request whose content does not parse (a broken judge reply)."""
    if not body.get("response_format") or body["response_format"].get("type") == "text":
        return False
    try:
        content = reply["choices"][0]["message"].get("content")
        json.loads(content or "")
        return False
    except (KeyError, IndexError, TypeError, ValueError):
        return True


class CountingRetry:
    """Builds urllib3 ``Retry`` objects that count every faulty attempt of one call."""

    @staticmethod
    def make(settings: GatewaySettings, counter: list[int]) -> Any:
        from urllib3.util.retry import Retry

        class _Counting(Retry):
            def increment(self, *args: Any, **kwargs: Any) -> Any:
                counter[0] += 1
                return super().increment(*args, **kwargs)

        return _Counting(total=settings.max_retries, connect=settings.max_retries, read=settings.max_retries,
                         status=settings.max_retries, backoff_factor=settings.backoff_s,
                         status_forcelist=FAULT_STATUSES, allowed_methods=None, raise_on_status=False,
                         respect_retry_after_header=True)


class Gateway:
    def __init__(self, settings: GatewaySettings, store: Store | None = None) -> None:
        import urllib3

        self.settings = settings
        self.store = store if store is not None else open_store(settings.cache_uri)
        self.pool = urllib3.PoolManager(maxsize=32, block=False)
        self.sessions: dict[str, Spend] = {}
        self.lock = threading.Lock()

    # -------------------------------------------------------------- sessions and budgets
    def session(self, sid: str) -> Spend:
        with self.lock:
            return self.sessions.setdefault(sid, Spend(pipeline="?", stage=sid))

    def open_session(self, sid: str, spec: dict[str, Any]) -> Spend:
        cache = spec.get("cache", "readwrite")
        if cache not in MODES:
            raise ValueError(f"cache must be one of {', '.join(MODES)}, not {cache!r}")
        spend = Spend(pipeline=str(spec.get("pipeline", "")), stage=str(spec.get("stage", "")), cache=cache,
                      limits=dict(spec.get("limits") or {}), prices=dict(spec.get("prices") or {}),
                      roles={str(k): str(v) for k, v in (spec.get("roles") or {}).items()})
        with self.lock:
            self.sessions[sid] = spend
        return spend

    def _charge(self, spend: Spend, route: str, body: dict[str, Any], usage: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        p_in, p_out = (spend.prices.get(model) or spend.prices.get("*") or [0.0, 0.0])[:2]
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        usd = (prompt * p_in + completion * p_out) / 1e6
        with self.lock:
            spend.prompt_tokens += prompt
            spend.completion_tokens += completion
            spend.usd += usd
            kind = spend.by_kind.setdefault(kind_of(route, body, spend.roles), {})
            kind["tokens"] = kind.get("tokens", 0) + prompt + completion
            kind["usd"] = round(kind.get("usd", 0.0) + usd, 8)
            for unit, used in (("tokens", spend.tokens), ("usd", spend.usd)):
                limit = spend.limits.get(unit)
                if limit and spend.tripped is None and used > float(limit[0]):
                    shown = f"{used:.4f}" if unit == "usd" else str(used)
                    spend.tripped = f"{limit[1]} ({float(limit[0]):g} {unit}) crossed: stage {spend.stage} used {shown} {unit}"

    def totals(self) -> dict[str, Any]:
        keys = ("requests", "cache_hits", "upstream_calls", "faults", "retries", "exhausted", "malformed", "refused",
                "prompt_tokens", "completion_tokens", "usd")
        with self.lock:
            out = {k: sum(getattr(s, k) for s in self.sessions.values()) for k in keys}
        out["usd"] = round(out["usd"], 8)
        return out

    # -------------------------------------------------------------- calls
    def forward(self, method: str, route: str, raw: bytes, spend: Spend, stream: bool = False) -> tuple[int, Any]:
        """Send one call upstream with retries; returns (status, body) and counts the faults.
        With ``stream`` a 200's body is the open urllib3 response, read as it arrives."""
        import urllib3

        counter = [0]
        url = self.settings.upstream.rstrip("/") + "/" + route
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.settings.api_key or 'none'}"}
        if method == "POST":  # LLM calls; the /models reachability check is not one
            with self.lock:
                spend.upstream_calls += 1
        try:
            resp = self.pool.request(method, url, body=raw if method == "POST" else None, headers=headers,
                                     retries=CountingRetry.make(self.settings, counter), preload_content=not stream,
                                     timeout=urllib3.Timeout(connect=10, read=self.settings.timeout_s))
            status, data = resp.status, resp if stream and resp.status == 200 else resp.data
        except urllib3.exceptions.MaxRetryError as e:
            status = 504 if isinstance(e.reason, urllib3.exceptions.ReadTimeoutError) else 502
            data = error_body(f"upstream {self.settings.upstream} failed after {self.settings.max_retries} retries: "
                              f"{type(e.reason).__name__}", "upstream_error")
        exhausted = status in FAULT_STATUSES  # every attempt failed (urllib3 counts the last one too)
        with self.lock:
            spend.faults += counter[0]
            spend.retries += counter[0] - (1 if exhausted else 0)
            spend.exhausted += 1 if exhausted else 0
        return status, data

    def handle(self, method: str, route: str, raw: bytes, sid: str) -> tuple[int, Any]:
        """Answer one call and count its time under its kind (for a stream: until it starts)."""
        start = time.perf_counter()
        spend = self.session(sid)
        try:
            body = json.loads(raw or b"{}") if method == "POST" else None
        except ValueError:
            body = None
        kind = kind_of(route, body, spend.roles) if isinstance(body, dict) else "other"
        try:
            return self._handle(method, route, raw, spend, body)
        finally:
            with self.lock:
                entry = spend.by_kind.setdefault(kind, {})
                entry["calls"] = entry.get("calls", 0) + 1
                entry["seconds"] = round(entry.get("seconds", 0.0) + time.perf_counter() - start, 6)

    def _handle(self, method: str, route: str, raw: bytes, spend: Spend, body: Any) -> tuple[int, Any]:
        """``body`` is the request parsed once by ``handle`` (None when it is not JSON)."""
        with self.lock:
            spend.requests += 1
            refused = spend.tripped
            if refused:
                spend.refused += 1
        if refused:
            return 402, error_body(f"promptgate budget: {refused}", "budget_exceeded")
        if method != "POST":
            return self.forward(method, route, raw, spend)
        if not isinstance(body, dict):
            return 400, error_body("request body is not a JSON object", "invalid_request_error")
        if route == "embeddings" and isinstance(body.get("input"), list):
            return self.handle_embeddings(route, body, spend)
        key = cache_key(route, body)
        if spend.cache in ("read", "readwrite"):
            hit = self.store.get(key)
            if hit is not None:
                with self.lock:
                    spend.cache_hits += 1
                return 200, hit
        log_miss(spend, key, body)
        if body.get("stream"):
            return self.stream(route, raw, body, key, spend)
        status, data = self.forward(method, route, raw, spend)
        if status != 200:
            return status, data
        try:
            reply = json.loads(data)
        except ValueError:
            with self.lock:
                spend.malformed += 1
            return 502, error_body("upstream reply is not JSON", "upstream_error")
        self._charge(spend, route, body, reply.get("usage") or {})
        if is_malformed(body, reply):
            with self.lock:
                spend.malformed += 1
            return 200, data  # passed on as it came, never cached: the caller records an error
        if spend.cache == "readwrite":
            self.store.put(key, data)
        return 200, data


    def stream(self, route: str, raw: bytes, body: dict[str, Any], key: str, spend: Spend) -> tuple[int, Any]:
        """A streamed call: chunks go to the client as upstream sends them. Usage is charged from
        the chunk that carries it; the whole reply is cached once upstream ends it with [DONE]."""
        status, resp = self.forward("POST", route, raw, spend, stream=True)
        if status != 200:
            return status, resp

        def settle(seen: bytes) -> None:
            events = [line[5:].strip() for line in seen.decode("utf-8", "replace").splitlines()
                      if line.startswith("data:")]
            for event in events:
                try:
                    usage = json.loads(event).get("usage")
                except ValueError:
                    continue
                if usage:
                    self._charge(spend, route, body, usage)
            if events and events[-1] == "[DONE]" and spend.cache == "readwrite":
                self.store.put(key, seen)

        def chunks() -> Iterator[bytes]:
            # Charged and cached before the client sees [DONE]: a client that sends its next
            # request the moment the stream ends must find this reply in the cache.
            seen, settled = bytearray(), False
            try:
                for chunk in resp.stream(65536):
                    seen += chunk
                    if not settled and bytes(seen[-64:]).rstrip().endswith(b"data: [DONE]"):  # the tail only
                        settle(bytes(seen))
                        settled = True
                    yield chunk
            finally:
                resp.release_conn()
                if not settled:  # upstream broke off: charge what it reported, cache nothing
                    settle(bytes(seen))

        return 200, chunks()

    def handle_embeddings(self, route: str, body: dict[str, Any], spend: Spend) -> tuple[int, bytes]:
        """Embeddings are cached per input text, not per request: MemAlign's batches depend on
        thread timing, so the same texts arrive grouped differently from run to run. Only the
        texts not yet cached go upstream; the reply is assembled in the request's order."""
        texts = body["input"]
        keys = [cache_key(route, {**body, "input": t}) for t in texts]
        found: dict[int, Any] = {}
        if spend.cache in ("read", "readwrite"):
            for i, key in enumerate(keys):
                hit = self.store.get(key)
                if hit is not None:
                    found[i] = json.loads(hit)
        missing = [i for i in range(len(texts)) if i not in found]
        usage: dict[str, Any] = {"prompt_tokens": 0, "total_tokens": 0}
        model = str(body.get("model", ""))
        if missing:
            sent = {**body, "input": [texts[i] for i in missing]}
            log_miss(spend, cache_key(route, sent), sent)
            status, data = self.forward("POST", route, json.dumps(sent).encode(), spend)
            if status != 200:
                return status, data
            try:
                reply = json.loads(data)
                items = sorted(reply["data"], key=lambda d: d["index"])
            except (ValueError, KeyError, TypeError):
                with self.lock:
                    spend.malformed += 1
                return 502, error_body("upstream embeddings reply is malformed", "upstream_error")
            if len(items) != len(missing):
                return 502, error_body(f"upstream returned {len(items)} embeddings for {len(missing)} inputs",
                                       "upstream_error")
            usage = reply.get("usage") or usage
            model = reply.get("model", model)
            self._charge(spend, route, body, usage)
            for i, item in zip(missing, items):
                found[i] = item
                if spend.cache == "readwrite":
                    self.store.put(keys[i], json.dumps(item).encode())
        if not missing:  # a request counts as a hit only when no text of it went upstream
            with self.lock:
                spend.cache_hits += 1
        data_out = [{**found[i], "index": i} for i in range(len(texts))]
        return 200, json.dumps({"object": "list", "data": data_out, "model": model, "usage": usage}).encode()


def log_miss(spend: Spend, key: str, body: dict[str, Any]) -> None:
    """Diagnosis: each request sent upstream, so two runs' misses can be compared."""
    if os.environ.get(MISS_LOG_ENV):
        with open(os.environ[MISS_LOG_ENV], "a") as f:
            f.write(json.dumps({"stage": spend.stage, "key": key, "body": body}) + "\n")


def wants_stream(raw: bytes) -> bool:
    """Whether a request body asks for a streamed reply (a cached one is replayed as a stream)."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("stream"))


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode()


def make_app(gateway: Gateway) -> Any:
    """The gateway's routes as a Starlette app."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def reply(status: int, data: Any, streamed: bool) -> Response:
        if isinstance(data, bytes | bytearray):
            media = "text/event-stream" if streamed and status == 200 else "application/json"
            return Response(bytes(data), status_code=status, media_type=media)
        return StreamingResponse(data, status_code=status, media_type="text/event-stream")  # a sync iterator

    async def llm_call(request: Request) -> Response:
        sid = request.path_params.get("sid", "direct")
        raw = await request.body() if request.method == "POST" else b""
        status, data = await run_in_threadpool(gateway.handle, request.method, request.path_params["route"], raw, sid)
        return reply(status, data, wants_stream(raw))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        with gateway.lock:
            sessions = {k: v.view() for k, v in gateway.sessions.items()}
        return JSONResponse({"totals": gateway.totals(), "sessions": sessions})

    async def session(request: Request) -> Response:
        sid = request.path_params["sid"]
        if request.method == "POST":
            try:
                spec = json.loads(await request.body() or b"{}")
                return JSONResponse(gateway.open_session(sid, spec).view())
            except ValueError as e:
                return JSONResponse({"error": {"message": str(e)}}, status_code=400)
        spend = gateway.sessions.get(sid)
        if spend is None:
            return JSONResponse({"error": {"message": f"no session {sid}"}}, status_code=404)
        return JSONResponse(spend.view())

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"message": f"no route {request.url.path}"}}, status_code=404)

    return Starlette(routes=[
        Route("/", health), Route("/health", health),
        Route("/gateway/stats", stats),
        Route("/gateway/sessions/{sid}", session, methods=["GET", "POST"]),
        Route("/s/{sid}/v1/{route:path}", llm_call, methods=["GET", "POST"]),
        Route("/v1/{route:path}", llm_call, methods=["GET", "POST"]),
    ], exception_handlers={404: not_found})


def make_server(settings: GatewaySettings, host: str = "127.0.0.1", port: int = 0) -> AsgiServer:
    gateway = Gateway(settings)
    server = AsgiServer(make_app(gateway), host, port)
    server.gateway = gateway  # type: ignore[attr-defined]
    return server
