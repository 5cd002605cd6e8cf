"""Evaluation logic: the agent, judges, datasets, labels, the evaluate runner, statistics, charts, the metric-call cap."""
