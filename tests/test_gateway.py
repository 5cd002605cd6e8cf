"""The LLM gateway over real HTTP: the simulator upstream, the gateway in front, the openai SDK
as the client. Cache keys (and who answered), cache modes, the retry policy counted against
what the simulator injected, non-200 replies by kind, max_tokens by kind, the endpoint
capabilities, malformed judge replies, budgets, and the S3 and Redis stores."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
from openai import OpenAI

from jobs.gateway.cache import DiskStore, open_store
from jobs.gateway.client import CLIENT_MARGIN_S, Session
from jobs.gateway.server import GAVE_UP, JSON_NOTE, MISS_LOG_ENV, GatewaySettings, is_malformed, retry_verdict
from jobs.gateway.server import make_server as make_gateway
from jobs.llm.endpoints import call_timeout_s
from jobs.sim.server import SimSettings, fingerprint
from jobs.sim.server import make_server as make_sim
from tests.conftest import BASEBALL_PROFILE

REQUIRE_SERVICES = os.environ.get("PROMPTGATE_REQUIRE_SERVICES") == "1"


def serve(httpd):
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}"


@pytest.fixture()
def stack(tmp_path):
    """A simulator and a gateway in front of it; call it with the simulator's fault knobs."""
    started = []

    def make(cache_uri=None, gateway=None, **knobs):
        sim = make_sim(settings=SimSettings(**knobs))
        sim_url = serve(sim)
        gw = make_gateway(GatewaySettings(upstream=sim_url + "/v1", cache_uri=cache_uri or str(tmp_path / "cache"),
                                          **{"max_retries": 6, "backoff_s": 0.001, "timeout_s": 5, **(gateway or {})}))
        started.extend([sim, gw])
        return sim_url, serve(gw)

    yield make
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def get(url):
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def open_session(gw, cache="readwrite", limits=None, roles=None, **spec):
    sid = uuid.uuid4().hex[:8]
    body = json.dumps({"pipeline": "p", "stage": "evaluate", "cache": cache, "limits": limits or {},
                       "prices": {"sim-agent": [1.0, 2.0]}, "roles": roles or {}, **spec}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{gw}/gateway/sessions/{sid}", data=body,
                                                  headers={"Content-Type": "application/json"}))
    return sid, OpenAI(base_url=f"{gw}/s/{sid}/v1", api_key="placeholder", max_retries=0)


def ask(client, text, seed=None, model="sim-agent"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], seed=seed)


def test_repeat_index_is_part_of_the_cache_key(stack):
    sim, gw = stack()
    sid, client = open_session(gw)
    for seed in (0, 1, 0, 1):  # compare's repeats 0 and 1, asked twice
        ask(client, "same question", seed=seed)
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["upstream_calls"] == 2 and spend["cache_hits"] == 2
    assert get(f"{sim}/sim/stats")["calls"]["chat"] == 2


def test_run_ids_in_a_request_do_not_change_its_cache_key():
    from jobs.gateway.server import cache_key

    def body(run_id):
        return {"model": "m", "messages": [{"role": "user", "content": f"trace lc_run--{run_id}-0 said: hi"}]}

    assert cache_key("chat/completions", body("01a205fe-b185-732e-bff6-ed9b1d83d536")) == \
        cache_key("chat/completions", body("01a20605-083e-75e8-a033-eb0577630346"))
    assert cache_key("chat/completions", body("01a205fe-b185-732e-bff6-ed9b1d83d536")) != \
        cache_key("chat/completions", {"model": "m", "messages": [{"role": "user", "content": "trace said: hi"}]})


def test_cache_modes(stack):
    sim, gw = stack()
    _, off = open_session(gw, cache="off")
    ask(off, "q1"), ask(off, "q1")
    _, read = open_session(gw, cache="read")
    ask(read, "q2"), ask(read, "q2")  # read never writes
    _, rw = open_session(gw, cache="readwrite")
    ask(rw, "q2"), ask(rw, "q2")
    _, read_again = open_session(gw, cache="read")
    ask(read_again, "q2")  # now it hits what readwrite stored
    t = get(f"{gw}/gateway/stats")["totals"]
    assert get(f"{sim}/sim/stats")["calls"]["chat"] == 5 and t["cache_hits"] == 2


def test_second_gateway_on_the_same_store_makes_no_upstream_calls(stack, tmp_path):
    """What a second `make run` relies on: a new gateway process, the same cache folder."""
    store = str(tmp_path / "shared")
    sim1, gw1 = stack(cache_uri=store)
    _, c1 = open_session(gw1)
    answers = [ask(c1, f"question {i}", seed=k).choices[0].message.content for i in range(3) for k in range(2)]
    sim2, gw2 = stack(cache_uri=store)
    _, c2 = open_session(gw2)
    again = [ask(c2, f"question {i}", seed=k).choices[0].message.content for i in range(3) for k in range(2)]
    assert again == answers
    assert get(f"{sim2}/sim/stats")["calls"] == {} and get(f"{gw2}/gateway/stats")["totals"]["upstream_calls"] == 0


def test_embeddings_are_cached_per_text_whatever_the_batching(stack):
    sim, gw = stack()
    sid, client = open_session(gw)
    first = client.embeddings.create(model="sim-embed", input=["a", "b", "c"])
    regrouped = client.embeddings.create(model="sim-embed", input=["c", "a"])  # another batch, same texts
    mixed = client.embeddings.create(model="sim-embed", input=["b", "d"])  # only "d" is new
    by_text = dict(zip(["a", "b", "c"], (d.embedding for d in first.data)))
    assert [d.embedding for d in regrouped.data] == [by_text["c"], by_text["a"]]
    assert mixed.data[0].embedding == by_text["b"] and [d.index for d in mixed.data] == [0, 1]
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["upstream_calls"] == 2 and spend["cache_hits"] == 1  # the regrouped batch cost nothing
    assert get(f"{sim}/sim/stats")["calls"]["embeddings"] == 2


def test_calls_are_counted_by_kind_with_their_time_and_tokens(stack):
    """Off the agent's own path, agent, reflection and judge calls are told apart by model (tools
    or not), embeddings by route; each kind gets its calls, seconds, tokens and USD, and a cache
    hit costs no tokens."""
    sim, gw = stack()
    sid, client = open_session(gw, roles={"agent": "sim-agent", "judge": "sim-judge", "reflection": "sim-reflect"})
    tool = {"type": "function", "function": {"name": "lookup", "description": "d",
                                             "parameters": {"type": "object", "properties": {}}}}
    client.chat.completions.create(model="sim-agent", messages=[{"role": "user", "content": "q"}], tools=[tool])
    client.chat.completions.create(model="sim-judge", messages=[{"role": "user", "content": "read the trace"}],
                                   tools=[tool])  # a judge with MLflow's trace tools is still the judge
    ask(client, "grade this", model="sim-judge")
    ask(client, "grade this", model="sim-judge")  # a cache hit: a call, no tokens
    ask(client, "improve the prompt", model="sim-reflect")
    client.embeddings.create(model="sim-embed", input=["a"])
    kinds = get(f"{gw}/gateway/sessions/{sid}")["by_kind"]
    assert {k: v["calls"] for k, v in kinds.items()} == {"agent": 1, "judge": 3, "reflection": 1, "embeddings": 1}
    assert all(v["seconds"] > 0 and v["tokens"] > 0 for v in kinds.values())
    assert kinds["agent"]["usd"] > 0 and kinds["judge"]["usd"] == 0  # only sim-agent has a price here
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert sum(v["tokens"] for v in kinds.values()) == spend["tokens"]


def test_the_agents_own_path_counts_its_calls_as_the_agents_whatever_they_send(stack):
    """One model in every role and no tools (a router, a plain chat agent): only the path tells
    the agent's calls from the judge's, and they share the cache with the plain path."""
    from jobs.core.contract import AGENT_PATH

    sim, gw = stack()
    sid, client = open_session(gw, roles={"agent": "one", "judge": "one", "reflection": "one"})
    agent = OpenAI(base_url=f"{gw}/s/{sid}{AGENT_PATH}/v1", api_key="placeholder", max_retries=0)
    ask(agent, "route this", model="one")
    ask(client, "grade this", model="one")
    ask(client, "route this", model="one")  # the same request by the other path: a cache hit, counted as judge
    kinds = get(f"{gw}/gateway/sessions/{sid}")["by_kind"]
    assert {k: v["calls"] for k, v in kinds.items()} == {"agent": 1, "judge": 2}
    assert kinds["agent"]["tokens"] > 0 and get(f"{sim}/sim/stats")["calls"]["chat"] == 2


def test_retries_absorb_faults_and_count_exactly_what_was_injected(stack):
    sim, gw = stack(rate_429=0.1, rate_5xx=0.05, rate_timeout=0.05, timeout_s=0.05)
    sid, client = open_session(gw, cache="off")
    for i in range(60):
        assert ask(client, f"q{i}").choices[0].message.content  # every call ends well
    injected = sum(get(f"{sim}/sim/stats")["faults"].values())
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert injected > 5
    assert spend["faults"] == injected and spend["retries"] == injected and spend["exhausted"] == 0


def test_exhausted_retries_reach_the_client_as_an_error(stack):
    sim, gw = stack(rate_429=1.0)
    sid, client = open_session(gw, cache="off")
    with pytest.raises(Exception, match="429|rate"):
        ask(client, "q")
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["exhausted"] == 1 and spend["faults"] == 7 == get(f"{sim}/sim/stats")["faults"]["chat:429"]


def test_malformed_judge_reply_is_passed_on_counted_and_never_cached(stack):
    sim, gw = stack(rate_malformed=1.0)
    sid, client = open_session(gw)
    body = dict(model="sim-judge", response_format={"type": "json_object"},
                messages=[{"role": "system", "content": "You are an expert judge. Reply in JSON with result and rationale."},
                          {"role": "user", "content": "inputs: q\noutputs: a"}])
    for _ in range(2):
        content = client.chat.completions.create(**body).choices[0].message.content
        with pytest.raises(ValueError):
            json.loads(content)
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["malformed"] == 2 and spend["cache_hits"] == 0 and spend["upstream_calls"] == 2


def test_budget_stops_calls_and_names_the_budget(stack):
    sim, gw = stack()
    sid, client = open_session(gw, cache="off", limits={"tokens": [20, "budget.stage.tokens"]})
    ask(client, "a question of some length here")
    ask(client, "another question of some length")
    with pytest.raises(Exception, match="budget.stage.tokens"):
        ask(client, "one more")
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["tripped"].startswith("budget.stage.tokens (20 tokens) crossed")
    assert spend["refused"] == 1 and spend["tokens"] > 20 and spend["usd"] > 0
    assert get(f"{sim}/sim/stats")["calls"]["chat"] == 2
    assert spend["errors"] == {"judge": {"402": 1}} and spend["first_error"]["judge"].startswith("HTTP 402 budget_exceeded: ")


def test_disk_store_round_trip(tmp_path):
    store = DiskStore(str(tmp_path))
    assert store.get("ab12") is None
    store.put("ab12", b"{}")
    assert store.get("ab12") == b"{}"


def test_s3_store_on_moto(s3_endpoint, monkeypatch):
    from tests.conftest import ARTIFACT_BUCKET, S3_KEYS

    for k, v in {**S3_KEYS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(k, v)
    store = open_store(f"s3://{ARTIFACT_BUCKET}/llm-cache")
    key = uuid.uuid4().hex
    assert store.get(key) is None
    store.put(key, b'{"ok": true}')
    assert open_store(f"s3://{ARTIFACT_BUCKET}/llm-cache").get(key) == b'{"ok": true}'


def test_redis_store():
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.exceptions.ConnectionError:
        if REQUIRE_SERVICES:
            pytest.fail("Redis on 127.0.0.1:6379 is required here (PROMPTGATE_REQUIRE_SERVICES=1) but not reachable")
        pytest.skip("no Redis on 127.0.0.1:6379; the Redis cache store is not tested on this machine")
    store = open_store("redis://127.0.0.1:6379/0")
    key = uuid.uuid4().hex
    assert store.get(key) is None
    store.put(key, b"{}")
    assert store.get(key) == b"{}"


def test_streamed_replies_pass_through_in_chunks_are_charged_and_cached(stack):
    """The openai SDK streams through the gateway: the same content as the unstreamed reply,
    in several chunks; usage from the last chunk is charged; a repeat is served from the cache."""
    sim, gw = stack()
    sid, client = open_session(gw)
    ask = {"model": "sim-agent", "messages": [{"role": "system", "content": "You answer briefly."},
                                              {"role": "user", "content": "Who pitches tonight for the home side, and what does he throw most?"}], "seed": 3}
    whole = client.chat.completions.create(**ask).choices[0].message.content
    streamed = []
    for _ in range(2):
        chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        streamed.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
        assert chunks[-1].usage and chunks[-1].usage.total_tokens > 0
    assert streamed == [whole, whole] and whole
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert (spend["requests"], spend["upstream_calls"], spend["cache_hits"]) == (3, 2, 1)
    sim_stats = get(f"{sim}/sim/stats")
    assert sim_stats["calls"] == {"chat": 2}  # the plain call and the first streamed one; the repeat was cached
    assert spend["completion_tokens"] == sim_stats["tokens"]["chat:completion"] > 0  # the stream's usage was charged


def test_health_endpoint_answers(stack):
    _, gw = stack()
    assert get(f"{gw}/health") == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{gw}/no/such/route")
    assert e.value.code == 404


def test_timed_tools_keep_their_schema_and_are_counted():
    """The agent's tools are wrapped to time them: the model must still see the same tool."""
    from langchain_core.tools import StructuredTool

    from jobs.core import spans
    from jobs.domains.baseball.tools import TOOLS

    fn = TOOLS[0]
    plain, timed = StructuredTool.from_function(fn), StructuredTool.from_function(spans.timed("tools", fn))
    assert (timed.name, timed.description, timed.args) == (plain.name, plain.description, plain.args)
    before = spans.snapshot().get("tools", {}).get("calls", 0)
    timed.invoke({k: "x" for k in plain.args})
    assert spans.snapshot()["tools"]["calls"] == before + 1


def test_span_figures_add_up_across_runs_and_print_as_a_table():
    from jobs.core import spans

    runs = [{"span.agent.calls": 3, "span.agent.seconds": 1.5, "spend.tokens": 9}, {"span.agent.calls": 2, "span.tools.calls": 4}]
    total = spans.from_metrics(runs)
    assert total == {"agent": {"calls": 5.0, "seconds": 1.5}, "tools": {"calls": 4.0}}
    assert spans.add(total, {"agent": {"calls": 1}})["agent"]["calls"] == 6
    rows = spans.table({"agent": {"calls": 2, "seconds": 3.0, "usd": 0.5}, "judge": {"calls": 1, "seconds": 1.0, "usd": 0.5}})
    assert rows[2].split() == ["agent", "2", "3.0", "75%", "0", "0.5000", "50%"]


def test_a_helper_server_ends_when_the_process_that_started_it_is_killed(tmp_path):
    """A stage SIGKILLed mid-run (a test's kill, an OOM) leaves no simulator or gateway behind:
    they run in sessions of their own, so they watch their starter instead."""
    import signal
    import subprocess
    import sys
    import time

    from jobs.core.paths import ROOT

    starter = subprocess.Popen(
        [sys.executable, "-c", "from jobs.core.servers import start_sim; from jobs.gateway.client import start_gateway; "
         "from types import SimpleNamespace as N; s, url = start_sim(); g, _ = start_gateway(url, N(cache_uri="
         f"'{tmp_path}/cache', max_retries=0, backoff_s=0.1, timeout_s=5), 'NO_KEY'); "
         "print(s.pid, g.pid, flush=True); import time; time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    helpers = [int(p) for p in starter.stdout.readline().split()]
    assert len(helpers) == 2 and all(os.path.exists(f"/proc/{p}") for p in helpers)
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a timing claim
    while any(os.path.exists(f"/proc/{p}") for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in helpers if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
    assert alive == [], f"still running after their starter was killed: {alive}"


ROLES = {"agent": "sim-agent", "judge": "sim-judge", "reflection": "sim-reflect"}
TOOL = {"type": "function", "function": {
    "name": "pitcher_tendency", "description": "Pitch mix",
    "parameters": {"type": "object", "required": ["pitcher"],
                   "properties": {"pitcher": {"type": "string", "description": "the pitcher's full name"}}}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {
    "type": "object", "properties": {"result": {"type": "boolean"}, "rationale": {"type": "string"}},
    "required": ["result", "rationale"]}}}
JUDGE = {"model": "sim-judge", "response_format": SCHEMA, "messages": [
    {"role": "system", "content": "You are an expert judge.\n\nYour task: check for a recommendation."},
    {"role": "user", "content": 'inputs: q\noutputs: "Recommendation: sit on the slider."'}]}


def agent_answer(client, i):
    """The agent's final answer from one tool result: with the baseball profile it shows the
    recommendation unless drop_rate drops it."""
    result = {"summary": "Vega throws slider 50%", "sample_size": 140, "sample_unit": "pitches",
              "small_sample": False, "advice": "sit on the slider"}
    messages = [{"role": "system", "content": "Give a recommendation. Cite the sample size."},
                {"role": "user", "content": f"How does pitcher Marcus Vega attack hitters, case {i}?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "pitcher_tendency", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": json.dumps(result)}]
    return client.chat.completions.create(model="sim-agent", messages=messages, tools=[TOOL]).choices[0].message.content


def test_the_cache_knows_which_simulator_answered(stack, tmp_path):
    """Two simulators that answer differently behind gateways sharing one cache folder: the
    second gets its own replies; the first's settings again, on a new port, hit the cache."""
    store = str(tmp_path / "shared")
    _, gw_a = stack(cache_uri=store, profile=BASEBALL_PROFILE, drop_rate=0.0)
    answers_a = [agent_answer(open_session(gw_a)[1], i) for i in range(2)]
    sim_b, gw_b = stack(cache_uri=store, profile=BASEBALL_PROFILE, drop_rate=1.0)
    answers_b = [agent_answer(open_session(gw_b)[1], i) for i in range(2)]
    assert all("Recommendation:" in a for a in answers_a) and not any("Recommendation:" in b for b in answers_b)
    assert get(f"{sim_b}/sim/stats")["calls"] == {"agent": 2}  # nothing of the first simulator's came back
    sim_c, gw_c = stack(cache_uri=store, profile=BASEBALL_PROFILE, drop_rate=0.0)  # a restart of the first
    assert [agent_answer(open_session(gw_c)[1], i) for i in range(2)] == answers_a
    assert get(f"{sim_c}/sim/stats")["calls"] == {}


def test_the_simulator_fingerprint_follows_the_profile_text_not_its_path(stack, tmp_path):
    text = Path(BASEBALL_PROFILE).read_text()
    (tmp_path / "copy.yaml").write_text(text)
    (tmp_path / "edited.yaml").write_text(text + "\n# edited\n")
    sim, _ = stack(profile=BASEBALL_PROFILE)
    shown = get(f"{sim}/v1/models")["fingerprint"]
    assert shown == fingerprint(SimSettings(profile=str(tmp_path / "copy.yaml"), latency_ms=50, timeout_s=1))
    assert shown != fingerprint(SimSettings(profile=str(tmp_path / "edited.yaml")))
    assert shown != fingerprint(SimSettings(profile=BASEBALL_PROFILE, seed=8))


def test_an_upstream_that_cannot_be_asked_is_known_by_its_url_and_asked_again(tmp_path):
    from jobs.core.servers import free_port
    from jobs.gateway.server import Gateway

    url = f"http://127.0.0.1:{free_port()}/v1"
    gateway = Gateway(GatewaySettings(upstream=url, cache_uri=str(tmp_path / "cache"), connect_timeout_s=1))
    assert gateway.answerer() == url and gateway.identity is None


def test_a_400_is_final_and_reported_by_kind(stack):
    sim, gw = stack(reject_json_schema=True)
    sid, client = open_session(gw, roles=ROLES)
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(**JUDGE)
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert get(f"{sim}/sim/stats")["faults"] == {"judge:400": 1}  # sent once, never retried
    assert (spend["faults"], spend["retries"], spend["permanent"], spend["exhausted"]) == (0, 0, 1, 0)
    assert spend["errors"] == {"judge": {"400": 1}}
    assert spend["first_error"] == {"judge": "HTTP 400 invalid_request_error: response_format type json_schema is "
                                              "not supported; use json_object"}
    assert get(f"{gw}/gateway/stats")["totals"]["errors"] == {"judge": {"400": 1}}
    session = Session(gw, sid, "evaluate")
    assert session.failures() == (spend["errors"], spend["first_error"])
    assert session.metrics()["gateway.errors.judge.400"] == 1.0


def test_a_503_is_retried_and_counted_once_when_it_never_passes(stack):
    sim, gw = stack(rate_5xx=1.0, gateway={"max_retries": 2})
    sid, client = open_session(gw, cache="off", roles=ROLES)
    with pytest.raises(openai.APIStatusError, match="upstream answered HTTP 503") as gave_up:
        ask(client.with_options(max_retries=3), "q")  # a client that would retry a 503 on top
    assert gave_up.value.status_code == GAVE_UP  # which no client retries
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert get(f"{sim}/sim/stats")["faults"] == {"chat:5xx": 3}
    assert (spend["faults"], spend["retries"], spend["exhausted"], spend["permanent"]) == (3, 2, 1, 0)
    assert spend["errors"] == {"agent": {"503": 1}}  # one client request, one error


def test_a_permanent_500_stops_once_its_body_repeats(stack):
    """The same 500 body twice is a request the server will never take: no more retries, the
    client gets a 424 it does not retry, and the same request again goes upstream once, not
    max_retries + 1 times."""
    sim, gw = stack(rate_500_permanent=1.0)  # max_retries 6
    sid, client = open_session(gw, cache="off", roles=ROLES)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError, match="never accepted"):
            ask(client, "q")
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert get(f"{sim}/sim/stats")["faults"] == {"chat:500": 3}  # twice to see it repeat, once for the second call
    assert (spend["faults"], spend["retries"], spend["permanent"], spend["exhausted"]) == (3, 1, 2, 0)
    assert spend["errors"] == {"agent": {"500": 2}}


def test_the_retry_policy_and_the_worst_case_wait(stack):
    assert [retry_verdict(s, b"x", None) for s in (200, 429, 502, 503, 504)] == ["done"] + ["retry"] * 4
    assert [retry_verdict(s, b"x", None) for s in (400, 401, 403, 404, 413, 422, 501)] == ["permanent"] * 7
    assert retry_verdict(500, b"x", None) == retry_verdict(500, b"y", b"x") == "retry"
    assert retry_verdict(500, b"x", b"x") == "permanent"
    settings = GatewaySettings(upstream="", max_retries=2, backoff_s=1.0, timeout_s=10, retry_after_max_s=3,
                               connect_timeout_s=5)
    assert settings.worst_case_s == 3 * (5 + 10) + 3 + 3
    _, gw = stack()
    sid, _ = open_session(gw)
    shown = get(f"{gw}/gateway/sessions/{sid}")["worst_case_s"]
    assert shown == GatewaySettings(upstream="", max_retries=6, backoff_s=0.001, timeout_s=5).worst_case_s
    session = Session(gw, sid, "evaluate")  # what a stage's clients wait: the session's worst case and a margin
    assert call_timeout_s(SimpleNamespace(request_timeout_s=1.0), session) == shown + CLIENT_MARGIN_S
    assert call_timeout_s(SimpleNamespace(request_timeout_s=900.0), session) == 900.0  # a longer own timeout stands


def test_max_tokens_by_kind_caps_replies_that_set_none(stack):
    _, gw = stack()
    _, client = open_session(gw, roles=ROLES, max_tokens={"agent": 4, "judge": 512})
    text = "tell me everything about the slider, the curveball and the sinker"
    capped = ask(client, text)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 4
    assert capped.choices[0].message.content == "(simulated) tell"
    own = client.chat.completions.create(model="sim-agent", messages=[{"role": "user", "content": text}], max_tokens=7)
    assert own.usage.completion_tokens == 7  # a call's own max_tokens is kept
    assert ask(client, text, model="sim-judge").choices[0].finish_reason == "stop"  # 512 is room enough
    with pytest.raises(urllib.error.HTTPError) as refused:
        open_session(gw, max_tokens={"agent": 0})
    assert refused.value.code == 400


@pytest.mark.parametrize("mode", ["json_object", "json_object_schema", "none"])
def test_an_endpoint_without_json_schema_gets_the_schema_in_the_prompt(stack, tmp_path, monkeypatch, mode):
    log = tmp_path / "misses.jsonl"
    monkeypatch.setenv(MISS_LOG_ENV, str(log))
    sim, gw = stack(reject_json_schema=True)
    sid, client = open_session(gw, roles=ROLES, capabilities={"structured_output": mode})
    verdict = json.loads(client.chat.completions.create(**JUDGE).choices[0].message.content)
    assert set(verdict) == {"result", "rationale"} and get(f"{sim}/sim/stats")["faults"] == {}
    sent = json.loads(log.read_text().splitlines()[-1])["body"]
    assert sent.get("response_format") == {"json_object": {"type": "json_object"}, "none": None,
                                           "json_object_schema": {"type": "json_object",
                                                                  "schema": SCHEMA["json_schema"]["schema"]}}[mode]
    note = JSON_NOTE + json.dumps(SCHEMA["json_schema"]["schema"], sort_keys=True)
    assert sent["messages"][0]["content"] == JUDGE["messages"][0]["content"] + "\n\n" + note
    assert get(f"{gw}/gateway/sessions/{sid}")["malformed"] == 0


def test_tool_choice_auto_makes_a_server_that_needs_it_use_the_tools(stack):
    _, gw = stack(tools_need_choice=True)
    question = [{"role": "user", "content": "How does pitcher Marcus Vega attack hitters?"}]
    _, as_sent = open_session(gw, roles=ROLES)
    assert as_sent.chat.completions.create(model="sim-agent", messages=question, tools=[TOOL]).choices[0].message.tool_calls is None
    _, auto = open_session(gw, roles=ROLES, capabilities={"tool_choice": "auto"})
    calls = auto.chat.completions.create(model="sim-agent", messages=question, tools=[TOOL]).choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("pitcher_tendency", {"pitcher": "Marcus Vega"})]


def test_tool_call_turns_get_the_content_a_server_insists_on(stack):
    """The agent's second call repeats its tool call as an assistant turn with content null, as
    the openai SDK sends it; a server that answers that with 500 gets content "" instead."""
    _, gw = stack(tool_turns_need_content=True)
    turn = [{"role": "user", "content": "How does pitcher Marcus Vega attack hitters?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "pitcher_tendency", "arguments": json.dumps({"pitcher": "Marcus Vega"})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Vega throws sliders away with two strikes."}]
    _, as_sent = open_session(gw, cache="off", roles=ROLES)
    with pytest.raises(openai.APIStatusError, match="Input should be a valid string"):
        as_sent.chat.completions.create(model="sim-agent", messages=turn, tools=[TOOL])
    _, empty = open_session(gw, cache="off", roles=ROLES, capabilities={"tool_call_content": "empty"})
    reply = empty.chat.completions.create(model="sim-agent", messages=turn, tools=[TOOL]).choices[0]
    assert reply.finish_reason == "stop" and "slider" in reply.message.content  # the agent answered from the tool


def test_per_token_embeddings_are_pooled_into_one_vector_per_text(stack):
    texts = ["slider away two strikes", "weather tonight"]
    _, per_text_gw = stack()
    expected = [d.embedding for d in open_session(per_text_gw)[1].embeddings.create(model="sim-embed", input=texts).data]
    _, gw = stack(per_token_embeddings=True)
    with pytest.raises(openai.APIStatusError, match="embeddings=per_token"):
        open_session(gw)[1].embeddings.create(model="sim-embed", input=texts)
    sid, client = open_session(gw, capabilities={"embeddings": "per_token"})
    got = [d.embedding for d in client.embeddings.create(model="sim-embed", input=texts).data]
    assert [len(v) for v in got] == [256, 256] and all(g == pytest.approx(e) for g, e in zip(got, expected))
    again = client.embeddings.create(model="sim-embed", input="weather tonight").data[0].embedding  # a string input
    assert again == got[1] and get(f"{gw}/gateway/sessions/{sid}")["cache_hits"] == 1


def test_max_concurrency_holds_upstream_requests_to_the_smallest_limit_asked(stack):
    sim, gw = stack(latency_ms=150)

    def burst(client, tag):
        threads = [threading.Thread(target=ask, args=(client, f"{tag} {i}")) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _, free = open_session(gw, cache="off")
    burst(free, "free")
    assert get(f"{sim}/sim/stats")["max_concurrency_seen"] > 1
    urllib.request.urlopen(urllib.request.Request(f"{sim}/sim/reset", data=b"{}"))
    for limit in (2, 1, 3):  # the gateway keeps the smallest positive limit any session asked for
        open_session(gw, capabilities={"max_concurrency": limit})
    burst(free, "held")  # one gateway, one limit: a session that asked for none is held too
    stats = get(f"{sim}/sim/stats")
    assert stats["max_concurrency_seen"] == 1 and stats["calls"] == {"chat": 4}


def test_a_tool_call_reply_to_a_json_mode_request_is_valid_and_cached(stack):
    """MLflow's fallback judge sends tools with response_format: a tool call (content null) is a reply."""
    call = {"message": {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}, "finish_reason": "tool_calls"}
    assert not is_malformed({"response_format": {"type": "json_object"}}, {"choices": [call]})
    assert is_malformed({"response_format": {"type": "json_object"}},
                        {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]})
    sim, gw = stack()
    sid, client = open_session(gw, roles=ROLES)
    body = {"model": "sim-judge", "tools": [TOOL], "response_format": {"type": "json_object"}, "messages": [
        {"role": "system", "content": "You are an expert judge. Reply in JSON."},
        {"role": "user", "content": "How does pitcher Marcus Vega attack hitters?"}]}
    for _ in range(2):
        reply = client.chat.completions.create(**body).choices[0]
        assert reply.finish_reason == "tool_calls" and reply.message.content is None
    spend = get(f"{gw}/gateway/sessions/{sid}")
    assert spend["malformed"] == 0 and spend["cache_hits"] == 1 and get(f"{sim}/sim/stats")["calls"] == {"agent": 1}
