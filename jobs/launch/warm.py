"""Warm starts for local stage processes. A stage spends about 7 s of a core importing MLflow,
LangChain, LiteLLM and Hydra before its first line of work, and ``make run`` starts
seven. A warm starter imports them once, then forks each stage from itself: the stage is still
a process of its own (its exit code, signals, stdin/stdout/stderr, environment, working folder
and argv are the caller's), and runs its module as ``python -m jobs.<stage>`` would, only
without the imports. Nothing here imports more than the standard library: the starter's
process must hold no threads and no connections when it forks.

One request per connection on a Unix socket: the caller sends a JSON line (module, argv, env,
cwd) with its stdin, stdout and stderr as file descriptors; the starter answers ``ready`` once
its imports are done, and only after the caller's ``go`` forks a waiter, which forks the stage
and answers ``{"pid": N}`` at once and ``{"exit": code}`` when the stage ends (negative: killed
by that signal, as ``subprocess`` reports it). A caller that stopped waiting before ``go``
starts a plain process instead, and the starter never runs its request."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# what every stage imports before its work: loaded once by the starter
PRELOAD = ("hydra", "omegaconf", "mlflow", "mlflow.genai", "mlflow.genai.scorers", "mlflow.genai.judges",
           "openai", "litellm", "langchain_core", "langchain_openai", "langgraph", "boto3")
# set when the interpreter starts, so a stage forked from the starter must want the starter's values
STARTUP_ENV = ("PYTHONHASHSEED", "PYTHONOPTIMIZE", "PYTHONSAFEPATH", "PYTHONNOUSERSITE")
READY_TIMEOUT_S = 180  # the starter's imports on a loaded machine; past it a stage starts as a plain process


@dataclass
class WarmStarter:
    """A running starter: its socket, its process and the environment it started with."""

    socket_path: str
    proc: subprocess.Popen
    env: dict[str, str]

    def accepts(self, env: dict[str, str]) -> bool:
        """Whether a stage with this environment can be forked from the starter (else it needs a
        fresh interpreter): Linux, the starter alive, and the same interpreter start-up settings."""
        return (sys.platform == "linux" and self.proc.poll() is None
                and all(env.get(k) == self.env.get(k) for k in STARTUP_ENV))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def start(env: dict[str, str], log: Path | None = None) -> WarmStarter | None:
    """Start a starter with ``env`` (the stages' interpreter settings); its imports go on in the
    background, and the first stage waits for them. None where forking is not an option."""
    if sys.platform != "linux":
        return None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    path = os.path.join(tempfile.mkdtemp(prefix="promptgate-warm-"), "socket")  # short: a Unix socket path holds at most 107 bytes
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
    try:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.launch.warm", path, str(os.getpid())], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()
    deadline = time.monotonic() + 10  # it binds its socket before importing anything heavy
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return None
        time.sleep(0.02)
    return WarmStarter(path, proc, dict(env))


def run(starter: WarmStarter, module: str, argv: list[str], env: dict[str, str], cwd: str,
        stdio: tuple[int, int, int] = (0, 1, 2), timeout: float | None = None) -> int | None:
    """Run ``module`` as ``python -m module *argv`` forked from the starter and return its exit
    code; None when the starter could not start it (the caller then starts a plain process).
    Interrupted or past ``timeout`` (subprocess.TimeoutExpired), the stage is killed, as
    ``subprocess.run`` kills its child."""
    if not starter.accepts(env):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(READY_TIMEOUT_S)
        request = json.dumps({"module": module, "argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
        try:
            conn.connect(starter.socket_path)
            socket.send_fds(conn, [request], list(stdio))
            reader = conn.makefile("rb")
            if reader.readline() != b"ready\n":  # after the starter's imports; past READY_TIMEOUT_S: a plain process
                return None
        except OSError:
            return None
        conn.sendall(b"go\n")  # from here the starter runs the stage: a failure is raised, never a second start
        started = json.loads(reader.readline() or b"null")
        if not started:
            raise RuntimeError(f"the warm starter did not start stage {module}")
        conn.settimeout(timeout)
        try:
            ended = json.loads(reader.readline() or b"null")
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):  # Ctrl-C reached the stage too: a moment to end, as subprocess gives it
                with contextlib.suppress(BaseException):
                    conn.settimeout(0.25)
                    reader.readline()
            with contextlib.suppress(ProcessLookupError):
                os.kill(started["pid"], signal.SIGKILL)
            if isinstance(e, TimeoutError):
                raise subprocess.TimeoutExpired([module, *argv], timeout or 0) from None
            raise
        if not ended:
            raise RuntimeError(f"the warm starter lost stage {module} (pid {started['pid']})")
        return int(ended["exit"])
    finally:
        conn.close()


def run_captured(starter: WarmStarter, module: str, argv: list[str], env: dict[str, str], cwd: str,
                 timeout: float | None = None) -> tuple[int, str, str] | None:
    """``run`` with stdin from /dev/null and stdout and stderr captured: (exit code, stdout,
    stderr), as ``subprocess.run(capture_output=True, text=True)`` gives them; None as ``run``."""
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        code = run(starter, module, argv, env, cwd, (null.fileno(), out.fileno(), err.fileno()), timeout)
        if code is None:
            return None
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


# ------------------------------------------------------------------ the starter's process
def serve(socket_path: str, parent: int) -> tuple[dict[str, Any], list[int]] | None:
    """Accept requests until the parent is gone. Returns only in a forked stage process, with
    its request and file descriptors."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stages and the driver; the driver stops us
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the waiters
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    sys.stdout.flush()  # nothing the imports printed may reach a stage's output
    sys.stderr.flush()
    gc.freeze()  # the imported objects stay out of the stages' collections, so forks share their pages
    listener.settimeout(1.0)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(30)
        fds: list[int] = []
        try:
            line, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            while not line.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    raise ConnectionError("request cut short")
                line += more
            request = json.loads(line)
            conn.sendall(b"ready\n")
            if conn.recv(3) != b"go\n":  # the caller stopped waiting and starts the stage itself
                raise ConnectionError("no go")
        except (OSError, ValueError):
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:  # the waiter
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            pid = os.fork()
            if pid == 0:  # the stage
                conn.close()
                return request, fds
            wait_and_report(conn, pid, fds)
        conn.close()
        for fd in fds:
            os.close(fd)
    return None


def wait_and_report(conn: socket.socket, pid: int, fds: list[int]) -> None:
    """The waiter: tell the caller the stage's pid, then its exit code; never returns."""
    try:
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def become_stage(request: dict[str, Any], fds: list[int], base_path: list[str]) -> None:
    """In the forked stage: take the caller's stdio, folder, environment and argv, then run the
    module as ``python -m`` does. An exception it raises ends this process as it would end that one."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *(p for p in base_path if p not in extra)]
    random.seed()  # a fresh interpreter's state, not the starter's
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    for stream, tty_only in ((sys.stdout, True), (sys.stderr, False)):
        stream.reconfigure(line_buffering=os.isatty(stream.fileno()) or not tty_only, write_through=unbuffered)
    sys.argv = [request["module"], *request["argv"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def _base_path() -> list[str]:
    """sys.path without the starter's folder and PYTHONPATH entries: what each stage's own go before."""
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    return [p for p in sys.path[1:] if p not in own]


def main(socket_path: str, parent: int) -> None:
    """The starter; in a forked stage, the stage (its exception or exit ends this process)."""
    base_path = _base_path()
    job = serve(socket_path, parent)
    if job is not None:
        become_stage(*job, base_path)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
