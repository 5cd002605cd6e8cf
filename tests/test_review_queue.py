"""feedback=ui through MLflow's review queue, in a real browser: the pipeline sets up the
judge's question and a queue of its traces and stops (feedback.wait=false); headless
Chromium opens the queue's page on the test server and answers one trace; the resumed
feedback stage reads that answer back as the judge's HUMAN label."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from jobs.core.paths import ROOT
from jobs.store import tracking

from .conftest import new_pipeline_id, printed_result
from .support.browser import ARTIFACTS, chromium, wait_for

pytestmark = pytest.mark.integration
JUDGE = "hitting_quality"
SCREENSHOT = "review-queue.png"


def test_an_answer_in_the_review_queue_page_becomes_the_judges_label(servers, mlflow_client, tmp_path):
    from selenium.webdriver.common.by import By

    pid = new_pipeline_id("ui")
    ui = ["feedback=ui", "feedback.wait=false", "feedback.min_labels=1", "feedback.reviewers=[coach@example.com]"]
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"pipeline_id={pid}", *ui], env=servers.env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    servers.keep_log(f"pipeline {pid} (review queue)", proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "labels so far: 0 of 1 needed" in proc.stdout
    assert "is waiting for expert labels in its review queue" in proc.stdout
    assert "--- align" not in proc.stdout  # the pipeline stopped at feedback
    link = re.search(r"reviewers open: (\S+)", proc.stdout).group(1)
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    assert tracking.latest_result(exp, pid, "feedback") is None  # nothing recorded as done yet
    assert mlflow_client.search_runs([exp], f"tags.`promptgate.pipeline_id` = '{pid}' AND attributes.status = 'RUNNING'") == []

    from mlflow.genai import label_schemas, review_queues

    schema = label_schemas.get_label_schema(JUDGE, experiment_id=exp)
    assert type(schema.input).__name__ == "InputPassFail"
    assert schema.instruction.startswith("Decide whether the response")
    queue = review_queues.get_review_queue(name=f"promptgate-{pid}", experiment_id=exp)
    assert queue.users == ["coach@example.com"] and queue.schema_ids == [schema.schema_id]
    items = list(review_queues.list_review_queue_items(queue.queue_id))
    assert len(items) == 28 and all(i.status == "pending" for i in items)

    with chromium() as page:
        page.get(link)
        wait_for("the queue's Start review button",
                 lambda: page.find_element(By.XPATH, "//button[normalize-space(.)='Start review']"), page=page).click()
        pass_choice = wait_for("the judge's question with Pass/Fail",
                               lambda: page.find_element(By.XPATH, f"//*[normalize-space(text())='{JUDGE}']")
                               and page.find_element(By.XPATH, "//*[normalize-space(text())='Pass']"), page=page)
        answered = re.search(r"selectedItemId=(tr-[0-9a-f]+)", page.current_url).group(1)
        submit_answer(page, pass_choice, lambda: human_answers(mlflow_client, answered))
        page.get(link)  # the queue's page, as a reviewer sees it, for the record
        wait_for("the queue table", lambda: "Completed (1)" in page.find_element(By.TAG_NAME, "body").text, page=page)
        shot = tmp_path / SCREENSHOT
        page.save_screenshot(str(shot))

    assert [a.feedback.value for a in human_answers(mlflow_client, answered)] == [True]

    import mlflow

    other = next(i.item_id for i in items if i.item_id != answered)
    mlflow.log_feedback(trace_id=other, name="hitting_qualty", value=False,  # a typo: reported, never counted
                        source=mlflow.entities.AssessmentSource(source_type="HUMAN", source_id="coach@example.com"))
    label_schemas.create_label_schema("hitting_qualty", type="feedback", experiment_id=exp,  # a hand-made question
                                      input=label_schemas.InputPassFail(positive_label="Good", negative_label="Bad"))
    resumed = servers.stage("feedback", f"pipeline_id={pid}", *ui[:1], "feedback.min_labels=1", "feedback.poll_s=1",
                            "feedback.timeout_s=60")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "labels so far: 1 of 1 needed" in resumed.stdout
    assert "1 trace(s) carry expert feedback named 'hitting_qualty', not the judge's name 'hitting_quality'" in resumed.stdout
    assert "the experiment also asks reviewers 'hitting_qualty'; those answers are not judge 'hitting_quality' labels" \
        in resumed.stdout
    result = printed_result(resumed)
    assert result["labels_written"] == 1 and result["source"] == "ui" and result["expert_pass_rate"] == 1.0
    mlflow_client.log_artifact(result["run_id"], str(shot))  # the queue page, kept with the run it fed
    assert SCREENSHOT in [f.path for f in mlflow_client.list_artifacts(result["run_id"])]
    kept = ARTIFACTS / SCREENSHOT  # for people: the last run's queue page
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(shot.read_bytes())


def human_answers(client, trace_id: str) -> list:
    """The HUMAN answers to the judge's question that MLflow holds for one trace."""
    return [a for a in client.get_trace(trace_id).info.assessments or [] if a.name == JUDGE
            and str(a.source.source_type) in ("HUMAN", "AssessmentSourceType.HUMAN")]


def submit_answer(page, choice, answers: Callable[[], list], attempts: int = 3) -> None:
    """Pick ``choice`` and submit, as a reviewer does. The page can still re-render its form
    after it shows (it loads the trace's assessments), dropping a pick made too early: then
    MLflow holds no answer and the pick is made again. A submitted answer is never sent twice."""
    from selenium.webdriver.common.by import By

    def reviewed() -> bool:
        return "1 of 28 reviewed" in page.find_element(By.TAG_NAME, "body").text

    for attempt in range(1, attempts + 1):
        choice.click()
        submit = wait_for("an enabled Submit button", lambda: next(
            (b for b in page.find_elements(By.XPATH, "//button[normalize-space(.)='Submit']") if b.is_enabled()), None),
            timeout_s=30, page=page)
        submit.click()
        try:
            wait_for("1 of 28 reviewed", lambda: reviewed() or answers(), timeout_s=30 if attempt < attempts else 120,
                     page=page)
            break
        except AssertionError:
            if attempt == attempts:
                raise
        choice = wait_for("the Pass choice again", lambda: page.find_element(By.XPATH, "//*[normalize-space(text())='Pass']"),
                          page=page)
    wait_for("1 of 28 reviewed", reviewed, page=page)
