"""What a stage is handed: one typed object that ``stage_main`` builds once per process and
passes to ``run(ctx)``. Nothing reaches a stage through module globals, a config rewritten on
the way, or environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jobs.core.contract import spec
from jobs.store.tracking import Store


@dataclass
class StageContext:
    stage: str  # the registry name of the stage running
    cfg: Any  # the composed config, as Hydra composed it; read, never rewritten
    pipeline_id: str  # whose runs this stage reads and writes (a stage module's pipeline_id(cfg), else cfg's)
    force: bool  # run again even when a finished result with the same inputs exists
    store: Store  # the MLflow server and experiment (jobs/store)
    launch_id: str | None = None  # the id the launcher that started this process gave it, if any
    overrides: tuple[str, ...] = ()  # this invocation's overrides, repeated in "run X first" hints
    sweep_point: bool = False  # one point of a multirun sweep (local, or a pod a sweep launcher started)
    session: Any = None  # the stage's LLM gateway session (jobs.gateway.client.Session) while it has one

    def say(self, msg: str) -> None:
        print(f"[{self.stage}] {msg}", flush=True)

    def settings(self, section: str) -> Any:
        """A config section as its schema's dataclass (jobs.config.schemas.settings)."""
        from jobs.config.schemas import settings

        return settings(self.cfg, section)

    def needs(self, stage: str) -> None:
        """A stage reads only the results the registry says it needs: the registry stays true."""
        if stage not in spec(self.stage).needs:
            raise RuntimeError(f"stage {self.stage} reads {stage}'s result, but the registry (jobs/core/contract.py) "
                               f"lists only {spec(self.stage).needs}")


@contextmanager
def llm(ctx: StageContext, own_sim: dict[str, Any] | None = None) -> Iterator[Any]:
    """The stage's model endpoint through its gateway session, kept on ``ctx.session`` (the
    budget check, the spend on the run, shard processes' gateway). ``own_sim``: a simulator of
    this command's own with these settings over model.sim (traffic's drift)."""
    from jobs.gateway.client import UNITS
    from jobs.llm.endpoints import activate
    from jobs.store import tracking

    spent = tracking.pipeline_spent(ctx.store.experiment_id, ctx.pipeline_id, UNITS)
    with activate(ctx.cfg, ctx.stage, ctx.pipeline_id, spent, own_sim) as (endpoint, session):
        ctx.session = session
        ctx.say(f"one LLM call waits at most {endpoint.timeout_s:.0f} s: the gateway retries 429s, 5xx and timeouts "
                "within that; clients retry nothing")
        yield endpoint
