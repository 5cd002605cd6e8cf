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

# A launcher gives each stage it starts an id in this variable; the stage tags the run that
# holds its result (new or reused) with TAG_LAUNCH + id, and the launcher reads the result
# from MLflow by that tag: the one channel from a stage, local or a Kubernetes Job, back.
LAUNCH_ENV = "PROMPTGATE_LAUNCH_ID"
TAG_LAUNCH = "promptgate.launch."


def stage_command(stage: str, overrides: list[str]) -> list[str]:
    """The command that runs a stage: the same locally and as a container's args."""
    return ["python", "-m", f"jobs.{stage}", *overrides]
