"""The agent contract: how promptgate gets a predict function from any agent.

``agent._target_`` names a factory. Hydra instantiates it partially with the agent config's
own settings (every key but promptgate's: ``_target_``, ``input_key``, ``sim_profile``, ``autolog``), and
promptgate then calls it once per sampling seed with the release's prompts and the model
endpoint::

    predict_fn = factory(prompts={role: PromptVersion}, endpoint=AgentEndpoint(...), **settings)
    answer = predict_fn(**record_inputs)  # the record's inputs as they are; returns text

What must hold for promptgate's figures to mean something:

* every LLM call goes to ``endpoint.base_url`` (the stage's gateway session): that is where
  calls are cached, budgeted, retried and counted per kind; an agent that calls elsewhere
  runs, and the summary says that the agent made no call through the gateway;
* each prompt is rendered with ``PromptVersion.format()`` on every call, not once when the
  factory runs: GEPA puts its candidate text there (it patches ``PromptVersion.template``);
* ``endpoint.seed`` is sent as the sampling seed, so that repeat *k* of both compare arms
  asks for the same sample.

A factory may carry a ``check(settings)`` attribute: promptgate calls it before any run
opens, so a bad setting (a ValueError or TypeError naming it) is exit 2 with nothing in MLflow. The built-in ReAct-over-tools
agent (``jobs.agents.react.react_agent``) is one such factory; an agent config with a
``tools_module`` and no ``_target_`` (the form before this contract) still means it.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.core.errors import UserError

REPEAT_KEY = "repeat"  # an input naming the repeat index; it becomes the agent's sampling seed
AUTOLOG_FLAVORS = ("langchain", "openai")  # the MLflow autolog flavors agent.autolog chooses among
OWN_KEYS = ("_target_", "input_key", "sim_profile", "autolog")  # promptgate reads these; the rest are the factory's
BUILT_IN = "jobs.agents.react.react_agent"  # the agent of configs that name a tools_module and no _target_


@dataclass(frozen=True)
class AgentEndpoint:
    """Where the agent sends its LLM calls, and how."""

    base_url: str  # the gateway session's /v1 URL: send every call here
    api_key: str  # what to send as the key (the gateway holds the real one)
    model: str  # the agent model's name
    temperature: float  # sampling temperature
    timeout_s: float  # client timeout of one call, above the gateway's own retries
    seed: int | None = None  # the sampling seed of this predict function
    max_retries: int = 0  # client retries: 0, since the gateway is the one layer that retries


def input_key(agent_cfg: Any) -> str:
    """The dataset input that holds the user's text or conversation."""
    return str(agent_cfg.get("input_key") or "question")


def factory_path(agent_cfg: Any) -> str:
    target = agent_cfg.get("_target_")
    if target:
        return str(target)
    if agent_cfg.get("tools_module"):
        return BUILT_IN
    raise UserError("agent._target_ is not set; name your agent factory (module.function), or give "
                    "agent.tools_module for the built-in ReAct agent (README, \"Bring your own agent\")")


def load_factory(agent_cfg: Any) -> Callable[..., Any]:
    path = factory_path(agent_cfg)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise UserError(f"agent._target_ '{path}' names no module; give module.function, like mydesk.agent.make_agent")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"agent._target_ '{path}': module '{module_name}' cannot be imported ({e}); put its package "
                        "on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"agent._target_ '{path}': '{module_name}' has no function '{attr}'; name the factory that "
                        "returns your predict function")
    return factory


def factory_settings(agent_cfg: Any, factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword arguments the factory gets from the config, checked against its signature."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(agent_cfg, resolve=True) if isinstance(agent_cfg, DictConfig) else dict(agent_cfg)
    given = {k: v for k, v in raw.items() if k not in OWN_KEYS}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "input_key" in params:
        given["input_key"] = input_key(agent_cfg)
    path = factory_path(agent_cfg)
    for key in given:
        if key not in params and not takes_any:
            known = sorted(set(params) - {"prompts", "endpoint"})
            raise UserError(f"agent.{key} is not a setting of {path}; its settings are {', '.join(known) or 'none'}")
    for name, p in params.items():
        if name in ("prompts", "endpoint") or p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty and name not in given:
            raise UserError(f"agent.{name} is not set; {path} needs it")
    if "prompts" not in params or "endpoint" not in params:
        raise UserError(f"agent._target_ '{path}' must take prompts= and endpoint= (README, \"Bring your own agent\")")
    return given


def check(cfg: Any) -> None:
    """The factory imports and takes the config's settings; the agent's input is one the dataset
    guarantees; ``agent.autolog`` names flavors promptgate can set."""
    flavors = cfg.agent.get("autolog")
    if flavors is not None and (isinstance(flavors, str) or any(str(f) not in AUTOLOG_FLAVORS for f in flavors)):
        raise UserError(f"agent.autolog={flavors}: give a list of MLflow autolog flavors that trace your agent, "
                        f"from {', '.join(AUTOLOG_FLAVORS)} (e.g. agent.autolog=[openai]), or null")
    factory = load_factory(cfg.agent)
    settings = factory_settings(cfg.agent, factory)
    if callable(getattr(factory, "check", None)):
        try:
            factory.check(settings)
        except (ValueError, TypeError) as e:  # a user's factory knows nothing of promptgate's errors
            raise UserError(f"{factory_path(cfg.agent)}.check: {e}") from None
    key, keys = input_key(cfg.agent), [str(k) for k in cfg.dataset.input_keys]
    if key not in keys:
        raise UserError(f"agent.input_key '{key}' is not among dataset.input_keys {keys}; the agent would get no "
                        "question. Add it to dataset.input_keys or fix agent.input_key")


def build_predict_fn(agent_cfg: Any, endpoint: Any, prompt_uris: dict[str, str],
                     tags_for: Callable[[dict[str, Any]], dict[str, str]] | None = None) -> Callable[..., str]:
    """The predict function MLflow calls: the user's agent for the row's sampling seed, traced.

    ``prompt_uris`` maps each prompt's role to its URI. The versions are loaded once, here,
    before any row runs (a version is immutable, and MLflow's registry client must not be
    first used from the worker threads: README, "Prompt loading")."""
    import mlflow
    from hydra.utils import instantiate

    factory = load_factory(agent_cfg)
    settings = factory_settings(agent_cfg, factory)
    make = instantiate({"_target_": factory_path(agent_cfg), **settings}, _partial_=True, _convert_="all")
    prompts = {role: mlflow.genai.load_prompt(uri) for role, uri in prompt_uris.items()}
    agents: dict[Any, Callable[..., Any]] = {}
    lock = threading.Lock()

    def agent_for(seed: Any) -> Callable[..., Any]:
        """One agent per sampling seed: repeated runs of a question ask for fresh samples."""
        with lock:
            if seed not in agents:
                agents[seed] = make(prompts=prompts, endpoint=AgentEndpoint(
                    endpoint.agent_base_url, endpoint.api_key, endpoint.agent_model, endpoint.temperature,
                    endpoint.timeout_s, None if seed is None else int(seed)))
            return agents[seed]

    try:  # built once now, so that prompts or settings it refuses stop the stage before any row runs
        agent_for(None)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"agent._target_ {factory_path(agent_cfg)} refused its prompts {sorted(prompts)} or settings "
                        f"{sorted(settings)}: {e}") from None

    @mlflow.trace(name="agent", span_type="AGENT")
    def predict_fn(**inputs: Any) -> str:
        if tags_for is not None:
            mlflow.update_current_trace(tags=tags_for(inputs))
        seed = inputs.pop(REPEAT_KEY, None)
        return str(agent_for(seed)(**inputs))

    return predict_fn
