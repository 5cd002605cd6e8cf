"""The OpenAI-compatible HTTP front of the simulator (stdlib only, so it starts in ~0.1 s).

Endpoints: ``POST /v1/chat/completions`` (``"stream": true`` answers in server-sent
events, one chunk per few words), ``POST /v1/embeddings``, ``GET /v1/models``,
``GET /sim/stats`` (calls by role, faults injected) and ``POST /sim/reset``.
Fault knobs (fractions of requests, drawn deterministically from the seed, the request body
and how many times that body came before, so thread scheduling does not change them): 429s, 5xx errors, timeouts (the reply is held past ``timeout_s``), malformed
JSON in judge replies, and a fixed latency.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

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


@dataclass
class SimState:
    settings: SimSettings
    profile: Profile = field(default_factory=lambda: Profile("none"))
    calls: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    seen: Counter = field(default_factory=Counter)  # attempts per request body
    counter: int = 0
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
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "sim"} for m in MODELS]})
        elif path == "/sim/stats":
            s = self.state
            self._send(200, {"calls": dict(s.calls), "faults": dict(s.faults), "tokens": dict(s.tokens), "requests": s.counter,
                             "profile": s.profile.name})
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
                s.counter = 0
            self._send(200, {"status": "reset"})
            return
        if path.endswith("/chat/completions"):
            self._chat(req)
        elif path.endswith("/embeddings"):
            self._embeddings(req)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _fault(self, role: str, req: dict[str, Any]) -> str | None:
        st = self.state.settings
        body_key = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        self.state.next_index()
        draw = roles.unit_draw(st.seed, "fault", body_key, self.state.attempt(body_key))
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
        role = roles.role_of(req)
        with s.lock:
            s.calls[role] += 1
        if s.settings.latency_ms:
            time.sleep(s.settings.latency_ms / 1000)
        fault = self._fault(role, req)
        if fault:
            with s.lock:
                s.faults[f"{role}:{fault}"] += 1
        if fault == "429":
            self._send(429, {"error": {"message": "simulated rate limit", "type": "rate_limit_error"}})
            return
        if fault == "5xx":
            self._send(503, {"error": {"message": "simulated upstream error", "type": "server_error"}})
            return
        if fault == "timeout":
            time.sleep(s.settings.timeout_s)
            self._send(504, {"error": {"message": "simulated timeout", "type": "timeout"}})
            return
        if role == "agent":
            message = roles.agent_reply(s.profile, req, s.settings.seed, s.settings.drop_rate)
        else:
            reply = {
                "judge": roles.judge_reply, "memalign": roles.memalign_reply, "gepa": roles.gepa_reply,
                "dspy": roles.dspy_reply, "chat": roles.chat_reply,
            }[role](s.profile, req)
            if fault == "malformed":
                reply = reply[: max(1, len(reply) // 2)]
            message = {"role": "assistant", "content": reply}
        prompt_tokens = sum(count_tokens(roles.text_of(m)) for m in req.get("messages") or [])
        completion_tokens = count_tokens(message.get("content") or json.dumps(message.get("tool_calls")))
        with s.lock:
            s.tokens[f"{role}:prompt"] += prompt_tokens
            s.tokens[f"{role}:completion"] += completion_tokens
        finish = "tool_calls" if message.get("tool_calls") else "stop"
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
        data = [{"object": "embedding", "index": i, "embedding": embed(str(t), dims)} for i, t in enumerate(inputs or [])]
        tokens = sum(count_tokens(str(t)) for t in inputs or [])
        self._send(200, {
            "object": "list", "data": data, "model": req.get("model", "sim-embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


def make_server(host: str = "127.0.0.1", port: int = 0, settings: SimSettings | None = None) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    settings = settings or SimSettings()
    httpd.state = SimState(settings, load(settings.profile))  # type: ignore[attr-defined]
    return httpd
