"""A contributor's claim is their leaf of the attested tree and a proof OpenZeppelin's rule accepts."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from teleprompt_assets.attest.claims import UnreadableTree, claim_of
from teleprompt_assets.attest.merkle import StandardMerkleTree

LEAVES = [["0x" + f"{i:040x}", w] for i, w in ((1, 600_000), (2, 300_000), (3, 100_000))]


def _verify(root: str, leaf_encoding: tuple[str, ...], value: list, proof: tuple[str, ...]) -> bool:
    """OpenZeppelin's processProof with its standard leaf hash (double keccak of abi.encode)."""
    from eth_abi import encode

    node = keccak(keccak(encode(list(leaf_encoding), value)))
    for sibling in proof:
        pair = sorted([node, bytes.fromhex(sibling[2:])])
        node = keccak(pair[0] + pair[1])
    return "0x" + node.hex() == root


def test_each_leaf_claims_its_weight_with_a_proof_of_the_root():
    dump = StandardMerkleTree.of(LEAVES, ["address", "uint256"]).dump()
    for address, weight in LEAVES:
        claim = claim_of(dump, address.upper().replace("0X", "0x"))
        assert claim is not None and claim.weight_ppm == weight
        assert _verify(claim.rewards_root, claim.leaf_encoding, [address, weight], claim.proof)


def test_an_address_without_a_leaf_has_no_claim_and_a_broken_dump_proves_nothing():
    dump = StandardMerkleTree.of(LEAVES, ["address", "uint256"]).dump()
    assert claim_of(dump, "0x" + "9" * 40) is None
    with pytest.raises(UnreadableTree):
        claim_of(dump | {"tree": dump["tree"][1:]}, LEAVES[0][0])
    with pytest.raises(UnreadableTree):
        claim_of({"format": "standard-v1"}, LEAVES[0][0])
