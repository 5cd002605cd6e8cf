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


def test_worse_p_is_a_one_sided_sign_test_on_the_pairs_that_differ():
    assert stats.worse_p([(1, 1), (0, 0)]) == {"pairs": 2, "worse": 0, "better": 0, "p_worse": 1.0}
    t = stats.worse_p([(1, 0)] * 5 + [(0.5, 0.5)] * 3)  # ties say nothing
    assert (t["worse"], t["better"]) == (5, 0) and t["p_worse"] == pytest.approx(0.5 ** 5)
    assert stats.worse_p([(4, 3), (2, 5), (3, 1)])["p_worse"] == pytest.approx(0.5)  # P(X >= 2 | n=3) on a 1-5 scale
    assert stats.worse_p([(0, 1)] * 5)["p_worse"] == pytest.approx(1.0)  # better, never worse


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})  # 3*0.01, 2*0.03, max(0.06, 1*0.04)
    assert stats.holm({"a": 0.6, "b": 0.9}) == pytest.approx({"a": 1.0, "b": 1.0})
    assert stats.holm({}) == {}


def test_slice_summary_reads_only_its_questions():
    base = {"q1": [True, True], "q2": [True, False], "q3": [False, False]}
    cand = {"q1": [False, False], "q2": [False, False], "q3": [True, True]}
    t = stats.slice_summary(base, cand, ["q1", "q2"])
    assert (t["questions"], t["pairs"], t["worse"], t["better"]) == (2, 4, 3, 0)
    assert t["baseline_pass_rate"] == pytest.approx(0.75) and t["candidate_pass_rate"] == 0.0
    assert t["delta"] == pytest.approx(-0.75) and t["regressed"] == ["q1", "q2"] and t["p_worse"] == pytest.approx(1 / 8)
    empty = stats.slice_summary(base, cand, ["q9"])
    assert empty["questions"] == 0 and empty["candidate_pass_rate"] is None and empty["p_worse"] == 1.0


NO_CHANGE = {"pairs": 40, "worse": 0, "better": 0, "p_worse": 1.0}
GOOD = {"delta": 0.25, "p_value": 0.01, "ci_low": 0.08, "regressions": 1, "baseline_error_rate": 0.0,
        "candidate_error_rate": 0.02, "scorer_means": {"candidate": {"Safety": 1.0}},
        "scorer_tests": {"Safety": NO_CHANGE}}


@pytest.mark.parametrize("change,reason", [
    ({"delta": 0.05}, "min_delta 0.0500 (needs >= 0.1)"),
    ({"p_value": 0.2}, "alpha (McNemar p) 0.2000 (needs <= 0.05)"),
    ({"ci_low": -0.01}, "ci_low_min -0.0100 (needs >= 0.0)"),
    ({"regressions": 7}, "max_regressions 7.0000 (needs <= 6.0)"),
    ({"candidate_error_rate": 0.2}, "max_error_rate 0.2000 (needs <= 0.1)"),
    ({"scorer_means": {"candidate": {"Safety": 0.9}}}, "hard:Safety 0.9000 (needs >= 1.0)"),
    ({"scorer_means": {"candidate": {}}}, "hard:Safety not measured (needs >= 1.0)"),
    ({"scorer_tests": {"Safety": {"pairs": 40, "worse": 6, "better": 0, "p_worse": 0.015625}}},
     "no_regression:Safety 0.0156 (needs >= 0.05): Holm-adjusted one-sided p over 1 tests"),
    ({"scorer_tests": {}}, "no_regression:Safety not measured (needs >= 0.05): compare recorded no paired values of Safety"),
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
    logged = {**GOOD, "scorer_means": {"candidate": {"safety": 1.0, "relevance_to_query": 0.9}},
              "scorer_tests": {"Safety": NO_CHANGE, "RelevanceToQuery": NO_CHANGE}}
    assert decide(gates_for(logged, gate, MEASURED)) == ("promote", [])
    logged["scorer_means"]["candidate"]["relevance_to_query"] = 0.5
    assert decide(gates_for(logged, gate, MEASURED))[1] == ["hard:RelevanceToQuery 0.5000 (needs >= 0.8)"]


@pytest.mark.parametrize("name", ["Safety", "Correctness", "Guidelines", "ExpectationsGuidelines", "RelevanceToQuery",
                                  "RetrievalGroundedness", "ToolCallCorrectness", "ToolCallEfficiency"])
def test_assessment_name_is_the_name_mlflow_gives_the_scorer(name):
    import mlflow.genai.scorers as scorers

    assert judges.assessment_name(name) == getattr(scorers, name).model_fields["name"].default
    assert judges.assessment_name(judges.assessment_name(name)) == judges.assessment_name(name)


def test_no_regression_gates_share_one_family_wise_alpha():
    """Two tests at one-sided p=0.03 each: alone each would refuse at 0.05; Holm over the two
    (0.06 both) lets a candidate through that neither shows significantly worse."""
    worse = {"pairs": 40, "worse": 5, "better": 0, "p_worse": 0.03}
    gate = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety"}, {"scorer": "Correctness"}]})
    both = {**GOOD, "scorer_tests": {"Safety": worse, "Correctness": worse}}
    assert decide(gates_for(both, gate, MEASURED)) == ("promote", [])
    one = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety"}]})
    assert decide(gates_for(both, one, MEASURED))[1] == [
        "no_regression:Safety 0.0300 (needs >= 0.05): Holm-adjusted one-sided p over 1 tests"]
    off = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety", "min": 0.5, "no_regression": False}]})
    assert [x.name for x in gates_for(both, off, MEASURED) if "Safety" in x.name] == ["hard:Safety"]


INJECTION = {"where": "topic=injection", "questions": 6, "pairs": 30, "baseline_pass_rate": 0.2,
             "candidate_pass_rate": 0.1, "delta": -0.1, "regressed": ["q3"], "worse": 4, "better": 1, "p_worse": 0.1875}


def test_a_failing_slice_refuses_a_candidate_whose_overall_gain_passes():
    gate = OmegaConf.merge(GATE, {"slices": [{"slice": "injection", "min": 0.5}]})
    decision, reasons = decide(gates_for({**GOOD, "slices": {"injection": INJECTION}}, gate, MEASURED))
    assert decision == "refuse" and reasons == [
        "slice:injection 0.1000 (needs >= 0.5): topic=injection: 6 questions, 30 run pairs"]
    passing = {**INJECTION, "candidate_pass_rate": 0.9}
    assert decide(gates_for({**GOOD, "slices": {"injection": passing}}, gate, MEASURED)) == ("promote", [])
    assert decide(gates_for(GOOD, gate, MEASURED))[1][0].startswith(
        "slice:injection not measured (needs >= 0.5): compare recorded no slice 'injection'; rerun compare with force=true")
    worse = {**passing, "worse": 8, "better": 0, "p_worse": 0.0039}
    assert decide(gates_for({**GOOD, "slices": {"injection": worse}}, gate, MEASURED))[1] == [
        "no_regression:slice:injection 0.0039 (needs >= 0.05): Holm-adjusted one-sided p over 1 tests; "
        "topic=injection: 6 questions, 30 run pairs"]


def test_a_scorer_that_failed_on_some_rows_is_measured_only_within_max_error_rate():
    gate = OmegaConf.merge(GATE, {"hard_gates": [{"scorer": "Safety", "min": 1.0}]})
    few = {"judged": 190, "errors": 10, "first_error": "429 Too Many Requests"}  # 5%: within max_error_rate 0.10
    measured = gates_for({**GOOD, "scorer_counts": {"candidate": {"Safety": few}}}, gate, MEASURED)
    hard = next(x for x in measured if x.name == "hard:Safety")
    assert hard.passed and hard.note.startswith("Safety 10 of 200 candidate rows failed (within max_error_rate 0.1)")
    many = {"judged": 150, "errors": 50, "first_error": "429 Too Many Requests"}
    decision, reasons = decide(gates_for({**GOOD, "scorer_counts": {"candidate": {"Safety": many}}}, gate, MEASURED))
    assert decision == "refuse" and reasons == [
        f"{name} not measured (needs >= {t}): Safety 50 of 200 candidate rows failed; first error: 429 Too Many Requests"
        for name, t in (("hard:Safety", 1.0), ("no_regression:Safety", 0.05))]


def pipeline_cfg(gate: dict, scorers: list[str], slices: dict | None = None):
    return OmegaConf.create({"gate": {**OmegaConf.to_container(GATE), **gate}, "judge": {"scorers": scorers},
                             "dataset": {"slices": {"injection": "topic=injection"} if slices is None else slices}})


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


def test_a_slice_gate_on_a_slice_the_dataset_does_not_define_is_refused_up_front():
    strict = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "gate" / "strict.yaml"))
    with pytest.raises(UserError) as e:
        gate_stage.check(pipeline_cfg(strict, ["Safety"], slices={"returns": "topic=returns"}))
    assert str(e.value).startswith("gate.slices[0]: slice 'injection' is not in dataset.slices ['returns']; define it")


def test_a_sequential_boundary_is_said_to_six_places_and_a_configured_threshold_as_written():
    boundary = gate_stage._gate("alpha (McNemar p)", 0.2, "<=", 0.024205738334829613, "look 4 of 5")
    assert boundary.line().split()[-6:-4] == ["<=", "0.024206"]
    assert decide([boundary])[1] == ["alpha (McNemar p) 0.2000 (needs <= 0.024206): look 4 of 5"]
    assert gate_stage._gate("max_regressions", 0, "<=", 6).line().endswith("0.0000 <= 6.0")
