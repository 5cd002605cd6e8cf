"""The agent contract's checks and the summary's word on an agent that bypassed the gateway
(pure: no server; the whole pipeline with a user's factory is in tests/test_visa_desk.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from jobs.core.errors import UserError
from jobs.core.results import CompareResult, EvaluateResult
from jobs.eval import agent
from jobs.pipeline import stage_lines


def make_agent(*, prompts, endpoint, style, max_steps=3):
    return lambda **inputs: "answer"


def cfg(**agent_keys):
    return OmegaConf.create({"agent": {"_target_": f"{__name__}.make_agent", "input_key": "messages", **agent_keys},
                             "dataset": {"input_keys": ["messages"]}})


def test_a_factory_gets_its_own_settings_and_not_promptgates():
    c = cfg(style="brief", sim_profile="auto")
    assert agent.factory_settings(c.agent, agent.load_factory(c.agent)) == {"style": "brief"}
    agent.check(c)


@pytest.mark.parametrize("keys,says", [
    ({"style": "brief", "colour": "red"}, f"agent.colour is not a setting of {__name__}.make_agent; its settings are "
                                          "max_steps, style"),
    ({}, f"agent.style is not set; {__name__}.make_agent needs it"),
])
def test_settings_the_factory_cannot_take_are_refused_with_the_key(keys, says):
    with pytest.raises(UserError) as e:
        agent.check(cfg(**keys))
    assert str(e.value) == says


def test_a_config_of_the_form_before_the_contract_means_the_built_in_agent():
    old = OmegaConf.create({"tools_module": "jobs.domains.shop.tools", "input_key": "question", "max_steps": 4})
    assert agent.factory_path(old) == agent.BUILT_IN
    assert agent.factory_settings(old, agent.load_factory(old))["input_key"] == "question"  # it takes input_key


EVIDENCE = SimpleNamespace(min_rows=20, min_questions=20, min_holdout_labels=10)


def test_the_summary_says_when_the_agent_made_no_call_through_the_gateway():
    quiet = EvaluateResult(rows=28, scored=28, errors=0, pass_rate=0.5, prompt_version=1,
                           spans={"judge": {"calls": 28, "seconds": 1.0}})
    lines = stage_lines(SimpleNamespace(evidence=EVIDENCE), "evaluate", quiet)
    assert any("NOTE: the agent ran 28 rows and made no LLM call through the gateway" in x for x in lines)
    through = EvaluateResult(rows=28, scored=28, errors=0, pass_rate=0.5, prompt_version=1,
                             spans={"agent": {"calls": 40}, "judge": {"calls": 28}})
    assert not any("NOTE" in x for x in stage_lines(SimpleNamespace(evidence=EVIDENCE), "evaluate", through))
    nothing_run = CompareResult(outcome="no_candidate", spans={"judge": {"calls": 0}})
    assert not any("NOTE" in x for x in stage_lines(SimpleNamespace(evidence=EVIDENCE), "compare", nothing_run))


def strict_agent(*, prompts, endpoint, max_steps=3):
    return lambda **inputs: "answer"


def refuse(settings):
    if settings.get("max_steps", 3) < 1:
        raise ValueError(f"agent.max_steps={settings['max_steps']} must be at least 1")


strict_agent.check = refuse


def test_a_factorys_own_check_is_bad_input_not_a_traceback():
    c = cfg(max_steps=0)
    c.agent._target_ = f"{__name__}.strict_agent"
    with pytest.raises(UserError) as e:
        agent.check(c)
    assert str(e.value) == f"{__name__}.strict_agent.check: agent.max_steps=0 must be at least 1"
