"""EAS off-chain attestation share strings: the compact, zipped form easscan.org URLs carry.

Mirrors the EAS SDK's ``zipAndEncodeToBase64`` (compacted array → JSON → zlib deflate level 9 →
base64) and ``createOffchainURL`` so an attestation can be opened in an EAS explorer without
going on-chain.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any
from urllib.parse import quote

from teleprompt_assets.core.encoding import ZERO_ADDRESS, ZERO_BYTES32, loads_bounded

EXPLORERS = {1: "https://easscan.org", 11155111: "https://sepolia.easscan.org", 10: "https://optimism.easscan.org", 8453: "https://base.easscan.org"}


def compact(attestation: dict[str, Any], signer: str) -> list[Any]:
    """The SDK's compactOffchainAttestationPackage, field for field."""
    domain, message, signature = attestation["domain"], attestation["message"], attestation["signature"]
    return [
        domain["version"], domain["chainId"], domain["verifyingContract"],
        signature["r"], signature["s"], signature["v"], signer, attestation["uid"], message["schema"],
        "0" if message["recipient"] == ZERO_ADDRESS else message["recipient"],
        int(message["time"]), int(message["expirationTime"]),
        "0" if message["refUID"] == ZERO_BYTES32 else message["refUID"],
        message["revocable"], message["data"], 0, message["version"], message["salt"],
    ]


def share_string(attestation: dict[str, Any], signer: str) -> str:
    text = json.dumps(compact(attestation, signer), separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


MAX_SHARE_BYTES = 1 << 20  # an attestation compacts to ~1 KB


def decode_share_string(encoded: str) -> list[Any]:
    """A share string's compact attestation, refused (``ValueError``) when it inflates past
    :data:`MAX_SHARE_BYTES` or nests deeper than an attestation can: share strings come from URLs."""
    inflater = zlib.decompressobj()
    text = inflater.decompress(base64.b64decode(encoded), MAX_SHARE_BYTES + 1)
    if len(text) > MAX_SHARE_BYTES or inflater.unconsumed_tail:
        raise ValueError(f"share string inflates past {MAX_SHARE_BYTES:,} bytes")
    return loads_bounded(text, max_depth=16, max_bytes=MAX_SHARE_BYTES)


def share_url(attestation: dict[str, Any], signer: str) -> str:
    """An explorer URL for the attestation (the path the SDK builds, on the chain's easscan host)."""
    host = EXPLORERS.get(int(attestation["domain"]["chainId"]), EXPLORERS[11155111])
    return f"{host}/offchain/url/#attestation={quote(share_string(attestation, signer), safe='')}"
