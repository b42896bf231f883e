"""StandardMerkleTree must match @openzeppelin/merkle-tree byte for byte.

The GOLDEN_* vectors were produced by running @openzeppelin/merkle-tree 1.0.8 (node 20)
on exactly these inputs; see the task report for the generating script.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from teleprompt_assets.attest.merkle import StandardMerkleTree, leaf_hash, verify_proof

GOLDEN_ADDRESS_UINT: dict[str, Any] = {
    "values": [
        ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
        ["0x2222222222222222222222222222222222222222", "2500000000000000000"],
        ["0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826", "1"],
        [
            "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB",
            "115792089237316195423570985008687907853269984665640564039457584007913129639935",
        ],
        ["0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "0"],
    ],
    "leafEncoding": ["address", "uint256"],
    "root": "0x71d373b847fd2ce694374fb5e747b37bab4ca239d588d9df8e12eed5e566bc03",
    "tree": [
        "0x71d373b847fd2ce694374fb5e747b37bab4ca239d588d9df8e12eed5e566bc03",
        "0x624574a8d67e19161c1f32e1087a39390126789655addf978e174d6198468c8a",
        "0x9569b1adf96b41903043a97bf488901d10cad0508ba8df2bd92f60b6928206fe",
        "0x98ae25040dae0f08e0276e2248d59cb12fe08a252009163e2578ef38f1457dfb",
        "0xeb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
        "0xd104a5138d34e79e25f24df7e8aa9de78cfd870db4bcc8d46d379aaeb1cbb237",
        "0xb92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc",
        "0x9079f2e12e3cd360b00be699f618ba059a840f413ef13f8a92c54846a64cfebe",
        "0x12d8c748fb47b2a02d2a4b7b30911126826fa1bc502d861909a65ac7ec8550ed",
    ],
    "treeIndex": [4, 6, 5, 7, 8],
    "proofs": [
        [
            "0x98ae25040dae0f08e0276e2248d59cb12fe08a252009163e2578ef38f1457dfb",
            "0x9569b1adf96b41903043a97bf488901d10cad0508ba8df2bd92f60b6928206fe",
        ],
        [
            "0xd104a5138d34e79e25f24df7e8aa9de78cfd870db4bcc8d46d379aaeb1cbb237",
            "0x624574a8d67e19161c1f32e1087a39390126789655addf978e174d6198468c8a",
        ],
        [
            "0xb92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc",
            "0x624574a8d67e19161c1f32e1087a39390126789655addf978e174d6198468c8a",
        ],
        [
            "0x12d8c748fb47b2a02d2a4b7b30911126826fa1bc502d861909a65ac7ec8550ed",
            "0xeb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
            "0x9569b1adf96b41903043a97bf488901d10cad0508ba8df2bd92f60b6928206fe",
        ],
        [
            "0x9079f2e12e3cd360b00be699f618ba059a840f413ef13f8a92c54846a64cfebe",
            "0xeb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
            "0x9569b1adf96b41903043a97bf488901d10cad0508ba8df2bd92f60b6928206fe",
        ],
    ],
}
GOLDEN_BYTES32: dict[str, Any] = {
    "values": [
        ["0x3ac225168df54212a25c1c01fd35bebfea408fdac2e31ddd6f80a4bbf9a5f1cb"],
        ["0xb5553de315e0edf504d9150af82dafa5c4667fa618ed0a6f19c69b41166c5510"],
        ["0x0b42b6393c1f53060fe3ddbfcd7aadcca894465a5a438f69c87d790b2299b9b2"],
        ["0xf1918e8562236eb17adc8502332f4c9c82bc14e19bfc0aa10ab674ff75b3d2f3"],
        ["0xa8982c89d80987fb9a510e25981ee9170206be21af3c8e0eb312ef1d3382e761"],
        ["0xd1e8aeb79500496ef3dc2e57ba746a8315d048b7a664a2bf948db4fa91960483"],
        ["0x14bcc435f49d130d189737f9762feb25c44ef5b886bef833e31a702af6be4748"],
    ],
    "leafEncoding": ["bytes32"],
    "root": "0xa8700b3eed5e87c125e792eeb768c69b4b6ac7c2f95e0419cd02ef23a5527db4",
    "tree": [
        "0xa8700b3eed5e87c125e792eeb768c69b4b6ac7c2f95e0419cd02ef23a5527db4",
        "0x55a7e69393daaa182ce593b567883e638684cc55cee3622bb0c251f42f431a67",
        "0x9fc190bb1fa2806e6393a89a9d2bdf0b5c67cf97cee34177ead3c0299d6548d4",
        "0xec09d93661bb7f24016ab29af033105bf317c3e913d0957ba58c400a9dba22b1",
        "0x2b533726cfdbd436998a16f6513aef695d79285ed14c0745c066985f85be789c",
        "0x15e193b7d992f728e99a43a9603274f413c1d453588ac5c03649101355fb4472",
        "0xb3d2a0d7ef910b71a33f975299d60183bc848706653ea86e4ec0a4dcb87a26d5",
        "0x91b849b95719db26986d0af4e496945d79d371d6d6bca6dce81e92d7d1635bbc",
        "0x91105121e5db54b6a18aeae43f42a95f2a0e39f652f7794641fc35a0f0d81dd4",
        "0x90da0be124fd597294f2e7e99f8dc6645a35380fc93ec60e9f7b85f8be92b0b9",
        "0x3d1ea86e87ee8c22f2fde594f6c4cd87cbe0eb34f72dafd38faed3e23fc1d570",
        "0x1bc7d6e29f8aa946f04e0b70c42ea45458cde33c84f8589395c5ae0ccaef80f0",
        "0x051b442a51a40d537beb414108bbc55d6899f8b50fa65ea00bbdc36c4279a18a",
    ],
    "treeIndex": [6, 8, 7, 9, 10, 12, 11],
    "proofs": [
        [
            "0x15e193b7d992f728e99a43a9603274f413c1d453588ac5c03649101355fb4472",
            "0x55a7e69393daaa182ce593b567883e638684cc55cee3622bb0c251f42f431a67",
        ],
        [
            "0x91b849b95719db26986d0af4e496945d79d371d6d6bca6dce81e92d7d1635bbc",
            "0x2b533726cfdbd436998a16f6513aef695d79285ed14c0745c066985f85be789c",
            "0x9fc190bb1fa2806e6393a89a9d2bdf0b5c67cf97cee34177ead3c0299d6548d4",
        ],
        [
            "0x91105121e5db54b6a18aeae43f42a95f2a0e39f652f7794641fc35a0f0d81dd4",
            "0x2b533726cfdbd436998a16f6513aef695d79285ed14c0745c066985f85be789c",
            "0x9fc190bb1fa2806e6393a89a9d2bdf0b5c67cf97cee34177ead3c0299d6548d4",
        ],
        [
            "0x3d1ea86e87ee8c22f2fde594f6c4cd87cbe0eb34f72dafd38faed3e23fc1d570",
            "0xec09d93661bb7f24016ab29af033105bf317c3e913d0957ba58c400a9dba22b1",
            "0x9fc190bb1fa2806e6393a89a9d2bdf0b5c67cf97cee34177ead3c0299d6548d4",
        ],
        [
            "0x90da0be124fd597294f2e7e99f8dc6645a35380fc93ec60e9f7b85f8be92b0b9",
            "0xec09d93661bb7f24016ab29af033105bf317c3e913d0957ba58c400a9dba22b1",
            "0x9fc190bb1fa2806e6393a89a9d2bdf0b5c67cf97cee34177ead3c0299d6548d4",
        ],
        [
            "0x1bc7d6e29f8aa946f04e0b70c42ea45458cde33c84f8589395c5ae0ccaef80f0",
            "0xb3d2a0d7ef910b71a33f975299d60183bc848706653ea86e4ec0a4dcb87a26d5",
            "0x55a7e69393daaa182ce593b567883e638684cc55cee3622bb0c251f42f431a67",
        ],
        [
            "0x051b442a51a40d537beb414108bbc55d6899f8b50fa65ea00bbdc36c4279a18a",
            "0xb3d2a0d7ef910b71a33f975299d60183bc848706653ea86e4ec0a4dcb87a26d5",
            "0x55a7e69393daaa182ce593b567883e638684cc55cee3622bb0c251f42f431a67",
        ],
    ],
}
GOLDEN_TRIPLE: dict[str, Any] = {
    "values": [
        ["0xa5a26c9ea1b9934b105bc11c4a2e3133ff45643ea8c59b87527135bdea75ad36", "900000", "12"],
        ["0x2ac5f76a81ecdcd73516351baaa65aee823304bc0dff07f390f2e56f47a213b9", "0", "0"],
        ["0x6fc0eb6449e25939b342994320d92eae42e99b9026b3dc9d5b899222dfe611dd", "1000000", "3"],
        [
            "0x00a2dc9591c932caa3c22ebdf6ddb71bf16bcbb18c5678b679d934d8b26575d6",
            "123456789012345678901234567890",
            "7",
        ],
    ],
    "leafEncoding": ["bytes32", "uint256", "uint256"],
    "root": "0xbec2da945b8b660d28190fa6df579b14f3eb90163fceb1e8087be1f154be10de",
    "tree": [
        "0xbec2da945b8b660d28190fa6df579b14f3eb90163fceb1e8087be1f154be10de",
        "0xfbef8495976bc6644e22acc019b4a67c8843e990af06a1b5757ea263771dfafa",
        "0x7676b6e0974958e94d3e2d2d9165b7320f6878cf4f0fd75c4c92766232fcdcea",
        "0xfa9b53a6e66a335d61c4386703b5345101e9b6dda34cd980df7911943c0a564c",
        "0x8a62a2813018beb38c9ca317103dfa1fc3a6e293274e08e88e503c357bf6ffb0",
        "0x53dd1fa7e2248e20610c01e1573b7356cd5d79c18eba6cb5131fec5775dbb472",
        "0x3de0955a236fc8aa7fbe1ab595fd597502b154b4a52b3664b57e01735e4267a8",
    ],
    "treeIndex": [5, 4, 6, 3],
    "proofs": [
        [
            "0x3de0955a236fc8aa7fbe1ab595fd597502b154b4a52b3664b57e01735e4267a8",
            "0xfbef8495976bc6644e22acc019b4a67c8843e990af06a1b5757ea263771dfafa",
        ],
        [
            "0xfa9b53a6e66a335d61c4386703b5345101e9b6dda34cd980df7911943c0a564c",
            "0x7676b6e0974958e94d3e2d2d9165b7320f6878cf4f0fd75c4c92766232fcdcea",
        ],
        [
            "0x53dd1fa7e2248e20610c01e1573b7356cd5d79c18eba6cb5131fec5775dbb472",
            "0xfbef8495976bc6644e22acc019b4a67c8843e990af06a1b5757ea263771dfafa",
        ],
        [
            "0x8a62a2813018beb38c9ca317103dfa1fc3a6e293274e08e88e503c357bf6ffb0",
            "0x7676b6e0974958e94d3e2d2d9165b7320f6878cf4f0fd75c4c92766232fcdcea",
        ],
    ],
}
GOLDEN_SINGLE: dict[str, Any] = {
    "values": [["0x0b8af30d93fe6f6056cc4381f3fe4c92ab4c6fa34ec1edc8baa4edf881e0a95a"]],
    "leafEncoding": ["bytes32"],
    "root": "0x80757763e8cf32881cb536b8a1292d6307c396e62fe45ea481dbde1569458305",
    "tree": ["0x80757763e8cf32881cb536b8a1292d6307c396e62fe45ea481dbde1569458305"],
    "treeIndex": [0],
    "proofs": [[]],
}

GOLDENS = [GOLDEN_ADDRESS_UINT, GOLDEN_BYTES32, GOLDEN_TRIPLE, GOLDEN_SINGLE]


def _golden_dump(golden: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "standard-v1",
        "leafEncoding": golden["leafEncoding"],
        "tree": golden["tree"],
        "values": [
            {"value": value, "treeIndex": index}
            for value, index in zip(golden["values"], golden["treeIndex"], strict=True)
        ],
    }


def _tree(golden: dict[str, Any]) -> StandardMerkleTree:
    return StandardMerkleTree.of(golden["values"], golden["leafEncoding"])


@pytest.mark.parametrize("golden", GOLDENS, ids=["address_uint", "bytes32", "triple", "single"])
def test_matches_openzeppelin_root_proofs_and_dump(golden: dict[str, Any]) -> None:
    tree = _tree(golden)
    assert tree.root == golden["root"]
    assert [tree.get_proof(i) for i in range(len(tree))] == golden["proofs"]
    assert json.dumps(tree.dump()) == json.dumps(_golden_dump(golden))


@pytest.mark.parametrize("golden", GOLDENS, ids=["address_uint", "bytes32", "triple", "single"])
def test_loads_openzeppelin_dump_and_verifies(golden: dict[str, Any]) -> None:
    tree = StandardMerkleTree.load(_golden_dump(golden))
    assert tree.root == golden["root"]
    for value, proof in zip(golden["values"], golden["proofs"], strict=True):
        assert tree.get_proof(value) == proof
        assert verify_proof(golden["root"], golden["leafEncoding"], value, proof)


def test_python_native_values_dump_like_js_strings() -> None:
    native = [[bytes.fromhex(h[2:]), int(a), int(b)] for h, a, b in GOLDEN_TRIPLE["values"]]
    tree = StandardMerkleTree.of(native, GOLDEN_TRIPLE["leafEncoding"])
    assert tree.dump() == _golden_dump(GOLDEN_TRIPLE)


def test_address_case_is_kept_but_does_not_change_the_hash() -> None:
    address, amount = GOLDEN_ADDRESS_UINT["values"][2]
    lower = StandardMerkleTree.of([[address.lower(), int(amount)]], ["address", "uint256"])
    mixed = StandardMerkleTree.of([[address, amount]], ["address", "uint256"])
    assert lower.root == mixed.root
    assert lower.dump()["values"][0]["value"] == [address.lower(), amount]


def test_leaf_hash_is_double_keccak_of_abi_encoding() -> None:
    value = bytes.fromhex(GOLDEN_SINGLE["values"][0][0][2:])
    assert leaf_hash(["bytes32"], [value]) == keccak(keccak(value))
    assert "0x" + leaf_hash(["bytes32"], [value]).hex() == GOLDEN_SINGLE["root"]


def test_empty_tree_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-zero number of leaves"):
        StandardMerkleTree.of([], ["bytes32"])


def test_unknown_leaf_and_bad_index_are_rejected() -> None:
    tree = _tree(GOLDEN_ADDRESS_UINT)
    with pytest.raises(ValueError, match="not in tree"):
        tree.get_proof(["0x3333333333333333333333333333333333333333", "1"])
    with pytest.raises(ValueError, match="out of bounds"):
        tree.get_proof(len(tree))
    with pytest.raises(ValueError, match="fields"):
        tree.get_proof(["0x3333333333333333333333333333333333333333"])


def test_verify_proof_rejects_wrong_value_and_wrong_proof() -> None:
    golden = GOLDEN_ADDRESS_UINT
    value, proof = golden["values"][0], golden["proofs"][0]
    assert not verify_proof(
        golden["root"], golden["leafEncoding"], [value[0], "5000000000000000001"], proof
    )
    assert not verify_proof(golden["root"], golden["leafEncoding"], value, golden["proofs"][1])
    assert _tree(golden).verify(0, proof)


def _mutated(change: Any) -> dict[str, Any]:
    dump = copy.deepcopy(_golden_dump(GOLDEN_ADDRESS_UINT))
    change(dump)
    return dump


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(format="standard-v2"), "Unknown format"),
        (lambda d: d.pop("leafEncoding"), "leaf encoding"),
        (lambda d: d["tree"].__setitem__(0, d["tree"][0].upper().replace("0X", "0x")), "lowercase"),
        (
            lambda d: d["values"][0]["value"].__setitem__(1, "5"),
            r"values\[0\] does not hash to tree\[4\]",
        ),
        (lambda d: d["tree"].__setitem__(1, "0x" + "00" * 32), r"tree\[1\] is not the hash"),
        (lambda d: d["values"][1].__setitem__("treeIndex", 4), "used twice"),
        (lambda d: d["values"][1].__setitem__("treeIndex", 2), "not a leaf position"),
        (lambda d: d["values"].pop(), "need"),
        (lambda d: d.update(tree=[]), "non-empty 'tree'"),
    ],
)
def test_load_rejects_inconsistent_dumps(change: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        StandardMerkleTree.load(_mutated(change))


def test_duplicate_values_follow_openzeppelin_lookup() -> None:
    value = ["0x" + "11" * 32]
    tree = StandardMerkleTree.of([value, value], ["bytes32"])
    assert tree.get_proof(value) == tree.get_proof(1)
    assert tree.verify(0, tree.get_proof(0))


bytes32s = st.binary(min_size=32, max_size=32)
uint256s = st.integers(min_value=0, max_value=2**256 - 1)
leaves = st.lists(st.tuples(bytes32s, uint256s).map(list), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(values=leaves, data=st.data())
def test_every_proof_verifies_and_dump_roundtrips(
    values: list[list[Any]], data: st.DataObject
) -> None:
    encoding = ["bytes32", "uint256"]
    tree = StandardMerkleTree.of(values, encoding)
    loaded = StandardMerkleTree.load(json.loads(json.dumps(tree.dump())))
    assert loaded.dump() == tree.dump()
    for i, value in enumerate(values):
        assert verify_proof(tree.root, encoding, value, tree.get_proof(i))
    shuffled = data.draw(st.permutations(values))
    assert StandardMerkleTree.of(shuffled, encoding).root == tree.root
