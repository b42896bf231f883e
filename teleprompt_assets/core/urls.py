"""URLs as they may be shown: provider, RPC and webhook URLs carry keys in their path, query or
userinfo, so logs, errors and metadata name an endpoint by scheme, host and port only."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
