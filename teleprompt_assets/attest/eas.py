"""Ethereum Attestation Service off-chain attestations (version 2, salted), in Python.

The output is the JSON the EAS SDK (``@ethereum-attestation-service/eas-sdk`` v2,
``Offchain.signOffchainAttestation``) produces once serialized with its own
``bigint -> string`` replacer, so ``verifyOffchainAttestationSignature`` in JS and
easscan.org accept attestations signed here, and vice versa.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.abi import is_encodable_type
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from teleprompt_assets.attest.merkle import coerce_abi_value
from teleprompt_assets.core.addresses import checksummed
from teleprompt_assets.core.encoding import ZERO_ADDRESS, ZERO_BYTES32, to_hex

__all__ = [
    "ATTEST_TYPES",
    "OFFCHAIN_VERSION",
    "ZERO_ADDRESS",
    "ZERO_BYTES32",
    "EasDomain",
    "decode_data",
    "encode_data",
    "offchain_package",
    "offchain_uid",
    "parse_schema",
    "recover_signer",
    "schema_uid",
    "sign_offchain",
    "verify_offchain",
]

OFFCHAIN_VERSION = 2
PRIMARY_TYPE = "Attest"
DOMAIN_NAME = "EAS Attestation"
ATTEST_TYPES: list[dict[str, str]] = [
    {"name": "version", "type": "uint16"},
    {"name": "schema", "type": "bytes32"},
    {"name": "recipient", "type": "address"},
    {"name": "time", "type": "uint64"},
    {"name": "expirationTime", "type": "uint64"},
    {"name": "revocable", "type": "bool"},
    {"name": "refUID", "type": "bytes32"},
    {"name": "data", "type": "bytes"},
    {"name": "salt", "type": "bytes32"},
]
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
_ADDRESS_HEX = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX = re.compile(r"^0x([0-9a-fA-F]{2})*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_LEVEL_KEYS = ("version", "uid", "domain", "primaryType", "message", "types", "signature")


@dataclass(frozen=True)
class EasDomain:
    """The EIP-712 domain binds a signature to one EAS deployment; verifiers must agree on it."""

    name: str = DOMAIN_NAME
    version: str = "0.26"
    chain_id: int = 11155111
    verifying_contract: str = "0xC2679fBD37d54388Ce493F1DB75320D236e1815e"

    def to_json(self) -> dict[str, Any]:
        """chainId is a decimal string because the SDK holds it as a bigint."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": str(self.chain_id),
            "verifyingContract": self.verifying_contract,
        }

    @classmethod
    def from_json(cls, domain: Mapping[str, Any]) -> EasDomain:
        missing = [
            k for k in ("name", "version", "chainId", "verifyingContract") if k not in domain
        ]
        if missing:
            raise ValueError(f"domain is missing {', '.join(missing)}")
        return cls(
            name=str(domain["name"]),
            version=str(domain["version"]),
            chain_id=_to_int(domain["chainId"], "domain.chainId"),
            verifying_contract=str(domain["verifyingContract"]),
        )

    def _typed(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": _checksum(self.verifying_contract, "verifyingContract"),
        }


def _to_int(value: Any, field: str) -> int:
    """Accept the SDK's decimal strings as well as Python ints, and nothing fuzzier."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be an integer, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]+", value):
        return int(value, 16)
    raise ValueError(f"{field} must be an integer or a decimal string")


def _bytes(value: bytes | str, field: str, size: int | None = None) -> bytes:
    if isinstance(value, str):
        if not _HEX.match(value):
            raise ValueError(f"{field} must be 0x-prefixed hex")
        raw = bytes.fromhex(value[2:])
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise ValueError(f"{field} must be bytes or 0x-prefixed hex")
    if size is not None and len(raw) != size:
        raise ValueError(f"{field} must be {size} bytes, got {len(raw)}")
    return raw


def _checksum(address: str, field: str) -> str:
    """Reject a mixed-case address with a bad checksum, as ethers does, to catch typos."""
    if not isinstance(address, str) or not _ADDRESS_HEX.match(address):
        raise ValueError(f"{field} is not a 20-byte 0x address")
    checksummed = to_checksum_address(address)
    body = address[2:]
    if body != body.lower() and body != body.upper() and address != checksummed:
        raise ValueError(f"{field} has an invalid EIP-55 checksum")
    return checksummed


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be a JSON boolean")
    return value


def schema_uid(schema: str, resolver: str = ZERO_ADDRESS, revocable: bool = True) -> str:
    """Mirror SchemaRegistry so the UID is known before (or without) registering on-chain."""
    resolver_bytes = bytes.fromhex(_checksum(resolver, "resolver")[2:])
    packed = schema.encode("utf-8") + resolver_bytes + (b"\x01" if revocable else b"\x00")
    return to_hex(keccak(packed))


def offchain_uid(
    *,
    schema: str,
    recipient: str,
    time: int,
    expiration_time: int,
    revocable: bool,
    ref_uid: bytes | str,
    data: bytes | str,
    salt: bytes | str,
    version: int = OFFCHAIN_VERSION,
) -> str:
    """Reproduce ``Offchain.getOffchainUID`` (v2) quirk for quirk.

    The SDK packs the schema UID's *text* (``toUtf8Bytes(schema)``), not its 32 bytes,
    so the UID depends on the exact spelling of ``schema``; callers must pass the same
    lowercase string that goes into the message.
    """
    if version != OFFCHAIN_VERSION:
        raise ValueError(f"only offchain version {OFFCHAIN_VERSION} is supported")
    packed = b"".join(
        [
            version.to_bytes(2, "big"),
            schema.encode("utf-8"),
            bytes.fromhex(_checksum(recipient, "recipient")[2:]),
            bytes(20),  # attester slot, always the zero address in the SDK
            _uint(time, 64, "time"),
            _uint(expiration_time, 64, "expirationTime"),
            b"\x01" if revocable else b"\x00",
            _bytes(ref_uid, "refUID", 32),
            _bytes(data, "data"),
            _bytes(salt, "salt", 32),
            bytes(4),  # bump, always 0 in the SDK
        ]
    )
    return to_hex(keccak(packed))


def _uint(value: int, bits: int, field: str) -> bytes:
    number = _to_int(value, field)
    if not 0 <= number < 2**bits:
        raise ValueError(f"{field} does not fit in uint{bits}")
    return number.to_bytes(bits // 8, "big")


def sign_offchain(
    private_key: str | bytes,
    domain: EasDomain,
    *,
    schema: str,
    recipient: str = ZERO_ADDRESS,
    time: int,
    expiration_time: int = 0,
    revocable: bool = True,
    ref_uid: str | bytes = ZERO_BYTES32,
    data: bytes | str,
    salt: bytes | str | None = None,
) -> dict[str, Any]:
    """Sign so that the EAS SDK and easscan accept the result unchanged.

    A missing salt is drawn at random like the SDK does; pass one for reproducible UIDs.
    """
    message = {
        "version": OFFCHAIN_VERSION,
        "schema": to_hex(_bytes(schema, "schema", 32)),
        "recipient": _checksum(recipient, "recipient"),
        "time": str(_to_int(time, "time")),
        "expirationTime": str(_to_int(expiration_time, "expirationTime")),
        "revocable": _bool(revocable, "revocable"),
        "refUID": to_hex(_bytes(ref_uid, "refUID", 32)),
        "data": to_hex(_bytes(data, "data")),
        "salt": to_hex(_bytes(salt if salt is not None else secrets.token_bytes(32), "salt", 32)),
    }
    uid = _uid_of_message(message)
    try:
        account = Account.from_key(private_key)
    except Exception:
        raise ValueError("private_key is not a valid secp256k1 key") from None
    signed = account.sign_typed_data(
        domain._typed(), {PRIMARY_TYPE: ATTEST_TYPES}, _typed_message(message)
    )
    return {
        "version": OFFCHAIN_VERSION,
        "uid": uid,
        "domain": domain.to_json(),
        "primaryType": PRIMARY_TYPE,
        "message": message,
        "types": {PRIMARY_TYPE: [dict(field) for field in ATTEST_TYPES]},
        "signature": {"v": signed.v, "r": f"0x{signed.r:064x}", "s": f"0x{signed.s:064x}"},
    }


def offchain_package(attestation: Mapping[str, Any], signer: str) -> dict[str, Any]:
    """The SDK's ``AttestationShareablePackageObject``: what easscan and the SDK's own tools take
    when an attestation travels with the address that is meant to have signed it."""
    return {"sig": dict(attestation), "signer": checksummed(signer, "signer")}


def _uid_of_message(message: Mapping[str, Any]) -> str:
    return offchain_uid(
        schema=message["schema"],
        recipient=message["recipient"],
        time=_to_int(message["time"], "time"),
        expiration_time=_to_int(message["expirationTime"], "expirationTime"),
        revocable=_bool(message["revocable"], "revocable"),
        ref_uid=message["refUID"],
        data=message["data"],
        salt=message["salt"],
        version=_to_int(message["version"], "message.version"),
    )


def _typed_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """Give eth-account native values; it would misread JSON strings for bool or bytes."""
    missing = [f["name"] for f in ATTEST_TYPES if f["name"] not in message]
    if missing:
        raise ValueError(f"message is missing {', '.join(missing)}")
    return {
        "version": _to_int(message["version"], "message.version"),
        "schema": _bytes(message["schema"], "schema", 32),
        "recipient": _checksum(message["recipient"], "recipient"),
        "time": _to_int(message["time"], "time"),
        "expirationTime": _to_int(message["expirationTime"], "expirationTime"),
        "revocable": _bool(message["revocable"], "revocable"),
        "refUID": _bytes(message["refUID"], "refUID", 32),
        "data": _bytes(message["data"], "data"),
        "salt": _bytes(message["salt"], "salt", 32),
    }


def _signature_vrs(signature: Mapping[str, Any]) -> tuple[int, int, int]:
    if not isinstance(signature, Mapping) or not {"v", "r", "s"} <= signature.keys():
        raise ValueError("signature must have v, r and s")
    v = _to_int(signature["v"], "signature.v")
    r = int.from_bytes(_bytes(signature["r"], "signature.r", 32), "big")
    s = int.from_bytes(_bytes(signature["s"], "signature.s", 32), "big")
    if v in (0, 1):
        v += 27
    if v not in (27, 28):
        raise ValueError(f"signature.v must be 27 or 28, got {v}")
    return v, r, s


def recover_signer(attestation: Mapping[str, Any]) -> str:
    """Recover against the canonical v2 types, so a tampered ``types`` cannot alter the digest."""
    if attestation.get("types") != {PRIMARY_TYPE: ATTEST_TYPES}:
        raise ValueError("types is not the EAS v2 Attest type set")
    domain = EasDomain.from_json(attestation.get("domain") or {})
    signable = encode_typed_data(
        domain._typed(),
        {PRIMARY_TYPE: ATTEST_TYPES},
        _typed_message(attestation.get("message") or {}),
    )
    v, r, s = _signature_vrs(attestation.get("signature") or {})
    try:
        return str(Account.recover_message(signable, vrs=(v, r, s)))
    except Exception as exc:
        raise ValueError(f"signature does not recover: {exc}") from exc


def verify_offchain(
    attestation: Mapping[str, Any],
    expected_signer: str | None = None,
    expected_domain: EasDomain | None = None,
) -> list[str]:
    """Collect every problem at once, so a rejected attestation can be fixed in one go."""
    missing = [k for k in _TOP_LEVEL_KEYS if k not in attestation]
    if missing:
        return [f"missing keys: {', '.join(missing)}"]
    problems = _shape_problems(attestation)
    problems += _domain_problems(attestation["domain"], expected_domain)
    problems += _uid_problems(attestation)
    problems += _signature_problems(attestation, expected_signer)
    return problems


def _shape_problems(attestation: Mapping[str, Any]) -> list[str]:
    problems = []
    if attestation["version"] != OFFCHAIN_VERSION:
        problems.append(f"version is {attestation['version']!r}, expected {OFFCHAIN_VERSION}")
    message = attestation["message"]
    if not isinstance(message, Mapping) or message.get("version") != OFFCHAIN_VERSION:
        problems.append(f"message.version must be {OFFCHAIN_VERSION}")
    if attestation["primaryType"] != PRIMARY_TYPE:
        problems.append(f"primaryType is {attestation['primaryType']!r}, expected {PRIMARY_TYPE!r}")
    types = attestation["types"]
    if isinstance(types, Mapping) and "EIP712Domain" in types:
        problems.append("types must not include EIP712Domain (the EAS SDK rejects it)")
    elif types != {PRIMARY_TYPE: ATTEST_TYPES}:
        problems.append("types is not the EAS v2 Attest type set")
    return problems


def _domain_problems(domain: Any, expected: EasDomain | None) -> list[str]:
    try:
        parsed = EasDomain.from_json(domain if isinstance(domain, Mapping) else {})
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if parsed.name != DOMAIN_NAME:
        problems.append(f"domain.name is {parsed.name!r}, expected {DOMAIN_NAME!r}")
    if expected is not None:
        if parsed.version != expected.version:
            problems.append(f"domain.version is {parsed.version!r}, expected {expected.version!r}")
        if parsed.chain_id != expected.chain_id:
            problems.append(f"domain.chainId is {parsed.chain_id}, expected {expected.chain_id}")
        if parsed.verifying_contract.lower() != expected.verifying_contract.lower():
            problems.append(
                f"domain.verifyingContract is {parsed.verifying_contract}, "
                f"expected {expected.verifying_contract}"
            )
    return problems


def _uid_problems(attestation: Mapping[str, Any]) -> list[str]:
    message = attestation["message"]
    try:
        expected = _uid_of_message(message)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"uid cannot be recomputed: {exc}"]
    if attestation["uid"] != expected:
        return [f"uid is {attestation['uid']!r}, recomputed {expected}"]
    return []


def _signature_problems(attestation: Mapping[str, Any], expected_signer: str | None) -> list[str]:
    try:
        signer = recover_signer(attestation)
        _, _, s = _signature_vrs(attestation["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"signature cannot be checked: {exc}"]
    problems = []
    if s > _SECP256K1_HALF_N:
        problems.append("signature.s is not canonical (high-s); ethers rejects it")
    if expected_signer is not None:
        try:  # an operator's input, never the SDK's JSON: only the checksummed spelling
            wanted = checksummed(expected_signer, "expected_signer")
        except ValueError as exc:
            return problems + [str(exc)]
        if wanted == ZERO_ADDRESS:
            problems.append("expected_signer is the zero address")
        elif signer != wanted:
            problems.append(f"signature recovers to {signer}, expected {wanted}")
    return problems


def parse_schema(schema: str) -> list[tuple[str, str]]:
    """Split an EAS schema string into (abi_type, name) pairs; tuples are not supported."""
    if "(" in schema:
        raise ValueError("tuple fields are not supported in schema strings")
    fields: list[tuple[str, str]] = []
    for item in schema.split(","):
        parts = item.split()
        if len(parts) != 2:
            raise ValueError(f"schema field {item.strip()!r} must be '<type> <name>'")
        abi_type, name = parts
        if not is_encodable_type(abi_type):
            raise ValueError(f"schema field {name!r} has unknown ABI type {abi_type!r}")
        if not _IDENTIFIER.match(name):
            raise ValueError(f"schema field name {name!r} is not an identifier")
        if name in (n for _, n in fields):
            raise ValueError(f"schema field name {name!r} appears twice")
        fields.append((abi_type, name))
    return fields


def encode_data(schema: str, values: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """ABI-encode like the SDK's SchemaEncoder, so the bytes decode on-chain and on easscan."""
    fields = parse_schema(schema)
    if isinstance(values, Mapping):
        absent = [name for _, name in fields if name not in values]
        extra = sorted(set(values) - {name for _, name in fields})
        if absent or extra:
            raise ValueError(f"values do not match schema: missing {absent}, unexpected {extra}")
        ordered = [values[name] for _, name in fields]
    else:
        if len(values) != len(fields):
            raise ValueError(f"schema has {len(fields)} fields, got {len(values)} values")
        ordered = list(values)
    types = [t for t, _ in fields]
    coerced = [coerce_abi_value(t, v) for t, v in zip(types, ordered, strict=True)]
    try:
        return abi_encode(types, coerced)
    except Exception as exc:
        raise ValueError(f"values do not fit schema: {exc}") from exc


def decode_data(schema: str, data: bytes | str) -> dict[str, Any]:
    """Return eth_abi's native values (bytesN as ``bytes``, ints as ``int``) keyed by field name."""
    fields = parse_schema(schema)
    decoded = abi_decode([t for t, _ in fields], _bytes(data, "data"))
    return {name: value for (_, name), value in zip(fields, decoded, strict=True)}
