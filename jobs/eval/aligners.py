"""MLflow's judge alignment optimizers, built from the aligner's settings (jobs.config.schemas)."""

from __future__ import annotations

from typing import Any


def memalign(settings: Any, endpoint: Any) -> Any:
    from mlflow.genai.judges.optimizers import MemAlignOptimizer

    return MemAlignOptimizer(reflection_lm=endpoint.uri(endpoint.reflection_model), retrieval_k=settings.retrieval_k,
                             embedding_model=endpoint.embedding_uri(), embedding_dim=settings.embedding_dim)


def simba(settings: Any, endpoint: Any) -> Any:
    from mlflow.genai.judges.optimizers import SIMBAAlignmentOptimizer

    return SIMBAAlignmentOptimizer(model=endpoint.uri(endpoint.reflection_model), seed=settings.seed,
                                   batch_size=settings.batch_size)
