"""What stages, launchers and the gateway agree on, in one leaf module that imports nothing of
promptgate's: the stage names, the stage command, the MLflow tags that tie a pipeline together,
and how a stage hands its result back to a launcher. Everything else imports from here, so the
package has no import cycles (tests/test_imports.py)."""

from __future__ import annotations

STAGES = ("register", "evaluate", "feedback", "align", "optimize", "compare", "gate")

TAG_PIPELINE = "promptgate.pipeline_id"
TAG_STAGE = "promptgate.stage"
TAG_INPUTS = "promptgate.inputs_hash"
TAG_QUESTION = "promptgate.question_id"
TAG_REVIEW = "promptgate.review"
RESULT_TAG = "promptgate.result"  # a stage's result dict as JSON, for reuse and lookups

RESULT_PREFIX = "PROMPTGATE_RESULT="  # the last line a stage prints when EMIT_RESULT_ENV is set: its result as JSON
EMIT_RESULT_ENV = "PROMPTGATE_EMIT_RESULT"


def stage_command(stage: str, overrides: list[str]) -> list[str]:
    """The command that runs a stage: the same locally and as a container's args."""
    return ["python", "-m", f"jobs.{stage}", *overrides]
