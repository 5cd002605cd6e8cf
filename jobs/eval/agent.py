"""The agent factory: one contract for every domain.

A domain is a tools module exposing ``TOOLS`` (plain functions with ``Annotated`` parameter
descriptions). The factory wraps them as LangChain tools, builds a LangGraph ReAct agent
over a ChatOpenAI model from the model config, and returns ``predict_fn(**inputs) -> str``.
The system prompt version is loaded once, before any row runs (a version is immutable, and
MLflow's registry client must not be first used from the worker threads: see README, "Prompt
loading"), and rendered through ``PromptVersion.format()`` on every call, which is where GEPA
puts its candidate text.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from jobs.core.errors import UserError

REPEAT_KEY = "repeat"  # an input naming the repeat index; it becomes the LLM's sampling seed


def load_tools(module_name: str) -> list[Callable[..., str]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"agent.tools_module '{module_name}' cannot be imported ({e}); give a module path on PYTHONPATH, like mypackage.tools") from None
    tools = getattr(module, "TOOLS", None)
    if not tools:
        raise UserError(f"agent.tools_module '{module_name}' has no TOOLS list; define TOOLS = [fn, ...]")
    return list(tools)


def check(cfg: Any) -> None:
    """The tools module imports and has TOOLS; the agent's input is one the dataset guarantees."""
    load_tools(str(cfg.agent.tools_module))
    key, keys = str(cfg.agent.input_key), [str(k) for k in cfg.dataset.input_keys]
    if key not in keys:
        raise UserError(f"agent.input_key '{key}' is not among dataset.input_keys {keys}; the agent would get no "
                        "question. Add it to dataset.input_keys or fix agent.input_key")


def build_predict_fn(agent_cfg: Any, endpoint: Any, prompt_uri: str,
                     tags_for: Callable[[dict[str, Any]], dict[str, str]] | None = None) -> Callable[..., str]:
    import mlflow
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI

    from jobs.core.spans import timed

    tools = [StructuredTool.from_function(timed("tools", fn)) for fn in load_tools(str(agent_cfg.tools_module))]
    prompt = mlflow.genai.load_prompt(prompt_uri)  # once, in the calling thread
    graphs: dict[Any, Any] = {}

    def graph_for(seed: Any) -> Any:
        """One agent per sampling seed: repeated runs of a question ask for fresh samples."""
        if seed not in graphs:
            llm = ChatOpenAI(model=endpoint.agent_model, base_url=endpoint.base_url, temperature=endpoint.temperature,
                             timeout=endpoint.timeout_s, max_retries=int(agent_cfg.max_retries), seed=seed)
            graphs[seed] = create_agent(llm, tools)
        return graphs[seed]

    input_key = str(agent_cfg.input_key)
    recursion_limit = int(agent_cfg.max_steps) * 2 + 1

    @mlflow.trace(name="agent", span_type="AGENT")
    def predict_fn(**inputs: Any) -> str:
        if tags_for is not None:
            mlflow.update_current_trace(tags=tags_for(inputs))
        system = prompt.format()  # rendered at call time: GEPA patches PromptVersion.template
        messages = [SystemMessage(system), HumanMessage(str(inputs.get(input_key, "")))]
        graph = graph_for(inputs.get(REPEAT_KEY))
        state = graph.invoke({"messages": messages}, config={"recursion_limit": recursion_limit})
        return str(state["messages"][-1].content)

    return predict_fn
