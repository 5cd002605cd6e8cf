"""Start, find and stop the local servers: the MLflow tracking server and the simulator.

Used by the Makefile (``python -m jobs.core.servers mlflow-up``), by ``make run`` and by
the test session fixtures, so every path starts servers the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from jobs.core.errors import UserError
from jobs.core.paths import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_up(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_up(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_up(url):
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-1500:] if log and log.exists() else ""
            raise UserError(f"server for {url} exited with code {proc.returncode} before it was healthy. Log tail:\n{tail}")
        time.sleep(0.5)
    where = f" (log: {log})" if log else ""
    raise UserError(f"server for {url} was not healthy after {timeout_s:.0f} s{where}; check the log or raise the timeout")


# ------------------------------------------------------------------ MLflow
def mlflow_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    return env


def start_mlflow(state_dir: Path, port: int, backend_uri: str | None = None, artifacts: str | None = None,
                 env: dict[str, str] | None = None, timeout_s: float = 120, detach: bool = True,
                 workers: int = 1) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` on 127.0.0.1:port (one worker unless told) and wait until healthy.

    uvicorn closes a connection idle for 5 s by default while MLflow's client keeps it in its
    pool; a write sent on it as it closes fails with "Connection reset by peer", and MLflow does
    not resend a write the server may have received (an assessment, a trace), so the row comes back
    without it and is evaluated again. 75 s outlasts the client's idle gaps within a stage."""
    state_dir.mkdir(parents=True, exist_ok=True)
    backend_uri = backend_uri or f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"
    if backend_uri.startswith("sqlite:///"):
        write_ahead_log(Path(backend_uri.removeprefix("sqlite:///")))
    artifacts = artifacts or str((state_dir / "artifacts").resolve())
    log = state_dir / f"mlflow-{port}.log"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts,
           "--uvicorn-opts", "--timeout-keep-alive 75"]
    url = f"http://127.0.0.1:{port}"
    return start_logged(cmd, log, url + "/health", timeout_s, {**mlflow_env(), **(env or {})}, detach), url


def write_ahead_log(db: Path) -> str:
    """Put the server's SQLite file in write-ahead-log mode (kept in the file) before MLflow
    opens it. In SQLite's default rollback mode every commit fsyncs a journal and every write
    blocks every read; a row's trace, spans and assessments are a dozen commits among reads from
    the evaluation's other workers, and make run measured its rows a third faster in WAL mode.
    A file another process holds open stays as it is. Returns the mode the file is in."""
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return "unchanged"


def start_logged(cmd: list[str], log: Path, health_url: str, timeout_s: float, env: dict[str, str] | None = None,
                 detach: bool = True) -> subprocess.Popen:
    """Start a server whose output goes to ``log`` and wait until ``health_url`` answers; a server
    that never comes up is stopped (UserError names its log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=detach)
    try:
        wait_until_up(health_url, timeout_s, proc, log)
    except BaseException:
        stop_process(proc.pid)
        raise
    return proc


def stop_process(pid: int, grace_s: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def local_workers() -> int:
    """Workers of ``make mlflow-up``'s server (``MLFLOW_WORKERS``, default 2). It serves one
    pipeline at a time, and with a second worker the rows' trace writes and reads use both cores:
    bench-perf's make run took 106 s instead of 118 s. Test sessions run several servers side by
    side and keep one worker each (README, "Where a row's time goes")."""
    text = os.environ.get("MLFLOW_WORKERS") or "2"
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"MLFLOW_WORKERS={text}: the local MLflow server's worker count must be a whole number >= 1, "
                        "e.g. MLFLOW_WORKERS=2")
    return int(text)


def mlflow_up(state_dir: Path, port: int, workers: int) -> str:
    url = f"http://127.0.0.1:{port}"
    if is_up(url + "/health"):
        print(f"MLflow is already up at {url} (reusing it)")
        return url
    print(f"Starting MLflow on {url} ({workers} worker{'s' if workers > 1 else ''}; SQLite and artifacts under "
          f"{state_dir}/; about 30 s on 2 cores)...", flush=True)
    proc, url = start_mlflow(state_dir, port, workers=workers)
    (state_dir / f"mlflow-{port}.pid").write_text(str(proc.pid))
    print(f"MLflow is up: {url}")
    return url


def mlflow_down(state_dir: Path, port: int) -> None:
    pid_file = state_dir / f"mlflow-{port}.pid"
    if not pid_file.exists():
        print(f"No MLflow server started by promptgate on port {port}.")
        return
    stop_process(int(pid_file.read_text()))
    pid_file.unlink()
    print(f"Stopped MLflow on port {port}.")


# ------------------------------------------------------------------ simulator and gateway
class QuietJSONHandler(BaseHTTPRequestHandler):
    """The simulator's HTTP plumbing (standard library, so it starts in ~0.1 s): keep-alive, no access log, JSON replies."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # requests are counted, not logged
        pass

    def _send_bytes(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


EXIT_WITH_PARENT = "PROMPTGATE_EXIT_WITH_PARENT"  # set for a helper server: it ends when its starter is gone


def exit_with_parent() -> None:
    """A server that a stage, the driver or a test started for itself ends once that process is
    gone, even SIGKILLed (its own session keeps it out of the starter's process group)."""
    if os.environ.get(EXIT_WITH_PARENT) != "1":
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:  # reparented once the parent dies
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def start_server_process(module: str, args: list[str], announce: str, health: str, timeout_s: float = 20,
                         env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python -m <module> --port 0 ...`` (with ``env`` added to this process's
    environment), read the URL it announces, wait until healthy."""
    root = str(ROOT)
    env = {**os.environ, **(env or {}), "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           EXIT_WITH_PARENT: "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith(announce + "="):
        proc.kill()
        raise UserError(f"`python -m {module}` did not start; run it by hand to see why")
    url = line.split("=", 1)[1]
    wait_until_up(url + health, timeout_s, proc)
    return proc, url


class AsgiServer:
    """An ASGI app on uvicorn with the standard library server's surface (``server_address``,
    ``serve_forever``, ``shutdown``, ``server_close``), so a test can run it in a thread and a
    command can serve it until Ctrl-C. The socket is bound and listening from construction,
    so the port is known at once (``port=0`` picks a free one) and early clients wait in the
    backlog instead of being refused."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(2048)
        self.server_address = self.socket.getsockname()
        # one process: the gateway's sessions and counters live in it; access logs off (requests are counted)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                    timeout_keep_alive=75, timeout_graceful_shutdown=10))
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self, timeout_s: float = 15) -> None:
        self.server.should_exit = True
        self.stopped.wait(timeout_s)

    def server_close(self) -> None:
        self.socket.close()


def serve_until_interrupted(httpd: Any, announce: str, suffix: str = "") -> None:
    """Announce ``<announce>=http://host:port<suffix>`` on stdout, then serve until Ctrl-C."""
    host, port = httpd.server_address[:2]
    exit_with_parent()
    print(f"{announce}=http://{host}:{port}{suffix}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        sys.stdout.flush()


def start_sim(settings: dict[str, Any] | None = None, timeout_s: float = 20) -> tuple[subprocess.Popen, str]:
    """Start the simulator on a free loopback port; returns the process and its /v1 URL."""
    args = [a for key, value in (settings or {}).items() for a in (f"--{key.replace('_', '-')}", str(value))]
    return start_server_process("jobs.sim", args, "SIM_URL", "/models", timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.core.servers")
    parser.add_argument("action", choices=["mlflow-up", "mlflow-down", "ui"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", 5000)))
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("PROMPTGATE_STATE_DIR", ".promptgate")))
    a = parser.parse_args(argv)
    try:
        if a.action == "mlflow-up":
            mlflow_up(a.state_dir, a.port, local_workers())
        elif a.action == "mlflow-down":
            mlflow_down(a.state_dir, a.port)
        else:
            url = f"http://127.0.0.1:{a.port}"
            state = "up" if is_up(url + "/health") else "down (run `make mlflow-up`)"
            print(f"MLflow UI: {url}  [{state}]")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
