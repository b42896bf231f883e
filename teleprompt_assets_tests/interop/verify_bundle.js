#!/usr/bin/env node
// Verifies a teleprompt evidence bundle with the real JS libraries: the EAS SDK (off-chain attestation v2)
// and @openzeppelin/merkle-tree (standard-v1 dumps). Independent of the Python verifier on purpose.
//
//   node verify_bundle.js <bundle_dir> [expected_signer]
//
// Prints ONE JSON object: {"ok", "uid", "signer", "checks": {name: bool}, "errors": [...]}.
// Exit status 0 only if every check passed; 1 if any failed; 2 on a usage error.
// CommonJS on purpose: the SDK's ESM build (dist/lib.esm) fails to import under node
// ("Named export 'isEqual' not found ... 'lodash' is a CommonJS module").
'use strict';

const fs = require('fs');
const path = require('path');
const { ethers } = require('ethers');
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
const {
  Offchain,
  OffchainAttestationVersion,
  SchemaEncoder,
  SchemaRegistry,
  ZERO_ADDRESS,
} = require('@ethereum-attestation-service/eas-sdk');

const TREES = [
  // file, attested root field, leaf encoding, attested count field (or null)
  ['eval_tree.json', 'evalRoot', ['bytes32', 'uint256', 'uint256'], 'evalCount'],
  ['data_tree.json', 'dataRoot', ['bytes32'], null],
  ['rewards_tree.json', 'rewardsRoot', ['address', 'uint256'], 'contributorCount'],
];
const REWARDS_TOTAL = 1000000n;

const result = { ok: false, uid: null, signer: null, checks: {}, errors: [] };

function check(name, cond, why) {
  result.checks[name] = Boolean(cond);
  if (!cond) result.errors.push(`${name}: ${typeof why === 'function' ? why() : why}`);
  return Boolean(cond);
}

function fail(name, err) {
  return check(name, false, err && err.message ? err.message.split('\n')[0] : String(err));
}

function readJson(dir, name) {
  return JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
}

function emit(code) {
  result.ok = Object.keys(result.checks).length > 0 && Object.values(result.checks).every(Boolean);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code === undefined ? (result.ok ? 0 : 1) : code);
}

function main() {
  const [dir, expectedSigner] = process.argv.slice(2);
  if (!dir) {
    result.errors.push('usage: node verify_bundle.js <bundle_dir> [expected_signer]');
    emit(2);
  }

  // --- attestation: signature, uid, schema uid -------------------------------------------------------------
  let attestation;
  let schema;
  try {
    attestation = readJson(dir, 'attestation.json');
    check('attestation.read', true);
  } catch (err) {
    fail('attestation.read', err);
  }
  try {
    schema = readJson(dir, 'evaluation.json').schema;
    check('schema.read', typeof schema === 'string' && schema.length > 0, 'evaluation.json has no "schema" string');
  } catch (err) {
    fail('schema.read', err);
  }
  if (!attestation) emit();
  const message = attestation.message || {};
  result.uid = attestation.uid ?? null;

  check('attestation.version', attestation.version === OffchainAttestationVersion.Version2 && Number(message.version) === 2,
    () => `version ${attestation.version} / message.version ${message.version}, expected 2`);

  let offchain = null;
  try {
    const d = attestation.domain;
    offchain = new Offchain({ address: d.verifyingContract, version: d.version, chainId: BigInt(d.chainId) },
      OffchainAttestationVersion.Version2, null);
  } catch (err) {
    fail('attestation.domain', err);
  }

  // Who signed it (informational; the SDK check below is the verdict).
  try {
    const { r, s, v } = attestation.signature;
    const sig = ethers.Signature.from({ r: ethers.hexlify(r), s: ethers.hexlify(s), v }).serialized;
    const domain = { ...attestation.domain, chainId: BigInt(attestation.domain.chainId) };
    result.signer = ethers.verifyTypedData(domain, attestation.types, message, sig);
  } catch (err) {
    result.errors.push(`signer: cannot recover (${err.message.split('\n')[0]})`);
  }

  if (offchain) {
    const attester = expectedSigner || result.signer;
    try {
      check('attestation.signature',
        attester && offchain.verifyOffchainAttestationSignature(attester, attestation),
        () => `EAS SDK rejects the signature for attester ${attester}`);
    } catch (err) {
      fail('attestation.signature', err);
    }
  }
  if (expectedSigner) {
    check('attestation.signer', result.signer !== null && ethers.getAddress(expectedSigner) === result.signer,
      () => `recovered ${result.signer}, expected ${expectedSigner}`);
  }

  try {
    const uid = Offchain.getOffchainUID(OffchainAttestationVersion.Version2, message.schema, message.recipient,
      BigInt(message.time), BigInt(message.expirationTime), message.revocable, message.refUID, message.data, message.salt);
    check('attestation.uid', uid === attestation.uid, () => `recomputed ${uid}, attested ${attestation.uid}`);
  } catch (err) {
    fail('attestation.uid', err);
  }

  if (schema) {
    const schemaUid = SchemaRegistry.getSchemaUID(schema, ZERO_ADDRESS, true);
    check('attestation.schema_uid', String(message.schema).toLowerCase() === schemaUid.toLowerCase(),
      () => `message.schema ${message.schema} is not SchemaRegistry.getSchemaUID(schema) ${schemaUid}`);
  }

  // --- data -----------------------------------------------------------------------------------------------
  let fields = null;
  try {
    const decoded = new SchemaEncoder(schema).decodeData(message.data);
    fields = Object.fromEntries(decoded.map((item) => [item.name, item.value.value]));
    check('data.decodes', true);
  } catch (err) {
    fail('data.decodes', err);
  }

  // --- trees ----------------------------------------------------------------------------------------------
  for (const [file, rootField, encoding, countField] of TREES) {
    const name = file.replace('.json', '');
    let dump;
    let tree = null;
    try {
      dump = readJson(dir, file);
      tree = StandardMerkleTree.load(dump); // validates format and every leaf hash
      check(`${name}.load`, true);
    } catch (err) {
      fail(`${name}.load`, err);
    }
    const encodingSeen = dump && JSON.stringify(dump.leafEncoding);
    check(`${name}.leafEncoding`, encodingSeen === JSON.stringify(encoding),
      () => `leaf encoding ${encodingSeen} is not ${JSON.stringify(encoding)}`);
    const attested = fields ? String(fields[rootField]).toLowerCase() : null;
    check(`${name}.root`, tree !== null && attested !== null && tree.root === attested,
      () => `tree root ${tree && tree.root} != attested ${rootField} ${attested}`);

    // Every leaf's proof from getProof(i) must verify against the *attested* root with the static verifier.
    let proofsOk = tree !== null && attested !== null && dump.values.length > 0;
    let bad = null;
    if (proofsOk) {
      for (let i = 0; i < dump.values.length; i++) {
        let good = false;
        try {
          good = StandardMerkleTree.verify(attested, encoding, dump.values[i].value, tree.getProof(i));
        } catch (err) {
          good = false;
        }
        if (!good) {
          proofsOk = false;
          bad = i;
          break;
        }
      }
    }
    check(`${name}.proofs`, proofsOk,
      () => (bad === null ? 'no tree or no attested root to verify against' : `proof of leaf ${bad} does not verify`));

    if (countField && dump && fields) {
      const attestedCount = BigInt(fields[countField]);
      check(`data.${countField}`, attestedCount === BigInt(dump.values.length),
        () => `attested ${attestedCount}, ${file} has ${dump.values.length} leaves`);
    }
    if (file === 'rewards_tree.json' && dump) {
      let total = null;
      try {
        total = dump.values.reduce((sum, v) => sum + BigInt(v.value[1]), 0n);
      } catch (err) {
        total = null;
      }
      check('rewards.sum', total === REWARDS_TOTAL, () => `weights sum to ${total}, not ${REWARDS_TOTAL}`);
    }
  }
  emit();
}

try {
  main();
} catch (err) {
  result.errors.push(`fatal: ${err && err.stack ? err.stack.split('\n')[0] : String(err)}`);
  result.checks.fatal = false;
  emit(1);
}
