// Compile one Solidity file with solc-js (the pinned npm `solc`, no download) and print
// {"contracts": {name: {abi, bytecode}}, "solcVersion"} as JSON on stdout.
// Imports such as "@openzeppelin/contracts/..." resolve from this folder's node_modules.
// Usage: node compile.js path/to/Contract.sol
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

function findImport(importPath) {
  try {
    return { contents: fs.readFileSync(require.resolve(importPath, { paths: [__dirname] }), "utf8") };
  } catch (err) {
    return { error: `cannot resolve ${importPath}: ${err.message}` };
  }
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node compile.js Contract.sol");
    process.exit(2);
  }
  const name = path.basename(file);
  const input = {
    language: "Solidity",
    sources: { [name]: { content: fs.readFileSync(file, "utf8") } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  if (errors.length) {
    console.error(errors.map((e) => e.formattedMessage).join("\n"));
    process.exit(1);
  }
  const contracts = {};
  for (const [contractName, out] of Object.entries(output.contracts[name] || {})) {
    contracts[contractName] = { abi: out.abi, bytecode: "0x" + out.evm.bytecode.object };
  }
  process.stdout.write(JSON.stringify({ solcVersion: solc.version(), contracts }));
}

main();
