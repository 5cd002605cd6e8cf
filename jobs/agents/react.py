"""The built-in agent: a LangGraph ReAct agent over a tools module, one factory of the agent
contract (jobs/eval/agent.py).

A tools module exposes ``TOOLS`` (plain functions with ``Annotated`` parameter descriptions).
The factory wraps them as LangChain tools over a ChatOpenAI model at the contract's endpoint.
The first prompt of the release is the system prompt, rendered with ``format()`` on every
call. The conversation is ``inputs[input_key]``: one question, or a list of chat messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from jobs.core.errors import UserError


def load_tools(module_name: str) -> list[Callable[..., str]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"agent.tools_module '{module_name}' cannot be imported ({e}); give a module path on PYTHONPATH, like mypackage.tools") from None
    tools = getattr(module, "TOOLS", None)
    if not tools:
        raise UserError(f"agent.tools_module '{module_name}' has no TOOLS list; define TOOLS = [fn, ...]")
    return list(tools)


def conversation(value: Any) -> list[Any]:
    """LangChain messages of one input: a question, or chat messages in OpenAI's form (content
    parts, assistant tool calls and tool turns kept as they are)."""
    from langchain_core.messages import HumanMessage, convert_to_messages

    if not isinstance(value, list):
        return [HumanMessage(str(value or ""))]
    return convert_to_messages(value)


def react_agent(*, prompts: dict[str, Any], endpoint: Any, tools_module: str, input_key: str = "question",
                max_steps: int = 6, max_retries: int = 0) -> Callable[..., str]:
    """predict_fn(**inputs) -> the agent's final answer."""
    from langchain.agents import create_agent
    from langchain_core.messages import SystemMessage
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI

    from jobs.core.spans import timed

    if len(prompts) != 1:
        raise ValueError(f"the built-in agent takes one prompt (its system prompt), not {sorted(prompts)}; drop "
                         "prompt.companions or name a factory of your own in agent._target_")
    tools = [StructuredTool.from_function(timed("tools", fn)) for fn in load_tools(tools_module)]
    prompt = next(iter(prompts.values()))
    llm = ChatOpenAI(model=endpoint.model, base_url=endpoint.base_url, api_key=endpoint.api_key,
                     temperature=endpoint.temperature, timeout=endpoint.timeout_s, max_retries=int(max_retries),
                     seed=endpoint.seed)
    graph = create_agent(llm, tools)
    recursion_limit = int(max_steps) * 2 + 1

    def predict_fn(**inputs: Any) -> str:
        messages = [SystemMessage(prompt.format()), *conversation(inputs.get(input_key))]  # format(): GEPA's text
        state = graph.invoke({"messages": messages}, config={"recursion_limit": recursion_limit})
        return str(state["messages"][-1].content)

    return predict_fn


def check(settings: dict[str, Any]) -> None:
    """The tools module imports and has TOOLS; the step and retry counts are in range."""
    load_tools(str(settings["tools_module"]))
    for key, low in (("max_steps", 1), ("max_retries", 0)):
        if key in settings and (not isinstance(settings[key], int) or isinstance(settings[key], bool)
                                or settings[key] < low):
            raise UserError(f"agent.{key}={settings[key]} must be a whole number of at least {low}")


react_agent.check = check  # type: ignore[attr-defined]  # the contract's pre-run check
