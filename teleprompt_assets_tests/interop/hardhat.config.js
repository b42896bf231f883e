// Only for `hardhat node` in teleprompt_assets_tests/test_onchain.py: a throwaway local chain
// (chain id 31337, the default well-known test accounts, automine). Nothing is compiled here.
module.exports = {
  networks: {
    hardhat: { chainId: 31337 },
  },
};
