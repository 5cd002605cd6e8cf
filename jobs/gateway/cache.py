"""Response stores for the gateway's shared cache: a folder locally, an S3 bucket (MinIO)
or Redis on a cluster. A store only gets and puts bytes by key; the gateway decides what
is cached and under which key."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

MODES = ("off", "read", "readwrite")


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...


class DiskStore:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # write then rename: readers never see half a file
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        os.replace(tmp, path)


class S3Store:
    """Objects under s3://bucket/prefix; the endpoint comes from AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL."""

    def __init__(self, uri: str) -> None:
        import boto3

        parsed = urlparse(uri)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        self.s3 = boto3.client("s3", endpoint_url=endpoint)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key[:2]}/{key}.json" if self.prefix else f"{key[:2]}/{key}.json"

    def get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def put(self, key: str, value: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=value, ContentType="application/json")


class RedisStore:
    def __init__(self, uri: str, ttl_s: int = 30 * 24 * 3600) -> None:
        import redis

        self.r = redis.Redis.from_url(uri)
        self.ttl_s = ttl_s

    def get(self, key: str) -> bytes | None:
        return self.r.get(f"promptgate:llm:{key}")

    def put(self, key: str, value: bytes) -> None:
        self.r.set(f"promptgate:llm:{key}", value, ex=self.ttl_s)


def open_store(uri: str) -> Store:
    """A folder path, ``s3://bucket/prefix`` or ``redis://host:port/db``."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return S3Store(uri)
    if scheme in ("redis", "rediss"):
        return RedisStore(uri)
    return DiskStore(uri)
