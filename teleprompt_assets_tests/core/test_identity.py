"""What the app and its labellers sign (issue 25, item 1): the encoding is one-to-one, a changed field
never recovers the signer, the tag parser takes only what the signer writes, keys never show."""

from __future__ import annotations

import json
import math

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleprompt_assets.core import identity
from teleprompt_assets.core.identity import LabelClaim, TraceClaim

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3b362318"
SIGNER = identity.Signer(Account.from_key(KEY).address, "test", bytes.fromhex(KEY[2:]))
ADDRESS = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"

hashes = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
claims = st.builds(TraceClaim, trace_id=st.text(max_size=40), program=st.text(max_size=20), contributor=st.text(max_size=44),
                   start_ms=st.integers(0, 2**64 - 1), inputs_hash=hashes, outputs_hash=hashes)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


def test_the_demo_address_is_the_demo_keys():
    assert Account.from_key(identity.DEMO_APP_KEY).address == identity.DEMO_APP_ADDRESS


@settings(max_examples=200, deadline=None)
@given(claims, claims)
def test_distinct_claims_have_distinct_digests(a, b):
    """EIP-712 hashes each string and fixes each field's place: no two claims share what is signed."""
    assert (identity.claim_digest(a) == identity.claim_digest(b)) == (a == b)


labels = st.builds(LabelClaim, trace_id=st.text(max_size=40), kind=st.sampled_from(["feedback", "expectation"]), name=st.text(max_size=20),
                   value=st.builds(identity.label_value, json_values), time_ms=st.integers(0, 2**64 - 1))


def _eth_account_digest(typed: dict) -> bytes:
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    message = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + message.version + message.header + message.body)


@settings(max_examples=300, deadline=None)
@given(claims, labels)
def test_the_digests_are_eth_accounts_eip712_hashes_of_the_typed_data(claim, label):
    """What is signed is standard EIP-712: a wallet or eth-account shown the typed data signs the same bytes."""
    assert identity.claim_digest(claim) == _eth_account_digest(identity.claim_typed_data(claim))
    assert identity.label_digest(label) == _eth_account_digest(identity.label_typed_data(label))


def test_a_signature_is_eth_accounts_and_verifies_fast_or_by_recovery_alike():
    from eth_account.messages import encode_typed_data

    claim = TraceClaim("tr-1", "ticket_router", ADDRESS, 5, "0x" + "11" * 32, "0x" + "22" * 32)
    _, signature = identity.parse_claim(identity.claim_tag(claim, SIGNER))
    assert signature == "0x" + Account.sign_message(encode_typed_data(full_message=identity.claim_typed_data(claim)), KEY).signature.hex()
    assert Account.recover_message(encode_typed_data(full_message=identity.claim_typed_data(claim)), signature=bytes.fromhex(signature[2:])) == SIGNER.address
    assert identity.claim_signer(claim, signature) == SIGNER.address  # recovered; the key is now known
    assert identity.claim_signer(claim, signature, [SIGNER.address]) == SIGNER.address  # verified with it
    other = TraceClaim(**{**claim.__dict__, "start_ms": 4})
    assert identity.claim_signer(other, signature, [SIGNER.address]) != SIGNER.address
    with pytest.raises(identity.BadSignature, match="v is not"):
        identity.claim_signer(claim, signature[:-2] + "00", [SIGNER.address])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims, st.sampled_from(["trace_id", "program", "contributor", "start_ms", "inputs_hash", "outputs_hash"]), st.data())
def test_the_tag_round_trips_and_any_changed_field_recovers_another_address(claim, name, data):
    parsed, signature = identity.parse_claim(identity.claim_tag(claim, SIGNER))
    assert parsed == claim and identity.claim_signer(parsed, signature) == SIGNER.address
    value = getattr(claim, name)
    other = data.draw((hashes if name.endswith("hash") else st.integers(0, 2**64 - 1) if name == "start_ms" else st.text(max_size=40)).filter(lambda v: v != value))
    changed = TraceClaim(**{**claim.__dict__, name: other})
    try:
        assert identity.claim_signer(changed, signature, [SIGNER.address]) != SIGNER.address
    except identity.BadSignature:
        pass  # no address at all is as good


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=600), st.builds(json.dumps, json_values), st.builds(lambda d: json.dumps(d), st.dictionaries(
    st.sampled_from(["v", "trace_id", "program", "contributor", "start_ms", "inputs", "outputs", "signature", "extra"]), json_values, max_size=9))))
def test_the_tag_parser_refuses_anything_else_in_one_exception(text):
    try:
        claim, signature = identity.parse_claim(text)
    except identity.BadSignature:
        return
    assert isinstance(claim.start_ms, int) and signature.startswith("0x") and len(signature) == 132


def test_a_tag_too_long_or_too_deep_is_refused_without_parsing():
    with pytest.raises(identity.BadSignature, match="4,096"):
        identity.parse_claim(" " * 5000)
    with pytest.raises(identity.BadSignature, match="not JSON"):
        identity.parse_claim("[" * 2000 + "]" * 2000)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_label_values_sign_alike_only_when_equal_as_the_store_returns_them(a, b):
    """1 and 1.0 are one value (an MLflow server returns 1 as 1.0); 1 and true, "1" and 1 never are."""
    def same(x, y) -> bool:
        if isinstance(x, bool) or isinstance(y, bool):
            return type(x) is type(y) and x == y
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            exact = lambda v: v if isinstance(v, int) or not v.is_integer() or abs(v) > 2**53 else int(v)  # noqa: E731
            return (math.isnan(x) and math.isnan(y)) if isinstance(x, float) and math.isnan(x) else type(exact(x)) is type(exact(y)) and exact(x) == exact(y)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        return type(x) is type(y) and x == y

    assert (identity.label_value(a) == identity.label_value(b)) == same(a, b)


def test_a_label_is_bound_to_its_trace_kind_name_value_and_time():
    label = LabelClaim("tr-1", "expectation", "queue", identity.label_value("billing"), 1_000)
    metadata = identity.sign_label(label, SIGNER)
    assert identity.label_signer(label, metadata[identity.LABEL_SIGNATURE]) == SIGNER.address
    assert metadata[identity.LABEL_TIME] == "1000"
    for changed in (LabelClaim("tr-2", "expectation", "queue", label.value, 1_000), LabelClaim("tr-1", "feedback", "queue", label.value, 1_000),
                    LabelClaim("tr-1", "expectation", "queues", label.value, 1_000), LabelClaim("tr-1", "expectation", "queue", '"sales"', 1_000),
                    LabelClaim("tr-1", "expectation", "queue", label.value, 1_001)):
        assert identity.label_signer(changed, metadata[identity.LABEL_SIGNATURE]) != SIGNER.address
    with pytest.raises(identity.BadSignature):
        identity.label_signer(label, "0x1234")
    assert identity.signed_time("1000") == 1000 and identity.signed_time("-1") is None and identity.signed_time("１０") is None


def test_keys_come_from_the_environment_or_a_keystore_and_never_show(monkeypatch, tmp_path, caplog):
    for var in (identity.APP_KEY_ENV, identity.APP_KEYSTORE_ENV, identity.LABELLER_KEY_ENV, identity.LABELLER_KEYSTORE_ENV):
        monkeypatch.delenv(var, raising=False)
    assert identity.app_signer().is_demo and identity.labeller_signer().is_demo
    monkeypatch.setenv(identity.APP_KEY_ENV, KEY)
    assert identity.app_signer().address == SIGNER.address == identity.labeller_signer().address
    assert KEY[2:] not in repr(identity.app_signer()) and KEY[2:] not in caplog.text
    monkeypatch.setenv(identity.APP_KEY_ENV, "0xnot-a-key-" + KEY[14:])
    with pytest.raises(identity.AppKeyError) as raised:
        identity.app_signer()
    assert KEY[14:] not in str(raised.value) and identity.APP_KEY_ENV in str(raised.value)
    monkeypatch.delenv(identity.APP_KEY_ENV)
    keystore = tmp_path / "app.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "s3cret", kdf="pbkdf2", iterations=1000)))
    monkeypatch.setenv(identity.APP_KEYSTORE_ENV, str(keystore))
    monkeypatch.setenv(identity.APP_PASSWORD_ENV, "s3cret")
    assert identity.app_signer().address == SIGNER.address
    labeller = "0x" + "11" * 32
    monkeypatch.setenv(identity.LABELLER_KEY_ENV, labeller)
    assert identity.labeller_signer().address == Account.from_key(labeller).address != identity.app_signer().address
    monkeypatch.setenv(identity.APP_PASSWORD_ENV, "wrong")
    with pytest.raises(identity.AppKeyError, match="cannot decrypt"):
        identity.app_signer()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_fast_keccak_is_ethereums(data):
    """safe-pysha3's keccak_256 where installed, eth-hash's otherwise: either way the bytes eth-utils gives."""
    from eth_utils import keccak

    assert identity.keccak256(data) == keccak(data)


_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _reference_signer(digest: bytes, raw: bytes, expected: str, public_key: bytes | None) -> str | None:
    """What the verifier did before libsecp256k1 (commit c8defd1): OpenSSL's ECDSA verification under the
    expected address's key when known (``public_key``), whatever v says, else eth-keys' pure-Python
    recovery with v; None where that raised."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from eth_keys import keys
    from eth_keys.backends import NativeECCBackend

    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
    if public_key is not None and 0 < r < _N and 0 < s < _N:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), b"\x04" + public_key)
        try:
            key.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            return expected
        except InvalidSignature:
            pass
    try:
        return keys.Signature(raw[:64] + bytes([raw[64] - 27]), backend=NativeECCBackend()).recover_public_key_from_msg_hash(digest).to_checksum_address()
    except Exception:  # noqa: BLE001 - eth-keys raises several types for an invalid r or s
        return None


signature_edits = st.sampled_from(["none", "high_s", "flip_v", "high_s_flip_v", "r_zero", "s_zero", "r_order", "s_order", "r_max", "random_rs",
                                   "other_digest", "bit_flip"])


@settings(max_examples=400, deadline=None)
@given(st.integers(1, _N - 1), st.binary(min_size=32, max_size=32), signature_edits, st.binary(min_size=64, max_size=64), st.booleans())
def test_libsecp256k1_finds_the_signer_openssl_and_pure_python_recovery_found(secret, digest, edit, noise, key_known):
    """The same address, or the same refusal, as before, on valid, high-s, wrong-v and broken signatures,
    both when the expected key is known (verification) and when it is not yet (recovery)."""
    from eth_keys import keys

    private = keys.PrivateKey(secret.to_bytes(32, "big"))
    address = private.public_key.to_checksum_address()
    raw = bytearray(private.sign_msg_hash(digest).to_bytes())
    raw[64] += 27
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
    if "high_s" in edit:
        s, raw[64] = _N - s, 55 - raw[64]  # the other half of the same signature: recovers with the other v
    if "flip_v" in edit:
        raw[64] = 55 - raw[64]
    r, s = {"r_zero": (0, s), "s_zero": (r, 0), "r_order": (_N, s), "s_order": (r, _N), "r_max": (2**256 - 1, s)}.get(edit, (r, s))
    if edit == "random_rs":
        r, s = int.from_bytes(noise[:32], "big"), int.from_bytes(noise[32:], "big")
    raw[:64] = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if edit == "bit_flip":
        raw[noise[0] % 64] ^= 1 << (noise[1] % 8)
    signed = bytes([digest[0] ^ 1]) + digest[1:] if edit == "other_digest" else digest
    signature = "0x" + bytes(raw).hex()
    identity._PUBLIC_KEYS.pop(address, None)
    if key_known:  # one valid signature recovered: the key is kept, and what follows is verified under it
        assert identity.signer_of(noise[32:], _valid(private, noise[32:]), [address]) == address and address in identity._PUBLIC_KEYS
    expected = _reference_signer(signed, bytes(raw), address, private.public_key.to_bytes() if key_known else None)
    try:
        found = identity.signer_of(signed, signature, [address])
    except identity.BadSignature:
        found = None
    assert found == expected
    if edit in ("none", "high_s"):
        assert found == address
    if edit in ("other_digest", "bit_flip", "r_zero", "s_zero", "r_order", "s_order", "r_max", "random_rs"):
        assert found != address


def _valid(private, digest: bytes) -> str:
    raw = bytearray(private.sign_msg_hash(digest).to_bytes())
    raw[64] += 27
    return "0x" + bytes(raw).hex()
