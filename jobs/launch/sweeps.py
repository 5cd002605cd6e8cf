"""Hydra callback for multirun sweeps: saves each point's result next to its output and,
when the sweep ends, prints a table, names the best point, and points the ``candidate``
alias at it. Works for any launcher, since it reads the results back from the sweep dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from jobs.core.errors import one_line
from jobs.core.results import StageResult, encode

RESULT_FILE = "result.json"
SUMMARY_FILE = "sweep_summary.json"


def as_dict(result: Any) -> dict:
    """A point's result as result.json holds it: the stage result's fields, or the error dict."""
    if isinstance(result, StageResult):
        return json.loads(encode(result))
    return result if isinstance(result, dict) else {}


def point_result(job_return: Any) -> dict:
    """A point's result from its JobReturn: the stage result (or a bad point's error dict) when
    the task returned; ``{"outcome": "failed", "error": ...}`` when it raised (JobStatus.FAILED,
    whose ``return_value`` re-raises, so the status is read first)."""
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED:
        return as_dict(job_return.return_value)
    if job_return.status == JobStatus.FAILED:
        try:
            job_return.return_value  # noqa: B018 - re-raises the task's exception (Hydra logs the overrides)
        except Exception as error:  # noqa: BLE001 - any error of the task is the point's result
            return {"outcome": "failed", "error": f"{type(error).__name__}: {one_line(error)}"}
    return {}  # UNKNOWN: the job never ran to an end


def best_point(points: list[dict]) -> dict | None:
    """Highest final train score among points that produced a candidate; fewer calls break ties."""
    done = [p for p in points if p.get("result", {}).get("outcome") == "candidate"]
    return max(done, key=lambda p: (p["result"]["final_train_score"], -p["result"]["metric_calls"]), default=None)


def summary_table(points: list[dict], best: dict | None) -> str:
    lines = [f"{'#':>3}  {'overrides':<40} {'outcome':<15} {'train before':>12} {'after':>6} {'calls':>6}  candidate"]
    for p in points:
        r = p.get("result", {})
        mark = "  <- best" if best is p else ""
        lines.append(f"{p['num']:>3}  {p['overrides']:<40} {r.get('outcome') or ('done' if r else 'failed'):<15} "
                     f"{r.get('initial_train_score', float('nan')):>12.3f} {r.get('final_train_score', float('nan')):>6.3f} "
                     f"{r.get('metric_calls', 0):>6}  {r.get('candidate_version') or '-'}{mark}")
    return "\n".join(lines)


class SweepSummary(Callback):
    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        record = {"num": hc.job.num, "overrides": " ".join(hc.overrides.task), "result": point_result(job_return)}
        Path(hc.runtime.output_dir, RESULT_FILE).write_text(json.dumps(record, default=str))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        points = sorted((json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{RESULT_FILE}")), key=lambda p: p["num"])
        if not points:
            return
        best = best_point(points)
        print("\n=== sweep summary ===\n" + summary_table(points, best))
        if best is not None:
            self._promote_candidate(config, best)
            print(f"best point: #{best['num']} ({best['overrides']}); alias 'candidate' -> "
                  f"v{best['result']['candidate_version']}")
        else:
            print("no sweep point produced a candidate that beat the seed")
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps({"points": points, "best": best}, indent=2, default=str))

    @staticmethod
    def _promote_candidate(config: Any, best: dict) -> None:
        from jobs.store.sweeps import promote_sweep_best

        promote_sweep_best(str(config.mlflow.tracking_uri), str(config.prompt.name),
                           int(best["result"]["candidate_version"]), str(best["result"]["run_id"]))
