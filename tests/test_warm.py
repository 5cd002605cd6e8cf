"""Warm starts (jobs/launch/warm.py): a stage forked from the starter is a process of its own
and behaves as ``python -m`` runs it: argv, environment, folder, PYTHONPATH, stdio, exit code,
signals, timeouts; the starter runs nothing it was not told to and ends with its parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from jobs.core.paths import ROOT
from jobs.launch import warm
from jobs.launch.launchers import STAGE_ENV
from jobs.llm.endpoints import OFFLINE_ENV

PROBE = textwrap.dedent('''
    import json, os, random, subprocess, sys
    if sys.argv[1] == "raise":
        raise RuntimeError("the probe failed")
    if sys.argv[1] == "sleep":
        import time; open(os.environ["PROBE_PID_FILE"], "w").write(str(os.getpid())); time.sleep(60)
    child = subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "x": os.environ.get("PROBE_X"),
                      "own": sys.path[1], "child": child, "random": random.random(), "main": __name__,
                      "mlflow_loaded": "mlflow" in sys.modules}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
''')


@pytest.fixture(scope="module")
def starter():
    s = warm.start({**os.environ, **STAGE_ENV, **OFFLINE_ENV, "PYTHONPATH": str(ROOT)})
    assert s is not None
    yield s
    s.stop()


@pytest.fixture()
def probe(tmp_path):
    """A module of the user's own, importable only through the request's PYTHONPATH."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "probe_mod.py").write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, **STAGE_ENV, "PYTHONPATH": f"{tmp_path / 'pkg'}{os.pathsep}{ROOT}", "PROBE_X": "from the caller"}
    return env, str(work)


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def forked(starter, env, cwd, *argv, timeout=60):
    return warm.run_captured(starter, "probe_mod", list(argv), env, cwd, timeout) or (None, "", "")


def test_a_forked_module_sees_what_python_m_gives_it(starter, probe):
    env, cwd = probe
    code, out, err = forked(starter, env, cwd, "3", "b=c")
    plain = subprocess.run([sys.executable, "-m", "probe_mod", "3", "b=c"], env=env, cwd=cwd, capture_output=True,
                           text=True)
    assert (code, err) == (plain.returncode, plain.stderr) == (3, "to stderr\n")
    seen, fresh = json.loads(out), json.loads(plain.stdout)
    assert seen["mlflow_loaded"] and not fresh["mlflow_loaded"]  # the starter's imports came with the fork
    for got in (seen, fresh):
        assert got["argv"] == ["3", "b=c"] and got["cwd"] == cwd and got["x"] == "from the caller"
        assert got["own"].endswith("pkg") and got["child"] == "7" and got["main"] == "__main__"
    again = json.loads(forked(starter, env, cwd, "0")[1])
    assert again["random"] != seen["random"]  # each fork is seeded afresh, as a new interpreter is


def test_an_exception_ends_the_stage_with_exit_1_and_its_traceback(starter, probe):
    code, _, err = forked(starter, *probe, "raise")
    assert code == 1 and "RuntimeError: the probe failed" in err and err.startswith("Traceback")


def test_a_stage_past_its_timeout_is_killed(starter, probe, tmp_path):
    env, cwd = probe
    pid_file = tmp_path / "stage.pid"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forked(starter, {**env, "PROBE_PID_FILE": str(pid_file)}, cwd, "sleep", timeout=2)
    assert time.monotonic() - t0 < 30
    pid = int(pid_file.read_text())  # the stage itself, not its waiter
    deadline = time.monotonic() + 10  # its waiter reaps it
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"stage pid {pid} outlived its timeout"
    assert forked(starter, *probe, "5")[0] == 5  # and the starter goes on serving


def test_a_stage_that_needs_another_interpreter_start_up_is_not_forked(starter, probe):
    env, cwd = probe
    assert forked(starter, {**env, "PYTHONHASHSEED": "1"}, cwd, "0") == (None, "", "")


def test_the_starter_ends_with_its_parent(tmp_path):
    parent = subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from jobs.launch import warm
        s = warm.start({{**os.environ, "PYTHONPATH": {str(ROOT)!r}}})
        print(s.proc.pid)
    ''')], capture_output=True, text=True, timeout=60)
    pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    assert not alive(pid), f"starter {pid} outlived its parent"
