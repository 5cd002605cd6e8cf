"""traffic: simulated production for ``make monitor``. The domain's agent answers fresh
questions (``dataset.traffic``, else the held-out ones) with the prompt under the
``production`` alias, each a trace tagged as production traffic, outside any run, as a
deployed agent's traces would be. ``traffic.drift=true`` makes the simulated model behind
production worse (the simulator's drop_rate), so the monitor has a drift to find.

A real deployment knows no expectations; the simulated one records each question's
expectations on its trace (source CODE), so the judge grades production as it graded the
held-out set, and the monitor's comparison is like with like.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobs.core.contract import TAG_PROMPT_VERSION, TAG_QUESTION, TAG_TRAFFIC
from jobs.core.errors import UserError
from jobs.eval import agent, datasets
from jobs.eval.agent import REPEAT_KEY
from jobs.stages.common import say
from jobs.store import tracking

STAGE = "traffic"


def check(cfg: Any) -> None:
    agent.check(cfg)
    questions(cfg)
    if cfg.traffic.drift and cfg.model.provider != "sim":
        raise UserError(f"traffic.drift=true drifts the simulator; model={cfg.model.provider} is a real model, "
                        "so drop traffic.drift or use model=sim")


def questions(cfg: Any) -> list[datasets.Record]:
    return datasets.from_config(cfg, "traffic" if cfg.dataset.get("traffic") else "heldout")


def drifted(cfg: Any) -> Any:
    """The config with a simulator of this command's own, worse by ``traffic.drift_drop_rate``."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, {"model": {"base_url": None, "sim": {"drop_rate": float(cfg.traffic.drift_drop_rate)}},
                                 "gateway": {"url": None}})


def run(cfg: Any) -> dict[str, Any]:
    experiment_id = tracking.connect(cfg)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource

    from jobs.llm.endpoints import activate

    name = str(cfg.prompt.name)
    try:
        version = int(MlflowClient().get_prompt_version_by_alias(name, "production").version)
    except Exception:  # noqa: BLE001 - no prompt or no alias: the same advice
        raise UserError(f"prompt '{name}' has no production alias; run the pipeline first (make run)") from None
    records = questions(cfg)
    n = int(cfg.traffic.requests)
    first_seed = int(cfg.traffic.seed) if cfg.traffic.get("seed") is not None else int(time.time()) % 1_000_000 * 1000
    picked = [(first_seed + i, records[(first_seed + i) % len(records)]) for i in range(n)]
    by_seed = dict(picked)
    trace_of: dict[int, str] = {}

    def tags_for(inputs: dict[str, Any]) -> dict[str, str]:
        seed = int(inputs[REPEAT_KEY])
        trace_of[seed] = mlflow.get_active_trace_id()
        return {TAG_TRAFFIC: "production", TAG_PROMPT_VERSION: str(version), TAG_QUESTION: by_seed[seed].id}

    mlflow.set_experiment(experiment_id=experiment_id)
    use = drifted(cfg) if cfg.traffic.drift else cfg
    with activate(use, STAGE, experiment_id) as endpoint:
        predict = agent.build_predict_fn(cfg.agent, endpoint, f"prompts:/{name}@production", tags_for)
        say(STAGE, f"production v{version} answers {n} questions{' (DRIFTED: simulator drop_rate ' + str(cfg.traffic.drift_drop_rate) + ')' if cfg.traffic.drift else ''}")

        def ask(item: tuple[int, datasets.Record]) -> bool:
            seed, rec = item
            try:
                predict(**{**rec.inputs, REPEAT_KEY: seed})
                return True
            except Exception as e:  # noqa: BLE001 - a failed request is production's, traced as an error
                say(STAGE, f"request {seed} failed: {type(e).__name__}")
                return False

        with ThreadPoolExecutor(max_workers=int(cfg.traffic.max_workers)) as pool:
            ok = sum(pool.map(ask, picked))
    mlflow.flush_trace_async_logging()
    source = AssessmentSource(source_type="CODE", source_id="promptgate-traffic")
    for seed, rec in picked:  # after the flush: the traces exist on the server
        if seed in trace_of:
            for key, value in rec.expectations.items():
                mlflow.log_expectation(trace_id=trace_of[seed], name=key, value=value, source=source)
    say(STAGE, f"{ok} of {n} answered; traces: {tracking.traces_link(cfg, experiment_id)}")
    return {"answered": ok, "requests": n, "production_version": version}
