"""Read text from a local path or an ``s3://`` URI (boto3; endpoint from AWS_ENDPOINT_URL or
MLFLOW_S3_ENDPOINT_URL, so MinIO and moto work the same as AWS)."""

from __future__ import annotations

import os
from pathlib import Path

from jobs.core.errors import UserError
from jobs.core.paths import resolve


def s3_client():
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint)


def read_text(uri: str, what: str = "file") -> str:
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not bucket or not key:
            raise UserError(f"{what} {uri}: an S3 URI needs a bucket and a key, like s3://bucket/path/file.jsonl")
        try:
            from botocore.exceptions import BotoCoreError, ClientError

            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "error")
            raise UserError(f"{what} {uri}: S3 answered {code}; check the bucket, key and credentials") from None
        except BotoCoreError as e:
            raise UserError(f"{what} {uri}: cannot reach S3 ({e}); set AWS_ENDPOINT_URL or the credentials") from None
        return body.decode("utf-8")
    path = Path(resolve(uri))
    if not path.is_file():
        raise UserError(f"{what} {uri}: no such file; check the path in the config")
    return path.read_text(encoding="utf-8")
