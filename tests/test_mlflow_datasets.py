"""MLflow evaluation datasets as a dataset source, on the session's real MLflow server (SQLite):
``python -m jobs.datasets push`` creates and updates one from a JSONL file, ``dataset.<split>=
mlflow-dataset:<name>`` reads it back through the same checks, and an evaluation run records
the dataset and version it read (its lineage on the run page)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from jobs.config.compose import compose
from jobs.core.errors import UserError
from jobs.core.paths import ROOT
from jobs.eval import datasets

from .conftest import new_pipeline_id, stage_result

pytestmark = pytest.mark.integration

BASEBALL_TRAIN = ROOT / "data/baseball/train.jsonl"


def push(servers, path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "jobs.datasets", "push", str(path), "--name", name, *overrides],
                          env=servers.env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    servers.keep_log(f"datasets push {name}", proc.stdout, proc.stderr)
    return proc


def printed(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """The push's lines `  key: value` as a dict."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.strip().split(": ", 1) for line in proc.stdout.splitlines() if line.startswith("  "))


def small_file(tmp_path, n: int = 4):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(BASEBALL_TRAIN.read_text().splitlines(keepends=True)[:n]))
    return path


def test_push_twice_keeps_the_records_and_the_config_reads_them_back(servers, mlflow_client, tmp_path):
    name = f"train-{uuid.uuid4().hex[:6]}"
    path = small_file(tmp_path)
    first = push(servers, path, name)
    assert f"mlflow-dataset:{name} created: 4 of the file's 4 records added or changed" in first.stdout
    again = push(servers, path, name)
    assert f"mlflow-dataset:{name} up to date: 0 of the file's 4 records" in again.stdout
    one, two = printed(first), printed(again)
    assert one["records"] == two["records"] == "4" and one["digest"] == two["digest"] and one["id"] == two["id"]
    assert one["id"].startswith("d-") and one["MLflow UI"].endswith(f"/datasets/{one['id']}")

    cfg = compose([f"dataset.train=mlflow-dataset:{name}"])
    from_mlflow = datasets.from_config(cfg, "train")
    from_file = datasets.load(str(path), ["question"], list(cfg.dataset.required_expectations))
    assert [(r.id, r.as_eval_row()) for r in from_mlflow] == [(r.id, r.as_eval_row()) for r in from_file]  # in file order
    assert from_mlflow[0].where == f"mlflow-dataset:{name} record tr-01"
    origin = from_mlflow[0].origin
    assert (origin.name, origin.dataset_id, origin.digest, origin.records, origin.split) == (name, one["id"], one["digest"],
                                                                                             4, "train")
    assert len(datasets.from_config(compose([f"dataset.train=mlflow-dataset:{one['id']}"]), "train")) == 4  # by id

    changed = small_file(tmp_path, 5)  # one more record: merged, the four others untouched
    three = push(servers, changed, name)
    assert "updated: 1 of the file's 5 records" in three.stdout and printed(three)["records"] == "5"
    assert printed(three)["digest"] != one["digest"]


def test_chat_records_go_through_mlflow_and_the_same_checks(servers, mlflow_client, tmp_path):
    name = f"chat-{uuid.uuid4().hex[:6]}"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Who pitches today?"}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": "c1", "inputs": {"input": chat}, "expectations": {"answerable": True}}) + "\n")
    keys = ("dataset.input_keys=[input]", "dataset.required_expectations=[answerable]")
    assert printed(push(servers, path, name, *keys))["records"] == "1"
    record, = datasets.from_config(compose([*keys, f"dataset.train=mlflow-dataset:{name}"]), "train")
    assert record.inputs == {"input": chat} and record.text("input") == "Who pitches today?"
    with pytest.raises(UserError, match=rf"^mlflow-dataset:{name} record c1: expectations.small_sample is missing"):
        datasets.from_config(compose([*keys[:1], f"dataset.train=mlflow-dataset:{name}"]), "train")
    with pytest.raises(UserError, match=rf"^mlflow-dataset:{name} record c1: inputs.question is missing; every record "
                                        "needs it, as a string or a list of chat messages"):
        datasets.from_config(compose([f"dataset.train=mlflow-dataset:{name}", "dataset.required_expectations=[]"]),
                             "train")
    bad = push(servers, path, f"{name}-x")  # the baseball dataset keys: the push names the experiment it checked with
    assert bad.returncode == 2 and "chat.jsonl:1: inputs.question is missing" in bad.stderr
    assert "checked against the dataset keys of experiment=baseball" in bad.stderr


def test_a_missing_dataset_is_named_with_the_command_that_creates_it(servers, mlflow_client):
    with pytest.raises(UserError) as e:
        datasets.from_config(compose(["dataset.heldout=mlflow-dataset:no-such-set"]), "heldout")
    assert str(e.value) == (f"mlflow-dataset:no-such-set: no MLflow evaluation dataset named 'no-such-set' on "
                            f"{servers.mlflow_uri}; create it with `python -m jobs.datasets push <file.jsonl> --name "
                            "no-such-set` (make dataset FILE=<file.jsonl> NAME=no-such-set)")


def test_an_evaluate_run_records_the_dataset_and_version_it_read(servers, mlflow_client, tmp_path):
    """A real evaluate stage on an MLflow dataset of four questions: its run's inputs name the
    dataset by id and digest, with the split as context, as MLflow's run page shows them."""
    name = f"lineage-{uuid.uuid4().hex[:6]}"
    pushed = printed(push(servers, small_file(tmp_path), name))
    pid = new_pipeline_id("lineage")
    for stage in ("register", "evaluate"):
        proc = servers.stage(stage, f"pipeline_id={pid}", f"dataset.train=mlflow-dataset:{name}")
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run, _ = stage_result(mlflow_client, pid, "evaluate")
    assert run.data.metrics["scored"] == 4
    inputs = [(d.dataset.name, d.dataset.digest, d.dataset.source_type, json.loads(d.dataset.source),
               {t.key: t.value for t in d.tags}) for d in mlflow_client.get_run(run.info.run_id).inputs.dataset_inputs]
    assert (name, pushed["digest"], "mlflow_evaluation_dataset", {"dataset_id": pushed["id"]},
            {"mlflow.data.context": "train"}) in inputs


def test_a_file_run_records_its_path_and_a_digest_of_its_text(servers, mlflow_client, tmp_path):
    from jobs.store import datasets as store_datasets

    path = small_file(tmp_path)
    records = datasets.from_config(compose([f"dataset.heldout={path}"]), "heldout")
    run = mlflow_client.create_run(mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id)
    store_datasets.log_lineage(run.info.run_id, {r.origin for r in records})
    (given,) = mlflow_client.get_run(run.info.run_id).inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest, given.dataset.source_type, json.loads(given.dataset.source)) == (
        "train.jsonl", datasets.content_digest(path.read_text()), "local", {"uri": str(path)})
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "heldout"}
    mlflow_client.set_terminated(run.info.run_id)


def test_two_datasets_of_one_name_are_named_by_their_ids(servers, mlflow_client):
    from mlflow.genai.datasets import create_dataset

    name = f"twin-{uuid.uuid4().hex[:6]}"
    ids = {create_dataset(name=name).dataset_id for _ in range(2)}  # MLflow allows it; a name then means neither
    with pytest.raises(UserError) as e:
        datasets.from_config(compose([f"dataset.train=mlflow-dataset:{name}"]), "train")
    assert str(e.value).startswith(f"mlflow-dataset:{name}: 2 MLflow evaluation datasets are named '{name}'; name one "
                                   "by id, like mlflow-dataset:d-")
    assert all(i in str(e.value) for i in ids)
