"""Every Ethereum address that enters the system must be EIP-55 checksummed (issue 8).

Entry points covered here: the shared check itself, the expected signer of a bundle (library and
``teleprompt verify --signer``), the addresses inside a bundle being verified, the configured EAS
contract (``TELEPROMPT_EAS_CONTRACT``), reward leaves about to be signed, ``teleprompt submit --eas``,
``teleprompt proof``, and the on-chain helpers' contract addresses. Contributor tags on traces are
checked at ingestion (``test_traces.py``, ``test_quality.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleprompt_assets.attest import bundles, onchain
from teleprompt_assets.cli import main
from teleprompt_assets.core.addresses import AddressError, checksummed
from teleprompt_assets_tests.attest.test_bundles import EVIDENCE, KEY, SIGNER

EAS_SEPOLIA = "0xC2679fBD37d54388Ce493F1DB75320D236e1815e"
FLIPS = st.lists(st.booleans(), min_size=40, max_size=40)


def flip_case(address: str, flips: list[bool]) -> str:
    """``address`` with the case of each hex letter flipped where ``flips`` says so."""
    return "0x" + "".join(c.swapcase() if f else c for c, f in zip(address[2:], flips, strict=True))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundles.write_bundle(bundles.build_bundle(EVIDENCE, KEY), tmp_path_factory.mktemp("addr") / "bundle")


def _rewrite(bundle: Path, dest: Path, name: str, change) -> Path:
    """A copy of ``bundle`` with one JSON file changed and the manifest re-hashed, as a careful forger would."""
    copy = dest / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy)
    body = json.loads((copy / name).read_text())
    change(body)
    (copy / name).write_text(json.dumps(body, sort_keys=True, indent=2))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest[name] = hashlib.sha256((copy / name).read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2))
    return copy


# --- the check -----------------------------------------------------------------------------------

@given(FLIPS)
def test_only_the_checksummed_spelling_passes(flips):
    variant = flip_case(SIGNER, flips)
    if variant == SIGNER:
        assert checksummed(variant, "signer") == SIGNER
    else:
        with pytest.raises(AddressError, match=r"^signer: .* is not EIP-55 checksummed"):
            checksummed(variant, "signer")


@pytest.mark.parametrize("value", [SIGNER.lower(), "0x" + SIGNER[2:].upper()], ids=["lowercase", "uppercase"])
def test_single_case_addresses_carry_no_checksum_and_are_refused(value):
    with pytest.raises(AddressError, match="not EIP-55 checksummed"):
        checksummed(value, "signer")


@pytest.mark.parametrize("value", [SIGNER[:-1], SIGNER + "0", SIGNER[2:], "0X" + SIGNER[2:], SIGNER[:-1] + "g", "", None, 42, b"\x00" * 20])
def test_malformed_addresses_are_refused(value):
    with pytest.raises(AddressError, match="not a 20-byte 0x-prefixed hex address"):
        checksummed(value, "signer")


def test_the_error_never_suggests_a_spelling():
    """For a mistyped address the 'corrected' spelling would be someone else's valid address."""
    typo = SIGNER[:-1] + ("0" if SIGNER[-1] != "0" else "1")
    with pytest.raises(AddressError) as caught:
        checksummed(typo.lower(), "signer")
    assert to_checksum_address(typo) not in str(caught.value)


def test_addresses_without_letters_are_their_own_checksum():
    assert checksummed("0x" + "12" * 20, "x") == "0x" + "12" * 20
    assert checksummed(bundles.ZERO_ADDRESS, "x") == bundles.ZERO_ADDRESS


# --- verifying a bundle ----------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(FLIPS)
def test_an_expected_signer_that_is_not_checksummed_fails_verification(bundle, flips):
    variant = flip_case(SIGNER, flips)
    problems = bundles.verify_bundle(bundle, variant)
    if variant == SIGNER:
        assert problems == []
    else:
        assert any("expected_signer" in p and "EIP-55" in p for p in problems), problems


@pytest.mark.parametrize("signer", [SIGNER.lower(), "0x" + SIGNER[2:].upper()], ids=["lowercase", "uppercase"])
def test_a_single_case_expected_signer_fails_verification(bundle, signer):
    assert any("expected_signer" in p and "EIP-55" in p for p in bundles.verify_bundle(bundle, signer))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(FLIPS)
def test_a_bundle_whose_contract_address_lost_its_checksum_does_not_verify(bundle, tmp_path, flips):
    """The EIP-712 digest and the uid hash the address's bytes, not its spelling: without this check
    a lowercased verifyingContract (manifest re-hashed) verified, two byte strings for one attestation."""
    variant = flip_case(EAS_SEPOLIA, flips)
    copy = _rewrite(bundle, tmp_path, "attestation.json", lambda a: a["domain"].__setitem__("verifyingContract", variant))
    problems = bundles.verify_bundle(copy, SIGNER)
    if variant == EAS_SEPOLIA:
        assert problems == []
    else:
        assert any("verifyingContract" in p for p in problems), problems


def test_a_lowercased_contract_address_does_not_verify(bundle, tmp_path):
    copy = _rewrite(bundle, tmp_path, "attestation.json", lambda a: a["domain"].__setitem__("verifyingContract", EAS_SEPOLIA.lower()))
    assert any("domain.verifyingContract" in p and "EIP-55" in p for p in bundles.verify_bundle(copy, SIGNER))


def test_a_reward_leaf_that_is_not_checksummed_is_named(bundle, tmp_path):
    def lower_first(dump):
        dump["values"][0]["value"][0] = dump["values"][0]["value"][0].lower()

    copy = _rewrite(bundle, tmp_path, "rewards_tree.json", lower_first)
    assert any(p.startswith("rewards_tree.json: ") and "EIP-55" in p for p in bundles.verify_bundle(copy, SIGNER))


def test_cli_verify_refuses_a_signer_without_checksum(bundle, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["verify", str(bundle), "--offline", "--signer", SIGNER.lower()])
    assert exited.value.code == 2
    assert "--signer" in capsys.readouterr().err
    assert main(["verify", str(bundle), "--offline", "--signer", SIGNER]) == 0


# --- configuration and signing -----------------------------------------------------------------------

def test_a_configured_eas_contract_must_be_checksummed(monkeypatch, bundle, capsys):
    monkeypatch.setenv("TELEPROMPT_EAS_CONTRACT", EAS_SEPOLIA.lower())
    with pytest.raises(AddressError, match="^TELEPROMPT_EAS_CONTRACT: .*EIP-55"):
        bundles.default_domain()
    with pytest.raises(AddressError, match="TELEPROMPT_EAS_CONTRACT"):
        bundles.verify_bundle(bundle, SIGNER)
    assert main(["verify", str(bundle), "--offline", "--signer", SIGNER]) == 2
    assert "TELEPROMPT_EAS_CONTRACT" in capsys.readouterr().err
    monkeypatch.setenv("TELEPROMPT_EAS_CONTRACT", EAS_SEPOLIA)
    assert bundles.default_domain().verifying_contract == EAS_SEPOLIA


def test_reward_leaves_are_signed_only_with_checksummed_addresses():
    contributor = EVIDENCE.reward_leaves[0][0]
    lowered = dataclasses.replace(EVIDENCE, reward_leaves=[(contributor.lower(), 600_000), *EVIDENCE.reward_leaves[1:]])
    with pytest.raises(AddressError, match="reward leaf 0: .*EIP-55"):
        bundles.build_bundle(lowered, KEY)


# --- on-chain entry points -------------------------------------------------------------------------

UNREACHABLE_RPC = "http://127.0.0.1:9"  # discard port: nothing may be sent before the address is checked


def test_submit_refuses_an_eas_address_without_checksum(bundle):
    with pytest.raises(onchain.OnchainError, match="EAS contract address: .*EIP-55"):
        onchain.submit_delegated(bundle, UNREACHABLE_RPC, KEY, None, EAS_SEPOLIA.lower())


def test_register_schema_refuses_addresses_without_checksum():
    with pytest.raises(onchain.OnchainError, match="SchemaRegistry address: .*EIP-55"):
        onchain.register_schema(UNREACHABLE_RPC, KEY, EAS_SEPOLIA.lower(), bundles.SCHEMA)
    with pytest.raises(onchain.OnchainError, match="resolver: .*EIP-55"):
        onchain.register_schema(UNREACHABLE_RPC, KEY, EAS_SEPOLIA, bundles.SCHEMA, resolver=SIGNER.lower())


@pytest.mark.parametrize("argv", [
    ["submit", "BUNDLE", "--rpc", UNREACHABLE_RPC, "--eas", EAS_SEPOLIA.lower()],
    ["proof", SIGNER.lower()],
    ["proof", SIGNER[:-2]],
], ids=["submit --eas", "proof lowercase", "proof truncated"])
def test_cli_address_arguments_are_checked_before_anything_runs(argv, capsys, tp_home):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "EIP-55" in err or "20-byte" in err
    assert not tp_home.exists()  # no key generated, no store opened


# --- contributors: addresses nobody holds a key for (issue 25, item 4) ---------------------------------

RESERVED = [to_checksum_address(n.to_bytes(20, "big")) for n in (0, 1, 2, 9, 10, 0x11, 0x100)]


@pytest.mark.parametrize("value", RESERVED, ids=lambda v: v[-4:])
def test_the_zero_address_and_precompiles_cannot_be_contributors(value):
    """They are well-formed and their own checksum (no letters), so the address check alone let them
    through and their rewards burned."""
    from teleprompt_assets.core.addresses import contributor, contributor_problem

    assert checksummed(value, "x") == value
    assert "zero address" in contributor_problem(value) or "precompile" in contributor_problem(value)
    with pytest.raises(AddressError, match=r"^reward leaf 0: .*(zero address|precompile)"):
        contributor(value, "reward leaf 0")


def test_the_first_address_past_the_reserved_range_is_a_contributor():
    from teleprompt_assets.core.addresses import contributor_problem

    assert contributor_problem(to_checksum_address((0x101).to_bytes(20, "big"))) is None
    assert contributor_problem(SIGNER) is None
    assert "EIP-55" in contributor_problem(SIGNER.lower())


@pytest.mark.parametrize("value", [RESERVED[0], RESERVED[1], RESERVED[5]], ids=["zero", "ecrecover", "bls"])
def test_curation_quarantines_a_reserved_contributor_with_its_reason(value):
    from teleprompt_assets.curate.validation import REASONS, _address_problem

    reason, detail = _address_problem(value)
    assert reason == "reserved_contributor" and reason in REASONS
    assert value in detail
    assert _address_problem(SIGNER) is None


def test_rewards_are_never_signed_for_a_reserved_address():
    contributor = EVIDENCE.reward_leaves[0][0]
    burned = dataclasses.replace(EVIDENCE, reward_leaves=[(bundles.ZERO_ADDRESS, 600_000), *[(a, w) for a, w in EVIDENCE.reward_leaves[1:]]])
    assert contributor != bundles.ZERO_ADDRESS
    with pytest.raises(AddressError, match="reward leaf 0: .*zero address"):
        bundles.build_bundle(burned, KEY)


def test_a_bundle_paying_the_zero_address_does_not_verify(tmp_path, monkeypatch):
    """Signed by the attester's own key (built with the signing-side check switched off): the verifier
    names the leaf all the same."""
    monkeypatch.setattr(bundles, "contributor", lambda value, where: value)
    burned = dataclasses.replace(EVIDENCE, reward_leaves=[(bundles.ZERO_ADDRESS, 600_000), *EVIDENCE.reward_leaves[1:]])
    folder = bundles.write_bundle(bundles.build_bundle(burned, KEY), tmp_path / "burned")
    problems = bundles.verify_bundle(folder, SIGNER)
    assert [p for p in problems if p.startswith("rewards_tree.json: leaf 0: ")] == [f"rewards_tree.json: leaf 0: {bundles.ZERO_ADDRESS} is the zero address: a reward paid to it burns"], problems
