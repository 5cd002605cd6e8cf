"""What stages, launchers and the gateway agree on, in one leaf module that imports nothing of
promptgate's: the stage registry, the stage command, the MLflow tags that tie a pipeline together,
and how a launcher finds the result of the stage it launched. Everything else imports from here, so the
package has no import cycles (tests/test_imports.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One stage as the driver, the launchers, the manifests and the summary see it."""

    name: str
    needs: tuple[str, ...] = ()  # stages whose recorded results it reads (common.recorded refuses any other)
    in_pipeline: bool = True  # `make run` runs it, in registry order
    sharded: bool = False  # its rows can split over processes or an Indexed Job's pods (<stage>.shards)
    scheduled: bool = False  # runs on a schedule against production: a CronJob, not a one-off Job

    @property
    def module(self) -> str:
        """Where its ``check(cfg)`` and ``run(ctx)`` live."""
        return f"jobs.stages.{self.name}"

    @property
    def command(self) -> str:
        """The module ``python -m`` runs."""
        return f"jobs.{self.name}"


REGISTRY: tuple[StageSpec, ...] = (
    StageSpec("register"),
    StageSpec("evaluate", needs=("register",), sharded=True),
    StageSpec("feedback", needs=("evaluate",)),
    StageSpec("align", needs=("feedback",)),
    StageSpec("optimize", needs=("register", "align")),
    StageSpec("compare", needs=("register", "optimize", "align"), sharded=True),
    StageSpec("gate", needs=("compare", "align", "optimize")),
    StageSpec("monitor", in_pipeline=False, scheduled=True),  # a CronJob; reads the gate's tags on production
    StageSpec("traffic", in_pipeline=False),  # simulated production: the agent under `production` answers
)
SPECS = {s.name: s for s in REGISTRY}
STAGES = tuple(s.name for s in REGISTRY if s.in_pipeline)  # the pipeline, in order
SHARDED_STAGES = tuple(s.name for s in REGISTRY if s.sharded)
MONITOR = next(s.name for s in REGISTRY if s.scheduled)


def spec(name: str) -> StageSpec:
    """The registry entry of a stage; KeyError names the known ones."""
    if name not in SPECS:
        raise KeyError(f"no stage '{name}'; stages are {', '.join(SPECS)}")
    return SPECS[name]

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
TAG_ARM_DIGEST = "promptgate.arm_digest"  # on an arm run: what its rows measured (release, held-out rows, agent, model)
TAG_JUDGED_BY = "promptgate.judged_by"  # on an arm run: the judge and scorers that scored its rows
TAG_SHARD = "promptgate.shard"  # on a shard's run: "<index>/<shards>"
TAG_ALIGN_MEASURED = "promptgate.align.measured"  # on align's run: whether agreement could be measured
TAG_OVERRIDES = "promptgate.overrides"  # on optimize's run: the sweep point's overrides
TAG_SWEEP_POINT = "promptgate.sweep_point"  # on optimize's run: "true" when it ran as a sweep point
TAG_SWEEP_BEST = "promptgate.sweep_best"  # on the best sweep point's run
TAG_OUTCOME = "promptgate.outcome"  # on optimize's run: candidate | no_improvement
TAG_FAILURE = "promptgate.failure"  # on a FAILED stage run: why it recorded no result (NothingMeasured)
PROMPT_TAG = "promptgate."  # prefix of optimize's tags on a candidate version (scores, budget, judge, source run)
TAG_RELEASE = "promptgate.release"  # on a first prompt's version: {companion name: version} released with it
GATE_TAG = "promptgate.gate."  # prefix of the gate's tags on a prompt version and its run
TAG_MONITORED = "promptgate.monitored"  # on a trace: the judge version that scored it ("name@version")
TAG_MONITORED_BY = "promptgate.monitored_by"  # on a trace: the monitor run whose window counts it
META_MONITOR_RUN = "promptgate.monitor_run"  # on a monitor verdict (assessment metadata): the run that gave it
META_MONITOR_JUDGE = "promptgate.monitor_judge"  # on a monitor verdict: "name@version" of the judge
TAG_DRIFT = "promptgate.monitor.drift"  # on a monitor run and a prompt version: the drift verdict
TAG_CHECKPOINT = "promptgate.monitor.checkpoint_ms"  # on a monitor run: the newest trace it scored
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag that nests a run under another in the UI

AGENT_PATH = "/agent"  # the gateway's /s/<session>/agent/v1: the agent's calls count as the agent's, whatever they send
GATEWAY_URL_ENV = "PROMPTGATE_GATEWAY_URL"  # a running gateway, for a stage process (conf/gateway: gateway.url)

# A launcher gives each stage it starts an id in this variable; the stage tags the run that
# holds its result (new or reused) with TAG_LAUNCH + id, and the launcher reads the result
# from MLflow by that tag: the one channel from a stage, local or a Kubernetes Job, back.
LAUNCH_ENV = "PROMPTGATE_LAUNCH_ID"
TAG_LAUNCH = "promptgate.launch."


def stage_command(stage: str, overrides: list[str]) -> list[str]:
    """The command that runs a stage: the same locally and as a container's args."""
    return ["python", "-m", f"jobs.{stage}", *overrides]
