"""Stage process set-up in jobs/models.py that keeps MLflow from deadlocking."""

from __future__ import annotations

import threading

from jobs.models import narrow_import_hook_lock


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

    from jobs.paths import ROOT

    code = ("from jobs.models import gateway_cache_only, narrow_import_hook_lock\n"
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
