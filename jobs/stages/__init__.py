"""Stage logic. Each module has ``check(cfg)`` (fast, before heavy imports) and ``run(ctx)``
(``ctx``: jobs.stages.context.StageContext), returning its StageResult."""

from __future__ import annotations

import importlib
from types import ModuleType


def load(name: str) -> ModuleType:
    """A registered stage's module. One that is missing is an error, never a stage skipped."""
    from jobs.core.contract import spec

    module = spec(name).module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise RuntimeError(f"stage '{name}' is registered but its module {module} is missing: "
                           "this promptgate install is incomplete") from None
