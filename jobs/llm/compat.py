"""Every patch promptgate makes to a dependency's behaviour, in one place. Each says which
upstream version it was written for, and tests/test_compat.py has a test per patch that fails
once upstream no longer needs it, so a patch is dropped rather than carried forever."""

from __future__ import annotations

from typing import Any

# mlflow 3.18.0 (also 3.17.2): ImportHookFinder.find_spec, databricks_utils' pyspark probe,
# MemoryAugmentedJudge._lazy_init.
# dspy 3.4.1: disk and memory caches on by default.
PATCHED_FOR = {"mlflow": "3.18.0", "dspy": "3.4.1"}


def block_absent_pyspark() -> None:
    """MLflow's trace export asks ``from pyspark import TaskContext`` on every trace. Without
    pyspark each attempt walks the import system, through MLflow's import-hook finder and its
    lock, under the module lock; a thread setting up autologging takes the two the other way
    round, and once a stage hung there. ``None`` in ``sys.modules`` makes the import fail at
    once, without either lock (Python's documented way to block an import)."""
    import importlib.util
    import sys

    if "pyspark" not in sys.modules and importlib.util.find_spec("pyspark") is None:
        sys.modules["pyspark"] = None  # type: ignore[assignment]


def gateway_cache_only() -> None:
    """The gateway's cache is the one cache: ``cache=off`` must mean off, and every Job must
    share it. DSPy (MemAlign's judge and distillation) otherwise answers repeats from a disk and
    memory cache of its own, in the stage's process: a second cache that ``gateway.cache`` does not
    govern, and which made the requests a rerun sends depend on what that process's disk held."""
    from mlflow.utils.import_hooks import register_post_import_hook

    def no_dspy_cache(dspy: Any) -> None:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

    register_post_import_hook(no_dspy_cache, "dspy")


def narrow_import_hook_lock() -> None:
    """MLflow's ``ImportHookFinder`` (3.17.2 and 3.18.0) takes its hook lock for every import that reaches the
    finders, under that module's import lock, even for modules nobody hooks. Each GEPA and
    evaluate batch re-enters ``configure_autologging_for_evaluation``, which runs autolog set-up
    under the hook lock, and that set-up imports. A trace-export thread importing the same
    module takes the two locks the other way round, and optimize hung there in CI. Checking
    "is this module hooked?" before taking the lock (a dict lookup, atomic under the GIL, as
    MLflow does inside it) keeps the lock to the few hooked modules."""
    from mlflow.utils import import_hooks as hooks

    finder = hooks.ImportHookFinder
    if getattr(finder, "_promptgate_narrowed", False):
        return

    def only_if_hooked(locked):
        def find(self, fullname, *args, **kwargs):
            if fullname not in hooks._post_import_hooks and fullname not in hooks._import_error_hooks:
                return None
            return locked(self, fullname, *args, **kwargs)
        return find

    finder.find_spec = only_if_hooked(finder.find_spec)
    finder.find_module = only_if_hooked(finder.find_module)
    finder._promptgate_narrowed = True


def load_memalign_memory(judge: Any) -> Any:
    """A registered MemAlign judge loads its memory on its first call, and marks itself loaded
    (``_embedder`` set) before the examples are in, with no lock: other threads' first calls
    then judge without examples (MLflow 3.17.2 and 3.18.0). Loading it once, before a stage
    scores rows in parallel, closes that window. Judges of other kinds pass through."""
    if callable(getattr(judge, "_lazy_init", None)):
        judge._lazy_init()
    return judge
