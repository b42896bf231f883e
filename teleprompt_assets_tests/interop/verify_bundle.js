#!/usr/bin/env node
// Verifies a teleprompt evidence bundle with the real JS libraries: the EAS SDK (off-chain attestation v2)
// and @openzeppelin/merkle-tree (standard-v1 dumps). Independent of the Python verifier on purpose.
//
//   node verify_bundle.js <bundle_dir> [expected_signer]
//
// Prints ONE JSON object: {"ok", "uid", "signer", "checks": {name: bool}, "errors": [...]}.
// Exit status 0 only if every check passed; 1 if any failed; 2 on a usage error.
// A bundle is hostile input: only the bundle's own file names are opened, in the folder itself, never
// through a symlink (O_NOFOLLOW) and only as regular files of bounded size. The manifest's entries
// are compared with that list, never opened.
// CommonJS on purpose: the SDK's ESM build (dist/lib.esm) fails to import under node
// ("Named export 'isEqual' not found ... 'lodash' is a CommonJS module").
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { isDeepStrictEqual } = require('util');
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
const PACKAGE = 'offchain_package.json';
const FILES = ['attestation.json', PACKAGE, 'eval_tree.json', 'data_tree.json', 'rewards_tree.json', 'program.json', 'evaluation.json'];
const MAX_FILE_BYTES = 300 * 1000 * 1000 + 4096; // the largest of attest.MAX_FILE_BYTES (the data tree: 1,000,000 leaves × 300 bytes)

const result = { ok: false, uid: null, signer: null, checks: {}, errors: [] };

function check(name, cond, why) {
  result.checks[name] = Boolean(cond);
  if (!cond) result.errors.push(`${name}: ${typeof why === 'function' ? why() : why}`);
  return Boolean(cond);
}

function fail(name, err) {
  return check(name, false, err && err.message ? err.message.split('\n')[0] : String(err));
}

function readFile(dir, name) {
  if (!FILES.includes(name) && name !== 'manifest.json') throw new Error(`${name} is not a bundle file`);
  let fd;
  try {
    fd = fs.openSync(path.join(dir, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    if (err.code === 'ELOOP' || err.code === 'EMLINK') throw new Error(`${name} is a symlink; bundle files are never read through a link`);
    throw err;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${name} is not a regular file`);
    if (st.size > MAX_FILE_BYTES) throw new Error(`${name} is ${st.size} bytes, over ${MAX_FILE_BYTES}`);
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function readJson(dir, name) {
  return JSON.parse(readFile(dir, name).toString('utf8'));
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function checkManifest(dir) {
  let manifest = null;
  try {
    manifest = readJson(dir, 'manifest.json');
    check('manifest.read', isObject(manifest), 'manifest.json is not a JSON object');
  } catch (err) {
    fail('manifest.read', err);
  }
  if (!isObject(manifest)) {
    check('manifest.entries', false, 'no manifest to compare');
    check('manifest.sha256', false, 'no manifest to compare');
    return;
  }
  const strangers = Object.keys(manifest).filter((name) => !FILES.includes(name));
  const absent = FILES.filter((name) => !Object.prototype.hasOwnProperty.call(manifest, name));
  check('manifest.entries', strangers.length === 0 && absent.length === 0,
    () => `entries that are not bundle files (not read): ${JSON.stringify(strangers)}; no entry for: ${JSON.stringify(absent)}`);
  const wrong = [];
  for (const name of FILES) {
    try {
      if (manifest[name] !== crypto.createHash('sha256').update(readFile(dir, name)).digest('hex')) wrong.push(name);
    } catch (err) {
      wrong.push(`${name} (${err.message.split('\n')[0]})`);
    }
  }
  check('manifest.sha256', wrong.length === 0, () => `sha256 does not match for ${wrong.join(', ')}`);
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

  checkManifest(dir);

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
  // --- the SDK's package {sig, signer}: the same attestation, and the attester it names signed it ---------
  let pkg = null;
  try {
    pkg = readJson(dir, PACKAGE);
    check('package.read', isObject(pkg) && JSON.stringify(Object.keys(pkg).sort()) === '["sig","signer"]',
      'offchain_package.json is not exactly {sig, signer}');
  } catch (err) {
    fail('package.read', err);
  }
  const sig = isObject(pkg) ? pkg.sig : undefined;
  check('package.sig', isDeepStrictEqual(sig, attestation), 'offchain_package.json sig is not attestation.json');
  try {
    const signer = isObject(pkg) ? pkg.signer : undefined;
    check('package.signer',
      typeof signer === 'string' && ethers.isAddress(signer) && ethers.getAddress(signer) === signer && offchain !== null
        && offchain.verifyOffchainAttestationSignature(signer, sig)
        && (!expectedSigner || ethers.getAddress(expectedSigner) === signer),
      () => `the EAS SDK does not accept signer ${signer} for the package's sig${expectedSigner ? ` (expected ${expectedSigner})` : ''}`);
  } catch (err) {
    fail('package.signer', err);
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
