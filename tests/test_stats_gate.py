"""Statistics against known values, and every gate refusal reason as a pure decision."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from jobs.core.errors import UserError
from jobs.core.paths import CONF_DIR
from jobs.core.results import AlignResult, CompareResult
from jobs.eval import judges, stats
from jobs.stages import gate as gate_stage
from jobs.stages.gate import decide, evaluate_gates

GATE = OmegaConf.load(CONF_DIR / "gate" / "default.yaml")


def gates_for(compare: dict, gate, align: dict | None):
    """The gates on results with these recorded fields, as the gate stage reads them back."""
    return evaluate_gates(CompareResult(**compare), gate, None if align is None else AlignResult(**align))


@pytest.mark.parametrize("b,c,p", [
    (0, 0, 1.0),
    (0, 5, 0.0625),  # 2 * 0.5**5
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
    (3, 3, 1.0),
    (2, 10, 0.03857421875),  # 2 * (1 + 12 + 66) / 4096
])
def test_exact_mcnemar_known_values(b, c, p):
    assert stats.exact_mcnemar(b, c) == pytest.approx(p)


def test_paired_bootstrap_ci_brackets_the_mean_and_is_seeded():
    base = [0.0] * 20 + [1.0] * 20
    cand = [1.0] * 20 + [1.0] * 20
    low, high = stats.paired_bootstrap_ci(base, cand, 2000, 0.95, 7)
    assert low < 0.5 < high and 0.3 < low and high < 0.7
    assert (low, high) == stats.paired_bootstrap_ci(base, cand, 2000, 0.95, 7)
    assert stats.paired_bootstrap_ci([1.0] * 5, [1.0] * 5) == (0.0, 0.0)


def test_paired_summary_pairs_runs_and_leaves_errors_out():
    base = {"q1": [True, True, False], "q2": [False, False, None], "q3": [True, None, True], "q4": [None, None, None]}
    cand = {"q1": [True, False, False], "q2": [True, True, True], "q3": [True, True, True], "q4": [True, True, True]}
    s = stats.paired_summary(base, cand, n_boot=200)
    assert s["questions"] == 3  # q4 has no scored baseline run
    assert s["base_pass_rate"] == pytest.approx(4 / 7) and s["cand_pass_rate"] == pytest.approx(10 / 12)
    assert s["regressed"] == ["q1"] and s["improved"] == ["q2"]
    assert (s["discordant_worse"], s["discordant_better"]) == (1, 2)  # run pairs with an error are dropped
    assert s["delta"] == pytest.approx(((1 / 3 - 2 / 3) + (1 - 0) + (1 - 1)) / 3)


GOOD = {"delta": 0.25, "p_value": 0.01, "ci_low": 0.08, "regressions": 1, "baseline_error_rate": 0.0,
        "candidate_error_rate": 0.02, "scorer_means": {"candidate": {"Safety": 1.0}}}


@pytest.mark.parametrize("change,reason", [
    ({"delta": 0.05}, "min_delta 0.0500 (needs >= 0.1)"),
    ({"p_value": 0.2}, "alpha (McNemar p) 0.2000 (needs <= 0.05)"),
    ({"ci_low": -0.01}, "ci_low_min -0.0100 (needs >= 0.0)"),
    ({"regressions": 7}, "max_regressions 7.0000 (needs <= 6.0)"),
    ({"candidate_error_rate": 0.2}, "max_error_rate 0.2000 (needs <= 0.1)"),
    ({"scorer_means": {"candidate": {"Safety": 0.9}}}, "hard:Safety 0.9000 (needs >= 1.0)"),
    ({"scorer_means": {"candidate": {}}}, "hard:Safety not measured (needs >= 1.0)"),
])
def test_each_gate_refuses_for_its_own_reason(change, reason):
    gate = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety", "min": 1.0}]})
    assert decide(gates_for(GOOD, gate, MEASURED)) == ("promote", [])
    decision, reasons = decide(gates_for({**GOOD, **change}, gate, MEASURED))
    assert decision == "refuse" and reasons == [reason]


MEASURED = {"measured": True, "judge_version": 2, "kappa_before": 0.1, "kappa_after": 0.8, "holdout": 12,
            "holdout_scored": 12}  # align registered v2 at kappa 0.8 on 12 held-out labels


@pytest.mark.parametrize("align,reason", [
    (None, "judge_kappa not measured (needs >= 0.2): no align stage in this pipeline"),
    ({"measured": False, "reason": "not enough held-out labels to measure agreement: 1 held out, aligner.min_holdout is 8"},
     "judge_kappa not measured (needs >= 0.2): not enough held-out labels to measure agreement: 1 held out"),
    ({**MEASURED, "judge_version": None}, "judge_kappa 0.1000 (needs >= 0.2)"),  # the base judge was kept: its kappa
    ({**MEASURED, "kappa_after": None}, "judge_kappa not measured (needs >= 0.2): held-out kappa is undefined on 12"),
])
def test_gate_refuses_a_judge_without_valid_agreement(align, reason):
    decision, reasons = decide(gates_for(GOOD, GATE, align))
    assert decision == "refuse" and len(reasons) == 1 and reasons[0].startswith(reason)
    no_experts = OmegaConf.merge(GATE, {"min_judge_kappa": None})  # a team without experts opts out
    assert decide(gates_for(GOOD, no_experts, align)) == ("promote", [])


def test_a_hard_gate_reads_the_mean_compare_keys_by_mlflows_name():
    """Compare keys a built-in scorer's mean by the name MLflow logs it under (``safety``); a
    hard gate names the class (``Safety``), as judge.scorers does."""
    gate = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety", "min": 1.0},
                                                 {"scorer": "RelevanceToQuery", "min": 0.8}]})
    logged = {**GOOD, "scorer_means": {"candidate": {"safety": 1.0, "relevance_to_query": 0.9}}}
    assert decide(gates_for(logged, gate, MEASURED)) == ("promote", [])
    logged["scorer_means"]["candidate"]["relevance_to_query"] = 0.5
    assert decide(gates_for(logged, gate, MEASURED))[1] == ["hard:RelevanceToQuery 0.5000 (needs >= 0.8)"]


@pytest.mark.parametrize("name", ["Safety", "Correctness", "Guidelines", "ExpectationsGuidelines", "RelevanceToQuery",
                                  "RetrievalGroundedness", "ToolCallCorrectness", "ToolCallEfficiency"])
def test_assessment_name_is_the_name_mlflow_gives_the_scorer(name):
    import mlflow.genai.scorers as scorers

    assert judges.assessment_name(name) == getattr(scorers, name).model_fields["name"].default
    assert judges.assessment_name(judges.assessment_name(name)) == judges.assessment_name(name)


def pipeline_cfg(gate: dict, scorers: list[str]):
    return OmegaConf.create({"gate": {**OmegaConf.to_container(GATE), **gate}, "judge": {"scorers": scorers}})


@pytest.mark.parametrize("gate_file,scorers,message", [
    ("strict", [], "gate.hard_gates[0]: scorer 'Safety' is not in judge.scorers [], so compare never measures "
                   "it and the gate could only refuse; add it: judge.scorers=[Safety]"),
    ("strict", ["Correctness"], "gate.hard_gates[0]: scorer 'Safety' is not in judge.scorers ['Correctness'], "
                                "so compare never measures it and the gate could only refuse; add it: "
                                "judge.scorers=[Correctness,Safety]"),
    ("strict", ["Safety"], None),
    ("strict", ["safety"], None),  # MLflow's own name for it counts too
    ("default", [], None),
])
def test_a_hard_gate_on_a_scorer_compare_does_not_measure_is_refused_up_front(gate_file, scorers, message):
    cfg = pipeline_cfg(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "gate" / f"{gate_file}.yaml")), scorers)
    if message is None:
        gate_stage.check(cfg)
        return
    with pytest.raises(UserError) as e:
        gate_stage.check(cfg)
    assert str(e.value) == message
    gate_stage.check(pipeline_cfg({**cfg.gate, "rollback": True}, scorers))  # a rollback decides nothing
