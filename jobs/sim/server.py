"""The OpenAI-compatible HTTP front of the simulator (stdlib only, so it starts in ~0.1 s).

Endpoints: ``POST /v1/chat/completions`` (``"stream": true`` answers in server-sent
events, one chunk per few words; ``max_tokens`` cuts the reply, ``finish_reason`` "length"),
``POST /v1/embeddings``, ``GET /v1/models`` (with a ``fingerprint`` of what the replies depend
on), ``GET /sim/stats`` (calls by role, faults injected, the most requests served at once) and
``POST /sim/reset``.
Fault knobs (fractions of requests, drawn deterministically from the seed, the request body
and how many times that body came before, so thread scheduling does not change them): 429s,
5xx errors, timeouts (the reply is held past ``timeout_s``), malformed JSON in judge replies,
permanent 500s (drawn from the body alone: the same request fails the same way every time),
and a fixed latency. Four knobs imitate llama-cpp-python's server: ``reject_json_schema``,
``tools_need_choice``, ``tool_turns_need_content`` and ``per_token_embeddings``; ``fail`` makes
every call of some roles fail.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from http.server import ThreadingHTTPServer
from typing import Any

from jobs.core.errors import UserError
from jobs.core.servers import QuietJSONHandler
from jobs.sim import roles
from jobs.sim.profile import Profile, load

MODELS = ("sim-agent", "sim-judge", "sim-reflect", "sim-embed")


@dataclass
class SimSettings:
    seed: int = 7  # every draw derives from it
    drop_rate: float = 0.1  # chance that an asked-for behaviour is still left out
    latency_ms: int = 0  # added to every reply
    rate_429: float = 0.0  # share of requests answered 429
    rate_5xx: float = 0.0  # share answered 503
    rate_timeout: float = 0.0  # share held for timeout_s before a 504
    rate_malformed: float = 0.0  # share of judge replies with broken JSON
    timeout_s: float = 30.0  # how long a "timeout" fault holds the request
    profile: str = ""  # the domain's simulator profile (YAML); empty: a judge that checks nothing
    rate_500_permanent: float = 0.0  # share of requests answered 500 with the same body every time
    reject_json_schema: bool = False  # 400 on response_format json_schema (llama.cpp's server takes json_object)
    tools_need_choice: bool = False  # ignore tools unless tool_choice is given (as llama.cpp's server)
    tool_turns_need_content: bool = False  # 500 on an assistant tool-call turn without content (as llama.cpp's)
    per_token_embeddings: bool = False  # one vector per word of each input (as llama.cpp's server)
    fail: str = ""  # every call of these roles fails: "judge=400,agent=500,gepa=400:context_length_exceeded"


def failing_roles(spec: str) -> dict[str, tuple[int, str]]:
    """``fail`` as role -> (HTTP status, error code): a ``role=status[:code]`` list."""
    out: dict[str, tuple[int, str]] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        role, _, answer = item.partition("=")
        status, _, code = answer.partition(":")
        if role not in roles.ROLES or not status.isdigit() or not 400 <= int(status) < 600:
            raise ValueError(f"sim fail={spec!r}: give role=status[:code] with a role of {', '.join(roles.ROLES)} "
                             "and a 4xx or 5xx status")
        out[role] = (int(status), code or "simulated_failure")
    return out


UNSEEN = ("latency_ms", "timeout_s")  # change when a reply comes, not what it says: left out of the fingerprint
FAILURES = {  # fault -> HTTP status, message, error type
    "400": (400, "response_format type json_schema is not supported; use json_object", "invalid_request_error"),
    "429": (429, "simulated rate limit", "rate_limit_error"),
    "500": (500, "simulated validation error: request {digest} is never accepted", "server_error"),
    "5xx": (503, "simulated upstream error", "server_error"),
    "timeout": (504, "simulated timeout", "timeout"),
}


def fingerprint(settings: SimSettings) -> str:
    """What the replies depend on, hashed: the settings (but UNSEEN) with the profile's text in
    place of its path. The gateway keys its cache by it, so a cache outlives the port and a
    simulator with another profile or seed gets replies of its own."""
    from jobs.core.files import read_text

    kept: dict[str, Any] = {f.name: type(f.default)(getattr(settings, f.name)) for f in fields(settings)
                            if f.name not in (*UNSEEN, "profile")}
    kept["profile"] = read_text(settings.profile, "simulator profile") if settings.profile else ""
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def cut(text: str, max_tokens: int) -> str:
    """``text`` up to its ``max_tokens``-th token, as count_tokens counts them."""
    found = list(re.finditer(r"\w+|[^\w\s]", text))
    return text if len(found) <= max_tokens else text[: found[max_tokens - 1].end()]


@dataclass
class SimState:
    settings: SimSettings
    profile: Profile = field(default_factory=lambda: Profile("none"))
    calls: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    seen: Counter = field(default_factory=Counter)  # attempts per request body
    counter: int = 0
    fingerprint: str = ""  # of the settings and the profile's text (see fingerprint)
    busy: int = 0  # requests being served now
    busiest: int = 0  # the most served at once
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_index(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def attempt(self, body_key: str) -> int:
        """How many times this request body came before (a retry is attempt 1, 2, ...)."""
        with self.lock:
            self.seen[body_key] += 1
            return self.seen[body_key] - 1


def count_tokens(text: str) -> int:
    return max(1, len(re.findall(r"\w+|[^\w\s]", text or "")))


def embed(text: str, dims: int = 256) -> list[float]:
    """A hashed bag of words, L2-normalised: similar texts get similar vectors."""
    vec = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", (text or "").lower()):
        h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "big")
        vec[h % dims] += 1.0 if (h >> 31) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class Handler(QuietJSONHandler):
    server_version = "promptgate-sim/1"

    @property
    def state(self) -> SimState:
        return self.server.state  # type: ignore[attr-defined]

    def _send(self, status: int, body: Any, raw: bool = False) -> None:
        self._send_bytes(status, body.encode() if raw else json.dumps(body).encode())

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "sim"} for m in MODELS],
                             "fingerprint": self.state.fingerprint})
        elif path == "/sim/stats":
            s = self.state
            self._send(200, {"calls": dict(s.calls), "faults": dict(s.faults), "tokens": dict(s.tokens), "requests": s.counter,
                             "profile": s.profile.name, "max_concurrency_seen": s.busiest})
        elif path in ("", "/health"):
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        if path == "/sim/reset":
            s = self.state
            with s.lock:
                s.calls.clear(), s.faults.clear(), s.tokens.clear(), s.seen.clear()
                s.counter = s.busiest = 0
            self._send(200, {"status": "reset"})
            return
        answer = self._chat if path.endswith("/chat/completions") else \
            self._embeddings if path.endswith("/embeddings") else None
        if answer is None:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        s = self.state
        with s.lock:
            s.busy += 1
            s.busiest = max(s.busiest, s.busy)
        try:
            answer(req)
        finally:
            with s.lock:
                s.busy -= 1

    def _fault(self, role: str, req: dict[str, Any]) -> str | None:
        st = self.state.settings
        body_key = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        self.state.next_index()
        draw = roles.unit_draw(st.seed, "fault", body_key, self.state.attempt(body_key))
        if st.reject_json_schema and (req.get("response_format") or {}).get("type") == "json_schema":
            return "400"
        if roles.unit_draw(st.seed, "permanent", body_key) < st.rate_500_permanent:
            return "500"
        edges = (("429", st.rate_429), ("5xx", st.rate_5xx), ("timeout", st.rate_timeout))
        acc = 0.0
        for name, rate in edges:
            acc += rate
            if draw < acc:
                return name
        if role == "judge" and draw < acc + st.rate_malformed:
            return "malformed"
        return None

    def _chat(self, req: dict[str, Any]) -> None:
        s = self.state
        if s.settings.tool_turns_need_content and any(
                m.get("role") == "assistant" and m.get("tool_calls") and m.get("content") is None
                for m in req.get("messages") or [] if isinstance(m, dict)):
            self._send(500, {"error": {"message": "1 validation error: messages.assistant.content: Input should be "
                                                  "a valid string", "type": "internal_server_error"}})
            return
        if s.settings.tools_need_choice and req.get("tools") and not req.get("tool_choice"):
            req = {k: v for k, v in req.items() if k != "tools"}  # as llama.cpp's server: no tool_choice, no tools
        role = roles.role_of(req)
        with s.lock:
            s.calls[role] += 1
        if s.settings.latency_ms:
            time.sleep(s.settings.latency_ms / 1000)
        if role in (failing := failing_roles(s.settings.fail)):
            status, code = failing[role]
            with s.lock:
                s.faults[f"{role}:{status}"] += 1
            self._send(status, {"error": {"message": f"simulated {code}: every {role} call fails (sim fail=)",
                                          "type": "invalid_request_error" if status < 500 else "server_error",
                                          "code": code}})
            return
        fault = self._fault(role, req)
        if fault:
            with s.lock:
                s.faults[f"{role}:{fault}"] += 1
        if fault in FAILURES:
            self._fail(fault, req)
            return
        message, finish = self._message(role, req, fault == "malformed")
        prompt_tokens = sum(count_tokens(roles.text_of(m)) for m in req.get("messages") or [])
        completion_tokens = count_tokens(message.get("content") or json.dumps(message.get("tool_calls")))
        with s.lock:
            s.tokens[f"{role}:prompt"] += prompt_tokens
            s.tokens[f"{role}:completion"] += completion_tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if req.get("stream"):
            self._stream(req, message, finish, usage)
            return
        self._send(200, {
            "id": f"chatcmpl-sim-{s.counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "sim"),
            "system_fingerprint": f"sim-{s.settings.seed}",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        })

    def _fail(self, fault: str, req: dict[str, Any]) -> None:
        status, message, kind = FAILURES[fault]
        if fault == "timeout":
            time.sleep(self.state.settings.timeout_s)
        digest = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()[:12]
        self._send(status, {"error": {"message": message.format(digest=digest), "type": kind}})

    def _message(self, role: str, req: dict[str, Any], malformed: bool) -> tuple[dict[str, Any], str]:
        """The reply's message and finish reason: ``max_tokens`` cuts its content ("length")."""
        s = self.state
        if role == "agent":
            message = roles.agent_reply(s.profile, req, s.settings.seed, s.settings.drop_rate)
        elif role == "route":
            message = {"role": "assistant", "content": roles.route_reply(s.profile, req, s.settings.seed,
                                                                         s.settings.drop_rate)}
        else:
            reply = {
                "judge": roles.judge_reply, "scorer": roles.scorer_reply, "memalign": roles.memalign_reply,
                "gepa": roles.gepa_reply,
                "dspy": roles.dspy_reply, "chat": roles.chat_reply,
            }[role](s.profile, req)
            if malformed:
                reply = reply[: max(1, len(reply) // 2)]
            message = {"role": "assistant", "content": reply}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        cap = req.get("max_tokens") or req.get("max_completion_tokens")
        if cap and message.get("content") and cut(message["content"], int(cap)) != message["content"]:
            message, finish = {**message, "content": cut(message["content"], int(cap))}, "length"
        return message, finish

    def _stream(self, req: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, int]) -> None:
        """The same reply as server-sent events in HTTP chunks, as OpenAI streams it: a role
        chunk, the content a few words at a time (tool calls in one chunk), a finish chunk,
        usage when ``stream_options.include_usage`` asks for it, then ``[DONE]``."""
        s = self.state
        base = {"id": f"chatcmpl-sim-{s.counter}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": req.get("model", "sim"), "system_fingerprint": f"sim-{s.settings.seed}"}
        words = re.findall(r"\S+\s*", message.get("content") or "")
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": "".join(words[i:i + 4])} for i in range(0, len(words), 4)]
        if message.get("tool_calls"):
            deltas.append({"tool_calls": [{**c, "index": i} for i, c in enumerate(message["tool_calls"])]})
        events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for data in [*(json.dumps(e) for e in events), "[DONE]"]:
            frame = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _embeddings(self, req: dict[str, Any]) -> None:
        s = self.state
        with s.lock:
            s.calls["embeddings"] += 1
        inputs = req.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        dims = int(req.get("dimensions") or 256)
        if s.settings.per_token_embeddings:  # one vector per word, as llama.cpp's server gives them
            vectors = [[embed(w, dims) for w in re.findall(r"[a-z0-9]+", str(t).lower()) or [""]] for t in inputs or []]
        else:
            vectors = [embed(str(t), dims) for t in inputs or []]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        tokens = sum(count_tokens(str(t)) for t in inputs or [])
        self._send(200, {
            "object": "list", "data": data, "model": req.get("model", "sim-embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


def make_server(host: str = "127.0.0.1", port: int = 0, settings: SimSettings | None = None) -> ThreadingHTTPServer:
    settings = settings or SimSettings()
    try:
        failing_roles(settings.fail)
    except ValueError as e:
        raise UserError(str(e)) from None
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    httpd.state = SimState(settings, load(settings.profile), fingerprint=fingerprint(settings))  # type: ignore[attr-defined]
    return httpd
