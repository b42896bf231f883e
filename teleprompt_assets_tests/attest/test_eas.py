"""EAS off-chain attestations must be interchangeable with the EAS SDK's.

The golden values below were produced by running @ethereum-attestation-service/eas-sdk
2.10.0 with ethers 6.17.0 (node 20) on exactly these inputs; see the task report.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from teleprompt_assets.attest.eas import (
    ZERO_ADDRESS,
    EasDomain,
    decode_data,
    encode_data,
    offchain_uid,
    parse_schema,
    recover_signer,
    schema_uid,
    sign_offchain,
    verify_offchain,
)

PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3b362318"
SCHEMA = (
    "string program,uint64 modelVersion,uint64 baselineVersion,bytes32 programHash,"
    "uint256 baselineScore,uint256 candidateScore,int256 deltaPpm,int256 ciLowPpm,"
    "uint32 evalCount,bytes32 evalRoot,bytes32 dataRoot,bytes32 rewardsRoot,uint32 contributorCount"
)
SCHEMA_UID = "0x6e3b2a29c8688f97100a30840040f12f4c643826ca9b7254f2a06ec5358a0aaf"
SCHEMA_UID_RESOLVER_NOT_REVOCABLE = (
    "0x9d440188292365c7f755a80bfe710c0b33b9a93c58de4625be9711456c7ee174"
)
SIGNER = "0xc781d38DdBef088c5f2Cdef11122E944a6d15728"
ENCODED_DATA = (
    "0x"
    "00000000000000000000000000000000000000000000000000000000000001a0"
    "0000000000000000000000000000000000000000000000000000000000000007"
    "0000000000000000000000000000000000000000000000000000000000000006"
    "1352fd03aded072ff149458ad9e7d22020a22f11b7597e14fd9b6de9ee9f6c1d"
    "00000000000000000000000000000000000000000000000000000000000c6539"
    "00000000000000000000000000000000000000000000000000000000000ce76e"
    "0000000000000000000000000000000000000000000000000000000000008235"
    "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffb1e"
    "00000000000000000000000000000000000000000000000000000000000000c8"
    "7cdc011e7553580b7de63f5a8475948a38f8ee70086d9740f8cd412c3fc13257"
    "6022647e3d0eb6d3d010761bb9af6985aaae03bba80a4a1b36bba553ed360eeb"
    "551e757fb6d604fd61b9e8a772ee4ec43fe960ee7064d07228d15fb8b7cfbb80"
    "0000000000000000000000000000000000000000000000000000000000000005"
    "000000000000000000000000000000000000000000000000000000000000000e"
    "737570706f72745f747269616765000000000000000000000000000000000000"
)
ENCODED_VALUES: dict[str, Any] = {
    "program": "support_triage",
    "modelVersion": 7,
    "baselineVersion": 6,
    "programHash": "0x1352fd03aded072ff149458ad9e7d22020a22f11b7597e14fd9b6de9ee9f6c1d",
    "baselineScore": 812345,
    "candidateScore": 845678,
    "deltaPpm": 33333,
    "ciLowPpm": -1250,
    "evalCount": 200,
    "evalRoot": "0x7cdc011e7553580b7de63f5a8475948a38f8ee70086d9740f8cd412c3fc13257",
    "dataRoot": "0x6022647e3d0eb6d3d010761bb9af6985aaae03bba80a4a1b36bba553ed360eeb",
    "rewardsRoot": "0x551e757fb6d604fd61b9e8a772ee4ec43fe960ee7064d07228d15fb8b7cfbb80",
    "contributorCount": 5,
}
ATTESTATION_1: dict[str, Any] = {
    "version": 2,
    "uid": "0xfa3718630a5aeb49e9a32ca7e374ea46d87b37f0ef59c7d7d58e22a19a9a01f0",
    "domain": {
        "name": "EAS Attestation",
        "version": "0.26",
        "chainId": "11155111",
        "verifyingContract": "0xC2679fBD37d54388Ce493F1DB75320D236e1815e",
    },
    "primaryType": "Attest",
    "message": {
        "version": 2,
        "schema": "0x6e3b2a29c8688f97100a30840040f12f4c643826ca9b7254f2a06ec5358a0aaf",
        "recipient": "0x0000000000000000000000000000000000000000",
        "time": "1700000000",
        "expirationTime": "0",
        "revocable": True,
        "refUID": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "data": ENCODED_DATA,
        "salt": "0xad7b6b88034155f1e86d31a54d7723ede2183a6538ecab39ce7a7144ff280fcd",
    },
    "types": {
        "Attest": [
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
    },
    "signature": {
        "v": 27,
        "r": "0xa5505231c1448bf3f4deba4c3cd04bc12959e2fc61c08ffd5283c08cd8f0adb5",
        "s": "0x6eb2964dea6effa733803ac967e7362697c346427063f3d1a43e6e278537e280",
    },
}
ATTESTATION_2: dict[str, Any] = {
    "version": 2,
    "uid": "0x3b703476d7254aa97fb7847cb8245bcd2c4fb825481b26e133bcfb8f5bff1ec0",
    "domain": {
        "name": "EAS Attestation",
        "version": "0.26",
        "chainId": "11155111",
        "verifyingContract": "0xC2679fBD37d54388Ce493F1DB75320D236e1815e",
    },
    "primaryType": "Attest",
    "message": {
        "version": 2,
        "schema": "0x6e3b2a29c8688f97100a30840040f12f4c643826ca9b7254f2a06ec5358a0aaf",
        "recipient": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826",
        "time": "1712345678",
        "expirationTime": "1800000000",
        "revocable": False,
        "refUID": "0xcbb1ef7528be1d573d034b68014ad8e316ef052c888ea292c40fdf1db750b28e",
        "data": "0x",
        "salt": "0x7a5d8e65825a57020baadf484c031482b39cf6302a3ddf29cb80f1652561193b",
    },
    "types": {
        "Attest": [
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
    },
    "signature": {
        "v": 27,
        "r": "0x8b285acb7864e23e96b7da00412762d74c0abab1413200a5400d18d1401efaef",
        "s": "0x262c993a842d50ef442dd4c152f4d1b0b52f5846cbaa2dff23e554d1b5751152",
    },
}

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _sign_like(golden: dict[str, Any], key: str = PRIVATE_KEY) -> dict[str, Any]:
    message = golden["message"]
    return sign_offchain(
        key,
        EasDomain(),
        schema=message["schema"],
        recipient=message["recipient"],
        time=int(message["time"]),
        expiration_time=int(message["expirationTime"]),
        revocable=message["revocable"],
        ref_uid=message["refUID"],
        data=bytes.fromhex(message["data"][2:]),
        salt=message["salt"],
    )


def test_schema_uid_matches_schema_registry() -> None:
    assert schema_uid(SCHEMA) == SCHEMA_UID
    assert schema_uid(SCHEMA, ZERO_ADDRESS, True) == SCHEMA_UID
    resolver = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
    assert schema_uid(SCHEMA, resolver, revocable=False) == SCHEMA_UID_RESOLVER_NOT_REVOCABLE


def test_encode_data_matches_schema_encoder() -> None:
    assert "0x" + encode_data(SCHEMA, ENCODED_VALUES).hex() == ENCODED_DATA
    assert "0x" + encode_data(SCHEMA, list(ENCODED_VALUES.values())).hex() == ENCODED_DATA


def test_decode_data_inverts_encode_data() -> None:
    decoded = decode_data(SCHEMA, ENCODED_DATA)
    assert list(decoded) == list(ENCODED_VALUES)
    assert decoded["ciLowPpm"] == -1250
    assert decoded["programHash"] == bytes.fromhex(ENCODED_VALUES["programHash"][2:])


@pytest.mark.parametrize("golden", [ATTESTATION_1, ATTESTATION_2], ids=["minimal", "full"])
def test_sign_offchain_matches_sdk_byte_for_byte(golden: dict[str, Any]) -> None:
    signed = _sign_like(golden)
    assert signed == golden
    assert json.dumps(signed) == json.dumps(golden)


@pytest.mark.parametrize("golden", [ATTESTATION_1, ATTESTATION_2], ids=["minimal", "full"])
def test_sdk_attestations_verify(golden: dict[str, Any]) -> None:
    assert recover_signer(golden) == SIGNER
    assert verify_offchain(golden, SIGNER, EasDomain()) == []


def test_offchain_uid_hashes_the_schema_text_not_its_bytes() -> None:
    message = ATTESTATION_1["message"]
    fields = dict(
        recipient=message["recipient"],
        time=1700000000,
        expiration_time=0,
        revocable=True,
        ref_uid=message["refUID"],
        data=ENCODED_DATA,
        salt=message["salt"],
    )
    assert offchain_uid(schema=SCHEMA_UID, **fields) == ATTESTATION_1["uid"]
    upper = "0x" + SCHEMA_UID[2:].upper()
    assert offchain_uid(schema=upper, **fields) != ATTESTATION_1["uid"]


def test_sign_normalizes_hex_case_so_uid_is_canonical() -> None:
    golden = copy.deepcopy(ATTESTATION_2)
    golden["message"]["schema"] = golden["message"]["schema"].upper().replace("0X", "0x")
    golden["message"]["recipient"] = golden["message"]["recipient"].lower()
    assert _sign_like(golden) == ATTESTATION_2


def test_signature_v_may_be_zero_or_one() -> None:
    attestation = copy.deepcopy(ATTESTATION_1)
    attestation["signature"]["v"] -= 27
    assert recover_signer(attestation) == SIGNER


def _broken(change: Any) -> dict[str, Any]:
    attestation = copy.deepcopy(ATTESTATION_2)
    change(attestation)
    return attestation


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda a: a["message"].update(time="1712345679"), "uid is"),
        (lambda a: a.update(uid="0x" + "00" * 32), "uid is"),
        (lambda a: a.update(version=1), "version is 1"),
        (lambda a: a["message"].update(version=1), "message.version"),
        (lambda a: a.update(primaryType="Attestation"), "primaryType"),
        (lambda a: a["types"].update(EIP712Domain=[]), "EIP712Domain"),
        (lambda a: a["types"]["Attest"].pop(), "type set"),
        (lambda a: a["domain"].update(name="EAS"), "domain.name"),
        (lambda a: a["domain"].update(chainId="1"), "domain.chainId"),
        (lambda a: a["domain"].pop("verifyingContract"), "missing verifyingContract"),
        (lambda a: a["signature"].update(r="0x" + "11" * 32), "recovers to|cannot be checked"),
        (lambda a: a.pop("signature"), "missing keys: signature"),
    ],
)
def test_verify_reports_each_problem(change: Any, problem: str) -> None:
    problems = verify_offchain(_broken(change), SIGNER, EasDomain())
    assert problems
    assert any(re.search(problem, p) for p in problems), problems


def test_verify_flags_wrong_signer_and_high_s() -> None:
    other = Account.create().address
    assert verify_offchain(ATTESTATION_1, other) == [
        f"signature recovers to {SIGNER}, expected {other}"
    ]

    def flip_s(a: dict[str, Any]) -> None:
        s = int(a["signature"]["s"], 16)
        a["signature"]["s"] = f"0x{SECP256K1_N - s:064x}"
        a["signature"]["v"] = 55 - a["signature"]["v"]

    problems = verify_offchain(_broken(flip_s), SIGNER)
    assert problems == ["signature.s is not canonical (high-s); ethers rejects it"]


def test_private_key_never_appears_in_errors() -> None:
    bad_key = "0x" + "ff" * 32
    with pytest.raises(ValueError) as excinfo:
        _sign_like(ATTESTATION_1, key=bad_key)
    assert "ff" * 8 not in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_parse_schema_rejects_malformed_strings() -> None:
    assert parse_schema(SCHEMA)[0] == ("string", "program")
    for bad in ["uint256", "uint7 x", "uint256 x,uint256 x", "(uint256 a) t", "uint256 1x"]:
        with pytest.raises(ValueError):
            parse_schema(bad)


keys = st.binary(min_size=32, max_size=32).filter(
    lambda b: 0 < int.from_bytes(b, "big") < SECP256K1_N
)
uint64s = st.integers(min_value=0, max_value=2**64 - 1)
bytes32s = st.binary(min_size=32, max_size=32)


@settings(max_examples=40, deadline=None)
@given(
    key=keys,
    time=uint64s,
    expiration=uint64s,
    revocable=st.booleans(),
    recipient=st.binary(min_size=20, max_size=20),
    ref_uid=bytes32s,
    data=st.binary(max_size=200),
    salt=bytes32s,
)
def test_signed_attestations_always_verify(
    key: bytes,
    time: int,
    expiration: int,
    revocable: bool,
    recipient: bytes,
    ref_uid: bytes,
    data: bytes,
    salt: bytes,
) -> None:
    attestation = sign_offchain(
        key,
        EasDomain(),
        schema=SCHEMA_UID,
        recipient="0x" + recipient.hex(),
        time=time,
        expiration_time=expiration,
        revocable=revocable,
        ref_uid=ref_uid,
        data=data,
        salt=salt,
    )
    signer = Account.from_key(key).address
    roundtripped = json.loads(json.dumps(attestation))
    assert verify_offchain(roundtripped, signer, EasDomain()) == []
    assert recover_signer(roundtripped) == signer


schema_values = st.fixed_dictionaries(
    {
        "program": st.text(max_size=40),
        "modelVersion": uint64s,
        "baselineVersion": uint64s,
        "programHash": bytes32s,
        "baselineScore": st.integers(min_value=0, max_value=2**256 - 1),
        "candidateScore": st.integers(min_value=0, max_value=2**256 - 1),
        "deltaPpm": st.integers(min_value=-(2**255), max_value=2**255 - 1),
        "ciLowPpm": st.integers(min_value=-(2**255), max_value=2**255 - 1),
        "evalCount": st.integers(min_value=0, max_value=2**32 - 1),
        "evalRoot": bytes32s,
        "dataRoot": bytes32s,
        "rewardsRoot": bytes32s,
        "contributorCount": st.integers(min_value=0, max_value=2**32 - 1),
    }
)


@settings(max_examples=60, deadline=None)
@given(values=schema_values)
def test_schema_data_roundtrips(values: dict[str, Any]) -> None:
    assert decode_data(SCHEMA, encode_data(SCHEMA, values)) == values
