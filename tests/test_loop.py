"""The loop keeps improving: a pipeline after a promotion starts from what was promoted, on
real servers (issue 25, item 5)."""

from __future__ import annotations

import uuid

import pytest

from .conftest import first_questions, new_pipeline_id, stage_result
from .conftest import run_pipeline as pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two whole pipelines
# gates relaxed so that the first pipeline's gain promotes: this test is about what the next one starts from
RELAXED = ("gate.min_delta=0.0", "gate.alpha=1.0", "gate.ci_low_min=-1.0", "compare.n_repeats=1")


def test_a_second_pipeline_starts_from_the_first_ones_promotion(servers, mlflow_client, tmp_path):
    name = f"loop-{uuid.uuid4().hex[:6]}"
    relaxed = (*RELAXED, f"dataset.heldout={first_questions(tmp_path, 12)}")  # where it starts, not compare's figures
    first = pipeline(servers, new_pipeline_id("loop1"), f"prompt.name={name}", *relaxed)
    assert "GEPA starts from the seed v1, which production holds;" in first.stdout
    assert "PROMOTED: production v1 -> v2" in first.stdout, first.stdout[-2000:]
    assert int(mlflow_client.get_prompt_version_by_alias(name, "production").version) == 2

    pid = new_pipeline_id("loop2")
    second = pipeline(servers, pid, f"prompt.name={name}", *relaxed)
    assert "GEPA starts from production v2, compare's baseline (the seed is v1);" in second.stdout
    assert stage_result(mlflow_client, pid, "evaluate")[1]["prompt_version"] == 2  # the experts label production's answers
    optimized = stage_result(mlflow_client, pid, "optimize")[1]
    assert optimized["seed_version"] == 2
    summary = second.stdout.split("=== promptgate pipeline")[1]
    assert "optimize: from v2:" in summary and "evaluate: v2:" in summary
    if optimized["outcome"] == "candidate":  # what GEPA learned goes on top of v2's text
        text = mlflow_client.get_prompt_version(name, 2).template
        assert mlflow_client.get_prompt_version(name, optimized["candidate_version"]).template.startswith(text[:200])
        assert stage_result(mlflow_client, pid, "compare")[1]["baseline_version"] == 2
    else:
        assert "no candidate beat v2 on train" in optimized["reason"]
