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


def read_text(uri: str, what: str = "file", max_mb: float | None = None) -> str:
    """The file's text. Exit 2 naming the file for every way a user can get it wrong: missing,
    a folder, unreadable, too large (``max_mb``, from limits.max_file_mb), not UTF-8."""
    data = _read_s3(uri, what, max_mb) if uri.startswith("s3://") else _read_local(uri, what, max_mb)
    return decode_utf8(data, uri)


def _too_large(what: str, uri: str, size: int, max_mb: float | None) -> None:
    if max_mb is not None and size > max_mb * 2**20:
        shown = f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} KB"
        raise UserError(f"{what} {uri}: {shown} is above limits.max_file_mb={max_mb:g}; "
                        "split the file or raise limits.max_file_mb")


def _read_s3(uri: str, what: str, max_mb: float | None) -> bytes:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UserError(f"{what} {uri}: an S3 URI needs a bucket and a key, like s3://bucket/path/file.jsonl")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        obj = s3_client().get_object(Bucket=bucket, Key=key)
        _too_large(what, uri, int(obj.get("ContentLength") or 0), max_mb)
        return obj["Body"].read()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise UserError(f"{what} {uri}: S3 answered {code}; check the bucket, key and credentials") from None
    except BotoCoreError as e:
        raise UserError(f"{what} {uri}: cannot reach S3 ({e}); set AWS_ENDPOINT_URL or the credentials") from None


def _read_local(uri: str, what: str, max_mb: float | None) -> bytes:
    path = Path(resolve(uri))
    if path.is_dir():
        raise UserError(f"{what} {uri}: is a folder; give the path of the file in it")
    if not path.is_file():
        raise UserError(f"{what} {uri}: no such file; check the path in the config")
    _too_large(what, uri, path.stat().st_size, max_mb)
    try:
        return path.read_bytes()
    except PermissionError:
        raise UserError(f"{what} {uri}: permission denied; make the file readable by this user (chmod a+r)") from None
    except OSError as e:
        raise UserError(f"{what} {uri}: cannot be read ({e.strerror}); check the file") from None


def decode_utf8(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); other bytes are named by line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise UserError(f"{source}:{line}: byte 0x{data[e.start]:02x} at column {column} is not UTF-8; "
                        "save the file as UTF-8") from None
