"""Sharded evaluation: rows split over processes (locally) or an Indexed Job's pods, a killed
shard rerun alone, and a merged result that holds every row once, the same as one process."""

from __future__ import annotations

import threading
import time

import pytest

from jobs.core.contract import TAG_SHARD
from jobs.eval.datasets import Record
from jobs.launch.launchers import KubernetesLauncher
from jobs.launch.manifests import shard_count
from jobs.stages import shards
from jobs.store import tracking
from tests.conftest import fast_settings, new_pipeline_id, stage_result
from tests.support.audit import kill_at_pause

UNITS = [(arm, Record(f"q{i}", {"question": f"q{i}"})) for arm in ("baseline", "candidate") for i in range(11)]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 30])
def test_shards_partition_the_rows(n):
    parts = [shards.mine(UNITS, n, i) for i in range(n)]
    flat = [(g, r.id) for part in parts for g, r in part]
    assert sorted(flat) == sorted((g, r.id) for g, r in UNITS) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_count_comes_from_the_last_override_or_the_config():
    assert shard_count("evaluate", {"evaluate": 3}, []) == 3
    assert shard_count("evaluate", {"evaluate": 3}, ["evaluate.shards=2", "evaluate.shards=5"]) == 5
    assert shard_count("evaluate", {"evaluate": 3}, ["evaluate.shard=1"]) == 1  # a shard's own Job is not split again
    assert shard_count("optimize", {"optimize": 4}, ["optimize.shards=4"]) == 1  # not a sharded stage


def linked(client, experiment_id: str, run_id: str) -> list[str]:
    """The question ids of the traces MLflow finds under a run (what the review queue reads)."""
    import mlflow

    traces = mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list", max_results=1000,
                                  include_spans=False)
    return [t.info.tags.get(tracking.TAG_QUESTION) for t in traces]


def shard_runs(experiment_id: str, pid: str) -> dict[str, list[str]]:
    """Each shard index's runs' statuses."""
    out: dict[str, list[str]] = {}
    for run in tracking.find_runs(experiment_id, pid, shards.shard_stage("evaluate"), status=None):
        out.setdefault(run.data.tags[TAG_SHARD], []).append(run.info.status)
    return out


def registered(servers) -> str:
    pid = new_pipeline_id("shard")
    proc = servers.stage("register", f"pipeline_id={pid}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pid


def assert_merged_like_one_process(mlflow_client, pid: str, foundation_pid: str) -> None:
    run, result = stage_result(mlflow_client, pid, "evaluate")
    _, single = stage_result(mlflow_client, foundation_pid, "evaluate")
    assert result["rows"] == single["rows"] == result["scored"] + result["errors"]
    assert (result["scored"], result["pass_rate"]) == (single["scored"], single["pass_rate"])  # same replies, merged
    questions = linked(mlflow_client, run.info.experiment_id, run.info.run_id)
    assert len(questions) == len(set(questions)) == result["rows"]  # every row's trace once under the stage run


@pytest.mark.integration
def test_a_killed_local_shard_is_rerun_alone(servers, mlflow_client, foundation):
    pid = registered(servers)
    code, out = kill_at_pause("evaluate", [f"pipeline_id={pid}", "evaluate.shards=2"], servers.env(),
                              point="evaluate.shard-1.scored", after="shard 1/2 finished")
    assert code == -9, out[-2000:]
    experiment_id = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    proc = servers.stage("evaluate", f"pipeline_id={pid}", "evaluate.shards=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "running shard(s) 1 as 1 local process(es)" in proc.stdout  # shard 0 finished before the kill
    assert "merged 2 shards: 28 of 28 rows, each exactly once" in proc.stdout
    runs = shard_runs(experiment_id, pid)
    assert sorted(runs["0/2"]) == ["FINISHED"] and sorted(runs["1/2"]) == ["FINISHED", "KILLED"]
    assert_merged_like_one_process(mlflow_client, pid, foundation[0])


@pytest.mark.integration
def test_indexed_job_with_a_killed_shard_merges_every_row_once(fake_cluster, servers, mlflow_client, foundation):
    """On the fake API: the Indexed Job's shard 1 is killed and, with no retries per index,
    fails; the merge Job reruns that shard alone and proves the rows."""
    cluster, _ = fake_cluster
    pid = registered(servers)
    import io

    out = io.StringIO()
    launcher = KubernetesLauncher(fast_settings(backoff_limit=0), pid, out=out, shards={"evaluate": 2})
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(launcher.run("evaluate", [f"pipeline_id={pid}"])))
    thread.start()
    deadline = time.monotonic() + 300
    while True:  # kill shard 1 once it is evaluating
        assert time.monotonic() < deadline and thread.is_alive(), out.getvalue()[-3000:]
        key = next((k for k in cluster.procs if pid in k and k.endswith("#1")), None)
        pods = [p for p in cluster.logs if pid in p and "-shards-" in p]
        if key and any(b"shard 2/2" in cluster.logs[p] for p in pods):
            cluster.procs[key].kill()
            break
        time.sleep(0.2)
    thread.join(timeout=900)
    assert code == [0], out.getvalue()[-4000:]
    log = out.getvalue()
    (indexed,) = [j for (_, n), j in cluster.jobs.items() if pid in n and "-shards-" in n]
    assert indexed["spec"]["completionMode"] == "Indexed" and indexed["status"]["failedIndexes"] == "1"
    assert "Indexed Job of 2 shards" in log and "failed shards 1" in log
    assert "running shard(s) 1 as 1 local process(es)" in log
    experiment_id = mlflow_client.get_experiment_by_name("promptgate-baseball").experiment_id
    runs = shard_runs(experiment_id, pid)
    assert runs["0/2"] == ["FINISHED"] and runs["1/2"].count("FINISHED") == 1
    assert_merged_like_one_process(mlflow_client, pid, foundation[0])
