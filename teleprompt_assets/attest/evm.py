"""Ethereum over JSON-RPC, the few calls the project needs: read a contract, send a signed
transaction, deploy, and name a revert by its custom error.

A few urllib calls on purpose, not web3.py. Secrets: private keys and RPC URLs (which often embed
an API key) never appear in an error, a log line or a return value; errors name the RPC by scheme
and host only (:func:`redact_url`).
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
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from teleprompt_assets.core.encoding import loads_bounded
from teleprompt_assets.core.urls import redact_url

MAX_RPC_RESPONSE_BYTES = 64 << 20  # the submit path's calls answer a few KB; a node sending more is refused before parsing
Errors = Mapping[str, str] | Iterable[str]
"""Custom error signatures a contract may revert with (``"NotFound()"``), or a mapping from each to
what it means for the caller."""


class OnchainError(RuntimeError):
    """A submission failed; the message says why and what to do, and holds no secret.

    ``revert_data`` keeps the raw revert bytes (when the chain gave any) so callers can match custom errors.
    """

    def __init__(self, message: str, revert_data: bytes | None = None) -> None:
        super().__init__(message)
        self.revert_data = revert_data


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
                raw = resp.read(MAX_RPC_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # some nodes answer JSON-RPC errors with HTTP 4xx/5xx
            if not raw.lstrip().startswith(b"{"):
                raise OnchainError(f"{self.label}: HTTP {exc.code} for {method}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise OnchainError(f"{self.label}: cannot reach the RPC for {method} ({reason})") from None
        try:
            payload = loads_bounded(raw, max_bytes=MAX_RPC_RESPONSE_BYTES)  # a node's answer is input nobody vouches for
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


def connect(rpc: JsonRpc | str) -> JsonRpc:
    return rpc if isinstance(rpc, JsonRpc) else JsonRpc(rpc)


def account_from_key(key: str | bytes, role: str) -> LocalAccount:
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


def to_hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def call(rpc: JsonRpc | str, to: str, signature: str, args: Sequence[Any] = (), returns: Sequence[str] = (), errors: Errors = ()) -> tuple[Any, ...]:
    """``eth_call`` at the latest block, decoded with ``returns``; reverts raise a named :class:`OnchainError`."""
    rpc = connect(rpc)
    what = f"{signature.split('(')[0]} on {to}"
    try:
        out = rpc.request("eth_call", {"to": to_checksum_address(to), "data": to_hex(encode_call(signature, args))}, "latest")
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
    for signature in errors:
        if data[:4] == _selector(signature):
            return signature
    return f"unknown error 0x{data[:4].hex()}"


def _explain(exc: OnchainError, what: str, errors: Errors = ()) -> OnchainError:
    """Turn a revert into its custom error's name and, where ``errors`` maps it to one, what it means."""
    name = _revert_name(exc.revert_data, errors)
    if name is None:
        return exc
    hint = errors.get(name) if isinstance(errors, Mapping) else None
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
    role: str = "sender", errors: Errors = (), timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Estimate, sign locally, send and wait; returns the receipt, raising if it reverted.

    Gas is estimated first so a revert surfaces with its custom error before any fee is paid.
    """
    rpc = connect(rpc)
    account = account_from_key(key, role)
    chain_id = rpc.chain_id()
    what = f"deploying from {role} {account.address}" if to is None else f"call to {to}"
    tx: dict[str, Any] = {"from": account.address, "data": to_hex(data), "value": hex(value)}
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
    tx_hash = rpc.request("eth_sendRawTransaction", to_hex(bytes(signed.raw_transaction)))
    receipt = wait_for_receipt(rpc, tx_hash, timeout_s)
    if int(receipt.get("status", "0x0"), 16) != 1:
        raise OnchainError(f"{what}: transaction {tx_hash} reverted on chain after passing estimation (state changed in between?); retry")
    return receipt


def deploy(rpc: JsonRpc | str, key: str | bytes, bytecode: str | bytes, constructor: Sequence[str] = (), args: Sequence[Any] = ()) -> str:
    """Deploy creation bytecode (e.g. a Hardhat artifact's ``bytecode``); returns the contract address."""
    code = bytes.fromhex(bytecode.removeprefix("0x")) if isinstance(bytecode, str) else bytes(bytecode)
    receipt = send_transaction(rpc, key, None, code + abi_encode(list(constructor), list(args)), role="deployer")
    return to_checksum_address(receipt["contractAddress"])


def event_logs(receipt: Mapping[str, Any], address: str, topic0: str) -> list[dict[str, Any]]:
    return [
        log for log in receipt.get("logs", [])
        if log["address"].lower() == address.lower() and log["topics"] and log["topics"][0].lower() == topic0
    ]
