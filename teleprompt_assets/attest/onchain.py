"""Land a bundle's attestation on an EAS contract, relayed by any funded account.

Why ``attestByDelegation``: the attester only signs an EIP-712 request (domain name ``EAS``), and a
relayer pays the gas, so the key that signed the off-chain attestation becomes the on-chain
``attester`` without ever holding ETH. The JSON-RPC plumbing lives in :mod:`teleprompt_assets.attest.evm`;
this module adds what is EAS's: the delegated ``Attest`` type, the domain checks and the meaning of
EAS's custom errors.

Supported: EAS contracts whose delegated ``Attest`` type carries ``attester`` and ``deadline`` (EAS
contract version 1.3.0, what ``@ethereum-attestation-service/eas-contracts`` 1.7.1 deploys; the EAS
SDK calls this "Version2"). Older deployments are refused before anything is signed, by comparing
``getAttestTypeHash()`` and ``getDomainSeparator()`` with what would be signed here.

Secrets: private keys and RPC URLs (which often embed an API key) never appear in an error, a log
line or a return value; errors name the RPC by scheme and host only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.bundles import read_bundle_json
from teleprompt_assets.attest.evm import (
    JsonRpc,
    OnchainError,
    account_from_key,
    call,
    deploy,
    encode_call,
    event_logs,
    redact_url,
    send_transaction,
    to_hex,
)
from teleprompt_assets.core.addresses import AddressError, checksummed
from teleprompt_assets.core.encoding import ZERO_BYTES32

__all__ = [
    "ATTEST_TYPEHASH",
    "DELEGATED_ATTEST_TYPES",
    "EAS_NAME",
    "JsonRpc",
    "OnchainError",
    "call",
    "deploy",
    "encode_call",
    "redact_url",
    "register_schema",
    "send_transaction",
    "submit_delegated",
]

EAS_NAME = "EAS"
DELEGATED_ATTEST_TYPES: list[dict[str, str]] = [
    {"name": "attester", "type": "address"},
    {"name": "schema", "type": "bytes32"},
    {"name": "recipient", "type": "address"},
    {"name": "expirationTime", "type": "uint64"},
    {"name": "revocable", "type": "bool"},
    {"name": "refUID", "type": "bytes32"},
    {"name": "data", "type": "bytes"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint64"},
]
_ATTEST_TYPE = "Attest(" + ",".join(f"{f['type']} {f['name']}" for f in DELEGATED_ATTEST_TYPES) + ")"
# 0xfeb2925a02bae3dae48d424a0437a2b6ac939aa9230ddc55a1a76f065d988076 in EIP1271Verifier.sol (EAS 1.3.0).
ATTEST_TYPEHASH = "0x" + keccak(_ATTEST_TYPE.encode()).hex()
_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_ATTEST_BY_DELEGATION = "attestByDelegation((bytes32,(address,uint64,bool,bytes32,bytes,uint256),(uint8,bytes32,bytes32),address,uint64))"
_ATTESTED_TOPIC = "0x" + keccak(b"Attested(address,address,bytes32,bytes32)").hex()
_REGISTERED_TOPIC = "0x" + keccak(b"Registered(bytes32,address,(bytes32,address,bool,string))").hex()
_SCHEMA_RECORD = "(bytes32,address,bool,string)"
_ZERO32 = bytes.fromhex(ZERO_BYTES32[2:])  # the zero UID, as the contract returns it

# What each EAS / SchemaRegistry custom error means for someone running `teleprompt submit`.
_EAS_ERRORS = {
    "InvalidSchema()": "the schema is not registered in this EAS's SchemaRegistry",
    "InvalidSignature()": "EAS rejected the delegated signature (domain, nonce or fields differ from what was signed)",
    "DeadlineExpired()": "the delegated signature's deadline passed before the transaction was mined",
    "NotFound()": "refUID does not name an attestation on this chain",
    "InvalidExpirationTime()": "expirationTime is in the past",
    "Irrevocable()": "the schema is registered as irrevocable but the attestation is revocable",
    "InvalidAttestation()": "the schema's resolver rejected the attestation",
    "InsufficientValue()": "the resolver needs ETH sent with the attestation",
    "NotPayable()": "ETH was sent to a non-payable resolver",
    "AccessDenied()": "access denied",
    "AlreadyExists()": "this schema is already registered",
    "InvalidNonce()": "invalid nonce",
}


def _address(value: str, where: str) -> str:
    """An address given by the caller: refused unless EIP-55 checksummed, before anything is sent."""
    try:
        return checksummed(value, where)
    except AddressError as exc:
        raise OnchainError(str(exc)) from None


def _schema_record(rpc: JsonRpc, registry: str, uid: str) -> tuple[bytes, str, bool, str]:
    (record,) = call(rpc, registry, "getSchema(bytes32)", [bytes.fromhex(uid[2:])], [_SCHEMA_RECORD], errors=_EAS_ERRORS)
    return record


def register_schema(rpc_url: str, key: str | bytes, registry_address: str, schema: str, *, resolver: str = eas.ZERO_ADDRESS, revocable: bool = True) -> dict[str, Any]:
    """Register ``schema`` once per chain; already registered is success (no transaction), so it is safe to re-run.

    The uid is content-addressed (:func:`teleprompt_assets.attest.eas.schema_uid`), so every chain agrees on it.
    """
    registry = _address(registry_address, "SchemaRegistry address")
    resolver = _address(resolver, "resolver")
    rpc = JsonRpc(rpc_url)
    uid = eas.schema_uid(schema, resolver, revocable)
    if _schema_record(rpc, registry, uid)[0] != _ZERO32:
        return {"uid": uid, "txHash": None, "registered": False, "registry": registry}
    receipt = send_transaction(
        rpc, key, registry, encode_call("register(string,address,bool)", [schema, resolver, revocable]), role="registrant", errors=_EAS_ERRORS
    )
    events = event_logs(receipt, registry, _REGISTERED_TOPIC)
    if not events or events[0]["topics"][1].lower() != uid:
        raise OnchainError(f"register on {registry} emitted no Registered event for {uid}: is it a SchemaRegistry?")
    return {"uid": uid, "txHash": receipt["transactionHash"], "registered": True, "registry": registry}


def _domain(rpc: JsonRpc, eas_address: str, chain_id: int) -> dict[str, Any]:
    """The EIP-712 domain the contract itself reports (ERC-5267), else name ``EAS`` with its semver ``version()``."""
    try:
        _, name, version, domain_chain, contract, _, _ = call(
            rpc, eas_address, "eip712Domain()", [], ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"], errors=_EAS_ERRORS
        )
    except OnchainError:
        try:
            (name,) = call(rpc, eas_address, "getName()", [], ["string"], errors=_EAS_ERRORS)
            (version,) = call(rpc, eas_address, "version()", [], ["string"], errors=_EAS_ERRORS)
        except OnchainError:
            raise OnchainError(
                f"{eas_address} on chain {chain_id} has neither eip712Domain() nor getName()/version(): "
                "it is not an EAS contract, or an EAS older than 1.3.0 (unsupported)"
            ) from None
        domain_chain, contract = chain_id, eas_address
    if name != EAS_NAME:
        raise OnchainError(f"{eas_address} reports EIP-712 name {name!r}, not {EAS_NAME!r}: it is not an EAS contract")
    if domain_chain != chain_id or contract.lower() != eas_address.lower():
        raise OnchainError(f"{eas_address} reports an EIP-712 domain for chain {domain_chain} / {contract}; the RPC says chain {chain_id}")
    return {"name": name, "version": version, "chainId": chain_id, "verifyingContract": to_checksum_address(eas_address)}


def _domain_separator(domain: Mapping[str, Any]) -> bytes:
    return keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(_DOMAIN_TYPE), keccak(domain["name"].encode()), keccak(domain["version"].encode()), domain["chainId"], domain["verifyingContract"]],
    ))


def _check_delegation_format(rpc: JsonRpc, eas_address: str, domain: Mapping[str, Any]) -> None:
    """Refuse before signing when the contract would hash the request differently from us."""
    try:
        (typehash,) = call(rpc, eas_address, "getAttestTypeHash()", [], ["bytes32"], errors=_EAS_ERRORS)
    except OnchainError:
        typehash = b""
    if to_hex(typehash) != ATTEST_TYPEHASH:
        raise OnchainError(
            f"EAS {eas_address} (version {domain['version']}) uses another delegated Attest type "
            f"(typehash {to_hex(typehash) if typehash else 'unavailable'}); only EAS >= 1.3.0 ({_ATTEST_TYPE}) is supported"
        )
    (separator,) = call(rpc, eas_address, "getDomainSeparator()", [], ["bytes32"], errors=_EAS_ERRORS)
    if separator != _domain_separator(domain):
        raise OnchainError(f"EAS {eas_address} has an EIP-712 domain separator that does not match {dict(domain)}")


def _read_attestation(bundle_dir: Path, attester: str) -> dict[str, Any]:
    """The bundle's off-chain attestation, refused unless this attester signed it: the chain should carry what was signed."""
    docs, unreadable = read_bundle_json(Path(bundle_dir), ("attestation.json",))
    if unreadable:
        missing = unreadable[0].startswith("missing file")
        raise OnchainError(f"{bundle_dir} has no attestation.json: is it a teleprompt bundle?" if missing else f"{bundle_dir}/{unreadable[0]}")
    attestation = docs["attestation.json"]
    if not isinstance(attestation, dict):
        raise OnchainError(f"{bundle_dir}/attestation.json: not a JSON object")
    problems = eas.verify_offchain(attestation, expected_signer=attester)
    if problems:
        raise OnchainError(f"the bundle's attestation does not verify for attester {attester}: " + "; ".join(problems))
    return attestation["message"]


def submit_delegated(
    bundle_dir: Path | str, rpc_url: str, attester_key: str | bytes, relayer_key: str | bytes | None, eas_address: str,
    *, ref_uid: str | None = None, deadline_s: int | None = 3600, timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Attest the bundle's schema, recipient, expirationTime, revocable, refUID and data on ``eas_address``.

    The attester signs, the relayer (default: the attester) sends and pays. ``ref_uid`` overrides the
    bundle's refUID: bundles reference the previous *off-chain* UID, which EAS rejects unless an
    attestation with that UID exists on the chain. ``deadline_s`` bounds how long the signature can be
    relayed (``None``: forever). Returns the on-chain uid (from the ``Attested`` event) and tx hash.
    """
    eas_contract = _address(eas_address, "EAS contract address")
    attester = account_from_key(attester_key, "attester")
    relayer = account_from_key(relayer_key, "relayer") if relayer_key is not None else attester
    message = _read_attestation(Path(bundle_dir), attester.address)
    rpc = JsonRpc(rpc_url)
    chain_id = rpc.chain_id()
    if rpc.request("eth_getCode", eas_contract, "latest") in ("0x", None):
        raise OnchainError(f"no contract at {eas_contract} on chain {chain_id} ({rpc.label}): pass the EAS address of this chain")
    domain = _domain(rpc, eas_contract, chain_id)
    _check_delegation_format(rpc, eas_contract, domain)

    schema = message["schema"].lower()
    revocable = bool(message["revocable"])
    (registry,) = call(rpc, eas_contract, "getSchemaRegistry()", [], ["address"], errors=_EAS_ERRORS)
    record = _schema_record(rpc, registry, schema)
    if record[0] == _ZERO32:
        raise OnchainError(
            f"schema {schema} is not registered on chain {chain_id} (SchemaRegistry {to_checksum_address(registry)}). Register it once: "
            f"teleprompt_assets.attest.onchain.register_schema(rpc_url, key, '{to_checksum_address(registry)}', SCHEMA) with the schema string "
            "from the bundle's evaluation.json, or on easscan.org"
        )
    if revocable and not record[2]:
        raise OnchainError(f"schema {schema} is registered as irrevocable on chain {chain_id}, but the attestation is revocable")
    ref = (ref_uid if ref_uid is not None else message["refUID"]).lower()
    ref_bytes = bytes.fromhex(ref[2:])
    if len(ref_bytes) != 32:
        raise OnchainError("ref_uid must be a 32-byte 0x hex UID")
    if ref_bytes != _ZERO32 and not call(rpc, eas_contract, "isAttestationValid(bytes32)", [ref_bytes], ["bool"], errors=_EAS_ERRORS)[0]:
        raise OnchainError(
            f"refUID {ref} is not an attestation on chain {chain_id}: bundles reference the previous off-chain UID. "
            "Submit the referenced bundle first and pass its on-chain uid as ref_uid, or pass the zero UID to drop the link"
        )

    (nonce,) = call(rpc, eas_contract, "getNonce(address)", [attester.address], ["uint256"], errors=_EAS_ERRORS)
    if deadline_s is None:
        deadline = 0
    else:  # the chain's clock, not ours: local test chains and skewed hosts disagree
        deadline = int(rpc.request("eth_getBlockByNumber", "latest", False)["timestamp"], 16) + deadline_s
    request = {
        "attester": attester.address,
        "schema": bytes.fromhex(schema[2:]),
        "recipient": to_checksum_address(message["recipient"]),
        "expirationTime": int(message["expirationTime"]),
        "revocable": revocable,
        "refUID": ref_bytes,
        "data": bytes.fromhex(message["data"][2:]),
        "value": 0,
        "nonce": nonce,
        "deadline": deadline,
    }
    signed = attester.sign_typed_data(domain, {"Attest": DELEGATED_ATTEST_TYPES}, request)
    calldata = encode_call(_ATTEST_BY_DELEGATION, [(
        request["schema"],
        (request["recipient"], request["expirationTime"], revocable, ref_bytes, request["data"], 0),
        (signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")),
        attester.address,
        deadline,
    )])
    receipt = send_transaction(rpc, relayer.key, eas_contract, calldata, role="relayer", errors=_EAS_ERRORS, timeout_s=timeout_s)
    events = [
        log for log in event_logs(receipt, eas_contract, _ATTESTED_TOPIC)
        if log["topics"][3].lower() == schema and int(log["topics"][2], 16) == int(attester.address, 16)
    ]
    if len(events) != 1:
        raise OnchainError(f"transaction {receipt['transactionHash']} emitted {len(events)} Attested events for {schema}, expected 1")
    return {
        "uid": "0x" + events[0]["data"][2:].rjust(64, "0")[-64:],
        "txHash": receipt["transactionHash"],
        "blockNumber": int(receipt["blockNumber"], 16),
        "chainId": chain_id,
        "eas": eas_contract,
        "easVersion": domain["version"],
        "schema": schema,
        "attester": attester.address,
        "relayer": relayer.address,
        "refUID": ref,
        "deadline": deadline,
    }
