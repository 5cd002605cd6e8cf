"""``make bench-perf``: how fast evaluation runs, as ratios measured side by side in one run on
servers of the bench's own (an MLflow server, the simulator at 0 and 200 ms per reply).

1. evaluate, ``--rows`` rows with 10 workers: promptgate (``python -m jobs.evaluate``) against
   the cookbook's hand-written ``mlflow.genai.evaluate`` (bench/raw_evaluate.py: same agent,
   judge, rows and server), rows per second and rows lost on each side;
2. the same at 200 ms with 1, 2, 4, 8 shards (speedup against one);
3. a rerun against its cold run: the same command (the finished result is reused) and
   ``force=true`` with every LLM reply cached;
4. a stage's time to its first LLM call against ``python -c "import mlflow"``, and a config
   error's time to exit against ``python -c "import hydra"``;
5. ``make run``'s wall time and its stages' shares, cold, and a second ``make run`` under a new
   pipeline id with the LLM cache warm against it;
6. the tracking server on PostgreSQL with 2 workers against SQLite with 1, at 4 shards.

Each run prints the CPU the tracking server and the whole machine used during it, so where a
target is missed the limiting resource is named with the figure that shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobs.core.paths import ROOT
from jobs.core.servers import free_port, local_workers, start_mlflow, start_sim, stop_process
from jobs.launch.launchers import STAGE_ENV

PROFILE = str(ROOT / "jobs/domains/baseball/sim_profile.yaml")
SOURCES = ("data/baseball/train.jsonl", "data/baseball/heldout.jsonl")
WORKERS = 10
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


# ------------------------------------------------------------------ measuring
def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children (the server's uvicorn workers)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / TICKS
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


@dataclass
class Measured:
    wall_s: float
    server_cores: float  # the tracking server's CPU seconds per wall second
    stage_cores: float  # the command's own processes' (stage, shards, its gateway)
    machine_cores: float  # every process's CPU seconds per wall second
    out: str = ""
    code: int = 0
    server_workers: int = 1  # its uvicorn workers: each one Python process, about one core at most

    def load(self) -> str:
        return (f"server {self.server_cores:.2f} cores, stage {self.stage_cores:.2f}, "
                f"machine {self.machine_cores:.2f} of {CORES}")


def children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(cmd: list[str], env: dict[str, str], server_pid: int, server_workers: int = 1) -> Measured:
    s0, c0, m0, t0 = tree_cpu_s(server_pid), children_cpu_s(), machine_busy_s(), time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    return Measured(wall, (tree_cpu_s(server_pid) - s0) / wall, (children_cpu_s() - c0) / wall,
                    (machine_busy_s() - m0) / wall, proc.stdout + proc.stderr, proc.returncode, server_workers)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def last_lines(out: str, n: int = 60) -> str:
    """The end of a command's output without its progress bars, which would fill the tail and
    hide why it failed (one shard's bars push the other shard's traceback out of it)."""
    lines = [line for line in re.split(r"[\r\n]", out) if line.strip() and not PROGRESS.search(line)]
    return "\n".join(lines[-n:])


PROGRESS = re.compile(r"\d+%\|.*\|")  # a tqdm bar: "Evaluating:  50%|█████     | 50/100 [...]"


def verdict(ok: bool, limit: str = "") -> str:
    return "target met" if ok else f"target missed: {limit}" if limit else "target missed"


# ------------------------------------------------------------------ set-up
def bench_rows(path: Path, n: int) -> Path:
    """``n`` distinct rows cycled from the example domain's questions (a suffix keeps them apart)."""
    base = [json.loads(line) for src in SOURCES for line in (ROOT / src).read_text().splitlines() if line.strip()]
    with path.open("w") as f:
        for i in range(n):
            r = base[i % len(base)]
            q = r["inputs"]["question"] + ("" if i < len(base) else f" (take {i // len(base) + 1})")
            f.write(json.dumps({**r, "id": f"b{i:04d}", "inputs": {**r["inputs"], "question": q}}) + "\n")
    return path


class Bench:
    def __init__(self, state: Path, rows: int):
        self.state, self.rows = state, rows
        self.data = bench_rows(state / "rows.jsonl", rows)
        self.mlflow_proc, self.uri = start_mlflow(state / "mlflow", free_port(), timeout_s=900)
        self.sims = {ms: start_sim({"seed": 7, "profile": PROFILE, "latency_ms": ms}) for ms in (0, 200)}

    def close(self) -> None:
        for proc, _ in self.sims.values():
            stop_process(proc.pid)
        stop_process(self.mlflow_proc.pid)

    def env(self, latency_ms: int, name: str, uri: str | None = None) -> dict[str, str]:
        """A stage environment with a state folder (so an LLM cache) of its own: cold unless reused."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTGATE_", "MLFLOW_"))}
        return {**env, **STAGE_ENV, "MLFLOW_TRACKING_URI": uri or self.uri, "PYTHONPATH": str(ROOT),
                "PROMPTGATE_SIM_URL": self.sims[latency_ms][1], "PROMPTGATE_STATE_DIR": str(self.state / name)}

    def registered(self, env: dict[str, str]) -> str:
        pid = f"perf-{uuid.uuid4().hex[:8]}"
        proc = subprocess.run([sys.executable, "-m", "jobs.register", f"pipeline_id={pid}"], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"register failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return pid

    def evaluate_cmd(self, pid: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "jobs.evaluate", f"pipeline_id={pid}", f"dataset.train={self.data}",
                f"evaluate.max_workers={WORKERS}", *extra]

    def promptgate(self, latency_ms: int, shards: int = 1, uri: str | None = None, server_pid: int | None = None,
                   name: str | None = None) -> tuple[Measured, dict, str, dict[str, str]]:
        name = name or f"pg-{latency_ms}ms-{shards}sh-{uuid.uuid4().hex[:4]}"
        env = self.env(latency_ms, name, uri)
        pid = self.registered(env)
        m = measure(self.evaluate_cmd(pid, f"evaluate.shards={shards}"), env, server_pid or self.mlflow_proc.pid)
        if m.code:
            sys.exit(f"evaluate failed ({m.code}):\n{last_lines(m.out)}")
        return m, result_of(m.out), pid, env

    def raw(self, latency_ms: int) -> tuple[Measured, dict]:
        env = self.env(latency_ms, f"raw-{latency_ms}ms")
        m = measure([sys.executable, "-m", "bench.raw_evaluate", "--rows", str(self.data), "--base-url",
                     self.sims[latency_ms][1], "--workers", str(WORKERS)], env, self.mlflow_proc.pid)
        if m.code:
            sys.exit(f"the raw evaluation failed ({m.code}):\n{last_lines(m.out)}")
        return m, json.loads([line for line in m.out.splitlines() if line.startswith('{"rows"')][-1])


def result_of(out: str) -> dict:
    """The evaluate stage's figures from what it printed."""
    m = re.search(r"(\d+)/(\d+) passed .*?, (\d+) errors, (\d+) rows re-evaluated", out)
    return {"scored": int(m.group(2)), "errors": int(m.group(3)), "retried": int(m.group(4))} if m else {}


def postgres_uri() -> str | None:
    try:
        import psycopg

        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5,
                                autocommit=True)
    except Exception:  # noqa: BLE001 - no server, no driver: the line says it was skipped
        return None
    db = f"promptgate_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {db}")
    admin.close()
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True)
    return time.monotonic() - t0


def first_call_s(bench: Bench) -> float:
    """From starting an evaluate stage to its first chat call reaching the simulator (cold cache)."""
    env = bench.env(0, f"first-{uuid.uuid4().hex[:4]}")
    pid = bench.registered(env)
    stats = bench.sims[0][1].rsplit("/v1", 1)[0] + "/sim/stats"
    calls = lambda: sum(v for k, v in json.loads(urllib.request.urlopen(stats).read())["calls"].items()  # noqa: E731
                        if k != "embeddings")
    before = calls()
    t0 = time.monotonic()
    proc = subprocess.Popen(bench.evaluate_cmd(pid), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while calls() == before and proc.poll() is None:
        time.sleep(0.02)
    first = time.monotonic() - t0
    proc.wait()
    return first


# ------------------------------------------------------------------ the report
def measurements(text: str) -> set[int]:
    """``--only``'s numbers, checked before any server starts."""
    try:
        chosen = {int(x) for x in text.split(",")}
    except ValueError:
        chosen = set()
    if not chosen or not chosen <= set(range(1, 7)):
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers 1-6 separated by commas, e.g. 5 or 4,5")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=200, help="rows per evaluation (default 200)")
    parser.add_argument("--shards", default="1,2,4,8", help="shard counts to compare at 200 ms")
    parser.add_argument("--keep", action="store_true", help="keep the state folder and print where it is")
    parser.add_argument("--only", default="1,2,3,4,5,6", type=measurements,
                        help="the numbered measurements to run, e.g. 5 or 4,5 (default all; 2 and 3 reuse 1's runs, "
                             "so any of 1-3 runs all three)")
    a = parser.parse_args()
    only = a.only
    state = Path(tempfile.mkdtemp(prefix="promptgate-perf-"))
    bench = Bench(state, a.rows)
    lines = [f"=== make bench-perf: {a.rows} rows, {WORKERS} workers, {CORES} cores, MLflow on SQLite in WAL mode (1 worker) ==="]
    say = lambda s: (lines.append(s), print(s, flush=True))  # noqa: E731
    try:
        if 1 in only or 2 in only or 3 in only:
            first_sections(bench, a, say)
        if 4 in only:
            startup(bench, say)
        if 5 in only:
            make_run(bench, say)
        if 6 in only:
            servers_compared(bench, state, say)
    finally:
        bench.close()
    print("\n".join(["", *lines]))
    if a.keep:
        print(f"state kept in {state}")


def first_sections(bench: Bench, a: argparse.Namespace, say) -> None:
    """1-3: promptgate against the hand-written evaluate, shards, reruns."""
    say("1. promptgate evaluate vs hand-written mlflow.genai.evaluate (same agent, judge, rows, server)")
    cold = {}
    for ms in (0, 200):
        raw, raw_res = bench.raw(ms)
        pg, pg_res, pid, env = bench.promptgate(ms)
        cold[ms] = (pg, pid, env)
        r_raw, r_pg = a.rows / raw.wall_s, a.rows / pg.wall_s
        target = 3.0 if ms == 0 else 2.0
        ok = r_pg / r_raw >= target and pg_res.get("scored", 0) + pg_res.get("errors", 0) == a.rows
        say(f"   {ms:>3} ms: raw {r_raw:5.2f} rows/s, {raw_res['lost']} lost ({raw.load()}); promptgate "
            f"{r_pg:5.2f} rows/s, {a.rows - pg_res.get('scored', 0) - pg_res.get('errors', 0)} lost, "
            f"{pg_res.get('retried', 0)} re-evaluated ({pg.load()}); promptgate/raw {ratio(r_pg, r_raw)} "
            f"(target {target:.0f}x: {verdict(ok, limit(pg))})")

    shard_counts = [int(x) for x in a.shards.split(",")]
    say("2. shards at 200 ms (speedup against 1 shard; target 0.75 N)")
    base = None
    for n in shard_counts:
        m, res, _, _ = bench.promptgate(200, n) if n != 1 else (cold[200][0], {}, None, None)
        base = base or m.wall_s
        speed = base / m.wall_s
        say(f"   N={n}: {a.rows / m.wall_s:5.2f} rows/s, speedup {speed:.2f}x ({m.load()}) "
            f"(target {0.75 * n:.2f}x: {verdict(speed >= 0.75 * n, limit(m))})")

    say("3. rerun against its cold run (0 ms)")
    pg0, pid0, env0 = cold[0]
    same = measure(bench.evaluate_cmd(pid0), env0, bench.mlflow_proc.pid)
    forced = measure(bench.evaluate_cmd(pid0, "force=true"), env0, bench.mlflow_proc.pid)
    say(f"   same command (result reused): {ratio(same.wall_s, pg0.wall_s)} of cold "
        f"(target at most 0.15x: {verdict(same.wall_s <= 0.15 * pg0.wall_s)})")
    say(f"   force=true, every reply cached: {ratio(forced.wall_s, pg0.wall_s)} of cold ({forced.load()}; "
        f"the rows are traced and judged again, so this is MLflow's cost of a row)")


def startup(bench: Bench, say) -> None:
    """4: a stage's start-up against the imports it cannot avoid."""
    say("4. start-up")
    env = bench.env(0, "startup")
    imp_mlflow = min(timed([sys.executable, "-c", "import mlflow"], env) for _ in range(2))
    imp_hydra = min(timed([sys.executable, "-c", "import hydra"], env) for _ in range(2))
    first = first_call_s(bench)
    bad = min(timed([sys.executable, "-m", "jobs.evaluate", "evaluate.max_workers=abc"], env) for _ in range(2))
    imp_agent = min(timed([sys.executable, "-c", "import langchain_openai, langchain.agents"], env) for _ in range(2))
    imp_litellm = min(timed([sys.executable, "-c", "import litellm"], env) for _ in range(2))
    need = (f"the first call also needs the agent's LangChain ({ratio(imp_agent, imp_mlflow)} of it) and "
            f"MLflow's judge client LiteLLM ({ratio(imp_litellm, imp_mlflow)}), imported on one core")
    say(f"   first LLM call after {ratio(first, imp_mlflow)} of `import mlflow` "
        f"(target 1.25x: {verdict(first <= 1.25 * imp_mlflow, need)})")
    say(f"   a config error exits after {ratio(bad, imp_hydra)} of `import hydra` "
        f"(target 1.5x: {verdict(bad <= 1.5 * imp_hydra)})")



def make_run(bench: Bench, say) -> None:
    """5: the whole pipeline cold, then again under a new pipeline id on the same state (its LLM
    cache warm, production unchanged: compare reuses the measured baseline)."""
    workers = local_workers()
    say(f"5. make run (the whole pipeline, simulator at 0 ms, on a new server with make mlflow-up's {workers} worker{'s' if workers > 1 else ''})")
    proc, uri = start_mlflow(bench.state / "mlflow-make-run", free_port(), timeout_s=900, workers=workers)
    env = bench.env(0, "make-run", uri)
    runs = []
    try:
        for label in ("cold cache", "second run, new pipeline id, cache warm"):
            m = measure([sys.executable, "-m", "jobs.pipeline", f"pipeline_id=perf-run-{uuid.uuid4().hex[:6]}"], env,
                        proc.pid, workers)
            if m.code:
                say(f"   {label}: the pipeline failed ({m.code}):\n{last_lines(m.out, 20)}")
                return
            stages = {s: float(t) for s, t in re.findall(r"--- (\w+) done in (\d+) s ---", m.out)}
            shares = ", ".join(f"{s} {t / m.wall_s:.0%}" for s, t in stages.items())
            runs.append(m)
            say(f"   {label}: wall {m.wall_s:.0f} s; stages' shares: {shares} ({m.load()})")
    finally:
        stop_process(proc.pid)
    cold, warm = runs
    say(f"   cold: {cold.wall_s / 120:.2f} of the 120 s target ({verdict(cold.wall_s <= 120, limit(cold))})")
    say(f"   warm second run: {ratio(warm.wall_s, cold.wall_s)} of the cold run (target at most 0.30x: "
        f"{verdict(warm.wall_s <= 0.30 * cold.wall_s, limit(warm))})")


def servers_compared(bench: Bench, state: Path, say) -> None:
    """6: the tracking server on PostgreSQL with 2 workers against SQLite with 1."""

    say("6. tracking server: PostgreSQL with 2 workers vs SQLite with 1, 200 ms, 4 shards")
    pg_uri = postgres_uri()
    if pg_uri is None:
        say("   skipped: no PostgreSQL on 127.0.0.1:5432")
    else:
        proc, uri = start_mlflow(state / "mlflow-pg", free_port(), backend_uri=pg_uri, timeout_s=900, workers=2)
        try:
            lite, _, _, _ = bench.promptgate(200, 4)
            post, _, _, _ = bench.promptgate(200, 4, uri=uri, server_pid=proc.pid)
            say(f"   PostgreSQL/SQLite rows/s {ratio(lite.wall_s, post.wall_s)} (SQLite: {lite.load()}; "
                f"PostgreSQL: {post.load()})")
        finally:
            stop_process(proc.pid)


def limit(m: Measured) -> str:
    """The resource that bounds a run: the cores when the machine is saturated, else the
    tracking server when its workers (each one Python process: about one core at most) are near
    full, else the time no process computes (start-up and round trips)."""
    if m.machine_cores >= 0.85 * CORES:
        return f"the machine's {CORES} cores ({m.machine_cores:.2f} busy)"
    if m.server_cores >= 0.6 * m.server_workers:
        return (f"the tracking server ({m.server_cores:.2f} cores on its {m.server_workers} worker"
                f"{'s' if m.server_workers > 1 else ''}, machine {m.machine_cores:.2f} of {CORES})")
    return (f"waiting, not computing (machine {m.machine_cores:.2f} of {CORES} cores busy): process start-up and "
            "MLflow round trips")


if __name__ == "__main__":
    main()
