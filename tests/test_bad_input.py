"""Bad input: exit code 2, one line that names the file, line or key, and nothing half-written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from jobs.core.paths import ROOT
from jobs.core.servers import free_port
from tests.conftest import MODEL_OPTIONS, SESSION_PROMPT, labelled_traces, new_pipeline_id, printed_result

pytestmark = pytest.mark.integration
PROMPT = SESSION_PROMPT


def versions(client):
    try:
        return len(list(client.search_prompt_versions(PROMPT)))
    except Exception:  # noqa: BLE001 - no prompt yet
        return 0


def runs(client, pid):
    exp = client.get_experiment_by_name("promptgate-baseball")
    if exp is None:
        return 0
    return len(client.search_runs([exp.experiment_id], f"tags.`promptgate.pipeline_id` = '{pid}'"))


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def folder(tmp_path, name):
    (tmp_path / name).mkdir(exist_ok=True)
    return str(tmp_path / name)


GOOD = json.dumps({"id": "a", "inputs": {"question": "q"},
                   "expectations": {"answerable": True, "small_sample": False, "injection": False}})
EXP = {"answerable": True, "small_sample": False, "injection": False}


def question(text: str) -> str:
    return json.dumps({"id": "big", "inputs": {"question": text}, "expectations": EXP})


TRAIN = "data/baseball/train.jsonl"
NOT_UTF8_DATASET = GOOD.encode() + b'\n{"id": "\xe9t\xe9"}'  # Latin-1, as a spreadsheet may save it
NOT_UTF8_LABELS = b'{"trace_id": "t", "value": "\xff"}'
NOT_UTF8_SEED = b"You help.\n\x80"


@pytest.mark.parametrize("case,stage,overrides,expect", [
    ("empty dataset", "evaluate", lambda t: [f"dataset.train={write(t, 'e.jsonl', '')}"], "e.jsonl: the dataset is empty"),
    ("malformed line", "evaluate", lambda t: [f"dataset.train={write(t, 'm.jsonl', GOOD + chr(10) + '{oops')}"],
     "m.jsonl:2: not valid JSON"),
    ("missing inputs", "evaluate", lambda t: [f"dataset.train={write(t, 'i.jsonl', json.dumps({'id': 'x'}))}"],
     "i.jsonl:1: missing 'inputs' object"),
    ("missing expectation", "evaluate",
     lambda t: [f"dataset.train={write(t, 'x.jsonl', json.dumps({'inputs': {'question': 'q'}, 'expectations': {}}))}"],
     "x.jsonl:1: expectations.answerable is missing"),
    ("unknown config option", "register", lambda t: ["no_such_key=1"], "config: no_such_key is not a key;"),
    ("unknown config group option", "evaluate", lambda t: ["judge=nope"],
     "config: judge=nope: no such option; use one of hitting_quality, support_quality"),
    ("empty seed prompt", "register", lambda t: [f"prompt.seed_file={write(t, 's.txt', '  ')}"], "the seed prompt is empty"),
    ("label name mismatch", "feedback",
     lambda t: ["feedback=file", f"feedback.path={write(t, 'l.jsonl', json.dumps({'trace_id': 't', 'value': True, 'name': 'other'}))}"],
     "l.jsonl:1: label name 'other' does not match the judge 'hitting_quality'"),
    ("missing dataset file", "evaluate", lambda t: ["dataset.train=nowhere/train.jsonl"], "dataset nowhere/train.jsonl: no such file"),
    ("S3 URI without a key", "evaluate", lambda t: ["dataset.train=s3://promptgate-data"],
     "an S3 URI needs a bucket and a key"),
    ("S3 object that does not exist", "evaluate", lambda t: ["dataset.train=s3://promptgate-data/none/train.jsonl"],
     "s3://promptgate-data/none/train.jsonl: S3 answered NoSuchKey"),
    ("label file with a non-boolean value", "feedback",
     lambda t: ["feedback=file", f"feedback.path={write(t, 'v.jsonl', json.dumps({'trace_id': 't', 'value': 'maybe'}))}"],
     "v.jsonl:1: value 'maybe' is not a yes/no label"),
    ("label file without a key column", "feedback",
     lambda t: ["feedback=file", f"feedback.path={write(t, 'k.jsonl', json.dumps({'value': True}))}"],
     "k.jsonl:1: needs a trace_id or a question_id column"),
    ("unknown feedback source", "feedback", lambda t: ["feedback.source=email"], "feedback.source 'email' is unknown"),
    ("review queue for more than 10 reviewers", "feedback",
     lambda t: ["feedback=ui", "feedback.reviewers=[" + ",".join(f"r{i}@x.org" for i in range(11)) + "]"],
     "feedback.reviewers has 11 users; a review queue takes at most 10"),
    ("monitor window too small to test", "monitor", lambda t: ["monitor.min_window=2"], "monitor.min_window=2 must be at least 5"),
    ("monitor schedule that is not cron", "monitor", lambda t: ["monitor.schedule=hourly"],
     "monitor.schedule 'hourly' is not a cron schedule of 5 fields"),
    ("monitor of a prompt never gated", "monitor", lambda t: ["prompt.name=never-registered-prompt"],
     "prompt 'never-registered-prompt' has no production alias; run the pipeline first"),
    ("monitor of traces in a missing experiment", "monitor", lambda t: ["monitor.experiment=no-such-experiment"],
     "monitor.experiment 'no-such-experiment' does not exist"),
    ("drifting a real model", "traffic", lambda t: ["traffic.drift=true", "model=openai"],
     "traffic.drift=true drifts the simulator; model=openai is a real model"),
    ("negative stage budget", "evaluate", lambda t: ["budget.stage.tokens=-5"],
     "budget.stage.tokens=-5 must be a positive number or null"),
    ("budget in an unknown unit", "evaluate", lambda t: ["+budget.pipeline.euros=3"],
     "budget.pipeline.euros: unknown unit 'euros'"),
    ("budget for an unknown stage", "compare", lambda t: ["+budget.per_stage.deploy={tokens: 5}"],
     "budget.per_stage.deploy: unknown stage"),
    ("unknown cache mode", "evaluate", lambda t: ["gateway.cache=sometimes"], "gateway.cache=sometimes: use one of off, read, readwrite"),
    ("cache URI with an unknown scheme", "evaluate", lambda t: ["gateway.cache_uri=ftp://host/cache"],
     "gateway.cache_uri=ftp://host/cache: use a folder"),
    ("gateway URL that is not http", "evaluate", lambda t: ["gateway.url=localhost:4000"],
     "gateway.url=localhost:4000: give the gateway's http:// or https:// base URL"),
    ("gate alpha out of range", "gate", lambda t: ["gate.alpha=0"], "gate.alpha=0.0 must be in (0, 1]"),
    ("hard gate that checks nothing", "gate", lambda t: ["gate.hard_gates=[{scorer: Safety, no_regression: false}]"],
     "gate.hard_gates[0] checks nothing: give a min, or leave no_regression true"),
    ("slice gate without a slice", "gate", lambda t: ["gate.slices=[{min: 0.5}]"],
     "gate.slices[0] needs slice, and min and/or no_regression, e.g. {slice: injection, min: 0.8}"),
    ("zero compare repeats", "compare", lambda t: ["compare.n_repeats=0"], "compare.n_repeats=0 must be at least 1"),
    ("unknown autolog flavor", "evaluate", lambda t: ["agent.autolog=[dspy]"],
     "agent.autolog=['dspy']: give a list of MLflow autolog flavors that trace your agent, from langchain, openai"),
    ("unknown compare design", "compare", lambda t: ["compare.design=adaptive"],
     "compare.design=adaptive is not one of sequential, fixed; use compare.design=sequential"),
    ("sequential compare in shards", "compare", lambda t: ["compare.shards=2"],
     "compare.shards=2 needs compare.design=fixed: a sequential compare decides after each look, in one process"),
    ("unknown futility rule", "compare", lambda t: ["compare.sequential.futility=never"],
     "compare.sequential.futility=never is not one of conditional_power, upper_bound, none"),
    # files: encodings, permissions, folders, empty and truncated files, sizes
    ("dataset not UTF-8", "evaluate", lambda t: [f"dataset.train={write(t, 'u.jsonl', NOT_UTF8_DATASET)}"],
     "u.jsonl:2: byte 0xe9 at column 9 is not UTF-8; save the file as UTF-8"),
    ("dataset is a folder", "evaluate", lambda t: [f"dataset.train={folder(t, 'setdir')}"], "setdir: is a folder; give the path"),
    ("truncated dataset", "evaluate", lambda t: [f"dataset.train={write(t, 'tr.jsonl', GOOD + chr(10) + GOOD[:30])}"],
     "tr.jsonl:2: not valid JSON (Unterminated string starting at, column 24) (the last line ends early: is the file truncated?)"),
    ("10 MB one-line question", "evaluate", lambda t: [f"dataset.train={write(t, 'big.jsonl', question('x' * 10_000_000))}"],
     "big.jsonl:1: the record is 9766 KB, above limits.max_record_kb=64; shorten it or raise limits.max_record_kb"),
    ("question above the input limit", "evaluate", lambda t: [f"dataset.train={write(t, 'q.jsonl', question('y' * 5000))}"],
     "q.jsonl:1: inputs.question is 5000 characters, above limits.max_input_chars=4000"),
    ("dataset file above the file limit", "evaluate", lambda t: ["limits.max_file_mb=0.001"],
     f"dataset {TRAIN}: 5.4 KB is above limits.max_file_mb=0.001; split the file or raise limits.max_file_mb"),
    ("limit that is not positive", "evaluate", lambda t: ["limits.max_record_kb=0"], "limits.max_record_kb=0.0 must be above 0"),
    ("label file not UTF-8", "feedback",
     lambda t: ["feedback=file", f"feedback.path={write(t, 'lu.jsonl', NOT_UTF8_LABELS)}"],
     "lu.jsonl:1: byte 0xff at column 29 is not UTF-8"),
    ("empty label file", "feedback", lambda t: ["feedback=file", f"feedback.path={write(t, 'le.jsonl', '')}"],
     "le.jsonl: no labels in the file"),
    ("label file is a folder", "feedback", lambda t: ["feedback=file", f"feedback.path={folder(t, 'labdir')}"],
     "labdir: is a folder"),
    ("seed prompt is a folder", "register", lambda t: [f"prompt.seed_file={folder(t, 'seeddir')}"], "seeddir: is a folder"),
    ("seed prompt not UTF-8", "register", lambda t: [f"prompt.seed_file={write(t, 's8.txt', NOT_UTF8_SEED)}"],
     "s8.txt:2: byte 0x80 at column 1 is not UTF-8"),
    # typed keys, unknown keys and options
    ("wrong type for an optimizer key", "optimize", lambda t: ["optimizer.max_metric_calls=abc"],
     "config: optimizer.max_metric_calls=abc: Value 'abc' of type 'str' could not be converted to Integer; give a whole number"),
    ("wrong type for a gate key", "gate", lambda t: ["gate.alpha=low"], "config: gate.alpha=low: Value 'low' of type 'str' could not"),
    ("wrong type for a section key", "compare", lambda t: ["compare.n_repeats=many"], "give a whole number"),
    ("list key given a number", "evaluate", lambda t: ["dataset.input_keys=3"], "give a list, like [a, b]"),
    ("mistyped key", "optimize", lambda t: ["optimizer.max_metric_call=10"],
     "config: optimizer.max_metric_call is not a key; did you mean optimizer.max_metric_calls?"),
    ("mistyped group", "optimize", lambda t: ["optimzer.max_metric_calls=10"], "did you mean optimizer.max_metric_calls?"),
    ("added key a schema lacks", "evaluate", lambda t: ["+evaluate.max_worker=2"],
     "config: evaluate.max_worker is not a key of EvaluateSettings; did you mean evaluate.max_workers?"),
    ("unknown model option", "evaluate", lambda t: ["model=doesnotexist"],
     "config: model=doesnotexist: no such option; use one of " + MODEL_OPTIONS),
    ("unknown on_missing", "evaluate", lambda t: ["evaluate.on_missing=maybe"], "evaluate.on_missing 'maybe' is unknown; use fail or record"),
    # the judge
    ("judge name with a space", "evaluate", lambda t: ["judge.name=my judge"], "judge.name 'my judge' must be letters, digits"),
    ("unknown judge value type", "evaluate", lambda t: ["judge.feedback_value_type=int"],
     "judge.feedback_value_type 'int' is unknown; use one of"),
    ("categorical judge without categories", "compare", lambda t: ["judge.feedback_value_type=categorical", "judge.categories=null"],
     "judge.categories is empty"),
    ("pass threshold off the judge's scale", "evaluate",
     lambda t: ["judge.feedback_value_type=float", "judge.scale=[1,5]", "judge.pass_threshold=7"],
     "judge.pass_threshold=7 is outside judge.scale [1, 5]; no value of the judge can reach it"),
    ("Likert threshold on a judge with no scale", "evaluate", lambda t: ["judge.feedback_value_type=float", "judge.pass_threshold=4"],
     "judge.pass_threshold=4 is outside judge.scale [0, 1]; no value of the judge can reach it: set judge.pass_threshold "
     "between 0 and 1, or declare the judge's range as judge.scale, e.g. [1, 5]"),
    ("label off the judge's scale", "feedback",
     lambda t: ["feedback=file", "judge.feedback_value_type=float", "judge.scale=[1,5]", "judge.pass_threshold=4",
                f"feedback.path={write(t, 'sc.csv', 'trace_id,value' + chr(10) + 't1,4' + chr(10) + 't2,7' + chr(10))}"],
     "sc.csv:3: value 7 is outside the judge's scale 1 to 5 (judge.scale); give a value on that scale"),
    ("judge instructions that never show the response", "evaluate", lambda t: ["judge.instructions=Be fair."],
     "judge.instructions must mention {{ outputs }}"),
    # the agent and the relations between inputs
    ("tools module without TOOLS", "evaluate", lambda t: ["agent.tools_module=jobs.core.errors"],
     "agent.tools_module 'jobs.core.errors' has no TOOLS list"),
    ("minibatch above the training set", "optimize", lambda t: ["optimizer.minibatch_size=500"],
     "optimizer.minibatch_size=500 must be between 1 and the"),
    ("tools module that does not import", "evaluate", lambda t: ["agent.tools_module=nowhere.tools"],
     "agent.tools_module 'nowhere.tools' cannot be imported"),
    ("agent factory that does not import", "evaluate", lambda t: ["agent._target_=nowhere.make_agent"],
     "agent._target_ 'nowhere.make_agent': module 'nowhere' cannot be imported"),
    ("agent factory that is not there", "evaluate", lambda t: ["agent._target_=jobs.agents.react.no_such_agent"],
     "agent._target_ 'jobs.agents.react.no_such_agent': 'jobs.agents.react' has no function 'no_such_agent'"),
    ("agent setting the factory does not take", "evaluate", lambda t: ["+agent.colour=red"],
     "agent.colour is not a setting of jobs.agents.react.react_agent; its settings are input_key, max_retries, "
     "max_steps, tools_module"),
    ("agent setting out of range", "evaluate", lambda t: ["agent.max_steps=0"], "agent.max_steps=0 must be a whole number of at least 1"),
    ("agent input key the dataset lacks", "evaluate", lambda t: ["agent.input_key=prompt"],
     "agent.input_key 'prompt' is not among dataset.input_keys ['question']"),
    ("held-out set that shares train questions", "compare",
     lambda t: [f"dataset.heldout={write(t, 'h.jsonl', question('What does pitcher HECTOR Delgado throw to left-handed batters in a 2-2 count'))}"],
     f"h.jsonl:1: this heldout question is also in the train set ({TRAIN}:1); 1 heldout question(s) are shared"),
    ("compare on the train split", "compare", lambda t: ["compare.split=train"], "compare.split=train: compare must prove"),
    ("ui feedback waiting for more labels than rows", "feedback", lambda t: ["feedback=ui", "feedback.min_labels=500"],
     "feedback.min_labels=500 is above the 28 questions of dataset.train"),
])
def test_bad_input_exits_2_with_one_line(servers, mlflow_client, tmp_path, case, stage, overrides, expect):
    pid = f"bad-{stage}-{abs(hash(case)) % 10**6}"
    before = versions(mlflow_client)
    proc = servers.stage(stage, f"pipeline_id={pid}", *overrides(tmp_path), timeout=120)
    assert proc.returncode == 2, f"{case}: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    lines = error_lines(proc)
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert versions(mlflow_client) == before
    assert runs(mlflow_client, pid) == 0


def test_mlflow_server_down_is_clear_within_15_s(servers, mlflow_client):
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = servers.stage("register", "pipeline_id=bad-down", f"mlflow.tracking_uri={dead}", "mlflow.connect_timeout_s=5")
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: MLflow server {dead} is not reachable (Connection refused); start it with "
                                 "`make mlflow-up` or set mlflow.tracking_uri"]


@pytest.mark.parametrize("workers", ["abc", "0"])
def test_a_bad_worker_count_for_the_local_server_exits_2_before_starting_it(tmp_path, workers):
    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-m", "jobs.core.servers", "mlflow-up", "--port", str(free_port()),
                           "--state-dir", str(state)], env={**os.environ, "MLFLOW_WORKERS": workers}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: MLFLOW_WORKERS={workers}: the local MLflow server's worker count "
                                        "must be a whole number >= 1, e.g. MLFLOW_WORKERS=2"]
    assert not state.exists()  # nothing started, nothing made


@pytest.mark.parametrize("case,stage,overrides,env,expect", [
    ("label for a trace the pipeline does not have", "feedback",
     lambda t: ["feedback=file", f"feedback.path={write(t, 'n.jsonl', json.dumps({'trace_id': 'nope', 'value': True}))}"], {},
     "n.jsonl:1: trace_id 'nope' is not among this pipeline's traces awaiting review"),
    ("model=openai without its key", "evaluate", lambda t: ["model=openai", "force=true"],
     {"OPENAI_API_KEY": "", "PROMPTGATE_GATEWAY_URL": ""},  # no gateway that holds the key: the stage starts its own
     "model=openai needs the API key in $OPENAI_API_KEY; export it or use model=sim"),
    ("config folder that does not exist", "evaluate", lambda t: [], {"PROMPTGATE_CONFIG_PATH": "/nowhere/conf"},
     "$PROMPTGATE_CONFIG_PATH: /nowhere/conf is not a folder"),
])
def test_mistakes_on_a_pipeline_with_traces_leave_its_runs_as_they_were(servers, mlflow_client, foundation, tmp_path,
                                                                      case, stage, overrides, env, expect):
    pid, _ = foundation
    before = (runs(mlflow_client, pid), versions(mlflow_client))
    proc = servers.stage(stage, f"pipeline_id={pid}", *overrides(tmp_path), **env)
    assert proc.returncode == 2, f"{case}: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    lines = error_lines(proc)
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert (runs(mlflow_client, pid), versions(mlflow_client)) == before


def test_llm_gateway_down(servers, mlflow_client, foundation):
    pid, _ = foundation
    dead = f"http://127.0.0.1:{free_port()}"
    before = runs(mlflow_client, pid)
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "force=true", PROMPTGATE_GATEWAY_URL=dead)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and f"LLM gateway {dead} is not reachable (Connection refused)" in lines[0], proc.stderr
    assert runs(mlflow_client, pid) == before


def test_llm_endpoint_down(servers, mlflow_client, foundation):
    pid, _ = foundation
    dead = f"http://127.0.0.1:{free_port()}/v1"
    before = runs(mlflow_client, pid)
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "force=true", PROMPTGATE_SIM_URL=dead,
                         PROMPTGATE_GATEWAY_URL="")  # the stage starts a gateway of its own in front of it
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [f"error: LLM endpoint {dead} is not reachable (Connection refused); start it or fix model.base_url"]
    assert runs(mlflow_client, pid) == before


def scorer_versions(client):
    from mlflow.genai.scorers.registry import list_scorer_versions

    exp = client.get_experiment_by_name("promptgate-baseball")
    if exp is None:
        return 0
    try:
        return len(list_scorer_versions(name="hitting_quality", experiment_id=exp.experiment_id))
    except Exception:  # noqa: BLE001 - none registered yet
        return 0


@pytest.mark.parametrize("case,stage,setup,overrides,expect", [
    ("no expert labels", "align", None, [], "has no expert labels named 'hitting_quality'; run `python -m jobs.feedback"),
    ("labels under another name", "align", ("quality_v0", 4, True), [],
     "expert labels of pipeline {pid} are named 'quality_v0', not the judge's name 'hitting_quality'"),
    ("simba with too few labels", "align", ("hitting_quality", 6, True), ["aligner=simba"],
     "simba needs at least 10 labelled traces to align on, but pipeline {pid} has 4"),
    ("train record without expectations", "optimize", None,
     lambda t: ["dataset.required_expectations=[]", f"dataset.train={write(t, 'n.jsonl', json.dumps({'id': 'q1', 'inputs': {'question': 'q'}}))}"],
     "n.jsonl:1: the train record 'q1' has no expectations; GEPA needs expectations on every training record"),
    ("budget below one iteration", "optimize", None, ["optimizer.max_metric_calls=8"],
     "optimizer.max_metric_calls=8 is below what one GEPA iteration needs: 36 (28 validation rows + 2 x minibatch 4); set it to at least 36"),
])
def test_learning_stages_refuse_bad_input(servers, mlflow_client, tmp_path, case, stage, setup, overrides, expect):
    pid = f"bad-{stage}-{abs(hash(case)) % 10**6}"
    if setup:
        labelled_traces(pid, setup[1], setup[0], setup[2])
    before = (versions(mlflow_client), scorer_versions(mlflow_client))
    args = overrides(tmp_path) if callable(overrides) else overrides
    proc = servers.stage(stage, f"pipeline_id={pid}", *args, timeout=180)
    assert proc.returncode == 2, f"{case}: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    lines = error_lines(proc)
    assert len(lines) == 1 and expect.format(pid=pid) in lines[0], proc.stderr
    assert (versions(mlflow_client), scorer_versions(mlflow_client)) == before
    assert runs(mlflow_client, pid) == 0


# ------------------------------------------------------------------ make run: checked first, nothing left RUNNING
def run_statuses(client, pid) -> dict[str, str]:
    """stage (or "pipeline", the parent run) -> status of every run the pipeline id has."""
    exp = client.get_experiment_by_name("promptgate-baseball")
    found = client.search_runs([exp.experiment_id], f"tags.`promptgate.pipeline_id` = '{pid}'") if exp else []
    return {r.data.tags["promptgate.stage"]: r.info.status for r in found}


def make_run(servers, pid, *overrides, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"pipeline_id={pid}", *overrides], env=servers.env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    servers.keep_log(f"pipeline {pid}", proc.stdout, proc.stderr)
    return proc


@pytest.mark.parametrize("case,overrides,expect", [
    ("held-out shares train questions", lambda t: ["dataset.heldout=data/baseball/train.jsonl"],
     "this heldout question is also in the train set"),
    ("optimizer budget below one iteration", lambda t: ["optimizer.max_metric_calls=8"], "optimizer.max_metric_calls=8 is below"),
    ("label file of the wrong type", lambda t: ["feedback=file", f"feedback.path={write(t, 'lab.jsonl', NOT_UTF8_LABELS)}"],
     "lab.jsonl:1: byte 0xff"),
])
def test_make_run_checks_every_stage_before_the_first_writes(servers, mlflow_client, tmp_path, case, overrides, expect):
    """A bad input of a late stage (compare, optimize, feedback) stops `make run` before register
    writes anything: no prompt version, no run, not even the pipeline's parent run."""
    pid = new_pipeline_id("badrun")
    before = versions(mlflow_client)
    proc = make_run(servers, pid, *overrides(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert "--- register" not in proc.stdout
    assert run_statuses(mlflow_client, pid) == {} and versions(mlflow_client) == before


def test_a_budget_stops_the_pipeline_mid_way_and_its_run_ends_failed_naming_the_stage(servers, mlflow_client):
    """A stage budget far below one evaluation: evaluate exits 2 naming it after register finished.
    The one exit 2 that keeps a run: evaluate's, FAILED, with the money it spent and no result.
    The pipeline's parent run ends FAILED with the stage recorded, not RUNNING."""
    pid = new_pipeline_id("budget")
    proc = make_run(servers, pid, "budget.stage.tokens=2000", "gateway.cache=off")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and "budget.stage.tokens (2000 tokens) crossed: stage evaluate used" in lines[0], proc.stderr
    assert run_statuses(mlflow_client, pid) == {"pipeline": "FAILED", "register": "FINISHED", "evaluate": "FAILED"}
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    runs = {r.data.tags["promptgate.stage"]: r for r in
            mlflow_client.search_runs([exp], f"tags.`promptgate.pipeline_id` = '{pid}'")}
    assert runs["pipeline"].data.tags["promptgate.failed_stage"] == "evaluate"
    assert runs["evaluate"].data.metrics["spend.tokens"] > 2000 and "promptgate.result" not in runs["evaluate"].data.tags
    assert f"pipeline run pipeline-{pid}: FAILED at stage evaluate" in proc.stderr


def test_a_run_first_hint_repeats_the_overrides_and_works_when_followed(servers, mlflow_client):
    """Followed literally, the hint registers the prompt of the user's experiment, not the default's."""
    pid = new_pipeline_id("hint")
    prompt = f"hint-shop-{pid[-8:]}"
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "experiment=shop", f"prompt.name={prompt}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    hint = re.search(r"run `([^`]+)` first", error_lines(proc)[0]).group(1)
    assert hint == f"python -m jobs.register pipeline_id={pid} experiment=shop prompt.name={prompt}"
    followed = servers.stage("register", *shlex.split(hint)[3:])
    assert followed.returncode == 0, followed.stderr[-2000:]
    seed = (ROOT / "data/shop/seed_prompt.txt").read_text().strip()
    registered = mlflow_client.get_prompt_version(prompt, printed_result(followed)["seed_version"])
    assert registered.template == seed
