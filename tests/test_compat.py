"""The patches in jobs/llm/compat.py: each one works, and each is still needed by the installed
versions. The "still needed" tests fail once upstream fixes what a patch works around: then
drop the patch and its test."""

from __future__ import annotations

import threading

from jobs.llm.compat import narrow_import_hook_lock


def import_missing(done: list[str]) -> None:
    try:
        import promptgate_no_such_module  # noqa: F401
    except ImportError:
        done.append("ImportError")


def test_import_of_an_unhooked_module_does_not_wait_for_mlflows_hook_lock():
    """A trace-export thread's import must not wait while autolog set-up holds the hook lock."""
    from mlflow.utils import import_hooks

    import_hooks.register_post_import_hook(lambda module: None, "promptgate_hooked")  # installs MLflow's finder, as autolog does
    narrow_import_hook_lock()
    narrow_import_hook_lock()  # twice is harmless: every stage calls it
    done: list[str] = []
    with import_hooks._post_import_hooks_lock:  # what configure_autologging_for_evaluation holds
        worker = threading.Thread(target=import_missing, args=(done,), daemon=True)
        worker.start()
        worker.join(timeout=30)
        blocked = worker.is_alive()
    worker.join(timeout=30)
    assert not blocked and done == ["ImportError"]


def test_hooked_modules_still_fire_their_hooks():
    from mlflow.utils import import_hooks

    narrow_import_hook_lock()
    fired: list[str] = []
    import_hooks.register_post_import_hook(lambda module: fired.append(module.__name__), "tabnanny")
    import tabnanny  # noqa: F401  (a stdlib module nothing else imports)

    assert fired == ["tabnanny"]


def test_dspy_answers_nothing_from_a_cache_of_its_own():
    """The gateway's cache is the only one: MemAlign's DSPy calls must reach it every time."""
    import subprocess
    import sys

    from jobs.core.paths import ROOT

    code = ("from jobs.llm.compat import gateway_cache_only, narrow_import_hook_lock\n"
            "import sys\n"
            "if sys.argv[1] == 'on': narrow_import_hook_lock(); gateway_cache_only()\n"
            "import dspy\n"
            "print(dspy.cache.enable_disk_cache, dspy.cache.enable_memory_cache)\n")
    seen = {}
    for mode in ("on", "off"):
        proc = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[mode] = proc.stdout.split()[-2:]
    assert seen == {"on": ["False", "False"], "off": ["True", "True"]}


def test_still_needed_mlflow_takes_its_hook_lock_for_unhooked_imports():
    """Without the patch, an import of a module nobody hooks waits for MLflow's hook lock."""
    import subprocess
    import sys

    from jobs.core.paths import ROOT

    code = ("import threading\n"
            "from mlflow.utils import import_hooks\n"
            "import_hooks.register_post_import_hook(lambda m: None, 'promptgate_hooked')\n"
            "def work():\n"
            "    try:\n"
            "        import promptgate_no_such_module\n"
            "    except ImportError:\n"
            "        pass\n"
            "with import_hooks._post_import_hooks_lock:\n"
            "    t = threading.Thread(target=work, daemon=True); t.start(); t.join(timeout=3)\n"
            "    print('blocked' if t.is_alive() else 'free')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "blocked", "MLflow no longer locks unhooked imports: drop narrow_import_hook_lock"


def test_still_needed_mlflow_probes_for_pyspark():
    """MLflow still tries ``from pyspark import TaskContext`` when it reads Spark context."""
    import importlib.abc
    import sys

    from mlflow.utils import databricks_utils

    asked: list[str] = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            asked.append(fullname)
            return None

    saved = sys.modules.pop("pyspark", "absent")
    sys.meta_path.insert(0, Recorder())
    try:
        databricks_utils._get_property_from_spark_context("spark.databricks.job.id")
    finally:
        sys.meta_path.pop(0)
        if saved != "absent":
            sys.modules["pyspark"] = saved
    assert "pyspark" in asked, "MLflow no longer imports pyspark here: drop block_absent_pyspark"


def test_installed_mlflow_is_whole():
    """pyproject installs the full mlflow wheel without its skinny/tracing siblings (see
    [tool.uv]): every file its RECORD lists must be on disk, and the APIs promptgate uses there."""
    import importlib.metadata

    dist = importlib.metadata.distribution("mlflow")
    missing = [str(f) for f in dist.files or [] if not dist.locate_file(f).exists()]
    assert missing == []
    from mlflow.genai import compare_evaluations, optimize_prompts  # noqa: F401
    from mlflow.genai.judges import make_judge  # noqa: F401


def test_still_needed_memalign_marks_itself_loaded_before_its_memory_is_in():
    """MemoryAugmentedJudge._lazy_init sets ``_embedder`` (its "loaded" mark) before it
    rebuilds the episodic memory, and takes no lock: load_memalign_memory is still needed."""
    import inspect

    from mlflow.genai.judges.optimizers.memalign.optimizer import MemoryAugmentedJudge

    source = inspect.getsource(MemoryAugmentedJudge._lazy_init)
    assert "if self._embedder is not None" in source and "lock" not in source.lower()
    assert source.index("self._embedder = ") < source.index("self._episodic_memory = "), \
        "MemAlign now fills its memory before marking itself loaded: drop load_memalign_memory"


def test_mlflows_registry_store_registry_is_shared_before_it_is_filled(monkeypatch):
    """Why the agent loads its prompt version once, before any worker thread runs (README,
    "Prompt loading"): MLflow publishes the model-registry store registry before it registers
    the http builder, so a thread that makes the process's first registry call while another
    is still filling it sees no "http" scheme, and load_prompt raises "Model Registry features
    are not supported by the store with URI". Still needed while this holds."""
    from mlflow.tracking._model_registry import utils

    monkeypatch.setattr(utils, "_model_registry_store_registry", None)  # as in a fresh process
    filling, release = threading.Event(), threading.Event()
    register = utils.ModelRegistryStoreRegistry.register

    def slow_register(self, scheme, builder):  # widen the window the race needs
        filling.set()
        release.wait(10)
        return register(self, scheme, builder)

    monkeypatch.setattr(utils.ModelRegistryStoreRegistry, "register", slow_register)
    first = threading.Thread(target=utils._get_store_registry, daemon=True)
    first.start()
    assert filling.wait(10)
    seen_by_another_thread = utils._get_store_registry()
    schemes = set(seen_by_another_thread._registry)
    release.set()
    first.join(30)
    assert "http" not in schemes, "MLflow now fills the registry before sharing it: loading once is still right, but the README's reason is gone"
