"""Bad input: exit code 2, one line that names the file, line or key, and nothing half-written."""

from __future__ import annotations

import json
import time

import pytest

from jobs.core.servers import free_port
from tests.conftest import SESSION_PROMPT, labelled_traces, new_pipeline_id

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
    p.write_text(text)
    return str(p)


GOOD = json.dumps({"id": "a", "inputs": {"question": "q"},
                   "expectations": {"answerable": True, "small_sample": False, "injection": False}})


@pytest.mark.parametrize("case,stage,overrides,expect", [
    ("empty dataset", "evaluate", lambda t: [f"dataset.train={write(t, 'e.jsonl', '')}"], "e.jsonl: the dataset is empty"),
    ("malformed line", "evaluate", lambda t: [f"dataset.train={write(t, 'm.jsonl', GOOD + chr(10) + '{oops')}"],
     "m.jsonl:2: not valid JSON"),
    ("missing inputs", "evaluate", lambda t: [f"dataset.train={write(t, 'i.jsonl', json.dumps({'id': 'x'}))}"],
     "i.jsonl:1: missing 'inputs' object"),
    ("missing expectation", "evaluate",
     lambda t: [f"dataset.train={write(t, 'x.jsonl', json.dumps({'inputs': {'question': 'q'}, 'expectations': {}}))}"],
     "x.jsonl:1: expectations.answerable is missing"),
    ("unknown config option", "register", lambda t: ["no_such_key=1"], "config: Could not override 'no_such_key'"),
    ("unknown config group option", "evaluate", lambda t: ["judge=nope"], "config: In 'pipeline': Could not find 'judge/nope'"),
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
    ("gate alpha out of range", "gate", lambda t: ["gate.alpha=0"], "gate.alpha=0 must be in (0, 1]"),
    ("hard gate without a minimum", "gate", lambda t: ["gate.hard_gates=[{scorer: Safety}]"],
     "gate.hard_gates[0] needs scorer and min"),
    ("zero compare repeats", "compare", lambda t: ["compare.n_repeats=0"], "compare.n_repeats=0 must be at least 1"),
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


def test_llm_gateway_down(servers, mlflow_client, foundation):
    pid, _ = foundation
    dead = f"http://127.0.0.1:{free_port()}"
    before = runs(mlflow_client, pid)
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "force=true", PROMPTGATE_GATEWAY_URL=dead)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and f"LLM gateway {dead} is not reachable (Connection refused)" in lines[0], proc.stderr
    assert runs(mlflow_client, pid) == before


def test_budget_crossed_stops_the_stage(servers, mlflow_client, foundation):
    """A stage budget far below one evaluation: exit 2 naming it, spend in MLflow, no result.
    A pipeline of its own: the traces made before the budget tripped stay with it."""
    pid = new_pipeline_id("budget")
    assert servers.stage("register", f"pipeline_id={pid}").returncode == 0
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "budget.stage.tokens=2000", "gateway.cache=off")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and "budget.stage.tokens (2000 tokens) crossed: stage evaluate used" in lines[0], proc.stderr
    exp = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    failed = mlflow_client.search_runs([exp], f"tags.`promptgate.pipeline_id` = '{pid}' AND tags.`promptgate.stage` = "
                                              "'evaluate' AND attributes.status = 'FAILED'")
    assert failed and failed[0].data.metrics["spend.tokens"] > 2000 and "promptgate.result" not in failed[0].data.tags


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
