"""Where asset outputs live: a local folder on one host, an S3 bucket (or any S3-compatible server)
when runs land on different machines.

Dagster's steps write each output once and later steps (possibly on other hosts) read it back, so
the store needs only whole-object put and get: a write must appear whole or not at all. A folder
gets that from write-then-rename; S3 from its PUT, which is atomic per object. Bucket credentials and
endpoint come from the standard AWS settings (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server, an instance role…), read by boto3 itself, so no secret passes through our
configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none under ``key``."""

    def url(self, key: str) -> str:
        """Where a person finds the object (metadata, messages)."""


def publish(path: Path, data: bytes) -> None:
    """Write beside ``path``, fsync, then rename over it: a run killed mid-write leaves the previous
    object (or none), never a truncated file a later step would fail to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(staged, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


@dataclass(frozen=True)
class FolderStore:
    root: Path

    def put(self, key: str, data: bytes) -> None:
        publish(self.root / key, data)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def url(self, key: str) -> str:
        return str(self.root / key)


@dataclass(frozen=True)
class S3Store:
    bucket: str
    prefix: str
    _client: Any = field(default=None, compare=False, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            object.__setattr__(self, "_client", boto3.client("s3"))  # endpoint and credentials: the AWS_* environment
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(location: str) -> ObjectStore:
    """``s3://bucket[/prefix]`` or a folder (a path, or ``file://``); anything else is refused by name."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage {location}: no bucket; write s3://<bucket>[/<prefix>]")
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        return FolderStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ValueError(f"storage {location}: unsupported scheme {parsed.scheme!r}; use a folder or s3://<bucket>[/<prefix>]")
    return FolderStore(Path(location))
