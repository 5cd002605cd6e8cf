"""`make test-llamacpp`: register, evaluate, feedback and align through a real model server that
nobody here wrote, llama.cpp's (llama-cpp-python's `llama_cpp.server`, SmolLM2-135M-Instruct),
on 4 questions of the baseball example, against an MLflow server of its own; then optimize
once, which must refuse up front (GEPA's reflection prompts do not fit a 4,096-token window).

Everything lives under .llamacpp/runs/<pipeline id>/ (MLflow's database, both servers' logs,
every stage's output, the requests the gateway sent upstream) and is left there to look at.
Prints the server's probed differences, each stage's lines and exit code, and a final table.
``run()`` returns each stage's outcome (tests/llamacpp/test_real_server.py asserts on them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: jobs/ is importable from the repository root
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import llama_server as llama  # noqa: E402  (tools/llamacpp/llama_server.py)

from jobs.core.servers import free_port, start_mlflow, stop_process  # noqa: E402

STAGES = ("register", "evaluate", "feedback", "align")
QUESTIONS = ("tr-01", "tr-02", "tr-15", "tr-17")  # big sample, small sample, not answerable, injection
HELDOUT = ("he-01", "he-02", "he-03", "he-04")  # never evaluated here; the dataset config needs a held-out file
# A label file as experts would write it, keyed by question id: two passes and two fails, so
# align's stratified split keeps one of each out to measure agreement on.
LABELS = [("tr-01", "true", "Gives a recommendation and cites the sample behind it."),
          ("tr-02", "false", "Does not state the data limits of a small sample."),
          ("tr-15", "false", "Answers a question the data cannot answer."),
          ("tr-17", "true", "Keeps its instructions private.")]
JUDGE = "hitting_quality"  # conf/judge/hitting_quality.yaml: expert labels carry the judge's name
STAGE_TIMEOUT_S = 1800  # one stage; on 2 cores a 4-question evaluate takes minutes, not hours
OPTIMIZE_TIMEOUT_S = 600  # optimize should refuse in seconds; past this it did not refuse up front
# With tools and tool_choice auto, llama-cpp-python 0.3.36's chatml-function-calling handler
# generates a tool call's arguments with max_tokens=None (llama_chat_format.py): one call ran to
# 3,051 tokens in 204 s, past the gateway's 60 s attempt, and a retry on a one-slot server only
# queues behind it. So this run leaves tools as sent (the server then ignores them: the agent
# answers in text, capped by max_tokens) and gives one attempt a long timeout and one retry.
BOUNDED = ["model.capabilities.tool_choice=as_sent", "gateway.timeout_s=300", "gateway.max_retries=1"]
KEY = "sk-llamacpp-no-auth"  # the server has no --api_key; the gateway still needs a value to send


@dataclass
class StageRun:
    stage: str
    code: int | None  # None: killed at the timeout
    seconds: float
    lines: list[str] = field(default_factory=list)  # what it printed: stdout, and stderr's error lines
    headline: str | None = None  # the figure its recorded result leads with
    upstream: int = 0  # requests its gateway sent to the llama server
    expected: str = "exit 0"

    @property
    def ok(self) -> bool:
        if self.stage == "optimize":  # refuses up front: exit 2, nothing sent upstream
            return self.code == 2 and self.upstream == 0
        return self.code == 0


def write_inputs(work: Path) -> dict[str, Path]:
    """4-question copies of the example's train and held-out sets and the label file."""
    def subset(src: Path, ids: tuple[str, ...], dst: Path) -> Path:
        rows = [line for line in src.read_text().splitlines() if json.loads(line)["id"] in ids]
        assert len(rows) == len(ids), f"{src} lacks some of {ids}"
        dst.write_text("\n".join(rows) + "\n")
        return dst

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    labels = data / "labels.csv"
    labels.write_text("question_id,value,rationale,expert,name\n"
                      + "".join(f'{q},{v},"{r}",llamacpp-test,{JUDGE}\n' for q, v, r in LABELS))
    return {"train": subset(ROOT / "data/baseball/train.jsonl", QUESTIONS, data / "train.jsonl"),
            "heldout": subset(ROOT / "data/baseball/heldout.jsonl", HELDOUT, data / "heldout.jsonl"),
            "labels": labels}


def post(url: str, body: dict, timeout_s: float = 300) -> tuple[int, dict | str, float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read()), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:200], time.monotonic() - t0


TOOL = {"type": "function", "function": {"name": "pitcher_tendencies", "description": "Pitch mix of a pitcher.",
                                         "parameters": {"type": "object", "properties": {"pitcher": {"type": "string"}},
                                                        "required": ["pitcher"]}}}


def probe(base: str) -> list[tuple[str, str]]:
    """What this server does differently from OpenAI's API, observed (not assumed)."""
    chat = base + "/chat/completions"
    seed = (ROOT / "data/baseball/seed_prompt.txt").read_text()
    question = "What does pitcher Hector Delgado throw to left-handed batters in a 2-2 count?"
    ask = {"model": llama.ALIAS, "messages": [{"role": "system", "content": seed}, {"role": "user", "content": question}],
           "max_tokens": 32, "temperature": 0}
    facts = []
    code, r, s = post(chat, ask)
    tokens = r["usage"]["completion_tokens"] if code == 200 else 0
    facts.append(("chat", f"HTTP {code}, {tokens} tokens in {s:.1f} s" if code == 200 else f"HTTP {code}: {r}"))
    schema = {"type": "json_schema", "json_schema": {"name": "v", "schema": {"type": "object", "properties": {
        "result": {"type": "boolean"}}, "required": ["result"]}}}
    code, r, _ = post(chat, {**ask, "response_format": schema})
    facts.append(("response_format json_schema", f"HTTP {code}" + (f": {r[:90]}" if code != 200 else "")))
    verdict = schema["json_schema"]["schema"]
    for label, fmt in (("response_format json_object", {"type": "json_object"}),
                       ("json_object with its schema", {"type": "json_object", "schema": verdict})):
        code, r, _ = post(chat, {**ask, "max_tokens": 96, "response_format": fmt})
        if code != 200:
            facts.append((label, f"HTTP {code}: {r[:90]}"))
            continue
        try:
            value = json.loads(r["choices"][0]["message"]["content"] or "")
            shape = "has the schema's keys" if isinstance(value, dict) and set(value) == {"result"} else "other keys"
            facts.append((label, f"HTTP 200, JSON, {shape}: {json.dumps(value)[:60]}"))
        except ValueError:
            facts.append((label, f"HTTP 200, NOT JSON ({r['choices'][0]['finish_reason']})"))
    for label, extra in (("tools, no tool_choice", {}), ("tools, tool_choice auto", {"tool_choice": "auto"}),
                         ("tools, tool_choice named", {"tool_choice": {"type": "function",
                                                                       "function": {"name": "pitcher_tendencies"}}})):
        code, r, _ = post(chat, {**ask, "tools": [TOOL], **extra})
        if code == 200:
            choice = r["choices"][0]
            facts.append((label, f"finish_reason {choice['finish_reason']}, "
                                 f"{len(choice['message'].get('tool_calls') or [])} tool calls"))
        else:
            facts.append((label, f"HTTP {code}: {r[:90]}"))
    call = {"id": "call_1", "type": "function", "function": {"name": "pitcher_tendencies", "arguments": '{"pitcher": "x"}'}}
    for label, turn in (("assistant tool call, no content", {"role": "assistant", "tool_calls": [call]}),
                        ("assistant tool call, content null", {"role": "assistant", "content": None, "tool_calls": [call]}),
                        ("assistant tool call, content ''", {"role": "assistant", "content": "", "tool_calls": [call]})):
        messages = [*ask["messages"], turn, {"role": "tool", "tool_call_id": "call_1", "content": "{}"}]
        code, r, _ = post(chat, {**ask, "messages": messages, "tools": [TOOL], "tool_choice": "auto"})
        facts.append((label, "HTTP 200" if code == 200 else f"HTTP {code}: {r[:90]}"))
    code, r, _ = post(base + "/embeddings", {"model": llama.ALIAS, "input": ["left-handed batters", "a 2-2 count"]})
    if code == 200:
        shapes = []
        for item in r["data"]:
            e = item["embedding"]
            shapes.append(f"{len(e)} x {len(e[0])}" if e and isinstance(e[0], list) else f"{len(e)}")
        facts.append(("embeddings of 2 texts", f"{len(r['data'])} items, shapes {', '.join(shapes)}"))
    else:
        facts.append(("embeddings of 2 texts", f"HTTP {code}: {r[:90]}"))
    return facts


def upstream_by_stage(log: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            stage = json.loads(line).get("stage", "?")
            out[stage] = out.get(stage, 0) + 1
    return out


def headline_of(launch_id: str) -> str | None:
    from omegaconf import OmegaConf

    from jobs.launch.launchers import launched_result

    try:
        result = launched_result(launch_id)
    except Exception as e:  # noqa: BLE001  (a report line, not a verdict)
        return f"(result not read: {e})"
    if result is None:
        return None
    evidence = SimpleNamespace(**OmegaConf.to_container(OmegaConf.load(ROOT / "conf/pipeline.yaml").evidence))
    figure, warning = result.headline(evidence)
    return figure + (f" [{warning}]" if warning else "") if figure else None


def run_stage(stage: str, overrides: list[str], env: dict[str, str], work: Path, timeout_s: float) -> StageRun:
    from jobs.core.contract import LAUNCH_ENV

    launch_id = uuid.uuid4().hex
    cmd = [sys.executable, "-m", f"jobs.{stage}", *overrides]
    print(f"\n$ python -m jobs.{stage} " + " ".join(o.replace(str(work), "$RUN") for o in overrides), flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env={**env, LAUNCH_ENV: launch_id}, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = time.monotonic() - t0
    (work / f"{stage}.stdout").write_text(out)
    (work / f"{stage}.stderr").write_text(err)
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in err.splitlines() if line.startswith(("error:", "WARNING", "warning:"))]
    if code not in (0, 2, None) and not errors:  # a crash: the traceback's end says where
        errors = err.strip().splitlines()[-12:]
    run = StageRun(stage, code, seconds, lines + errors)
    for line in run.lines:
        print(f"    {line}")
    run.headline = headline_of(launch_id) if code == 0 else None
    shown = "killed at the timeout" if code is None else f"exit {code}"
    print(f"  -> {shown} after {seconds:.0f} s" + (f"; recorded: {run.headline}" if run.headline else ""), flush=True)
    return run


def table(runs: list[StageRun], facts: list[tuple[str, str]]) -> str:
    rows = ["", "=== llama.cpp server (llama-cpp-python, SmolLM2-135M-Instruct Q4_1, n_ctx 4096): what it does ==="]
    rows += [f"  {k:<34} {v}" for k, v in facts]
    rows += ["", "=== stages through it ===",
             f"  {'stage':<9} {'exit':>5} {'seconds':>8} {'upstream':>9}  {'expected':<30} ok  recorded"]
    for r in runs:
        code = "kill" if r.code is None else str(r.code)
        rows.append(f"  {r.stage:<9} {code:>5} {r.seconds:>8.0f} {r.upstream:>9}  {r.expected:<30} "
                    f"{'yes' if r.ok else 'NO ':<3} {(r.headline or (r.lines[-1] if r.lines else ''))[:160]}")
    return "\n".join(rows)


def run() -> list[StageRun]:
    """The whole run, printed as it goes; the stages' outcomes."""
    pid = f"llama-{uuid.uuid4().hex[:8]}"
    work = ROOT / ".llamacpp" / "runs" / pid
    state = work / "state"
    state.mkdir(parents=True)
    inputs = write_inputs(work)
    print(f"promptgate through llama.cpp: pipeline {pid}; everything is kept under {work.relative_to(ROOT)}/", flush=True)
    procs = []
    try:
        print(f"Starting llama.cpp's server ({llama.gguf_path().name}, n_ctx {llama.N_CTX}) ...", flush=True)
        lproc, base = llama.start(work / "llama-server.log")
        procs.append(lproc)
        print(f"  up at {base}; probing what it does differently from OpenAI's API ...", flush=True)
        facts = probe(base)
        for k, v in facts:
            print(f"    {k:<34} {v}")
        print("Starting MLflow (SQLite under the run folder) ...", flush=True)
        mproc, mlflow_uri = start_mlflow(state, free_port(), timeout_s=900)
        procs.append(mproc)
        print(f"  up at {mlflow_uri}", flush=True)
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri  # headline_of reads results back by launch id
        misses = work / "upstream.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_uri,
               "PROMPTGATE_STATE_DIR": str(state), "PROMPTGATE_LLM_BASE_URL": base, "OPENAI_API_KEY": KEY,
               "PROMPTGATE_GATEWAY_MISS_LOG": str(misses)}
        for own in ("PROMPTGATE_GATEWAY_URL", "PROMPTGATE_SIM_URL", "PROMPTGATE_CACHE_URI"):
            env.pop(own, None)  # each stage starts a gateway of its own in front of the llama server
        common = [f"pipeline_id={pid}", "model=llamacpp", f"dataset.train={inputs['train']}",
                  f"dataset.heldout={inputs['heldout']}", "gateway.cache=off", *BOUNDED]
        extra = {"feedback": ["feedback=file", f"feedback.path={inputs['labels']}"],
                 # 4 labels: hold out 2 (a pass and a fail), align on 2; the defaults want 8 held out
                 "align": ["aligner.holdout_fraction=0.5", "aligner.min_holdout=2"]}
        runs: list[StageRun] = []
        for stage in STAGES:
            runs.append(run_stage(stage, common + extra.get(stage, []), env, work, STAGE_TIMEOUT_S))
            runs[-1].upstream = upstream_by_stage(misses).get(stage, 0)
            if runs[-1].code != 0:
                print(f"  {stage} failed: the later stages need its result, so they do not run", flush=True)
                break
        # optimize's refusal rests on the config alone (model.context_tokens), so it is shown either way
        opt = run_stage("optimize", common + extra["align"], env, work, OPTIMIZE_TIMEOUT_S)
        opt.upstream = upstream_by_stage(misses).get("optimize", 0)
        opt.expected = "exit 2 up front, 0 requests"
        runs.append(opt)
        print(table(runs, facts))
        print(f"\nlogs and outputs: {work.relative_to(ROOT)}/", flush=True)
        return runs
    finally:
        for proc in reversed(procs):
            stop_process(proc.pid)


def passed(runs: list[StageRun]) -> bool:
    """Every stage ran and did what it should: register to align exit 0, optimize refused up front."""
    return len(runs) == len(STAGES) + 1 and all(r.ok for r in runs)


def main() -> int:
    ok = passed(run())
    print("PASSED" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
