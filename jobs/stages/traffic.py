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
from jobs.core.results import TrafficResult
from jobs.eval import agent, datasets
from jobs.eval.agent import REPEAT_KEY
from jobs.stages import release
from jobs.stages.context import StageContext, llm
from jobs.store import prompts, traces


def check(cfg: Any) -> None:
    agent.check(cfg)
    questions(cfg)
    if cfg.traffic.drift and cfg.model.provider != "sim":
        raise UserError(f"traffic.drift=true drifts the simulator; model={cfg.model.provider} is a real model, "
                        "so drop traffic.drift or use model=sim")


def questions(cfg: Any) -> list[datasets.Record]:
    return datasets.from_config(cfg, "traffic" if cfg.dataset.get("traffic") else "heldout")


def run(ctx: StageContext) -> TrafficResult:
    cfg = ctx.cfg
    name = str(cfg.prompt.name)
    version = int(prompts.production(name).version)
    records = questions(cfg)
    n = int(cfg.traffic.requests)
    first_seed = int(cfg.traffic.seed) if cfg.traffic.get("seed") is not None else int(time.time()) % 1_000_000 * 1000
    picked = [(first_seed + i, records[(first_seed + i) % len(records)]) for i in range(n)]
    by_seed = dict(picked)
    trace_of: dict[int, str] = {}

    def tags_for(inputs: dict[str, Any]) -> dict[str, str]:
        seed = int(inputs[REPEAT_KEY])
        trace_of[seed] = traces.active_trace_id()
        return {TAG_TRAFFIC: "production", TAG_PROMPT_VERSION: str(version), TAG_QUESTION: by_seed[seed].id}

    drift = {"drop_rate": float(cfg.traffic.drift_drop_rate)} if cfg.traffic.drift else None  # a worse simulator
    with llm(ctx, own_sim=drift) as endpoint:
        predict = agent.build_predict_fn(cfg.agent, endpoint, release.uris(cfg, version), tags_for)
        ctx.say(f"production v{version} answers {n} questions"
                f"{f' (DRIFTED: simulator drop_rate {cfg.traffic.drift_drop_rate})' if cfg.traffic.drift else ''}")

        def ask(item: tuple[int, datasets.Record]) -> bool:
            seed, rec = item
            try:
                predict(**{**rec.inputs, REPEAT_KEY: seed})
                return True
            except Exception as e:  # noqa: BLE001 - a failed request is production's, traced as an error
                ctx.say(f"request {seed} failed: {type(e).__name__}")
                return False

        with ThreadPoolExecutor(max_workers=int(cfg.traffic.max_workers)) as pool:
            ok = sum(pool.map(ask, picked))
    traces.flush()
    for seed, rec in picked:  # after the flush: the traces exist on the server
        if seed in trace_of:
            traces.log_expectations(trace_of[seed], rec.expectations, "promptgate-traffic")
    ctx.say(f"{ok} of {n} answered; traces: {ctx.store.traces_link()}")
    return TrafficResult(answered=ok, requests=n, production_version=version)
