"""The visa desk: a router and a responder, two prompts over the plain openai SDK.

For each conversation the router (system: the ``router`` prompt) names one route for the
traveller's latest message. ``out_of_scope`` and ``injection`` get the desk's fixed replies;
anything else goes to the responder (system: the ``responder`` prompt), a tool-calling loop
over ``visa_desk.tools`` of at most ``max_steps`` rounds.

This module knows nothing of promptgate; it follows promptgate's agent contract only:

* ``make_agent(prompts=..., endpoint=..., **settings)`` returns ``predict_fn(**inputs) -> str``;
* ``prompts`` maps a role to a prompt version with ``format()``; both prompts are rendered on
  every call, never once up front, so an optimizer that swaps a prompt's text is seen;
* ``endpoint`` has ``base_url``, ``api_key``, ``model``, ``temperature``, ``timeout_s``,
  ``max_retries`` and ``seed``; every LLM call goes to ``base_url`` with that seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from visa_desk import tools

ROUTES = ("visa_rules", "out_of_scope", "injection")  # what the router may answer; anything else is visa_rules
FIXED = {  # the desk's own replies, which no prompt changes
    "out_of_scope": "I can only help with visas and entry rules: ask me whether you need a visa, how long you may "
                    "stay or how long an application takes.",
    "injection": "I can't share how I work, but I'm glad to help with visa rules for your trip.",
}


def conversation(value: Any) -> list[dict[str, str]]:
    """Chat messages of one input: a list of {role, content} as the dataset holds it, or one question."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    turns = [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
             for m in value or [] if isinstance(m, dict)]
    return [t for t in turns if t["role"] in ("user", "assistant")]


def route_of(reply: str) -> str:
    """The first route the router's reply names (a bare label, or JSON holding one)."""
    text = (reply or "").lower()
    found = sorted((text.find(r), r) for r in ROUTES if r in text)
    return found[0][1] if found else "visa_rules"


def make_agent(*, prompts: dict[str, Any], endpoint: Any, input_key: str = "messages", max_steps: int = 4,
               router: str = "router", responder: str = "responder") -> Callable[..., str]:
    """predict_fn(**inputs) -> the desk's answer to the conversation in ``inputs[input_key]``.

    ``router`` and ``responder`` name the roles of the two prompts in ``prompts``."""
    missing = [r for r in (router, responder) if r not in prompts]
    if missing:
        raise ValueError(f"visa desk: no prompt for role(s) {missing}; it was given {sorted(prompts)}")
    if int(max_steps) < 1:
        raise ValueError(f"visa desk: max_steps={max_steps} must be at least 1")
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=endpoint.timeout_s,
                           max_retries=int(getattr(endpoint, "max_retries", 0)))

    sampling = {"temperature": endpoint.temperature, **({} if endpoint.seed is None else {"seed": int(endpoint.seed)})}

    def chat(messages: list[dict[str, Any]], **extra: Any) -> Any:
        return client.chat.completions.create(model=endpoint.model, messages=messages, **sampling,
                                              **extra).choices[0].message

    def respond(system: str, turns: list[dict[str, str]]) -> str:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, *turns]
        for step in range(int(max_steps) + 1):
            last = step == int(max_steps)  # out of rounds: answer from what the tools said
            message = chat(messages, tools=tools.TOOLS, **({"tool_choice": "none"} if last else {}))
            if not message.tool_calls or last:
                return message.content or ""
            messages.append({"role": "assistant", "content": message.content, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in message.tool_calls]})
            messages += [{"role": "tool", "tool_call_id": c.id, "content": tools.run_tool(c.function.name, c.function.arguments)}
                         for c in message.tool_calls]
        return ""

    def predict_fn(**inputs: Any) -> str:
        router_text = prompts[router].format()  # both rendered on every call: an optimizer's candidate shows here
        responder_text = prompts[responder].format()
        turns = conversation(inputs.get(input_key))
        route = route_of(chat([{"role": "system", "content": router_text}, *turns]).content)
        if route in FIXED:
            return FIXED[route]
        return respond(responder_text, turns)

    return predict_fn


def check(settings: dict[str, Any]) -> None:
    """The settings in range, before anything runs (promptgate calls a factory's ``check``)."""
    if int(settings.get("max_steps", 4)) < 1:
        raise ValueError(f"agent.max_steps={settings['max_steps']} must be at least 1")
    if settings.get("router", "router") == settings.get("responder", "responder"):
        raise ValueError("agent.router and agent.responder must name two different prompt roles")


make_agent.check = check  # type: ignore[attr-defined]
