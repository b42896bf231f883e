"""Land a bundle's attestation on an EAS contract, relayed by any funded account.

Why ``attestByDelegation``: the attester only signs an EIP-712 request (domain name ``EAS``), and a
relayer pays the gas, so the key that signed the off-chain attestation becomes the on-chain
``attester`` without ever holding ETH. The JSON-RPC client is a few urllib calls on purpose: the
project needs six methods, not web3.py.

Supported: EAS contracts whose delegated ``Attest`` type carries ``attester`` and ``deadline`` (EAS
contract version 1.3.0, what ``@ethereum-attestation-service/eas-contracts`` 1.7.1 deploys; the EAS
SDK calls this "Version2"). Older deployments are refused before anything is signed, by comparing
``getAttestTypeHash()`` and ``getDomainSeparator()`` with what would be signed here.

Secrets: private keys and RPC URLs (which often embed an API key) never appear in an error, a log
line or a return value; errors name the RPC by scheme and host only.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from teleprompt_assets import eas
from teleprompt_assets.addresses import AddressError, checksummed

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
_ZERO32 = bytes(32)

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


class OnchainError(RuntimeError):
    """A submission failed; the message says why and what to do, and holds no secret.

    ``revert_data`` keeps the raw revert bytes (when the chain gave any) so callers can match custom errors.
    """

    def __init__(self, message: str, revert_data: bytes | None = None) -> None:
        super().__init__(message)
        self.revert_data = revert_data


def redact_url(url: str) -> str:
    """Scheme and host only: provider URLs carry API keys in the path, query or userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class JsonRpc:
    """Minimal Ethereum JSON-RPC over HTTP(S); errors name the endpoint by :func:`redact_url` only."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise OnchainError("the RPC URL is malformed") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OnchainError("the RPC URL must be http(s)://host[:port][/path]")
        self.label = redact_url(url)
        self._headers = {"Content-Type": "application/json"}
        if parts.username is not None:  # urllib does not take user:pass@ from a URL; send it as Basic auth
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
            netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            parts = parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else ""))
        self._url = urllib.parse.urlunsplit(parts)
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        # A loopback node must never be sent through an HTTP(S)_PROXY from the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parts.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"JsonRpc({self.label!r})"

    def request(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self._url, data=body, headers=self._headers)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # some nodes answer JSON-RPC errors with HTTP 4xx/5xx
            if not raw.lstrip().startswith(b"{"):
                raise OnchainError(f"{self.label}: HTTP {exc.code} for {method}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise OnchainError(f"{self.label}: cannot reach the RPC for {method} ({reason})") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise OnchainError(f"{self.label}: {method} answered with something other than JSON: is this a JSON-RPC endpoint?") from None
        if not isinstance(payload, dict):
            raise OnchainError(f"{self.label}: {method} returned a malformed JSON-RPC response")
        if payload.get("error") is not None:
            error = payload["error"] if isinstance(payload["error"], dict) else {"message": str(payload["error"])}
            raise OnchainError(f"{self.label}: {method} failed: {error.get('message', 'unknown error')}", _revert_data(error))
        return payload.get("result")

    def chain_id(self) -> int:
        return int(self.request("eth_chainId"), 16)


def _revert_data(error: Mapping[str, Any]) -> bytes | None:
    """Geth puts revert bytes in ``error.data``; Hardhat and others nest them in ``error.data.data``."""
    data: Any = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def _client(rpc: JsonRpc | str) -> JsonRpc:
    return rpc if isinstance(rpc, JsonRpc) else JsonRpc(rpc)


def _account(key: str | bytes, role: str) -> LocalAccount:
    try:
        return Account.from_key(key)
    except Exception:  # noqa: BLE001 - the library's message may echo the key
        raise OnchainError(f"the {role} key is not a valid 32-byte hex private key") from None


def _split_types(signature: str) -> list[str]:
    """Top-level argument types of ``name(t1,(t2,t3),t4)``, tuples kept whole."""
    inner = signature[signature.index("(") + 1 : -1]
    types: list[str] = []
    depth = start = 0
    for i, char in enumerate(inner):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            types.append(inner[start:i])
            start = i + 1
    if inner:
        types.append(inner[start:])
    return types


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


def encode_call(signature: str, args: Sequence[Any] = ()) -> bytes:
    """Calldata for ``signature`` (canonical types, e.g. ``getNonce(address)``) and its arguments."""
    return _selector(signature) + abi_encode(_split_types(signature), list(args))


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def call(rpc: JsonRpc | str, to: str, signature: str, args: Sequence[Any] = (), returns: Sequence[str] = (), errors: Iterable[str] = ()) -> tuple[Any, ...]:
    """``eth_call`` at the latest block, decoded with ``returns``; reverts raise a named :class:`OnchainError`."""
    rpc = _client(rpc)
    what = f"{signature.split('(')[0]} on {to}"
    try:
        out = rpc.request("eth_call", {"to": to_checksum_address(to), "data": _hex(encode_call(signature, args))}, "latest")
    except OnchainError as exc:
        explained = _explain(exc, what, errors)
        if explained is exc:  # no revert data to name: most often the wrong contract or chain
            raise OnchainError(f"{what} failed ({exc}): is {to} the right contract on this chain?", exc.revert_data) from None
        raise explained from None
    raw = bytes.fromhex(str(out)[2:])
    if returns and not raw:
        raise OnchainError(f"{rpc.label}: {signature.split('(')[0]} returned nothing: is {to} the right contract on this chain?")
    try:
        return tuple(abi_decode(list(returns), raw))
    except Exception:  # noqa: BLE001
        raise OnchainError(f"{rpc.label}: {signature.split('(')[0]} on {to} returned data that does not decode as {list(returns)}") from None


def _revert_name(data: bytes | None, errors: Iterable[str] = ()) -> str | None:
    if not data or len(data) < 4:
        return None
    if data[:4] == _selector("Error(string)"):
        try:
            return f"Error({abi_decode(['string'], data[4:])[0]!r})"
        except Exception:  # noqa: BLE001
            return "Error(?)"
    if data[:4] == _selector("Panic(uint256)"):
        return f"Panic(0x{int.from_bytes(data[4:36], 'big'):x})"
    for signature in (*_EAS_ERRORS, *errors):
        if data[:4] == _selector(signature):
            return signature
    return f"unknown error 0x{data[:4].hex()}"


def _explain(exc: OnchainError, what: str, errors: Iterable[str] = ()) -> OnchainError:
    """Turn a revert into its custom error's name and, for EAS errors, what it means."""
    name = _revert_name(exc.revert_data, errors)
    if name is None:
        return exc
    hint = _EAS_ERRORS.get(name)
    return OnchainError(f"{what} reverted with {name}" + (f": {hint}" if hint else ""), exc.revert_data)


def _fees(rpc: JsonRpc) -> dict[str, int]:
    """EIP-1559 fees when the chain has a base fee (2x base + tip, the usual headroom), else a legacy gas price."""
    block = rpc.request("eth_getBlockByNumber", "latest", False)
    if block and block.get("baseFeePerGas") is not None:
        try:
            tip = int(rpc.request("eth_maxPriorityFeePerGas"), 16)
        except OnchainError:
            tip = 10**9
        return {"maxFeePerGas": 2 * int(block["baseFeePerGas"], 16) + tip, "maxPriorityFeePerGas": tip}
    return {"gasPrice": int(rpc.request("eth_gasPrice"), 16)}


def wait_for_receipt(rpc: JsonRpc, tx_hash: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll until mined; back off to 1 s so a slow public RPC is not hammered."""
    deadline, pause = time.monotonic() + timeout_s, 0.05
    while True:
        receipt = rpc.request("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return receipt
        if time.monotonic() > deadline:
            raise OnchainError(f"{rpc.label}: transaction {tx_hash} not mined within {timeout_s:.0f} s (it may still be pending)")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def send_transaction(
    rpc: JsonRpc | str, key: str | bytes, to: str | None, data: bytes, *, value: int = 0,
    role: str = "sender", errors: Iterable[str] = (), timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Estimate, sign locally, send and wait; returns the receipt, raising if it reverted.

    Gas is estimated first so a revert surfaces with its custom error before any fee is paid.
    """
    rpc = _client(rpc)
    account = _account(key, role)
    chain_id = rpc.chain_id()
    what = f"deploying from {role} {account.address}" if to is None else f"call to {to}"
    tx: dict[str, Any] = {"from": account.address, "data": _hex(data), "value": hex(value)}
    if to is not None:
        tx["to"] = to_checksum_address(to)
    try:
        gas = int(rpc.request("eth_estimateGas", tx), 16)
    except OnchainError as exc:
        raise _explain(exc, what, errors) from None
    gas = gas * 6 // 5 + 10_000
    fees = _fees(rpc)
    price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
    balance = int(rpc.request("eth_getBalance", account.address, "latest"), 16)
    if balance < gas * price + value:
        raise OnchainError(
            f"{role} {account.address} has {balance} wei on chain {chain_id} but needs about {gas * price + value} wei "
            f"({gas} gas); fund it, or use another {role} key"
        )
    nonce = int(rpc.request("eth_getTransactionCount", account.address, "pending"), 16)
    unsigned: dict[str, Any] = {"chainId": chain_id, "nonce": nonce, "gas": gas, "value": value, "data": data, **fees}
    if "maxFeePerGas" in fees:
        unsigned["type"] = 2
    if to is not None:
        unsigned["to"] = to_checksum_address(to)
    signed = account.sign_transaction(unsigned)
    tx_hash = rpc.request("eth_sendRawTransaction", _hex(bytes(signed.raw_transaction)))
    receipt = wait_for_receipt(rpc, tx_hash, timeout_s)
    if int(receipt.get("status", "0x0"), 16) != 1:
        raise OnchainError(f"{what}: transaction {tx_hash} reverted on chain after passing estimation (state changed in between?); retry")
    return receipt


def deploy(rpc: JsonRpc | str, key: str | bytes, bytecode: str | bytes, constructor: Sequence[str] = (), args: Sequence[Any] = ()) -> str:
    """Deploy creation bytecode (e.g. a Hardhat artifact's ``bytecode``); returns the contract address."""
    code = bytes.fromhex(bytecode.removeprefix("0x")) if isinstance(bytecode, str) else bytes(bytecode)
    receipt = send_transaction(rpc, key, None, code + abi_encode(list(constructor), list(args)), role="deployer")
    return to_checksum_address(receipt["contractAddress"])


def _logs(receipt: Mapping[str, Any], address: str, topic0: str) -> list[dict[str, Any]]:
    return [
        log for log in receipt.get("logs", [])
        if log["address"].lower() == address.lower() and log["topics"] and log["topics"][0].lower() == topic0
    ]


def _address(value: str, where: str) -> str:
    """An address given by the caller: refused unless EIP-55 checksummed, before anything is sent."""
    try:
        return checksummed(value, where)
    except AddressError as exc:
        raise OnchainError(str(exc)) from None


def _schema_record(rpc: JsonRpc, registry: str, uid: str) -> tuple[bytes, str, bool, str]:
    (record,) = call(rpc, registry, "getSchema(bytes32)", [bytes.fromhex(uid[2:])], [_SCHEMA_RECORD])
    return record


def register_schema(rpc_url: str, key: str | bytes, registry_address: str, schema: str, *, resolver: str = eas.ZERO_ADDRESS, revocable: bool = True) -> dict[str, Any]:
    """Register ``schema`` once per chain; already registered is success (no transaction), so it is safe to re-run.

    The uid is content-addressed (:func:`teleprompt_assets.eas.schema_uid`), so every chain agrees on it.
    """
    registry = _address(registry_address, "SchemaRegistry address")
    resolver = _address(resolver, "resolver")
    rpc = JsonRpc(rpc_url)
    uid = eas.schema_uid(schema, resolver, revocable)
    if _schema_record(rpc, registry, uid)[0] != _ZERO32:
        return {"uid": uid, "txHash": None, "registered": False, "registry": registry}
    receipt = send_transaction(
        rpc, key, registry, encode_call("register(string,address,bool)", [schema, resolver, revocable]), role="registrant"
    )
    events = _logs(receipt, registry, _REGISTERED_TOPIC)
    if not events or events[0]["topics"][1].lower() != uid:
        raise OnchainError(f"register on {registry} emitted no Registered event for {uid}: is it a SchemaRegistry?")
    return {"uid": uid, "txHash": receipt["transactionHash"], "registered": True, "registry": registry}


def _domain(rpc: JsonRpc, eas_address: str, chain_id: int) -> dict[str, Any]:
    """The EIP-712 domain the contract itself reports (ERC-5267), else name ``EAS`` with its semver ``version()``."""
    try:
        _, name, version, domain_chain, contract, _, _ = call(
            rpc, eas_address, "eip712Domain()", [], ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"]
        )
    except OnchainError:
        try:
            (name,) = call(rpc, eas_address, "getName()", [], ["string"])
            (version,) = call(rpc, eas_address, "version()", [], ["string"])
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
        (typehash,) = call(rpc, eas_address, "getAttestTypeHash()", [], ["bytes32"])
    except OnchainError:
        typehash = b""
    if _hex(typehash) != ATTEST_TYPEHASH:
        raise OnchainError(
            f"EAS {eas_address} (version {domain['version']}) uses another delegated Attest type "
            f"(typehash {_hex(typehash) if typehash else 'unavailable'}); only EAS >= 1.3.0 ({_ATTEST_TYPE}) is supported"
        )
    (separator,) = call(rpc, eas_address, "getDomainSeparator()", [], ["bytes32"])
    if separator != _domain_separator(domain):
        raise OnchainError(f"EAS {eas_address} has an EIP-712 domain separator that does not match {dict(domain)}")


def _read_attestation(bundle_dir: Path, attester: str) -> dict[str, Any]:
    """The bundle's off-chain attestation, refused unless this attester signed it: the chain should carry what was signed."""
    try:
        attestation = json.loads((Path(bundle_dir) / "attestation.json").read_text())
    except FileNotFoundError:
        raise OnchainError(f"{bundle_dir} has no attestation.json: is it a teleprompt bundle?") from None
    except json.JSONDecodeError:
        raise OnchainError(f"{bundle_dir}/attestation.json is not JSON") from None
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
    attester = _account(attester_key, "attester")
    relayer = _account(relayer_key, "relayer") if relayer_key is not None else attester
    message = _read_attestation(Path(bundle_dir), attester.address)
    rpc = JsonRpc(rpc_url)
    chain_id = rpc.chain_id()
    if rpc.request("eth_getCode", eas_contract, "latest") in ("0x", None):
        raise OnchainError(f"no contract at {eas_contract} on chain {chain_id} ({rpc.label}): pass the EAS address of this chain")
    domain = _domain(rpc, eas_contract, chain_id)
    _check_delegation_format(rpc, eas_contract, domain)

    schema = message["schema"].lower()
    revocable = bool(message["revocable"])
    (registry,) = call(rpc, eas_contract, "getSchemaRegistry()", [], ["address"])
    record = _schema_record(rpc, registry, schema)
    if record[0] == _ZERO32:
        raise OnchainError(
            f"schema {schema} is not registered on chain {chain_id} (SchemaRegistry {to_checksum_address(registry)}). Register it once: "
            f"teleprompt_assets.onchain.register_schema(rpc_url, key, '{to_checksum_address(registry)}', SCHEMA) with the schema string "
            "from the bundle's evaluation.json, or on easscan.org"
        )
    if revocable and not record[2]:
        raise OnchainError(f"schema {schema} is registered as irrevocable on chain {chain_id}, but the attestation is revocable")
    ref = (ref_uid if ref_uid is not None else message["refUID"]).lower()
    ref_bytes = bytes.fromhex(ref[2:])
    if len(ref_bytes) != 32:
        raise OnchainError("ref_uid must be a 32-byte 0x hex UID")
    if ref_bytes != _ZERO32 and not call(rpc, eas_contract, "isAttestationValid(bytes32)", [ref_bytes], ["bool"])[0]:
        raise OnchainError(
            f"refUID {ref} is not an attestation on chain {chain_id}: bundles reference the previous off-chain UID. "
            "Submit the referenced bundle first and pass its on-chain uid as ref_uid, or pass the zero UID to drop the link"
        )

    (nonce,) = call(rpc, eas_contract, "getNonce(address)", [attester.address], ["uint256"])
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
    receipt = send_transaction(rpc, relayer.key, eas_contract, calldata, role="relayer", timeout_s=timeout_s)
    events = [
        log for log in _logs(receipt, eas_contract, _ATTESTED_TOPIC)
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
