"""OpenZeppelin ``StandardMerkleTree`` (``@openzeppelin/merkle-tree`` v1) in pure Python.

Roots, proofs and ``standard-v1`` dumps produced here are byte-for-byte what the JS
library produces for the same inputs, so a dump written by Python can be loaded and
verified by ``StandardMerkleTree.load`` in JS and checked on-chain with
``MerkleProof.verify``.

Dumped values follow OZ: the library stores leaf values verbatim, so strings are kept
exactly as given (an address keeps its case), while Python-only values are written in
the form JS callers pass them: integers as decimal strings (a JS number would lose
precision past 2**53) and ``bytes`` as lowercase ``0x`` hex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from teleprompt_assets.core.encoding import from_hex, to_hex

__all__ = ["StandardMerkleTree", "coerce_abi_value", "leaf_hash", "node_hash", "verify_proof"]

FORMAT = "standard-v1"
_NODE_HEX = re.compile(r"^0x[0-9a-f]{64}$")
_ARRAY_SUFFIX = re.compile(r"^(.*)\[(\d*)\]$")


def coerce_abi_value(abi_type: str, value: Any) -> Any:
    """Turn JSON-friendly values into what eth_abi wants.

    OZ dumps carry numbers as decimal strings and bytes as hex strings, and a loaded
    dump must hash identically, so both spellings have to be accepted here.
    """
    array = _ARRAY_SUFFIX.match(abi_type)
    if array:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"expected a list for {abi_type}, got {value!r}")
        return [coerce_abi_value(array.group(1), item) for item in value]
    if abi_type.startswith("(") or abi_type == "tuple":
        raise ValueError(f"tuple leaf types are not supported: {abi_type}")
    if abi_type.startswith(("uint", "int")):
        if isinstance(value, bool):
            raise ValueError(f"expected an integer for {abi_type}, got a bool")
        if isinstance(value, str):
            return int(value, 16) if value[:2] in ("0x", "0X") else int(value, 10)
        return int(value)
    if abi_type.startswith("bytes"):
        return from_hex(value) if isinstance(value, str) else bytes(value)
    return value


def _to_json(abi_type: str, value: Any) -> Any:
    """Render a leaf value the way a JS caller would have passed it to OZ."""
    array = _ARRAY_SUFFIX.match(abi_type)
    if array:
        return [_to_json(array.group(1), item) for item in value]
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return to_hex(bytes(value))
    return value


def _check_shape(leaf_encoding: Sequence[str], value: Sequence[Any]) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError("a leaf value must be a list matching leaf_encoding")
    if len(value) != len(leaf_encoding):
        raise ValueError(f"leaf has {len(value)} fields but leaf_encoding has {len(leaf_encoding)}")


def _leaf_to_json(leaf_encoding: Sequence[str], value: Sequence[Any]) -> list[Any]:
    _check_shape(leaf_encoding, value)
    return [_to_json(t, v) for t, v in zip(leaf_encoding, value, strict=True)]


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence[Any]) -> bytes:
    """Double-hash so a leaf can never be mistaken for a 64-byte internal node."""
    _check_shape(leaf_encoding, value)
    coerced = [coerce_abi_value(t, v) for t, v in zip(leaf_encoding, value, strict=True)]
    try:
        encoded = abi_encode(list(leaf_encoding), coerced)
    except Exception as exc:  # eth_abi raises a zoo of encoding errors
        raise ValueError(f"cannot ABI-encode leaf {value!r}: {exc}") from exc
    return keccak(keccak(encoded))


def node_hash(a: bytes, b: bytes) -> bytes:
    """Sorted pairs make proofs order-free, as OZ ``MerkleProof`` expects."""
    return keccak(a + b if a <= b else b + a)


def _build_tree(leaves: Sequence[bytes]) -> list[bytes]:
    """Lay leaves out right-to-left at the end of an array, exactly as OZ ``makeMerkleTree``."""
    if not leaves:
        raise ValueError("Expected non-zero number of leaves")
    size = 2 * len(leaves) - 1
    tree: list[bytes] = [b""] * size
    for i, leaf in enumerate(leaves):
        tree[size - 1 - i] = leaf
    for i in range(size - 1 - len(leaves), -1, -1):
        tree[i] = node_hash(tree[2 * i + 1], tree[2 * i + 2])
    return tree


def _proof_for(tree: Sequence[bytes], tree_index: int) -> list[bytes]:
    proof: list[bytes] = []
    while tree_index > 0:
        sibling = tree_index - 1 if tree_index % 2 == 0 else tree_index + 1
        proof.append(tree[sibling])
        tree_index = (tree_index - 1) // 2
    return proof


def _process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    node = leaf
    for sibling in proof:
        node = node_hash(node, sibling)
    return node


@dataclass(frozen=True)
class _IndexedValue:
    value: list[Any]
    tree_index: int


class StandardMerkleTree:
    """A tree whose dump is interchangeable with OZ's, so JS tooling can serve the proofs."""

    def __init__(
        self,
        tree: Sequence[bytes],
        values: Sequence[_IndexedValue],
        leaf_encoding: Sequence[str],
    ) -> None:
        self._tree = list(tree)
        self._values = list(values)
        self._leaf_encoding = list(leaf_encoding)
        # Later duplicates win, mirroring OZ's Object.fromEntries lookup.
        self._hash_lookup = {self._tree[v.tree_index]: i for i, v in enumerate(self._values)}

    @classmethod
    def of(
        cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]
    ) -> StandardMerkleTree:
        """Sort leaves by hash (OZ's default) so multiproofs verify on-chain."""
        json_values = [_leaf_to_json(leaf_encoding, value) for value in values]
        hashes = [leaf_hash(leaf_encoding, value) for value in json_values]
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        tree = _build_tree([hashes[i] for i in order])
        tree_index = [0] * len(values)
        for leaf_pos, value_index in enumerate(order):
            tree_index[value_index] = len(tree) - 1 - leaf_pos
        indexed = [_IndexedValue(v, tree_index[i]) for i, v in enumerate(json_values)]
        return cls(tree, indexed, leaf_encoding)

    @classmethod
    def load(cls, dump: Mapping[str, Any]) -> StandardMerkleTree:
        """Refuse any dump whose hashes do not recompute, since proofs would be forged."""
        if dump.get("format") != FORMAT:
            raise ValueError(f"Unknown format {dump.get('format')!r}")
        leaf_encoding = dump.get("leafEncoding")
        if not isinstance(leaf_encoding, list) or not all(
            isinstance(t, str) for t in leaf_encoding
        ):
            raise ValueError("Expected leaf encoding (a list of ABI type strings)")
        tree = _load_nodes(dump.get("tree"))
        values = _load_values(dump.get("values"), len(tree))
        _check_tree(tree)
        loaded = cls(tree, values, leaf_encoding)
        for i in range(len(values)):
            loaded._check_value_at(i)
        return loaded

    @property
    def root(self) -> str:
        return to_hex(self._tree[0])

    @property
    def leaf_encoding(self) -> list[str]:
        return list(self._leaf_encoding)

    def __len__(self) -> int:
        return len(self._values)

    def at(self, index: int) -> list[Any]:
        return list(self._values[index].value)

    def leaf_hash(self, value: Sequence[Any]) -> bytes:
        return leaf_hash(self._leaf_encoding, value)

    def leaf_lookup(self, value: Sequence[Any]) -> int:
        index = self._hash_lookup.get(self.leaf_hash(value))
        if index is None:
            raise ValueError("Leaf is not in tree")
        return index

    def get_proof(self, value_or_index: int | Sequence[Any]) -> list[str]:
        """Index means position in the original ``values``, as in OZ, not tree position."""
        tree_index = self._check_value_at(self._value_index(value_or_index))
        proof = _proof_for(self._tree, tree_index)
        if _process_proof(self._tree[tree_index], proof) != self._tree[0]:
            raise AssertionError("Unable to prove value")
        return [to_hex(node) for node in proof]

    def verify(self, value_or_index: int | Sequence[Any], proof: Sequence[str]) -> bool:
        if isinstance(value_or_index, int):
            index = self._value_index(value_or_index)
            if not 0 <= index < len(self._values):
                raise ValueError("Index out of bounds")
            value_or_index = self._values[index].value
        return verify_proof(self.root, self._leaf_encoding, value_or_index, proof)

    def entries(self) -> list[tuple[int, list[Any]]]:
        return [(i, list(v.value)) for i, v in enumerate(self._values)]

    def dump(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "leafEncoding": list(self._leaf_encoding),
            "tree": [to_hex(node) for node in self._tree],
            "values": [{"value": list(v.value), "treeIndex": v.tree_index} for v in self._values],
        }

    def _value_index(self, value_or_index: int | Sequence[Any]) -> int:
        if isinstance(value_or_index, bool):
            raise ValueError("a leaf is a list of values or an index, not a bool")
        if isinstance(value_or_index, int):
            return value_or_index
        return self.leaf_lookup(value_or_index)

    def _check_value_at(self, value_index: int) -> int:
        if not 0 <= value_index < len(self._values):
            raise ValueError("Index out of bounds")
        entry = self._values[value_index]
        if self._tree[entry.tree_index] != self.leaf_hash(entry.value):
            raise ValueError(f"values[{value_index}] does not hash to tree[{entry.tree_index}]")
        return entry.tree_index


def _load_nodes(raw: Any) -> list[bytes]:
    """Demand lowercase hex because OZ ``load`` compares leaf hashes as strings."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("Expected a non-empty 'tree' list")
    for i, node in enumerate(raw):
        if not isinstance(node, str) or not _NODE_HEX.match(node):
            raise ValueError(f"tree[{i}] is not a 0x-prefixed lowercase 32-byte hex string")
    return [bytes.fromhex(node[2:]) for node in raw]


def _load_values(raw: Any, tree_size: int) -> list[_IndexedValue]:
    """Require one value per leaf so no leaf in the dump is left unexplained."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("Expected a non-empty 'values' list")
    if tree_size != 2 * len(raw) - 1:
        raise ValueError(
            f"tree has {tree_size} nodes but {len(raw)} values need {2 * len(raw) - 1}"
        )
    first_leaf = tree_size - len(raw)
    seen: set[int] = set()
    values: list[_IndexedValue] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("value"), list):
            raise ValueError(f"values[{i}] must be {{'value': [...], 'treeIndex': n}}")
        index = entry.get("treeIndex")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"values[{i}].treeIndex must be an integer")
        if not first_leaf <= index < tree_size:
            raise ValueError(f"values[{i}].treeIndex {index} is not a leaf position")
        if index in seen:
            raise ValueError(f"values[{i}].treeIndex {index} is used twice")
        seen.add(index)
        values.append(_IndexedValue(list(entry["value"]), index))
    return values


def _check_tree(tree: Sequence[bytes]) -> None:
    for i in range(len(tree) - 1, -1, -1):
        left, right = 2 * i + 1, 2 * i + 2
        if right < len(tree) and tree[i] != node_hash(tree[left], tree[right]):
            raise ValueError(f"tree[{i}] is not the hash of tree[{left}] and tree[{right}]")


def verify_proof(
    root: str | bytes,
    leaf_encoding: Sequence[str],
    value: Sequence[Any],
    proof: Sequence[str | bytes],
) -> bool:
    """Check a proof without the tree, which is all a claimant or contract has."""
    expected = from_hex(root) if isinstance(root, str) else bytes(root)
    nodes = [from_hex(p) if isinstance(p, str) else bytes(p) for p in proof]
    if len(expected) != 32 or any(len(n) != 32 for n in nodes):
        raise ValueError("root and proof nodes must be 32 bytes")
    return _process_proof(leaf_hash(leaf_encoding, value), nodes) == expected
