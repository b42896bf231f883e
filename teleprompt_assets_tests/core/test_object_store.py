"""Asset outputs' object stores: a folder, and S3 through a real S3-compatible server (moto's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleprompt_assets.core.object_store import FolderStore, S3Store, open_store


@pytest.mark.parametrize(("location", "expected"), [
    ("s3://bucket/some/prefix/", S3Store("bucket", "some/prefix")),
    ("s3://bucket", S3Store("bucket", "")),
    ("file:///srv/storage", FolderStore(Path("/srv/storage"))),
    ("/srv/storage", FolderStore(Path("/srv/storage"))),
    ("relative/storage", FolderStore(Path("relative/storage"))),
])
def test_locations(location, expected):
    assert open_store(location) == expected


@pytest.mark.parametrize(("location", "message"), [
    ("gs://bucket/x", "unsupported scheme 'gs'; use a folder or s3://<bucket>[/<prefix>]"),
    ("s3://", "no bucket; write s3://<bucket>[/<prefix>]"),
])
def test_unusable_locations_are_named(location, message):
    with pytest.raises(ValueError, match=f"storage {location}: " + message.replace("[", r"\[").replace("]", r"\]")):
        open_store(location)


def test_folder_round_trip_and_missing(tmp_path):
    store = open_store(str(tmp_path))
    assert store.get("a/b.json") is None
    store.put("a/b.json", b"{}")
    store.put("a/b.json", b'{"v": 2}')
    assert store.get("a/b.json") == b'{"v": 2}' and not list(tmp_path.rglob("*.partial"))


def test_s3_round_trip_and_missing(s3):
    store = open_store("s3://teleprompt/tests/round-trip")
    assert store.get("a/b.json") is None
    store.put("a/b.json", b"{}")
    store.put("a/b.json", b'{"v": 2}')
    assert store.get("a/b.json") == b'{"v": 2}'
    assert s3.bytes_under("teleprompt", "tests/round-trip/a/") == (1, 8)
    assert store.url("a/b.json") == "s3://teleprompt/tests/round-trip/a/b.json"
