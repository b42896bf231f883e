"""A contributor's claim: their leaf of an attested rewards tree and its Merkle proof.

What ``teleprompt proof`` prints and a claim contract checks against the attested ``rewardsRoot``
(docs/attestations.md#claiming): the walk over the tree lives here, beside the tree, so the CLI only
finds the bundle and prints the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teleprompt_assets.attest.merkle import StandardMerkleTree


class UnreadableTree(ValueError):
    """``rewards_tree.json`` is not a valid OpenZeppelin ``standard-v1`` dump."""


@dataclass(frozen=True)
class Claim:
    account: str
    weight_ppm: int
    proof: tuple[str, ...]
    rewards_root: str
    leaf_encoding: tuple[str, ...]


def claim_of(dump: Mapping[str, Any], account: str) -> Claim | None:
    """``account``'s leaf (compared case-insensitively) and its proof, or None when the tree gives it
    no weight. A malformed dump raises :class:`UnreadableTree`: it proves nothing."""
    try:
        tree = StandardMerkleTree.load(dump)
    except Exception as exc:  # noqa: BLE001 - any defect of a hostile dump is the same answer
        raise UnreadableTree(str(exc)) from exc
    for index, value in tree.entries():
        if str(value[0]).lower() == account.lower():
            return Claim(account, int(value[1]), tuple(tree.get_proof(index)), tree.root, tuple(dump["leafEncoding"]))
    return None
