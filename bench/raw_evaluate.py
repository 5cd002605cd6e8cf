"""The cookbook's hand-written evaluation, the baseline ``make bench-perf`` measures promptgate
against: one ``mlflow.genai.evaluate`` over the rows with the same agent and judge, talking to
the LLM endpoint directly, against the same tracking server. It prints one JSON line: rows,
rows lost (no trace or no judge value in ``result_df``) and wall seconds from process start.

    python -m bench.raw_evaluate --rows rows.jsonl --base-url http://.../v1 --workers 10 [overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import time

STARTED = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_evaluate", description=__doc__)
    parser.add_argument("--rows", required=True, help="a JSONL dataset file")
    parser.add_argument("--base-url", required=True, help="the LLM endpoint's /v1 URL")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="config overrides (experiment=..., prompt.name=...)")
    a = parser.parse_args()
    os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=a.base_url, OPENAI_API_BASE=a.base_url,
                      MLFLOW_GENAI_EVAL_MAX_WORKERS=str(a.workers))

    import mlflow

    from jobs.config.compose import compose
    from jobs.eval import judges
    from jobs.eval.agent import build_predict_fn
    from jobs.gateway.client import PLACEHOLDER_KEY
    from jobs.llm.endpoints import Endpoint

    cfg = compose(list(a.overrides))
    m = cfg.model
    endpoint = Endpoint(m.provider, a.base_url, m.agent_model, m.judge_model, m.reflection_model, m.embedding_model,
                        float(m.temperature), float(m.request_timeout_s), PLACEHOLDER_KEY, a.base_url)
    mlflow.set_experiment("promptgate-bench-raw")
    seed = (cfg.prompt.seed_text or open(cfg.prompt.seed_file, encoding="utf-8").read())
    prompt = mlflow.genai.register_prompt(name=f"{cfg.prompt.name}-raw", template=seed)
    rows = [json.loads(line) for line in open(a.rows, encoding="utf-8") if line.strip()]
    data = [{"inputs": r["inputs"], "expectations": r.get("expectations") or {}} for r in rows]
    predict = build_predict_fn(cfg.agent, endpoint, {str(cfg.prompt.role): f"prompts:/{prompt.name}/{prompt.version}"})
    judge = judges.build(cfg.judge, endpoint)
    mlflow.langchain.autolog(log_traces=True, silent=True)
    with mlflow.start_run(run_name="raw-evaluate"):
        result = mlflow.genai.evaluate(data=data, predict_fn=predict, scorers=[judge])
    df = result.result_df
    col = f"{cfg.judge.name}/value"
    kept = 0 if df is None else int(sum(1 for _, r in df.iterrows()
                                       if r.get("trace_id") and col in df.columns and r.get(col) == r.get(col)
                                       and r.get(col) is not None))
    print(json.dumps({"rows": len(rows), "lost": len(rows) - kept, "wall_s": time.monotonic() - STARTED}), flush=True)


if __name__ == "__main__":
    main()
