"""One spelling for everything that is hashed or signed: canonical JSON, 0x-hex, the zero values.

trace_hash, programHash, the attestation's salt and the bundle checks all hash bytes; two encoders
that differ in one flag (a NaN allowed, an ASCII escape) would give one value two hashes.
"""

from __future__ import annotations

import json
import re
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


MAX_JSON_DEPTH = 200
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class JsonTooDeep(ValueError):
    """A JSON text nested deeper than its reader allows (raised before any parser recurses into it)."""


def json_depth(text: str, limit: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text``, found without recursion.

    Importing ``py_ecc`` (through eth-account) raises the interpreter's recursion limit to 100,000, and
    the C JSON parser then overflows the C stack on a deeply nested text instead of raising
    ``RecursionError``: a 200 KB file of brackets would kill the process. Every reader of untrusted
    JSON therefore measures depth first. Stops counting once ``limit`` is exceeded.
    """
    if text.count("[") + text.count("{") <= (limit if limit is not None else -1):
        return text.count("[") + text.count("{")  # cannot exceed the limit: skip the scan
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None) -> Any:
    """``json.loads`` for text nobody vouches for: refuses (``ValueError``) a text over ``max_bytes``
    or nested deeper than ``max_depth`` before parsing it, so no input can exhaust memory or the stack."""
    if max_bytes is not None and len(text) > max_bytes:
        raise ValueError(f"JSON text of {len(text):,} bytes is over the limit of {max_bytes:,}")
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    if json_depth(text, max_depth) > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
