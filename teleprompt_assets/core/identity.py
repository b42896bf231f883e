"""Who vouches for a trace: the serving app signs its contract fields, labellers sign their labels.

A tag in the tracking store says only what its last writer wrote: re-tagging moved a contributor's
whole reward, a re-logged copy dated 1 ms earlier became the "first submitter", and any writer's
label won. So the app that served the call signs what the pipeline pays on, and the
pipeline believes the signature, not the tags (threat model: docs/security.md#identity):

- :class:`TraceClaim` (trace id, program, contributor, start time in ms, keccak256 of the root
  span's canonical inputs and outputs), signed as EIP-712 typed data by the app key and stored,
  with its fields, in the trace tag ``teleprompt.signature``. Curation recovers the signer and
  takes program, contributor and start time from the claim; the tags are only for search.
- :class:`LabelClaim` (trace id, feedback or expectation, name, value, time), signed by a labeller
  key and stored in the assessment's metadata. Only labels of registered labellers count, the
  latest signed one per name winning.

Keys come from the environment or an encrypted keystore (:func:`app_signer`,
:func:`labeller_signer`), never from the repository; without either, the app signs with the
public DEMO key below, which the sample ``teleprompt.yaml`` accepts and a production one must not.
Key material never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coincurve import PublicKey
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import ffi, lib  # coincurve's cffi binding of libsecp256k1 (bitcoin-core's secp256k1)
from eth_utils import to_checksum_address

from teleprompt_assets.core.encoding import ZERO_BYTES32, canonical_bytes, canonical_json, loads_bounded, to_hex

SIGNATURE_TAG = "teleprompt.signature"
"""Trace tag holding the app's signed :class:`TraceClaim` (JSON, see :func:`claim_tag`)."""
LABEL_SIGNATURE = "teleprompt.label_signature"
LABEL_TIME = "teleprompt.label_time_ms"
"""Assessment metadata keys: the labeller's signature and the time it signed (ms since the epoch)."""

APP_KEY_ENV = "TELEPROMPT_APP_KEY"
APP_KEYSTORE_ENV = "TELEPROMPT_APP_KEYSTORE"
APP_PASSWORD_ENV = "TELEPROMPT_APP_KEYSTORE_PASSWORD"
LABELLER_KEY_ENV = "TELEPROMPT_LABELLER_KEY"
LABELLER_KEYSTORE_ENV = "TELEPROMPT_LABELLER_KEYSTORE"
LABELLER_PASSWORD_ENV = "TELEPROMPT_LABELLER_KEYSTORE_PASSWORD"

try:  # safe-pysha3's C keccak: ~0.5 µs for 32 bytes where eth-utils' (pycryptodome, argument checks) takes ~7 µs
    from sha3 import keccak_256 as _keccak_256

    def keccak256(data: bytes) -> bytes:
        """keccak256 of ``data`` (Ethereum's, not SHA3-256): the same bytes as ``eth_utils.keccak``."""
        return _keccak_256(data).digest()
except ImportError:  # pragma: no cover - a declared dependency; eth-hash's backend gives the same bytes, slower
    from eth_hash.auto import keccak as keccak256


DEMO_APP_KEY = "0x" + keccak256(b"teleprompt-demo-app-key: public, for demos and tests only").hex()
"""The DEMO app key: derived from a public phrase, so anyone can sign as it. The sample
``teleprompt.yaml`` registers its address so that ``make demo`` and the tests sign and verify
traces; a production config must register its own app's address instead."""
DEMO_APP_ADDRESS = "0x69577F3bd8DDb565390451cB3D8FD4701603aD5b"
"""``DEMO_APP_KEY``'s address (fixed here so reading a config needs no key derivation; a test checks it)."""

DOMAIN: dict[str, str] = {"name": "teleprompt trace contract", "version": "1"}
CLAIM_FIELDS: list[dict[str, str]] = [
    {"name": "traceId", "type": "string"},
    {"name": "program", "type": "string"},
    {"name": "contributor", "type": "string"},
    {"name": "startMs", "type": "uint64"},
    {"name": "inputsHash", "type": "bytes32"},
    {"name": "outputsHash", "type": "bytes32"},
]
LABEL_FIELDS: list[dict[str, str]] = [
    {"name": "traceId", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "string"},
    {"name": "timeMs", "type": "uint64"},
]
_DOMAIN_FIELDS = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}]
_HASH = re.compile(r"0x[0-9a-f]{64}")
_SIGNATURE = re.compile(r"0x[0-9a-f]{130}")
MAX_TAG_CHARS = 4096  # MLflow keeps trace tag values up to 4,096 characters; a claim is ~450
UINT64 = 2**64

log = logging.getLogger(__name__)


class BadSignature(ValueError):
    """A claim or label signature that cannot be read or recovered; the message says which part."""


class AppKeyError(ValueError):
    """A signing key could not be loaded; the message never contains key material."""


@dataclass(frozen=True)
class TraceClaim:
    """What the app vouches for about one call: the fields rewards and "first submitter" rest on."""

    trace_id: str
    program: str
    contributor: str
    start_ms: int
    inputs_hash: str
    outputs_hash: str


@dataclass(frozen=True)
class LabelClaim:
    """One label as its labeller signed it; ``value`` is :func:`label_value` of the logged value."""

    trace_id: str
    kind: Literal["feedback", "expectation"]
    name: str
    value: str
    time_ms: int


@dataclass(frozen=True)
class Signer:
    """A private key and its address; ``source`` says where it came from (never the key)."""

    address: str
    source: str
    _key: bytes = field(repr=False)

    @property
    def is_demo(self) -> bool:
        return self.address == DEMO_APP_ADDRESS

    def sign(self, digest: bytes) -> str:
        """A 65-byte signature (r, s, v with v 27 or 28) of an EIP-712 digest (:func:`claim_digest`,
        :func:`label_digest`): what eth-account's ``sign_message`` of the same typed data gives."""
        from eth_account import Account

        return to_hex(bytes(Account.unsafe_sign_hash(digest, self._key).signature))


# --- what is hashed and signed ----------------------------------------------------------------------

def payload_hash(value: Any) -> str:
    """keccak256 of the canonical JSON of a root span's inputs or outputs, as the pipeline reads them
    back (``traces.read_day`` re-serializes what MLflow stored); the zero hash for a value with no
    canonical form (NaN), which curation then quarantines as malformed before comparing hashes."""
    try:
        return to_hex(keccak256(canonical_bytes(value)))
    except ValueError:
        return ZERO_BYTES32


def _normalized(value: Any) -> Any:
    """Numbers as the store may hand them back: an integral float is its integer (an MLflow server
    sends 1 back as 1.0), up to 2**53 where floats stop being exact; booleans stay booleans."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    return value


_LABEL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def label_value(value: Any) -> str:
    """The text a label's value is signed as: canonical JSON after :func:`_normalized`, so 1 and 1.0
    sign alike while 1 and true, or "1" and 1, never do. NaN and infinity are written as JSON's
    extensions (``NaN``, never the string "NaN") so a labeller can still sign them; curation
    quarantines such a score as ``invalid_score`` whoever signed it."""
    return _LABEL_JSON.encode(_normalized(value))


def claim_typed_data(claim: TraceClaim) -> dict[str, Any]:
    """The EIP-712 message an app signs for a trace (domain ``teleprompt trace contract`` v1, no chain)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, "TraceClaim": CLAIM_FIELDS},
        "primaryType": "TraceClaim",
        "domain": DOMAIN,
        "message": {"traceId": claim.trace_id, "program": claim.program, "contributor": claim.contributor, "startMs": claim.start_ms,
                    "inputsHash": claim.inputs_hash, "outputsHash": claim.outputs_hash},
    }


def label_typed_data(label: LabelClaim) -> dict[str, Any]:
    """The EIP-712 message a labeller signs for one label."""
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, "TraceLabel": LABEL_FIELDS},
        "primaryType": "TraceLabel",
        "domain": DOMAIN,
        "message": {"traceId": label.trace_id, "kind": label.kind, "name": label.name, "value": label.value, "timeMs": label.time_ms},
    }


def _type_hash(name: str, fields: list[dict[str, str]]) -> bytes:
    members = ",".join(f"{f['type']} {f['name']}" for f in fields)
    return keccak256(f"{name}({members})".encode())


_DOMAIN_SEPARATOR = keccak256(_type_hash("EIP712Domain", _DOMAIN_FIELDS) + keccak256(DOMAIN["name"].encode()) + keccak256(DOMAIN["version"].encode()))
_CLAIM_TYPE_HASH = _type_hash("TraceClaim", CLAIM_FIELDS)
_LABEL_TYPE_HASH = _type_hash("TraceLabel", LABEL_FIELDS)


def _text(value: str) -> bytes:
    try:
        return keccak256(value.encode("utf-8"))
    except (UnicodeEncodeError, AttributeError):
        raise BadSignature("a signed field is not UTF-8 text") from None


def _uint64(value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT64:
        raise BadSignature("a signed time is not a uint64")
    return value.to_bytes(32, "big")


def _eip712(struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + _DOMAIN_SEPARATOR + struct_hash)


def claim_digest(claim: TraceClaim) -> bytes:
    """The 32 bytes a claim's signature covers: the EIP-712 hash of :func:`claim_typed_data`
    (keccak256 of 0x1901, the domain separator and the struct hash), computed here in a few µs where
    eth-account's generic encoder takes ~160 µs; the tests hold the two equal."""
    return _eip712(keccak256(_CLAIM_TYPE_HASH + _text(claim.trace_id) + _text(claim.program) + _text(claim.contributor) + _uint64(claim.start_ms)
                          + bytes.fromhex(claim.inputs_hash[2:]) + bytes.fromhex(claim.outputs_hash[2:])))


def label_digest(label: LabelClaim) -> bytes:
    """The 32 bytes a label's signature covers: the EIP-712 hash of :func:`label_typed_data`."""
    return _eip712(keccak256(_LABEL_TYPE_HASH + _text(label.trace_id) + _text(label.kind) + _text(label.name) + _text(label.value) + _uint64(label.time_ms)))


# --- the claim tag ----------------------------------------------------------------------------------

def claim_tag(claim: TraceClaim, signer: Signer) -> str:
    """The ``teleprompt.signature`` tag: the claim's fields and the signature, as canonical JSON."""
    return canonical_json({"v": 1, "trace_id": claim.trace_id, "program": claim.program, "contributor": claim.contributor,
                           "start_ms": claim.start_ms, "inputs": claim.inputs_hash, "outputs": claim.outputs_hash,
                           "signature": signer.sign(claim_digest(claim))})


_CLAIM_KEYS = frozenset({"v", "trace_id", "program", "contributor", "start_ms", "inputs", "outputs", "signature"})


def parse_claim(text: str) -> tuple[TraceClaim, str]:
    """A ``teleprompt.signature`` tag read strictly: exactly the fields :func:`claim_tag` writes, each
    of its type. Raises :class:`BadSignature` naming what is wrong (the tag is whatever a writer put)."""
    if not isinstance(text, str) or len(text) > MAX_TAG_CHARS:
        raise BadSignature("the signature tag is not a string of at most 4,096 characters")
    try:
        data = loads_bounded(text, max_depth=1)
    except ValueError:
        raise BadSignature("the signature tag is not JSON") from None
    if not isinstance(data, dict) or set(data) != _CLAIM_KEYS or data["v"] != 1:
        raise BadSignature("the signature tag does not hold a version 1 claim")
    strings = ("trace_id", "program", "contributor")
    if not all(isinstance(data[k], str) for k in strings):
        raise BadSignature("the claim's trace id, program and contributor must be strings")
    start = data["start_ms"]
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < UINT64:
        raise BadSignature("the claim's start_ms is not a millisecond timestamp")
    if not all(isinstance(data[k], str) and _HASH.fullmatch(data[k]) for k in ("inputs", "outputs")):
        raise BadSignature("the claim's payload hashes are not 32-byte lowercase hex")
    if not isinstance(data["signature"], str) or not _SIGNATURE.fullmatch(data["signature"]):
        raise BadSignature("the claim's signature is not 65-byte lowercase hex")
    claim = TraceClaim(data["trace_id"], data["program"], data["contributor"], start, data["inputs"], data["outputs"])
    return claim, data["signature"]


_CTX = GLOBAL_CONTEXT.ctx
_PUBLIC_KEYS: dict[str, Any] = {}
"""libsecp256k1 public keys (``secp256k1_pubkey *``) of expected addresses already recovered once:
verifying under a known key (~25 µs) is cheaper than recovering (~32 µs) and checksumming an address."""


def _verifies(key: Any, digest: bytes, raw: bytes) -> bool:
    """Whether (r, s) of ``raw`` is a valid ECDSA signature of ``digest`` under ``key``, v aside.

    libsecp256k1 verifies low-s signatures only; (r, s) and (r, n - s) are one signature for ECDSA
    (both verify or neither does), so s is normalized first and a high-s signature passes, as it did
    through OpenSSL and does through recovery. r or s of zero, or not below the group order, fails."""
    signature = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_compact(_CTX, signature, raw[:64]):
        return False
    lib.secp256k1_ecdsa_signature_normalize(_CTX, signature, signature)
    return lib.secp256k1_ecdsa_verify(_CTX, signature, digest, key) == 1


@functools.lru_cache(maxsize=4096)
def _address(public_key: bytes) -> str:
    """The checksummed address of a 64-byte (x, y) public key: the last 20 bytes of its keccak256."""
    return to_checksum_address(keccak256(public_key)[12:])


@functools.lru_cache(maxsize=65_536)
def _recover(digest: bytes, signature: str) -> tuple[str, Any]:
    """The address whose key signed ``digest``, and that key, by libsecp256k1's public-key recovery
    (~32 µs; v - 27 picks which of the two keys r and s could belong to). A day curated twice in one
    process recovers once."""
    raw = bytes.fromhex(signature[2:])
    try:
        public = PublicKey.from_signature_and_message(raw[:64] + bytes([raw[64] - 27]), digest, hasher=None)
    except ValueError:  # r or s zero or not below the group order, or no curve point has x = r
        raise BadSignature("the signature does not recover to any address (invalid r or s)") from None
    return _address(public.format(compressed=False)[1:]), public.public_key


def signer_of(digest: bytes, signature: str, expected: Collection[str] = ()) -> str:
    """The address whose key signed ``digest`` (a 65-byte signature, 0x hex, v 27 or 28).

    Tries the ``expected`` addresses whose public keys are known first (libsecp256k1 verification);
    else recovers, and keeps the key when the address is expected. A signature that verifies under a
    registered key is that key's, whatever its v says: v only picks between the two keys r and s
    could belong to, and the message is the same.
    """
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        raise BadSignature("the signature is not 65-byte lowercase hex")
    raw = bytes.fromhex(signature[2:])
    if raw[64] not in (27, 28):
        raise BadSignature("the signature's v is not 27 or 28")
    if not isinstance(digest, bytes) or len(digest) != 32:  # libsecp256k1 reads 32 bytes, whatever it is handed
        raise ValueError("a digest is 32 bytes")
    for address in expected:
        key = _PUBLIC_KEYS.get(address)
        if key is not None and _verifies(key, digest, raw):
            return address
    address, key = _recover(digest, signature)
    if address in expected:
        _PUBLIC_KEYS.setdefault(address, key)
    return address


def claim_signer(claim: TraceClaim, signature: str, expected: Collection[str] = ()) -> str:
    """The address whose key signed ``claim``; any change to a field after signing recovers another."""
    return signer_of(claim_digest(claim), signature, expected)


def sign_label(label: LabelClaim, signer: Signer) -> dict[str, str]:
    """The assessment metadata that carries ``label``'s signature and signed time."""
    return {LABEL_SIGNATURE: signer.sign(label_digest(label)), LABEL_TIME: str(label.time_ms)}


def label_signer(label: LabelClaim, signature: Any, expected: Collection[str] = ()) -> str:
    """The address whose key signed ``label``; raises :class:`BadSignature` for a malformed signature."""
    return signer_of(label_digest(label), signature, expected)


def signed_time(text: Any) -> int | None:
    """A label's signed time from its metadata text, or None when it is not a plain decimal uint64."""
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 20 and int(text) < UINT64:
        return int(text)
    return None


# --- keys -------------------------------------------------------------------------------------------

def _from_hex(value: str, source: str) -> Signer:
    from eth_account import Account

    try:
        account = Account.from_key(value.strip())
    except Exception:  # noqa: BLE001 - the library's message may echo the input
        raise AppKeyError(f"{source}: not a valid 32-byte hex private key") from None
    return Signer(account.address, source, bytes(account.key))


@functools.lru_cache(maxsize=8)
def _from_keystore(path: str, password: str, source: str, _mtime: float) -> Signer:
    """Decrypted once per process and file version (a keystore's KDF takes a large part of a second)."""
    from eth_account import Account

    try:
        key = Account.decrypt(json.loads(Path(path).read_text()), password)
    except FileNotFoundError:
        raise AppKeyError(f"{source}: keystore {path} not found") from None
    except Exception:  # noqa: BLE001
        raise AppKeyError(f"{source}: cannot decrypt keystore {path} (wrong password?)") from None
    account = Account.from_key(key)
    return Signer(account.address, source, bytes(account.key))


def _from_env(key_env: str, keystore_env: str, password_env: str) -> Signer | None:
    if os.environ.get(key_env):
        return _hex_signer(os.environ[key_env], key_env)
    if path := os.environ.get(keystore_env):
        try:
            mtime = Path(path).stat().st_mtime
        except OSError:
            raise AppKeyError(f"{keystore_env}: keystore {path} not found") from None
        return _from_keystore(path, os.environ.get(password_env, ""), keystore_env, mtime)
    return None


@functools.lru_cache(maxsize=8)
def _hex_signer(value: str, source: str) -> Signer:
    return _from_hex(value, source)


@functools.lru_cache(maxsize=1)
def demo_signer() -> Signer:
    """The public DEMO app key (see :data:`DEMO_APP_KEY`)."""
    return _from_hex(DEMO_APP_KEY, "demo")


@functools.lru_cache(maxsize=1)
def _warn_demo() -> None:
    """Once per process: an app signing with a key anyone can use should hear about it."""
    log.warning("Signing traces with the public DEMO app key %s: anyone can sign as it. Set %s or %s in production "
                "and register its address under trust.signers in teleprompt.yaml.", DEMO_APP_ADDRESS, APP_KEY_ENV, APP_KEYSTORE_ENV)


def app_signer(*, warn: bool = True) -> Signer:
    """The serving app's key: ``TELEPROMPT_APP_KEY`` (hex), else the encrypted keystore named by
    ``TELEPROMPT_APP_KEYSTORE`` with ``TELEPROMPT_APP_KEYSTORE_PASSWORD``, else the public DEMO key,
    with a warning unless ``warn`` is off (demo seeding, which says what it signed with)."""
    found = _from_env(APP_KEY_ENV, APP_KEYSTORE_ENV, APP_PASSWORD_ENV)
    if found is None and warn:
        _warn_demo()
    return found or demo_signer()


def labeller_signer(*, warn: bool = True) -> Signer:
    """The key labels are signed with: ``TELEPROMPT_LABELLER_KEY`` or its keystore
    (``TELEPROMPT_LABELLER_KEYSTORE`` / ``_PASSWORD``), else the app's key (:func:`app_signer`)."""
    return _from_env(LABELLER_KEY_ENV, LABELLER_KEYSTORE_ENV, LABELLER_PASSWORD_ENV) or app_signer(warn=warn)
