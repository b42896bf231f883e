"""One spelling for everything that is hashed or signed: canonical JSON, 0x-hex, the zero values.

trace_hash, programHash, the attestation's salt and the bundle checks all hash bytes; two encoders
that differ in one flag (a NaN allowed, an ASCII escape) would give one value two hashes.
"""

from __future__ import annotations

import json
from typing import Any

ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BYTES32 = "0x" + "00" * 32

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII as is, no NaN: one text per JSON value, so 2 and 2.0, or 1
    and true, never pass for each other. Raises ``ValueError`` on NaN or infinity."""
    return _CANONICAL.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """:func:`canonical_json` as UTF-8: the bytes that are hashed."""
    return canonical_json(value).encode("utf-8")


def to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def from_hex(value: str) -> bytes:
    """Bytes of a hex string, with or without its 0x prefix."""
    return bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)
