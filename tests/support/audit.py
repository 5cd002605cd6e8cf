"""What a retried or interrupted pipeline left in MLflow: duplicates and the decision.
Used by the kill-and-rerun test and by ``make bench-reliability``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from jobs.core.faults import PAUSE_ENV
from jobs.core.paths import ROOT
from jobs.store import tracking

KILL_POINTS = {"evaluate": "evaluate.scored", "feedback": "feedback.first_label", "optimize": "optimize.registered",
               "gate": "gate.decided"}


def kill_at_pause(stage: str, overrides: list[str], env: dict[str, str], point: str | None = None,
                  after: str | None = None, timeout_s: float = 400) -> tuple[int, str]:
    """Run a stage until it (or one of its shard processes) reaches its pause point, and has
    printed ``after`` when given, then SIGKILL it and its children; returns (exit code, output).
    Past ``timeout_s`` it is killed and the test fails with what was missing and what the stage
    printed, instead of a bare test timeout."""
    import selectors
    import time

    point = point or KILL_POINTS[stage]
    proc = subprocess.Popen([sys.executable, "-m", f"jobs.{stage}", *overrides], env={**env, PAUSE_ENV: point},
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    out, deadline = b"", time.monotonic() + timeout_s
    wanted = [f"PAUSED AT {point}".encode(), *([after.encode()] if after else [])]
    while not all(w in out for w in wanted):
        left = deadline - time.monotonic()
        if left <= 0:
            os.killpg(proc.pid, signal.SIGKILL)
            missing = [w.decode() for w in wanted if w not in out]
            raise AssertionError(f"{stage} never printed {missing} within {timeout_s:.0f} s; it printed:\n"
                                 + out.decode(errors="replace")[-4000:])
        if sel.select(timeout=min(left, 1.0)):
            chunk = os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:  # the stage ended before its pause point
                break
            out += chunk
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage and any shard process it left paused
    except ProcessLookupError:
        pass
    proc.wait(timeout=120)
    return proc.returncode, out.decode(errors="replace")


def duplicates(client: Any, experiment_id: str, pipeline_id: str, prompt: str, judge: str) -> dict[str, int]:
    """Counts that must be zero after any number of retries of one pipeline."""
    import mlflow

    versions = [v for v in client.search_prompt_versions(prompt)]
    texts = [v.template.strip() for v in versions]
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=5000,
                                  filter_string=f"tag.`{tracking.TAG_PIPELINE}` = '{pipeline_id}'")
    extra_labels = 0
    for t in traces:
        n = sum(1 for a in t.info.assessments or [] if a.name == judge and a.source.source_type == "HUMAN")
        extra_labels += max(0, n - 1)
    finished = {stage: len(tracking.find_runs(experiment_id, pipeline_id, stage)) for stage in KILL_POINTS}
    return {
        "prompt_versions": len(texts) - len(set(texts)),
        "human_labels": extra_labels,
        "finished_runs": sum(max(0, n - 1) for n in finished.values()),
        "judge_versions": max(0, len({getattr(tracking.result_of(r), "judge_version", None)
                                      for r in tracking.find_runs(experiment_id, pipeline_id, "align")}) - 1),
    }
