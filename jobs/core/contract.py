"""What stages, launchers and the gateway agree on, in one leaf module that imports nothing of
promptgate's: the stage names, the stage command, the MLflow tags that tie a pipeline together,
and how a launcher finds the result of the stage it launched. Everything else imports from here, so the
package has no import cycles (tests/test_imports.py)."""

from __future__ import annotations

STAGES = ("register", "evaluate", "feedback", "align", "optimize", "compare", "gate")
MONITOR = "monitor"  # not a pipeline stage: it runs on a schedule (a CronJob) against production traces

TAG_PIPELINE = "promptgate.pipeline_id"
TAG_STAGE = "promptgate.stage"
TAG_INPUTS = "promptgate.inputs_hash"
TAG_QUESTION = "promptgate.question_id"
TAG_REVIEW = "promptgate.review"
TAG_REVIEW_FROM = "promptgate.review_from"  # on a trace the monitor queued for review: 'production'
TAG_TRAFFIC = "promptgate.traffic"  # on a trace: 'production' for the traffic the monitor scores
TAG_PROMPT_VERSION = "promptgate.prompt_version"  # on a production trace: the version that answered
TAG_FAILED_STAGE = "promptgate.failed_stage"  # on the pipeline run: the stage that stopped it
RESULT_TAG = "promptgate.result"  # a stage's result as JSON (jobs.core.results), for reuse and lookups
TAG_SPLIT = "promptgate.split"  # on an evaluation's traces: the dataset split
TAG_ARM = "promptgate.arm"  # on compare's traces and arm runs: baseline or candidate
TAG_SHARD = "promptgate.shard"  # on a shard's run: "<index>/<shards>"
TAG_ALIGN_MEASURED = "promptgate.align.measured"  # on align's run: whether agreement could be measured
TAG_OVERRIDES = "promptgate.overrides"  # on optimize's run: the sweep point's overrides
TAG_SWEEP_POINT = "promptgate.sweep_point"  # on optimize's run: "true" when it ran as a sweep point
TAG_SWEEP_BEST = "promptgate.sweep_best"  # on the best sweep point's run
TAG_OUTCOME = "promptgate.outcome"  # on optimize's run: candidate | no_improvement
PROMPT_TAG = "promptgate."  # prefix of optimize's tags on a candidate version (scores, budget, judge, source run)
GATE_TAG = "promptgate.gate."  # prefix of the gate's tags on a prompt version and its run
TAG_MONITORED = "promptgate.monitored"  # on a trace: the judge version that scored it ("name@version")
TAG_MONITORED_BY = "promptgate.monitored_by"  # on a trace: the monitor run whose window counts it
META_MONITOR_RUN = "promptgate.monitor_run"  # on a monitor verdict (assessment metadata): the run that gave it
META_MONITOR_JUDGE = "promptgate.monitor_judge"  # on a monitor verdict: "name@version" of the judge
TAG_DRIFT = "promptgate.monitor.drift"  # on a monitor run and a prompt version: the drift verdict
TAG_CHECKPOINT = "promptgate.monitor.checkpoint_ms"  # on a monitor run: the newest trace it scored
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag that nests a run under another in the UI

# A launcher gives each stage it starts an id in this variable; the stage tags the run that
# holds its result (new or reused) with TAG_LAUNCH + id, and the launcher reads the result
# from MLflow by that tag: the one channel from a stage, local or a Kubernetes Job, back.
LAUNCH_ENV = "PROMPTGATE_LAUNCH_ID"
TAG_LAUNCH = "promptgate.launch."


def stage_command(stage: str, overrides: list[str]) -> list[str]:
    """The command that runs a stage: the same locally and as a container's args."""
    return ["python", "-m", f"jobs.{stage}", *overrides]
