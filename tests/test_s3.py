"""S3 over its real protocol (moto's server on loopback): datasets from s3:// and MLflow run
artifacts stored through the server's --artifacts-destination s3://..."""

from __future__ import annotations

import boto3
import pytest

from jobs.core.errors import UserError
from jobs.core.paths import ROOT
from jobs.eval import datasets

from .conftest import ARTIFACT_BUCKET, DATA_BUCKET, S3_KEYS

pytestmark = pytest.mark.integration


@pytest.fixture()
def s3(s3_endpoint, monkeypatch):
    for k, v in S3_KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3", endpoint_url=s3_endpoint)


def test_dataset_reads_from_s3(s3):
    s3.put_object(Bucket=DATA_BUCKET, Key="sets/train.jsonl", Body=(ROOT / "data/baseball/train.jsonl").read_bytes())
    records = datasets.load(f"s3://{DATA_BUCKET}/sets/train.jsonl", ["question"], ["answerable"])
    assert len(records) == 28 and records[0].id == "tr-01"


def test_missing_s3_object_is_a_one_line_user_error(s3):
    with pytest.raises(UserError, match=r"dataset s3://promptgate-data/nope.jsonl: S3 answered NoSuchKey"):
        datasets.load(f"s3://{DATA_BUCKET}/nope.jsonl")


def test_s3_objects_are_held_to_the_same_limits_and_encoding(s3):
    """The size comes from S3's ContentLength, before the body is read."""
    from types import SimpleNamespace

    s3.put_object(Bucket=DATA_BUCKET, Key="sets/big.jsonl", Body=b"x" * 3 * 2**20)
    s3.put_object(Bucket=DATA_BUCKET, Key="sets/latin1.jsonl", Body=b'{"inputs": {"question": "caf\xe9"}}\n')
    limits = SimpleNamespace(max_file_mb=1, max_record_kb=64, max_input_chars=4000)
    with pytest.raises(UserError, match=r"^dataset s3://promptgate-data/sets/big.jsonl: 3.0 MB is above limits.max_file_mb=1;"):
        datasets.load(f"s3://{DATA_BUCKET}/sets/big.jsonl", limits=limits)
    with pytest.raises(UserError, match=r"^s3://promptgate-data/sets/latin1.jsonl:1: byte 0xe9 at column 29 is not UTF-8"):
        datasets.load(f"s3://{DATA_BUCKET}/sets/latin1.jsonl", limits=limits)


def test_run_artifacts_land_in_the_s3_bucket(servers, mlflow_client, s3, tmp_path):
    import mlflow

    exp = mlflow.set_experiment("promptgate-s3-check")
    note = tmp_path / "note.txt"
    note.write_text("stored through the tracking server")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_artifact(str(note))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ARTIFACT_BUCKET).get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys
