// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title RewardClaim
/// @notice The smallest contract that pays out against a teleprompt `rewards_tree.json` root.
/// @dev Leaves are OpenZeppelin StandardMerkleTree leaves for the encoding ["address", "uint256"]:
///      keccak256(bytes.concat(keccak256(abi.encode(account, amount)))). The double hash keeps a leaf
///      from ever being read as a 64-byte inner node. It records who claimed and emits an event; moving
///      tokens is left to a real distributor, since this contract exists to prove the proofs check on-chain.
contract RewardClaim {
    /// @notice The attested `rewardsRoot`.
    bytes32 public immutable root;

    /// @notice Whether an account has already claimed.
    mapping(address account => bool) public claimed;

    event Claimed(address indexed account, uint256 amount);

    error AlreadyClaimed();
    error InvalidProof();

    constructor(bytes32 root_) {
        root = root_;
    }

    /// @notice Claim `amount` for the sender with a proof from the rewards tree.
    function claim(uint256 amount, bytes32[] calldata proof) external {
        if (claimed[msg.sender]) revert AlreadyClaimed();
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(msg.sender, amount))));
        if (!MerkleProof.verify(proof, root, leaf)) revert InvalidProof();
        claimed[msg.sender] = true;
        emit Claimed(msg.sender, amount);
    }
}
