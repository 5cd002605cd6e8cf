"""One GEPA search through mlflow.genai.optimize_prompts, every metric call counted by a
MetricBudget (jobs.eval.metric_cap)."""

from __future__ import annotations

from typing import Any

from jobs.eval.metric_cap import AGENT_FAILED, GepaSummaryLogger, MetricBudget, budgeted_scorer


def search(predict: Any, seed_uris: list[str], train_rows: list[dict], val_rows: list[dict] | None,
           judge: Any, budget: MetricBudget, to_number: Any, reflection_model: str, minibatch: int, seed: int) -> Any:
    """GEPA from the prompts at ``seed_uris`` (every prompt of the agent, improved together) on ``train_rows`` (validating on ``val_rows``, or on
    the train rows when None), the agent's ``predict`` scored by ``judge``; returns
    optimize_prompts' result."""
    import mlflow
    from mlflow.genai.optimize import GepaPromptOptimizer

    def predict_fn(**kw: Any) -> str:
        if budget.spent:  # no agent calls for rows that will not be scored
            return "(not run: the max_metric_calls budget is spent)"
        try:
            return predict(**kw)
        except Exception as e:  # noqa: BLE001 - the scorer counts it as an agent error, never judges it
            return f"{AGENT_FAILED}{type(e).__name__}: {e}"

    gepa_kwargs: dict[str, Any] = {"reflection_minibatch_size": minibatch, "seed": seed,
                                   "stop_callbacks": [budget], "logger": GepaSummaryLogger()}
    if val_rows is not None:
        gepa_kwargs["valset"] = val_rows
    optimizer = GepaPromptOptimizer(reflection_model=reflection_model, max_metric_calls=budget.cap,
                                    display_progress_bar=True, gepa_kwargs=gepa_kwargs)
    return mlflow.genai.optimize_prompts(predict_fn=predict_fn, train_data=train_rows, prompt_uris=seed_uris,
                                         optimizer=optimizer, scorers=[budgeted_scorer(judge, budget, to_number)])
