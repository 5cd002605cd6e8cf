"""promptgate's LLM gateway: the one OpenAI-compatible front for every LLM call of every stage.

Each stage opens a *session* (``POST /gateway/sessions/<id>`` with its pipeline, stage, cache
mode, budget limits, prices, per-kind ``max_tokens`` and the endpoint's ``capabilities``) and
sends its clients to ``/s/<id>/v1``. Per request the gateway adapts the call to the endpoint
(``adapt``), answers from the shared cache when it may, otherwise forwards upstream under one
bounded retry policy (``retry_verdict``), counts tokens, dollars, faults and non-200 replies
per session, and refuses further calls with HTTP 402 once a budget is crossed.
``GET /gateway/sessions/<id>`` returns a session's spend; ``GET /gateway/stats`` the totals;
``GET /health`` is what the Deployment probes. Streamed calls (``"stream": true``) pass
through chunk by chunk as they arrive and are cached whole once complete. It is a Starlette
app on uvicorn; calls run in its thread pool, since the cache stores and urllib3 block. Why
not the LiteLLM proxy: README, "LLM gateway".

Retries live here only: 429, 502, 503, 504, timeouts and broken connections are retried up to
``max_retries`` times with backoff (``Retry-After`` honoured up to ``retry_after_max_s``); a 500
is retried only while its body changes (the same body twice is a request the server will never
take); every other 4xx is final. ``GatewaySettings.worst_case_s`` is the longest one call can
wait here; clients set their timeout above it (``jobs.llm.endpoints.call_timeout_s``).

``capabilities.max_concurrency``: sessions share one gateway, so it keeps one limit, the
smallest positive one any session asked for; it holds while the gateway runs. A call waiting
for a slot is not bounded by ``worst_case_s``; a streamed call holds its slot until its
headers arrive.

The upstream API key lives only in this process (read from the environment at start); clients
send a placeholder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.core.contract import AGENT_PATH
from jobs.core.servers import AsgiServer
from jobs.gateway.cache import MODES, Store, open_store

FAULT_STATUSES = (429, 500, 502, 503, 504)  # counted as faults
RETRY_STATUSES = (429, 502, 503, 504)  # may pass on a later try; a 500 only when its body changed
CACHE_IGNORED_FIELDS = ("stream_options", "user", "metadata")  # do not change the reply
REMEMBERED_500S = 4096  # requests whose last 500 body is kept, to tell a permanent 500 from a passing one
CAPABILITIES = {  # what an endpoint may do differently from OpenAI's API; the first value is the default
    "structured_output": ("json_schema", "json_object", "json_object_schema", "none"),
    "tool_choice": ("as_sent", "auto"),
    "tool_call_content": ("as_sent", "empty"),
    "embeddings": ("per_text", "per_token"),
}
DEFAULT_CAPABILITIES = {**{k: v[0] for k, v in CAPABILITIES.items()}, "max_concurrency": 0}
MAX_TOKENS_KINDS = ("agent", "judge", "reflection")
JSON_NOTE = "Reply with one JSON object matching this JSON schema: "  # the schema follows


@dataclass
class GatewaySettings:
    upstream: str  # the upstream /v1 URL
    api_key: str = ""  # sent upstream as the bearer token; never logged or returned
    cache_uri: str = ".promptgate/llm-cache"  # folder, s3://bucket/prefix or redis://host:port/db
    max_retries: int = 4  # retries per call of what may pass on a later try (see the module's doc)
    backoff_s: float = 0.2  # the n-th retry waits backoff_s * 2**(n-1)
    timeout_s: float = 60.0  # read timeout of one upstream attempt
    retry_after_max_s: float = 10.0  # the longest Retry-After wait honoured
    connect_timeout_s: float = 10.0  # connect timeout of one upstream attempt

    @property
    def worst_case_s(self) -> float:
        """The longest one call can wait here: every attempt timing out, every wait at its longest."""
        waits = sum(max(self.backoff_s * 2 ** (n - 1), self.retry_after_max_s) for n in range(1, self.max_retries + 1))
        return round((self.max_retries + 1) * (self.connect_timeout_s + self.timeout_s) + waits, 3)


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
    permanent: int = 0  # calls given up without a (further) retry: a 4xx other than 429, a repeated 500
    malformed: int = 0  # JSON-mode replies whose content is not JSON
    refused: int = 0  # calls refused because a budget was crossed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    tripped: str | None = None  # the budget that was crossed, with the figures
    roles: dict[str, str] = field(default_factory=dict)  # kind -> model: agent, judge, reflection
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> calls, seconds, tokens, usd
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> HTTP status -> non-200 replies to the client
    first_error: dict[str, str] = field(default_factory=dict)  # kind -> the first of them, in one line
    max_tokens: dict[str, int] = field(default_factory=dict)  # kind -> max_tokens set on chat calls that give none
    capabilities: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CAPABILITIES))  # what the endpoint does differently
    worst_case_s: float = 0.0  # the longest one call can wait at the gateway: clients' timeouts go above it

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens, "usd": round(self.usd, 8)}


MISS_LOG_ENV = "PROMPTGATE_GATEWAY_MISS_LOG"  # a file: each request sent upstream (as sent), as a JSON line with its stage and key


# Ids minted afresh each run (trace, span and LangChain run ids): GEPA's reflection prompt
# quotes the traces with them, so a rerun's request differs only there.
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def cache_key(route: str, body: dict[str, Any], answerer: str = "") -> str:
    """Who answers (``Gateway.answerer``) and the request as sent upstream (with the max_tokens
    and capability rewrites applied), minus what does not change the reply: fields like
    ``user``, and UUIDs, which are masked. ``seed`` stays in: compare's repeat k and any sampled
    exploration send their own seed, so repeats never collapse."""
    kept = {k: v for k, v in body.items() if k not in CACHE_IGNORED_FIELDS}
    parts = [answerer, route, kept] if answerer else [route, kept]
    text = RUN_ID.sub("<id>", json.dumps(parts, sort_keys=True))
    return hashlib.sha256(text.encode()).hexdigest()


# How GEPA's and MemAlign's reflection prompts begin (gepa 0.1.4, mlflow 3.18.0): with one model in
# every role (a small local server), the prompt is all that tells reflection from judging.
REFLECTION_MARKERS = ("I provided an assistant with the following instructions", "distill a set of guidelines")


def reflects(body: dict[str, Any]) -> bool:
    text = json.dumps(body.get("messages") or [])
    return any(marker in text for marker in REFLECTION_MARKERS)


def kind_of(route: str, body: dict[str, Any], roles: dict[str, str]) -> str:
    """What a call that did not come by the agent's own path is for: agent, reflection (GEPA,
    MemAlign's distillation) and judge calls are told apart by their model, or, when the judge
    uses the reflection model too, by the reflection prompt's opening. Tools say nothing: a
    judge that reads the trace binds MLflow's trace tools as an agent binds its own."""
    if route.endswith("embeddings"):
        return "embeddings"
    model = str(body.get("model", ""))
    if model == roles.get("reflection") and (model != roles.get("judge") or reflects(body)):
        return "reflection"
    if model == roles.get("agent") and model != roles.get("judge"):
        return "agent"
    return "judge"


def is_malformed(body: dict[str, Any], reply: dict[str, Any]) -> bool:
    """A reply to a JSON-mode request whose content does not parse (a broken judge reply). A
    tool call is a valid reply: MLflow's fallback judge sends tools with response_format."""
    if not body.get("response_format") or body["response_format"].get("type") == "text":
        return False
    try:
        choice = reply["choices"][0]
        message = choice["message"]
        if message.get("tool_calls") or (choice.get("finish_reason") == "tool_calls" and not message.get("content")):
            return False
        json.loads(message.get("content") or "")
        return False
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return True


GAVE_UP = 424  # what a client gets for a call the gateway retried in vain, or knows will never pass


def gave_up(status: int, data: Any) -> tuple[int, Any]:
    """The reply a client gets. A 429 or 5xx here is final: the gateway has retried it (or knows
    it permanent), and every client library (openai, LiteLLM, MLflow's judge adapter) would
    retry a 429 or 5xx again on top, each try another round of the gateway's. So it goes out as
    424, which none retries, with the upstream's status and message; other replies pass as
    they came."""
    if status != 429 and status < 500:
        return status, data
    return GAVE_UP, error_body(f"upstream answered {error_line(status, data)}; the gateway retried what could pass "
                               "and gave up, so clients must not retry", "upstream_gave_up")


def retry_verdict(status: int, data: Any, previous_500: bytes | None) -> str:
    """What to do after one attempt: "done" (a reply to pass on), "retry" (it may pass on a later
    try) or "permanent" (it never will: a 4xx other than 429, a 500 with the body it had before,
    any other 5xx)."""
    if status < 400:
        return "done"
    if status in RETRY_STATUSES or (status == 500 and data != previous_500):
        return "retry"
    return "permanent"


def capability_problem(where: str, key: str, value: Any) -> str | None:
    """What is wrong with one capability setting, or None."""
    if key == "max_concurrency":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{where}.max_concurrency={value} must be a whole number of requests, 0 for no limit"
        return None
    if key not in CAPABILITIES:
        return f"{where}.{key} is not a capability; they are {', '.join(DEFAULT_CAPABILITIES)}"
    if value not in CAPABILITIES[key]:
        return f"{where}.{key}={value}: use one of {' | '.join(CAPABILITIES[key])}"
    return None


def max_tokens_problem(where: str, key: str, value: Any) -> str | None:
    """What is wrong with one max_tokens setting, or None."""
    if key not in MAX_TOKENS_KINDS:
        return f"{where}.{key}: set max_tokens for {', '.join(MAX_TOKENS_KINDS)}"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return f"{where}.{key}={value} must be a positive whole number of tokens"
    return None


def checked(spec: dict[str, Any], name: str, problem: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """A session spec's ``capabilities`` or ``max_tokens`` over their defaults; ValueError when wrong."""
    given = spec.get(name) or {}
    if not isinstance(given, dict):
        raise ValueError(f"{name} must be a mapping, not {given!r}")
    for key, value in given.items():
        if (why := problem(name, str(key), value)) is not None:
            raise ValueError(why)
    return {**defaults, **{str(k): v for k, v in given.items()}}


def with_note(messages: list[Any], note: str) -> list[Any]:
    """The messages with ``note`` at the end of the last system message (or in a new one first)."""
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        m = out[i]
        if isinstance(m, dict) and m.get("role") == "system":
            content = m.get("content")
            if isinstance(content, list):
                out[i] = {**m, "content": [*content, {"type": "text", "text": note}]}
            else:
                out[i] = {**m, "content": f"{content or ''}\n\n{note}".lstrip()}
            return out
    return [{"role": "system", "content": note}, *out]


def structured(body: dict[str, Any], mode: str) -> dict[str, Any]:
    """``response_format`` for an endpoint with ``structured_output`` json_object (a json_schema
    request becomes json_object), json_object_schema (json_object carrying the schema, which
    llama.cpp's server enforces) or none (dropped); each way the schema goes into the prompt too."""
    fmt = body.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if mode == "json_schema" or kind in (None, "text") or (mode.startswith("json_object") and kind == "json_object"):
        return body
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema", spec) if kind == "json_schema" else None
    note = JSON_NOTE + json.dumps(schema, sort_keys=True) if schema else "Reply with one JSON object."
    out = {**body, "messages": with_note(body.get("messages") or [], note)}
    if mode == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif mode == "json_object_schema":
        out["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    else:
        out.pop("response_format")
    return out


def with_content(messages: list[Any]) -> list[Any]:
    """Assistant tool-call turns with ``content: ""`` where the client sent null or none: the
    openai SDK, LangChain and MLflow's judge send them so, and llama.cpp's server answers 500."""
    return [{**m, "content": ""} if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls")
            and m.get("content") is None else m for m in messages]


def adapt(route: str, body: dict[str, Any], kind: str, spend: Spend) -> dict[str, Any]:
    """A chat call as the upstream should get it: the session's max_tokens for its kind when it
    sets neither max_tokens nor max_completion_tokens, and the capability rewrites. The very same
    object when nothing changed, so it goes upstream byte for byte as the client sent it."""
    if not route.endswith("chat/completions"):
        return body
    out = dict(body)
    cap = spend.max_tokens.get(kind)
    if cap and out.get("max_tokens") is None and out.get("max_completion_tokens") is None:
        out["max_tokens"] = int(cap)
    if spend.capabilities.get("tool_choice") == "auto" and out.get("tools") and out.get("tool_choice") is None:
        out["tool_choice"] = "auto"  # llama.cpp's server ignores tools without it
    if spend.capabilities.get("tool_call_content") == "empty" and isinstance(out.get("messages"), list):
        out["messages"] = with_content(out["messages"])
    out = structured(out, str(spend.capabilities.get("structured_output", "json_schema")))
    return body if out == body else out


def pooled(vectors: list[list[float]]) -> list[float]:
    """Per-token vectors mean-pooled into one, L2-normalised."""
    mean = [sum(col) / len(vectors) for col in zip(*vectors)]
    norm = math.sqrt(sum(x * x for x in mean)) or 1.0
    return [x / norm for x in mean]


def error_line(status: int, data: Any) -> str:
    """One line for a non-200 reply: ``HTTP 400 context_length_exceeded: <message>``, the error's
    code (or type) and message taken from an OpenAI-style JSON body when it has one."""
    text = bytes(data).decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else str(data)
    what, message = "", text
    try:
        parsed = json.loads(text)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(err, dict):
            what = str(err.get("code") or err.get("type") or "")
            message = err.get("message") or err.get("detail") or text
        elif isinstance(err, str):
            message = err
    except ValueError:
        pass
    message = " ".join(str(message).split())[:200]
    return f"HTTP {status} {what}".rstrip() + f": {message}"


class Slots:
    """At most ``limit`` upstream requests at once (0: no limit). The limit only narrows, so a
    session asking for less than another gets it while calls are in flight."""

    def __init__(self) -> None:
        self.limit = 0
        self.busy = 0
        self.cond = threading.Condition()

    def narrow(self, limit: int) -> None:
        with self.cond:
            if limit > 0 and (self.limit == 0 or limit < self.limit):
                self.limit = limit

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.cond:
            while self.limit and self.busy >= self.limit:
                self.cond.wait()
            self.busy += 1
        try:
            yield
        finally:
            with self.cond:
                self.busy -= 1
                self.cond.notify()


class Gateway:
    def __init__(self, settings: GatewaySettings, store: Store | None = None) -> None:
        import urllib3

        self.settings = settings
        self.store = store if store is not None else open_store(settings.cache_uri)
        self.pool = urllib3.PoolManager(maxsize=32, block=False)
        self.sessions: dict[str, Spend] = {}
        self.lock = threading.Lock()
        self.slots = Slots()
        self.identity: str | None = None  # who answers upstream, asked once (see answerer)
        self.identity_lock = threading.Lock()
        self.failed_500: dict[str, bytes] = {}  # cache key -> the body of the last 500 that request got

    # -------------------------------------------------------------- sessions and budgets
    def session(self, sid: str) -> Spend:
        with self.lock:
            return self.sessions.setdefault(sid, Spend(pipeline="?", stage=sid, worst_case_s=self.settings.worst_case_s))

    def open_session(self, sid: str, spec: dict[str, Any]) -> Spend:
        cache = spec.get("cache", "readwrite")
        if cache not in MODES:
            raise ValueError(f"cache must be one of {', '.join(MODES)}, not {cache!r}")
        capabilities = checked(spec, "capabilities", capability_problem, DEFAULT_CAPABILITIES)
        spend = Spend(pipeline=str(spec.get("pipeline", "")), stage=str(spec.get("stage", "")), cache=cache,
                      limits=dict(spec.get("limits") or {}), prices=dict(spec.get("prices") or {}),
                      roles={str(k): str(v) for k, v in (spec.get("roles") or {}).items()},
                      max_tokens=checked(spec, "max_tokens", max_tokens_problem, {}), capabilities=capabilities,
                      worst_case_s=self.settings.worst_case_s)
        self.slots.narrow(int(capabilities["max_concurrency"]))
        with self.lock:
            self.sessions[sid] = spend
        return spend

    def _charge(self, spend: Spend, kind_name: str, body: dict[str, Any], usage: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        p_in, p_out = (spend.prices.get(model) or spend.prices.get("*") or [0.0, 0.0])[:2]
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        usd = (prompt * p_in + completion * p_out) / 1e6
        with self.lock:
            spend.prompt_tokens += prompt
            spend.completion_tokens += completion
            spend.usd += usd
            kind = spend.by_kind.setdefault(kind_name, {})
            kind["tokens"] = kind.get("tokens", 0) + prompt + completion
            kind["usd"] = round(kind.get("usd", 0.0) + usd, 8)
            for unit, used in (("tokens", spend.tokens), ("usd", spend.usd)):
                limit = spend.limits.get(unit)
                if limit and spend.tripped is None and used > float(limit[0]):
                    shown = f"{used:.4f}" if unit == "usd" else str(used)
                    spend.tripped = f"{limit[1]} ({float(limit[0]):g} {unit}) crossed: stage {spend.stage} used {shown} {unit}"

    def totals(self) -> dict[str, Any]:
        keys = ("requests", "cache_hits", "upstream_calls", "faults", "retries", "exhausted", "permanent", "malformed",
                "refused", "prompt_tokens", "completion_tokens", "usd")
        errors: dict[str, dict[str, int]] = {}
        first: dict[str, str] = {}
        with self.lock:
            out: dict[str, Any] = {k: sum(getattr(s, k) for s in self.sessions.values()) for k in keys}
            for s in self.sessions.values():
                for kind, counts in s.errors.items():
                    for status, n in counts.items():
                        errors.setdefault(kind, {})[status] = errors.get(kind, {}).get(status, 0) + n
                for kind, line in s.first_error.items():
                    first.setdefault(kind, line)
        out["usd"] = round(out["usd"], 8)
        return {**out, "errors": errors, "first_error": first}

    # -------------------------------------------------------------- the upstream
    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.settings.api_key or 'none'}"}

    def answerer(self) -> str:
        """Who answers upstream, for the cache key: ``sim:<fingerprint>`` when the upstream's
        /models reply names one (a simulator: its port changes every run, its replies only with
        its settings), else the upstream URL. Asked once; asked again while it cannot be asked."""
        with self.identity_lock:
            if self.identity is None:
                self.identity = self._ask_identity()
            return self.identity or self.settings.upstream.rstrip("/")

    def _ask_identity(self) -> str | None:
        import urllib3

        s = self.settings
        try:
            resp = self.pool.request("GET", s.upstream.rstrip("/") + "/models", headers=self._headers(), retries=False,
                                     timeout=urllib3.Timeout(connect=s.connect_timeout_s, read=min(s.timeout_s, 10.0)))
        except urllib3.exceptions.HTTPError:
            return None
        if resp.status >= 500:
            return None
        try:
            found = json.loads(resp.data).get("fingerprint")
        except (ValueError, AttributeError):
            found = None
        return f"sim:{found}" if isinstance(found, str) and found else s.upstream.rstrip("/")

    def _attempt(self, method: str, url: str, raw: bytes, stream: bool) -> tuple[int, Any, float | None]:
        """One upstream try in a concurrency slot: (status, body, Retry-After seconds). A timeout
        comes back as a 504, a broken connection as a 502. A streamed 200's body is the open response."""
        import urllib3

        s = self.settings
        with self.slots.held():
            try:
                resp = self.pool.request(method, url, body=raw if method == "POST" else None, headers=self._headers(),
                                         retries=False, preload_content=not stream,
                                         timeout=urllib3.Timeout(connect=s.connect_timeout_s, read=s.timeout_s))
                if stream and resp.status == 200:
                    return 200, resp, None
                data = resp.data
            except urllib3.exceptions.HTTPError as e:
                status = 504 if isinstance(e, urllib3.exceptions.ReadTimeoutError) else 502
                return status, error_body(f"upstream {s.upstream} failed: {type(e).__name__}", "upstream_error"), None
        resp.release_conn()
        try:
            retry_after = float(resp.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
        return resp.status, data, retry_after

    def _wait_s(self, n: int, retry_after: float | None) -> float:
        """The wait before the n-th retry: the backoff, or Retry-After when longer (up to its cap)."""
        backoff = self.settings.backoff_s * 2 ** (n - 1)
        return backoff if retry_after is None else max(backoff, min(retry_after, self.settings.retry_after_max_s))

    def _remember_500(self, key: str, data: bytes | None) -> None:
        """Keep the body of the last 500 this request got (None forgets it): kept across calls, so
        a client's own retry of a permanent 500 goes upstream once more, not max_retries more times."""
        if not key:
            return
        with self.lock:
            if data is None:
                self.failed_500.pop(key, None)
                return
            self.failed_500[key] = data
            if len(self.failed_500) > REMEMBERED_500S:
                self.failed_500.pop(next(iter(self.failed_500)))

    def forward(self, method: str, route: str, raw: bytes, spend: Spend, stream: bool = False,
                key: str = "") -> tuple[int, Any]:
        """Send one call upstream under the retry policy (module doc); returns (status, body) and
        counts faults, retries, exhausted and permanent calls. ``key`` names the request, to tell
        a permanent 500 from a passing one."""
        if method == "POST":  # LLM calls; the /models reachability check is not one
            with self.lock:
                spend.upstream_calls += 1
        url = self.settings.upstream.rstrip("/") + "/" + route
        with self.lock:
            previous = self.failed_500.get(key) if key else None
        faults, retry_after = 0, None
        for n in range(self.settings.max_retries + 1):
            if n:
                time.sleep(self._wait_s(n, retry_after))
            status, data, retry_after = self._attempt(method, url, raw, stream)
            faults += status in FAULT_STATUSES
            verdict = retry_verdict(status, data, previous)
            if status == 500:
                previous = data
                self._remember_500(key, data)
            if verdict != "retry":
                break
        if status == 200:
            self._remember_500(key, None)
        with self.lock:
            spend.faults += faults
            spend.retries += n
            spend.exhausted += verdict == "retry"
            spend.permanent += verdict == "permanent"
        return status, data

    # -------------------------------------------------------------- calls
    def handle(self, method: str, route: str, raw: bytes, sid: str, kind: str | None = None) -> tuple[int, Any]:
        """Answer one call and count it under its kind (``kind``: the path said so, as the agent's
        does; else ``kind_of``): its time (for a stream: until it starts) and, when the client
        gets anything but a 200, its status and the first such error."""
        start = time.perf_counter()
        spend = self.session(sid)
        try:
            body = json.loads(raw or b"{}") if method == "POST" else None
        except ValueError:
            body = None
        kind = kind or (kind_of(route, body, spend.roles) if isinstance(body, dict) else "other")
        status, data = 500, error_body("the gateway failed on this call", "gateway_error")  # kept if it raises
        try:
            status, data = self._handle(method, route, raw, spend, body, kind)
        finally:
            self._tally(spend, kind, time.perf_counter() - start, status, data)  # by the upstream's status
        return gave_up(status, data) if method == "POST" else (status, data)

    def _tally(self, spend: Spend, kind: str, seconds: float, status: int, data: Any) -> None:
        with self.lock:
            entry = spend.by_kind.setdefault(kind, {})
            entry["calls"] = entry.get("calls", 0) + 1
            entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 6)
            if status != 200:
                counts = spend.errors.setdefault(kind, {})
                counts[str(status)] = counts.get(str(status), 0) + 1
                if kind not in spend.first_error:
                    spend.first_error[kind] = error_line(status, data)

    def _handle(self, method: str, route: str, raw: bytes, spend: Spend, body: Any, kind: str) -> tuple[int, Any]:
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
        if route == "embeddings" and isinstance(body.get("input"), list | str):
            return self.handle_embeddings(route, body, spend)
        sent = adapt(route, body, kind, spend)
        key = cache_key(route, sent, self.answerer())
        hit = self._cached(spend, key)
        if hit is not None:
            return 200, hit
        log_miss(spend, key, sent)
        raw = raw if sent is body else json.dumps(sent).encode()
        if body.get("stream"):
            return self.stream(route, raw, body, key, spend, kind)
        status, data = self.forward(method, route, raw, spend, key=key)
        if status != 200:
            return status, data
        return self._settle(kind, body, data, key, spend)

    def _cached(self, spend: Spend, key: str) -> bytes | None:
        if spend.cache not in ("read", "readwrite"):
            return None
        hit = self.store.get(key)
        if hit is not None:
            with self.lock:
                spend.cache_hits += 1
        return hit

    def _settle(self, kind: str, body: dict[str, Any], data: bytes, key: str, spend: Spend) -> tuple[int, bytes]:
        """A 200 from upstream: charged, checked (a JSON-mode reply must be JSON or a tool call)
        and cached; ``body`` is the request as the client sent it."""
        try:
            reply = json.loads(data)
        except ValueError:
            with self.lock:
                spend.malformed += 1
            return 502, error_body("upstream reply is not JSON", "upstream_error")
        self._charge(spend, kind, body, reply.get("usage") or {})
        if is_malformed(body, reply):
            with self.lock:
                spend.malformed += 1
            return 200, data  # passed on as it came, never cached: the caller records an error
        if spend.cache == "readwrite":
            self.store.put(key, data)
        return 200, data

    def stream(self, route: str, raw: bytes, body: dict[str, Any], key: str, spend: Spend,
               kind: str) -> tuple[int, Any]:
        """A streamed call: chunks go to the client as upstream sends them. Usage is charged from
        the chunk that carries it; the whole reply is cached once upstream ends it with [DONE]."""
        status, resp = self.forward("POST", route, raw, spend, stream=True, key=key)
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
                    self._charge(spend, kind, body, usage)
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
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        per_token = spend.capabilities.get("embeddings") == "per_token"
        answerer = self.answerer()
        keys = [cache_key(route, {**body, "input": t, **({"pooled": "mean"} if per_token else {})}, answerer)
                for t in texts]
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
            status, data, reply = self._embed_upstream(route, {**body, "input": [texts[i] for i in missing]}, spend,
                                                       per_token)
            if status != 200:
                return status, data
            usage, model = reply.get("usage") or usage, reply.get("model", model)
            for i, item in zip(missing, reply["data"]):
                found[i] = item
                if spend.cache == "readwrite":
                    self.store.put(keys[i], json.dumps(item).encode())
        if not missing:  # a request counts as a hit only when no text of it went upstream
            with self.lock:
                spend.cache_hits += 1
        data_out = [{**found[i], "index": i} for i in range(len(texts))]
        return 200, json.dumps({"object": "list", "data": data_out, "model": model, "usage": usage}).encode()

    def _embed_upstream(self, route: str, sent: dict[str, Any], spend: Spend,
                        per_token: bool) -> tuple[int, bytes, dict[str, Any]]:
        """The texts no cache had, from upstream: (status, error body, the reply with its ``data``
        in input order, per-token vectors pooled into one per text when the endpoint gives them)."""
        key = cache_key(route, sent, self.answerer())
        log_miss(spend, key, sent)
        status, data = self.forward("POST", route, json.dumps(sent).encode(), spend, key=key)
        if status != 200:
            return status, data, {}
        try:
            reply = json.loads(data)
            items = sorted(reply["data"], key=lambda d: d["index"])
            nested = [per_token_form(d["embedding"]) for d in items]
        except (ValueError, KeyError, TypeError):
            with self.lock:
                spend.malformed += 1
            return 502, error_body("upstream embeddings reply is malformed", "upstream_error"), {}
        if any(nested) and not per_token:
            with self.lock:
                spend.malformed += 1
            return 502, error_body("upstream returned one vector per token for each input; set "
                                   "model.capabilities.embeddings=per_token", "upstream_error"), {}
        if len(items) != len(sent["input"]):
            return 502, error_body(f"upstream returned {len(items)} embeddings for {len(sent['input'])} inputs",
                                   "upstream_error"), {}
        self._charge(spend, "embeddings", sent, reply.get("usage") or {})
        items = [{**d, "embedding": pooled(d["embedding"])} if flag else d for d, flag in zip(items, nested)]
        return 200, b"", {**reply, "data": items}


def per_token_form(vector: Any) -> bool:
    """Whether an embedding is one vector per token (a list of lists) rather than one per text."""
    return isinstance(vector, list) and bool(vector) and isinstance(vector[0], list)


def log_miss(spend: Spend, key: str, body: dict[str, Any]) -> None:
    """Diagnosis: each request sent upstream (as sent, after ``adapt``), so two runs' misses can be compared."""
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
        kind = "agent" if request.url.path.startswith(f"/s/{sid}{AGENT_PATH}/") else None  # the agent's own path
        status, data = await run_in_threadpool(gateway.handle, request.method, request.path_params["route"], raw, sid,
                                               kind)
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
        Route("/s/{sid}" + AGENT_PATH + "/v1/{route:path}", llm_call, methods=["GET", "POST"]),
        Route("/v1/{route:path}", llm_call, methods=["GET", "POST"]),
    ], exception_handlers={404: not_found})


def make_server(settings: GatewaySettings, host: str = "127.0.0.1", port: int = 0) -> AsgiServer:
    gateway = Gateway(settings)
    server = AsgiServer(make_app(gateway), host, port)
    server.gateway = gateway  # type: ignore[attr-defined]
    return server
