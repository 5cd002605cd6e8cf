"""The simulator, driven over HTTP by the real openai SDK, plus its rules as pure functions."""

from __future__ import annotations

import json
import urllib.request

import pytest
from openai import OpenAI

from jobs.domains.baseball import tools as baseball
from jobs.sim import profile as sim_profile
from jobs.sim import roles
from tests.conftest import BASEBALL_PROFILE

P = sim_profile.load(BASEBALL_PROFILE)

TOOL_SPECS = [
    {"type": "function", "function": {
        "name": "pitcher_tendency", "description": "Pitch mix",
        "parameters": {"type": "object", "required": ["pitcher", "batter_hand"], "properties": {
            "pitcher": {"type": "string", "description": "the pitcher's full name"},
            "batter_hand": {"type": "string", "description": "which side the batter hits from, one of: left, right"},
            "count": {"type": "string", "description": "the ball-strike count, e.g. 0-2"}}}}},
    {"type": "function", "function": {
        "name": "matchup_history", "description": "Matchup",
        "parameters": {"type": "object", "required": ["batter", "pitcher"], "properties": {
            "batter": {"type": "string", "description": "the batter's full name"},
            "pitcher": {"type": "string", "description": "the pitcher's full name"}}}}},
]


@pytest.fixture()
def client(sim_url):
    return OpenAI(base_url=sim_url, api_key="any")


def test_agent_calls_the_tools_the_question_needs(client):
    q = "How does pitcher Marcus Vega attack left-handed hitters in 0-2 counts?"
    r = client.chat.completions.create(model="sim-agent", tools=TOOL_SPECS,
                                       messages=[{"role": "system", "content": "Be helpful."}, {"role": "user", "content": q}])
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["pitcher_tendency"]
    assert json.loads(calls[0].function.arguments) == {"pitcher": "Marcus Vega", "batter_hand": "left", "count": "0-2"}
    assert r.usage.total_tokens > 0


def test_matchup_question_fills_both_names():
    q = "What is the history of batter Jake Miller versus pitcher Marcus Vega?"
    assert roles.fill_arguments(TOOL_SPECS[1], q) == {"batter": "Jake Miller", "pitcher": "Marcus Vega"}
    assert roles.fill_arguments(TOOL_SPECS[0], q) is None  # no batter hand: not needed


def tool_result(small: bool) -> str:
    return json.dumps({"summary": "Vega throws slider 50%", "sample_size": 12 if small else 140,
                       "sample_unit": "pitches", "small_sample": small, "advice": "sit on the slider"})


def answer(system: str, small: bool = True, drop_rate: float = 0.0) -> str:
    return roles.final_answer(P, system, "q", [tool_result(small)], seed=7, drop_rate=drop_rate)


def test_behaviours_appear_only_when_the_prompt_asks():
    plain = answer("You help hitters.")
    assert "Recommendation:" not in plain and "based on" not in plain and "Caution" not in plain
    assert len(plain.split()) > 40  # no word limit asked: it rambles
    full = answer("Give a recommendation. Cite the sample size. State data limits. Keep it under 60 words.")
    assert "Recommendation: sit on the slider." in full
    assert "(based on 12 pitches)" in full
    assert "Caution: small sample" in full
    assert len(full.split()) <= 60


def test_asked_behaviours_are_dropped_with_the_seeded_probability():
    system = "Give a recommendation."
    shown = [("Recommendation:" in roles.final_answer(P, system, f"question {i}", [tool_result(False)], 7, 0.3))
             for i in range(400)]
    assert 0.6 < sum(shown) / len(shown) < 0.8
    again = [("Recommendation:" in roles.final_answer(P, system, f"question {i}", [tool_result(False)], 7, 0.3))
             for i in range(400)]
    assert shown == again  # deterministic for a seed


def test_judge_checks_only_the_criteria_its_instructions_name(client):
    response = answer("Give a recommendation. Cite the sample size.")  # no data-limits caveat
    user = f"inputs: {{\"question\": \"q\"}}\noutputs: {json.dumps(response)}\nexpectations: {json.dumps({'answerable': True, 'small_sample': True})}"
    schema = {"type": "json_schema", "json_schema": {"name": "j", "schema": {
        "type": "object", "properties": {"result": {"type": "boolean"}, "rationale": {"type": "string"}}}}}

    def verdict(instructions):
        r = client.chat.completions.create(model="sim-judge", response_format=schema, messages=[
            {"role": "system", "content": f"You are an expert judge.\n\nYour task: {instructions}."},
            {"role": "user", "content": user}])
        return json.loads(r.choices[0].message.content)

    base = verdict("Check for one actionable recommendation and the sample size.")
    assert base["result"] is True
    strict = verdict("Check for a recommendation, the sample size and that it states data limits.")
    assert strict["result"] is False
    assert "does not state the data limits" in strict["rationale"]


def test_gepa_reflection_adds_the_missing_behaviour():
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    prompt = InstructionProposalSignature.prompt_renderer({
        "current_instruction_doc": "You help hitters. Give a recommendation.",
        "dataset_with_feedback": [
            {"Inputs": "q1", "Generated Outputs": "x", "Feedback": "Missing: does not cite the sample size behind its numbers."},
            {"Inputs": "q2", "Generated Outputs": "y", "Feedback": "Missing: does not cite the sample size behind its numbers."},
        ]})
    text = prompt if isinstance(prompt, str) else prompt[0]["content"]
    reply = roles.gepa_reply(P, {"messages": [{"role": "user", "content": text}]})
    new = reply.split("```")[1].strip()
    assert new.startswith("You help hitters. Give a recommendation.")
    assert P.by_key["sample_size"].asked_by.search(new)


def test_memalign_distillation_turns_rationales_into_guidelines():
    from jinja2 import Template
    from mlflow.genai.judges.optimizers.memalign.prompts import DISTILLATION_PROMPT_TEMPLATE

    text = Template(DISTILLATION_PROMPT_TEMPLATE).render(
        judge_instructions="Check the recommendation and the sample size.", existing_guidelines=[],
        ids=[0, 1], zip=zip, feedback_records=[
            {"outputs": "a", "result": "False", "rationale": "Missing: does not state the data limits of a small sample."},
            {"outputs": "b", "result": "True", "rationale": "Meets every criterion."}])
    reply = json.loads(roles.memalign_reply(P, {"messages": [{"role": "user", "content": text}]}))
    assert reply["guidelines"] == [{"guideline_text": P.by_key["data_limits"].guideline, "source_trace_ids": [0]}]
    assert P.by_key["data_limits"].judged_by.search(reply["guidelines"][0]["guideline_text"])


def test_embeddings_and_models_and_stats(client, sim_url):
    a, b, c = (client.embeddings.create(model="sim-embed", input=t).data[0].embedding
               for t in ("slider away two strikes", "two strikes slider away", "weather forecast tonight"))
    dot = lambda x, y: sum(i * j for i, j in zip(x, y))  # noqa: E731
    assert dot(a, b) > 0.99 and dot(a, c) < 0.5
    assert {m.id for m in client.models.list()} >= {"sim-agent", "sim-judge"}
    stats = json.load(urllib.request.urlopen(sim_url.replace("/v1", "/sim/stats")))
    assert stats["calls"]["embeddings"] >= 3


def test_fault_knobs_answer_429_and_malformed_json():
    import threading

    from jobs.sim.server import SimSettings, make_server

    httpd = make_server(settings=SimSettings(rate_429=0.3, rate_malformed=0.3))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    c = OpenAI(base_url=url, api_key="x", max_retries=0)
    outcomes = []
    for i in range(30):
        try:
            r = c.chat.completions.create(model="sim-judge", messages=[{"role": "system", "content": "You are an expert judge. Your task: x"},
                                                                       {"role": "user", "content": f"outputs: \"{i}\""}])
            try:
                json.loads(r.choices[0].message.content)
                outcomes.append("ok")
            except ValueError:
                outcomes.append("malformed")
        except Exception as e:  # noqa: BLE001
            outcomes.append(type(e).__name__)
    httpd.shutdown()
    assert {"ok", "malformed", "RateLimitError"} <= set(outcomes)
    assert httpd.state.faults["judge:429"] == outcomes.count("RateLimitError")


def test_unknown_names_return_a_readable_error():
    out = json.loads(baseball.pitcher_tendency("Zed Quimby", "right", "0-2"))
    assert "No pitcher named 'Zed Quimby'" in out["error"]
    known = baseball._tables()[2][0]
    ok = json.loads(baseball.pitcher_tendency(known, "left"))
    assert ok["sample_size"] > 0 and "summary" in ok


def test_max_tokens_cuts_the_reply_and_says_length(client):
    r = client.chat.completions.create(model="sim-x", max_tokens=3,
                                       messages=[{"role": "user", "content": "one two three four five"}])
    assert (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens) == ("(simulated)", "length", 3)
    whole = client.chat.completions.create(model="sim-x", max_tokens=50, messages=[{"role": "user", "content": "one two"}])
    assert whole.choices[0].finish_reason == "stop"


def test_models_name_the_fingerprint_of_what_the_replies_depend_on(sim_url):
    from jobs.sim.server import SimSettings, fingerprint

    models = json.load(urllib.request.urlopen(sim_url + "/models"))
    assert models["fingerprint"] == fingerprint(SimSettings(seed=7, profile=BASEBALL_PROFILE))  # as conftest starts it


def test_llama_cpp_knobs_from_the_command_line():
    """``--reject-json-schema``, ``--tools-need-choice`` and ``--per-token-embeddings`` as start_sim passes them."""
    from jobs.core.servers import start_sim, stop_process
    from jobs.sim.server import SimSettings, fingerprint

    proc, url = start_sim({"reject_json_schema": True, "tools_need_choice": True, "per_token_embeddings": True})
    try:
        c = OpenAI(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(Exception, match="json_schema"):
            c.chat.completions.create(model="sim-judge", messages=[{"role": "user", "content": "q"}],
                                      response_format={"type": "json_schema", "json_schema": {"name": "j", "schema": {}}})
        question = [{"role": "user", "content": "How does pitcher Marcus Vega attack left-handed hitters?"}]
        assert c.chat.completions.create(model="sim-agent", messages=question, tools=TOOL_SPECS).choices[0].message.tool_calls is None
        chosen = c.chat.completions.create(model="sim-agent", messages=question, tools=TOOL_SPECS, tool_choice="auto")
        assert [t.function.name for t in chosen.choices[0].message.tool_calls] == ["pitcher_tendency"]
        body = json.dumps({"model": "sim-embed", "input": ["two words", "one"]}).encode()
        req = urllib.request.Request(url + "/embeddings", data=body, headers={"Content-Type": "application/json"})
        vectors = [d["embedding"] for d in json.load(urllib.request.urlopen(req))["data"]]
        assert [len(v) for v in vectors] == [2, 1] and len(vectors[0][0]) == 256  # one vector per word
        shown = json.load(urllib.request.urlopen(url + "/models"))["fingerprint"]
        knobs = SimSettings(reject_json_schema=True, tools_need_choice=True, per_token_embeddings=True)
        assert shown == fingerprint(knobs) != fingerprint(SimSettings())
    finally:
        stop_process(proc.pid)
