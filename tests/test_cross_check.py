"""MLflow's compare_evaluations and promptgate's compare measure the same quantity on every
judge kind: the judge's pass/fail verdict per run pair (``<judge>_passed``), whatever values
the judge gives (a boolean, a 1-5 score, a category)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from jobs.core.paths import CONF_DIR
from jobs.eval import judges, stats
from jobs.eval.pipeline_judge import verdict_name, with_verdict
from jobs.stages.compare import mlflow_comparison
from tests.test_builtin_scorers import MODEL, judge_env  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.integration

KINDS = {
    "bool": {},
    "numeric": {"feedback_value_type": "float", "scale": [1, 5], "pass_threshold": 4},
    "categorical": {"feedback_value_type": "categorical", "categories": ["good", "partial", "poor"]},
}
GOOD = "Judge hit .301 (based on 412 plate appearances). Recommendation: stay back on the curveball."
PARTIAL = "Judge hit .301 (based on 412 plate appearances)."
POOR = "Judge is a fine hitter."
QUESTIONS = [f"How does batter {name} hit curveballs?" for name in
             ("Judge", "Soto", "Betts", "Ohtani", "Freeman", "Alvarez", "Seager", "Tucker")]
ARMS = {"baseline": [POOR, PARTIAL, GOOD, POOR, PARTIAL, POOR, GOOD, POOR],
        "candidate": [GOOD, GOOD, GOOD, PARTIAL, GOOD, POOR, PARTIAL, GOOD]}


def _arm(judge, cfg, kind: str, outputs: list[str]) -> tuple[str, dict[str, list[bool | None]], list]:
    """One evaluation run of ``outputs``: its run id, promptgate's verdicts by question, the judge's values."""
    import mlflow

    mlflow.set_experiment(f"promptgate-cross-check-{kind}")
    with mlflow.start_run() as run:
        rows = [{"inputs": {"question": q}, "outputs": o, "expectations": {"answerable": True}}
                for q, o in zip(QUESTIONS, outputs)]
        df = mlflow.genai.evaluate(data=rows, scorers=[judge]).result_df
    by_question = {str(inputs["question"]): value for inputs, value in zip(df["request"], df[f"{cfg.name}/value"])}
    values = [by_question[q] for q in QUESTIONS]
    return run.info.run_id, {q: [judges.passed(cfg, v)] for q, v in zip(QUESTIONS, values)}, values


@pytest.mark.parametrize("kind", list(KINDS))
def test_mlflow_and_promptgate_agree_on_the_pass_fail_gain_for_each_judge_kind(kind, judge_env):  # noqa: F811
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "judge" / "hitting_quality.yaml"), {"model": MODEL, **KINDS[kind]})
    judge = with_verdict(judges.build(cfg, None), cfg)
    runs, verdicts, values = {}, {}, {}
    for arm, outputs in ARMS.items():
        runs[arm], verdicts[arm], values[arm] = _arm(judge, cfg, kind, outputs)
    print(kind, values)
    kinds = {"bool": (bool,), "numeric": (int, float), "categorical": (str,)}[kind]
    assert all(isinstance(v, kinds) for arm in values.values() for v in arm), values  # the judge's own kind of value
    if kind == "numeric":
        assert all(1 <= v <= 5 for arm in values.values() for v in arm)
    if kind == "categorical":
        assert {v for arm in values.values() for v in arm} <= {"good", "partial", "poor"}

    s = stats.paired_summary(verdicts["baseline"], verdicts["candidate"], n_boot=200)
    m = mlflow_comparison(runs["baseline"], runs["candidate"], str(cfg.name), 0.95)
    assert m["status"] == "ok" and m["measures"].startswith(verdict_name(str(cfg.name))), m
    assert s["delta"] > 0 and s["pairs"] == len(QUESTIONS)  # the candidate passes more: a gain to agree on
    assert m["n_paired"] == s["pairs"] and m["unpaired"] == 0
    assert m["diff"] == pytest.approx(s["delta"])
    assert (m["baseline_mean"], m["candidate_mean"]) == pytest.approx((s["base_pass_rate"], s["cand_pass_rate"]))
    assert m["method"] == "mcnemar_exact" and m["p_value"] == pytest.approx(s["p_value"])
