// Tests of console/proof.js against docs/vectors (FORMATS.md §1–§10).
// Run: node --test /work/main/crates/quorate-server/console/tests/
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as q from '../proof.js';

const vectorText = (name) => readFileSync(new URL(`../../../../docs/vectors/${name}.json`, import.meta.url), 'utf8');
const vector = (name) => JSON.parse(vectorText(name));
const canonicalV = vector('canonical-json-v1');
const decisionV = vector('decision-v1');
const proofV = vector('proof-v1');
const ed25519V = vector('ed25519-v1');
const historyV = vector('history-v1');
const answerV = vector('attested-answer-v1');

const hex = (s) => q.hexToBytes(s);
const toHex = q.bytesToHex;
const clone = (v) => structuredClone(v);
const failed = (report) => report.steps.filter((s) => !s.ok).map((s) => s.name);
const stepOf = (report, name) => report.steps.find((s) => s.name === name);

/** Every report is well-formed: steps with string name, boolean ok, string detail. */
function assertReportShape(report) {
  assert.equal(typeof report.ok, 'boolean');
  assert.ok(Array.isArray(report.steps) && report.steps.length > 0, 'a report lists its steps');
  for (const s of report.steps) {
    assert.equal(typeof s.name, 'string');
    assert.equal(typeof s.ok, 'boolean');
    assert.equal(typeof s.detail, 'string');
    assert.ok(s.detail.length > 0, `step ${s.name} explains itself`);
  }
  assert.equal(report.ok, report.steps.every((s) => s.ok), 'ok is the conjunction of the steps');
}

// ---- signing with the vectors' seeds (node n: 32 bytes n; publisher: 32 bytes 9) ----

const PKCS8_ED25519 = hex('302e020100300506032b657004220420');
const signers = new Map();
async function signer(n) {
  if (!signers.has(n)) {
    const pkcs8 = new Uint8Array(48);
    pkcs8.set(PKCS8_ED25519);
    pkcs8.fill(n, 16);
    const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign']);
    const jwk = await crypto.subtle.exportKey('jwk', key);
    const pub = new Uint8Array(Buffer.from(jwk.x, 'base64url'));
    signers.set(n, { pub, sign: async (m) => new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key, m)) });
  }
  return signers.get(n);
}

async function signCheckpoint(clusterId, size, root, nodes, voters) {
  const msg = q.checkpointMessage(clusterId, BigInt(size), root);
  const cosignatures = [];
  for (const n of nodes) cosignatures.push({ node_id: n, signature: toHex(await (await signer(n)).sign(msg)) });
  const cp = { cluster_id: clusterId, size, root: toHex(root), cosignatures };
  if (voters) cp.voters = voters;
  return cp;
}

// ---- RFC 9162 reference (FORMATS.md §7 definitions) to generate proofs ----

async function refPath(m, leaves) {
  const n = leaves.length;
  if (n === 1) return [];
  let k = 1;
  while (k * 2 < n) k *= 2;
  if (m < k) return [...await refPath(m, leaves.slice(0, k)), await q.merkleRoot(leaves.slice(k))];
  return [...await refPath(m - k, leaves.slice(k)), await q.merkleRoot(leaves.slice(0, k))];
}

async function refSubproof(m, leaves, b) {
  const n = leaves.length;
  if (m === n) return b ? [] : [await q.merkleRoot(leaves)];
  let k = 1;
  while (k * 2 < n) k *= 2;
  if (m <= k) return [...await refSubproof(m, leaves.slice(0, k), b), await q.merkleRoot(leaves.slice(k))];
  return [...await refSubproof(m - k, leaves.slice(k), false), await q.merkleRoot(leaves.slice(0, k))];
}

// ---- synthetic records, hashed by the library itself ----

async function makeRecords(count, salt = '') {
  const out = [];
  let prev = '0'.repeat(64);
  for (let i = 1; i <= count; i++) {
    const r = {
      index: i, log_index: i + 3,
      request: { domain: 'demo', request_id: `req-${i}${salt}`, principal: 'User::"alice"', action: 'Action::"read"', resource: `Doc::"${i}"`, context: '{}', entities: null, parent: null, trace_id: null },
      decision: i % 2 ? 'ALLOW' : 'DENY', reason: i % 2 ? null : 'POLICY',
      determining_policies: i % 2 ? ['policy0'] : [], errors: [],
      policy_version: 1, policy_hash: proofV.receipt.record.policy_hash,
      timestamp_ms: 1764150000000 + i, prev_hash: prev, hash: '0'.repeat(64),
    };
    r.hash = toHex(await q.recordHash(r));
    prev = r.hash;
    out.push(r);
  }
  return out;
}

// ---------------------------------------------------------------------------

describe('environment', () => {
  test('WebCrypto has SHA-256 and Ed25519 (Node 20 needs no flag)', async () => {
    assert.ok(globalThis.crypto?.subtle, 'crypto.subtle');
    const k = await crypto.subtle.importKey('raw', hex(proofV.trust.nodes[0].public_key), { name: 'Ed25519' }, false, ['verify']);
    assert.equal(k.algorithm.name, 'Ed25519');
  });

  test('the vector seeds give the trust files\' keys', async () => {
    for (const n of proofV.trust.nodes) assert.equal(toHex((await signer(n.node_id)).pub), n.public_key);
    assert.equal(toHex((await signer(9)).pub), proofV.trust.publishers[0].public_key);
  });
});

describe('§1 primitives and the strict JSON reader', () => {
  test('hex: either case in, lowercase out, anything else refused', () => {
    assert.deepEqual([...hex('00ffAb')], [0, 255, 171]);
    assert.equal(toHex(new Uint8Array([0, 255, 171])), '00ffab');
    for (const bad of ['0', 'zz', '0x00', ' 00', 'ab cd']) assert.throws(() => hex(bad), q.FormatError);
    assert.throws(() => q.hexToBytes('00', 32), /expected 64 hex characters/);
  });

  test('integers are exact, non-integers are marked, duplicates refused', () => {
    const v = q.parseJson('{"a":18446744073709551615,"b":9007199254740993,"c":1.0,"d":-0,"e":1e3}');
    assert.equal(v.a, 18446744073709551615n);
    assert.equal(v.b, 9007199254740993n);
    assert.ok(v.c instanceof q.JsonFloat && v.d instanceof q.JsonFloat && v.e instanceof q.JsonFloat);
    assert.ok(Object.is(v.d.value, -0));
    assert.throws(() => q.parseJson('{"a":1,"a":1}'), /duplicate key "a"/);
    assert.deepEqual({ ...q.parseJson('{"a":1,"a":2}', { duplicates: 'last' }) }, { a: 2n });
  });

  test('malformed JSON is refused with a position', () => {
    const bad = ['', ' ', '{', '{"a":}', '{"a":1,}', '[1,]', '01', '-', '1.', '.5', '+1', '1e', 'tru', 'nul',
      '"\\x"', '"a\u0001"', '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '{"a":1} x', '\ufeff{}', '1e400',
      '[' .repeat(200) + ']'.repeat(200), "{'a':1}", '{"a" 1}', 'NaN', 'Infinity'];
    for (const b of bad) assert.throws(() => q.parseJson(b), q.FormatError, JSON.stringify(b));
    assert.throws(() => q.parseJson('{"a":1 x}'), /line 1 column 8/);
    assert.throws(() => q.parseJson(new Uint8Array([0x22, 0xff, 0x22])), /not valid UTF-8/);
  });

  test('lone surrogates in JS strings are refused, pairs accepted', () => {
    assert.throws(() => q.utf8('a\ud800'), /lone surrogate/);
    assert.throws(() => q.utf8('\udc00a'), /lone surrogate/);
    assert.throws(() => q.utf8('\ud800\ud800\udc00'), /lone surrogate/);
    assert.deepEqual([...q.utf8('\ud83d\ude00é')], [0xf0, 0x9f, 0x98, 0x80, 0xc3, 0xa9]);
    assert.throws(() => q.parseJson('"a\ud800"'), /lone surrogate/);
  });

  test('"__proto__" is an ordinary key', () => {
    const v = q.parseJson('{"__proto__":{"x":1}}');
    assert.equal(Object.getPrototypeOf(v), null);
    assert.ok(Object.hasOwn(v, '__proto__'));
    assert.equal(q.canonicalJson(v), '{"__proto__":{"x":1}}');
  });
});

describe('§4 canonical JSON', () => {
  test('canonical-json-v1: every input gives the canonical text byte for byte', () => {
    assert.ok(canonicalV.length >= 8);
    for (const { input, canonical } of canonicalV) {
      const kind = input.trimStart().startsWith('[') ? 'entities' : 'context';
      assert.equal(q.canonicalizeJson(input, kind), canonical, input);
      assert.equal(q.canonicalJson(q.parseJson(input, { duplicates: 'last' })), canonical, input);
      assert.deepEqual(Buffer.from(q.canonicalizeJson(input, kind), 'utf8'), Buffer.from(canonical, 'utf8'));
      // Canonical text is a fixed point.
      assert.equal(q.canonicalizeJson(canonical, kind), canonical);
    }
  });

  test('keys sort by UTF-8 bytes, not UTF-16 units', () => {
    // U+FFFF (ef bf bf) sorts before U+1F600 (f0 9f 98 80); JS's default sort says otherwise.
    assert.equal(q.canonicalizeJson('{"😀":1,"\uffff":2,"é":3,"z":4}'), '{"z":4,"é":3,"\uffff":2,"😀":1}');
    assert.equal(q.canonicalJson({ b: [3, { d: 1, c: 2 }], a: 'x' }), '{"a":"x","b":[3,{"c":2,"d":1}]}');
  });

  test('numbers: integers exact, doubles in the shortest §4 form', () => {
    const cases = {
      '9007199254740993': '9007199254740993', '-9223372036854775808': '-9223372036854775808',
      '0.000015': '0.000015', '1.5e-5': '0.000015', '123456789012345678901': '1.2345678901234568e+20',
      '1234567890123456.7': '1234567890123456.8', '1e15': '1000000000000000.0', '-1e-7': '-1e-7',
      '2.5E+3': '2500.0', '1e-5': '0.00001', '0e10': '0.0', '-0.0': '-0.0', '100e-2': '1.0',
    };
    for (const [input, out] of Object.entries(cases)) assert.equal(q.canonicalizeJson(`[${input}]`), `[${out}]`, input);
    assert.equal(q.canonicalJson(-0), '-0.0');
    assert.equal(q.canonicalJson(2.5), '2.5');
    assert.equal(q.canonicalJson(7), '7');
    assert.equal(q.canonicalJson(10n ** 20n), '1e+20');
    assert.throws(() => q.canonicalizeJson('[1e400]'), /out of range/);
    assert.throws(() => q.canonicalJson(NaN));
    assert.throws(() => q.canonicalJson({ a: undefined }));
    assert.throws(() => q.canonicalJson('\ud800'), /lone surrogate/);
  });

  test('the edge rules: blank context is {}, blank entities absent, wrong types refused', () => {
    assert.equal(q.canonicalizeJson('', 'context'), '{}');
    assert.equal(q.canonicalizeJson(' \n\t', 'context'), '{}');
    assert.equal(q.canonicalizeJson('  ', 'entities'), null);
    assert.throws(() => q.canonicalizeJson('[]', 'context'), /object/);
    assert.throws(() => q.canonicalizeJson('{}', 'entities'), /array/);
    assert.equal(q.canonicalizeJson('{"s":"\\u007f\\u2028\\/"}'), '{"s":"\u007f\u2028/"}');
  });
});

describe('§2 decision record', () => {
  test('decision-v1: canonical bytes and hashes', async () => {
    assert.equal(decisionV.length, 2);
    for (const v of decisionV) {
      assert.equal(toHex(q.recordCanonicalBytes(v.record)), v.canonical_hex);
      assert.equal(toHex(await q.recordHash(v.record)), v.hash);
      assert.equal(v.record.hash, v.hash);
      // Read from the strict text path too.
      assert.equal(toHex(await q.recordHash(JSON.stringify(v.record))), v.hash);
    }
  });

  test('history-v1 shadow_record: the shadow section', async () => {
    const v = historyV.shadow_record;
    assert.equal(toHex(q.recordCanonicalBytes(v.record)), v.canonical_hex);
    assert.equal(toHex(await q.recordHash(v.record)), v.hash);
    const bytes = hex(v.canonical_hex);
    const noShadow = clone(v.record);
    delete noShadow.shadow;
    // The shadow section is a pure suffix after prev_hash.
    assert.deepEqual(q.recordCanonicalBytes(noShadow), bytes.slice(0, q.recordCanonicalBytes(noShadow).length));
    assert.equal(toHex(bytes.slice(q.recordCanonicalBytes(noShadow).length, q.recordCanonicalBytes(noShadow).length + 10)), '00000006736861646f77');
  });

  test('the receipts\' records hash to their hash', async () => {
    for (const r of [proofV.receipt.record, historyV.receipt.record, JSON.parse(answerV.answer.receipt_json).record]) {
      assert.equal(toHex(await q.recordHash(r)), r.hash);
    }
  });

  test('absent values: null and omitted are one; "" is not null', async () => {
    const base = decisionV[0].record;
    const h = toHex(await q.recordHash(base));
    const omitted = clone(base);
    delete omitted.reason; delete omitted.request.entities; delete omitted.request.parent; delete omitted.request.trace_id;
    assert.equal(toHex(await q.recordHash(omitted)), h);
    assert.equal(toHex(await q.recordHash({ ...clone(base), shadow: null })), h);
    assert.equal(toHex(await q.recordHash({ ...clone(base), policy_version: 0, policy_hash: null })),
      toHex(await q.recordHash({ ...clone(base), policy_version: null, policy_hash: '0'.repeat(64) })));
    for (const f of ['entities', 'parent', 'trace_id']) {
      const r = clone(base);
      r.request[f] = '';
      assert.notEqual(toHex(await q.recordHash(r)), h, `${f} "" differs from null`);
    }
    await assert.rejects(q.recordHash({ ...clone(base), reason: '' }), /reason code/);
    await assert.rejects(q.recordHash({ ...clone(base), index: 1.5 }), /integer/);
    await assert.rejects(q.recordHash({ ...clone(base), index: 2 ** 60 }), /beyond 2\^53/);
    await assert.rejects(q.recordHash(JSON.stringify(base).replace('"index":1', '"index":1.0')), /record\.index: expected an integer, got the non-integer number 1/);
  });

  test('lists are hashed in the order given', async () => {
    const r = clone(decisionV[0].record);
    r.determining_policies = ['b', 'a'];
    const x = toHex(await q.recordHash(r));
    r.determining_policies = ['a', 'b'];
    assert.notEqual(toHex(await q.recordHash(r)), x);
  });

  test('§3 policy content hash and §9 policy signatures', async () => {
    for (const p of proofV.policy_signatures) {
      assert.equal(toHex(q.policySignatureMessage(p.policy_text, p.schema)), p.message_hex);
      const v = await q.verifyEd25519(hex(p.public_key), hex(p.message_hex), hex(p.signature));
      assert.ok(v.ok, v.detail);
    }
    assert.equal(toHex(await q.policyContentHash(proofV.policy_signatures[0].policy_text, null)), decisionV[0].record.policy_hash);
  });
});

describe('§7 Merkle tree', () => {
  const m = proofV.merkle;
  const leafData = m.tree.leaf_data.map(hex);

  test('leaf_hash, node_hash, the empty root', async () => {
    for (const v of m.leaf_hash) assert.equal(toHex(await q.leafHash(hex(v.data))), v.hash);
    for (const v of m.node_hash) assert.equal(toHex(await q.nodeHash(hex(v.left), hex(v.right))), v.hash);
    assert.equal(toHex(await q.merkleRoot([])), m.empty_root);
  });

  test('roots at every size 0..7', async () => {
    for (let n = 0; n <= 7; n++) assert.equal(toHex(await q.merkleRoot(leafData.slice(0, n))), m.tree.roots[n], `size ${n}`);
    for (let i = 0; i < 7; i++) assert.equal(toHex(await q.leafHash(leafData[i])), m.tree.leaf_hashes[i]);
  });

  test('inclusion proofs verify, and nothing else does', async () => {
    for (const v of m.tree.inclusion) {
      const leaf = hex(m.tree.leaf_hashes[v.leaf_index]);
      const root = hex(m.tree.roots[v.tree_size]);
      const proof = v.proof.map(hex);
      const ok = await q.verifyInclusion(leaf, v.leaf_index, v.tree_size, proof, root);
      assert.ok(ok.ok, ok.detail);
      assert.equal(q.inclusionProofLength(v.leaf_index, v.tree_size), proof.length);
      // Every bit of every proof hash matters.
      for (let i = 0; i < proof.length; i++) {
        for (const bit of [0, 77, 255]) {
          const bad = proof.map((p) => p.slice());
          bad[i][bit >> 3] ^= 1 << (bit & 7);
          assert.equal((await q.verifyInclusion(leaf, v.leaf_index, v.tree_size, bad, root)).ok, false);
        }
      }
      assert.equal((await q.verifyInclusion(leaf, v.leaf_index, v.tree_size, [...proof, proof[0] ?? leaf], root)).ok, false);
      if (proof.length) assert.equal((await q.verifyInclusion(leaf, v.leaf_index, v.tree_size, proof.slice(1), root)).ok, false);
      assert.equal((await q.verifyInclusion(leaf, v.leaf_index + 1, v.tree_size, proof, root)).ok, false);
      // (A larger tree_size with the same root is not asserted to fail: leaf 0 of 7 has the
      // same audit path in a tree of 8. Size and root are bound together by the signatures.)
    }
  });

  test('inclusion failures say what is wrong', async () => {
    const v = m.tree.inclusion.find((x) => x.leaf_index === 2);
    const r = await q.verifyInclusion(hex(m.tree.leaf_hashes[2]), 2n, 7n, v.proof.slice(1).map(hex), hex(m.tree.roots[7]));
    assert.equal(r.detail, 'inclusion proof has 2 hashes; leaf index 2 of a tree of size 7 needs exactly 3');
    const out = await q.verifyInclusion(hex(m.tree.leaf_hashes[2]), 7n, 7n, [], hex(m.tree.roots[7]));
    assert.match(out.detail, /out of range/);
  });

  test('consistency proofs verify, and nothing else does', async () => {
    for (const v of m.tree.consistency) {
      const o = hex(m.tree.roots[v.old_size]), n = hex(m.tree.roots[v.new_size]);
      const proof = v.proof.map(hex);
      const ok = await q.verifyConsistencyProof(v.old_size, v.new_size, o, n, proof);
      assert.ok(ok.ok, ok.detail);
      if (v.old_size < v.new_size) assert.equal(q.consistencyProofLength(v.old_size, v.new_size), proof.length);
      for (let i = 0; i < proof.length; i++) {
        const bad = proof.map((p) => p.slice());
        bad[i][3] ^= 0x10;
        assert.equal((await q.verifyConsistencyProof(v.old_size, v.new_size, o, n, bad)).ok, false);
      }
      assert.equal((await q.verifyConsistencyProof(v.old_size, v.new_size, n, o, proof)).ok, v.old_size === v.new_size);
      assert.equal((await q.verifyConsistencyProof(v.old_size, v.new_size, o, n, [...proof, o])).ok, false);
      if (proof.length) assert.equal((await q.verifyConsistencyProof(v.old_size, v.new_size, o, n, proof.slice(0, -1))).ok, false);
    }
    assert.equal((await q.verifyConsistencyProof(0, 3, hex(m.tree.roots[0]), hex(m.tree.roots[3]), [])).ok, false);
    assert.equal((await q.verifyConsistencyProof(4, 3, hex(m.tree.roots[4]), hex(m.tree.roots[3]), [])).ok, false);
  });

  test('every proof of every tree up to 17 leaves (RFC 9162 reference)', async () => {
    const leaves = Array.from({ length: 17 }, (_, i) => new Uint8Array(32).fill(i + 1));
    const roots = [];
    for (let n = 0; n <= 17; n++) roots.push(await q.merkleRoot(leaves.slice(0, n)));
    for (let n = 1; n <= 17; n++) {
      const tree = leaves.slice(0, n);
      for (let i = 0; i < n; i++) {
        const proof = await refPath(i, tree);
        assert.equal(q.inclusionProofLength(i, n), proof.length);
        const r = await q.verifyInclusion(await q.leafHash(leaves[i]), i, n, proof, roots[n]);
        assert.ok(r.ok, `${i} of ${n}: ${r.detail}`);
        assert.equal((await q.verifyInclusion(await q.leafHash(leaves[(i + 1) % 17]), i, n, proof, roots[n])).ok, false);
      }
      for (let o = 1; o <= n; o++) {
        const proof = await refSubproof(o, tree, true);
        if (o < n) assert.equal(q.consistencyProofLength(o, n), proof.length);
        const r = await q.verifyConsistencyProof(o, n, roots[o], roots[n], proof);
        assert.ok(r.ok, `${o} -> ${n}: ${r.detail}`);
        if (o < n) assert.equal((await q.verifyConsistencyProof(o, n, roots[o - 1] ?? roots[0], roots[n], proof)).ok, false);
      }
    }
  });

  test('sizes near 2^64 are exact (BigInt)', async () => {
    const n = (1n << 64n) - 1n;
    assert.equal(q.inclusionProofLength(n - 1n, n), 63); // one sibling per split, 2^63, 2^62, ..., 1
    assert.equal(q.inclusionProofLength(0n, n), 64);
    assert.equal(q.inclusionProofLength(0n, 1n << 63n), 63);
    // Length-only versions of the §7 PATH and SUBPROOF recursions, in BigInt.
    const split = (x) => { let k = 1n; while (k * 2n < x) k *= 2n; return k; };
    const pathLen = (i, x) => (x === 1n ? 0 : 1 + (i < split(x) ? pathLen(i, split(x)) : pathLen(i - split(x), x - split(x))));
    const subLen = (o, x, b) => (o === x ? (b ? 0 : 1) : 1 + (o <= split(x) ? subLen(o, split(x), b) : subLen(o - split(x), x - split(x), false)));
    for (const [i, size] of [[n - 1n, n], [0n, n], [12345678901234567n, n], [(1n << 63n) + 5n, n], [7n, 1n << 63n]]) {
      assert.equal(q.inclusionProofLength(i, size), pathLen(i, size), `${i} of ${size}`);
    }
    for (const [o, size] of [[1n << 62n, n], [3n, 1n << 63n], [n - 1n, n], [(1n << 63n) + 1n, n], [99999999999n, n]]) {
      assert.equal(q.consistencyProofLength(o, size), subLen(o, size, true), `${o} -> ${size}`);
    }
    const r = await q.verifyInclusion(new Uint8Array(32), n, n, [], new Uint8Array(32));
    assert.equal(r.detail, `leaf index ${n} is out of range for a tree of size ${n}`);
  });
});

describe('§8 Ed25519 (verify_strict)', () => {
  test('ed25519-v1 signatures', async () => {
    assert.equal(ed25519V.signatures.length, 3);
    for (const s of ed25519V.signatures) {
      const r = await q.verifyEd25519(hex(s.public_key), hex(s.message_hex), hex(s.signature));
      assert.equal(r.ok, s.verifies, `${s.why}: ${r.detail}`);
    }
  });

  test('the small-order signature is refused here even though WebCrypto (OpenSSL) accepts it', async () => {
    const s = ed25519V.signatures.find((x) => x.why.includes('small order'));
    const key = await crypto.subtle.importKey('raw', hex(s.public_key), { name: 'Ed25519' }, false, ['verify']);
    const raw = await crypto.subtle.verify({ name: 'Ed25519' }, key, hex(s.signature), hex(s.message_hex));
    // Whatever this WebCrypto says, the library refuses (§8 step 4).
    assert.equal(typeof raw, 'boolean');
    assert.equal((await q.verifyEd25519(hex(s.public_key), hex(s.message_hex), hex(s.signature))).ok, false);
  });

  test('ed25519-v1 public keys: decoding and small order', () => {
    for (const k of ed25519V.public_keys) {
      const r = q.inspectEd25519Point(hex(k.public_key));
      assert.equal(r.decodes, k.decodes, k.why);
      if (k.decodes) assert.equal(r.smallOrder, k.small_order, k.why);
    }
  });

  test('checkpoint_signature: the signed bytes and the signature', async () => {
    const c = proofV.checkpoint_signature;
    assert.equal(toHex(q.checkpointMessage(c.cluster_id, BigInt(c.size), hex(c.root))), c.message_hex);
    assert.ok((await q.verifyEd25519(hex(c.public_key), hex(c.message_hex), hex(c.signature))).ok);
    // Deterministic signing reproduces it from the seed.
    assert.equal(toHex(await (await signer(1)).sign(hex(c.message_hex))), c.signature);
    // Any flipped bit of the signature, key or message fails.
    for (const [what, i] of [['sig', 0], ['sig', 31], ['sig', 32], ['sig', 63], ['msg', 0], ['msg', 72], ['key', 0], ['key', 31]]) {
      const sig = hex(c.signature), msg = hex(c.message_hex), key = hex(c.public_key);
      ({ sig, msg, key })[what][i] ^= 0x04;
      assert.equal((await q.verifyEd25519(key, msg, sig)).ok, false, `${what}[${i}]`);
    }
  });

  test('non-canonical keys are refused (FORMATS.md §8 allows it); malformed lengths too', async () => {
    const c = proofV.checkpoint_signature;
    const nonCanonical = hex(ed25519V.public_keys.find((k) => k.why.startsWith('y = p + 3,')).public_key);
    assert.match((await q.verifyEd25519(nonCanonical, hex(c.message_hex), hex(c.signature))).detail, /not canonically encoded/);
    assert.equal((await q.verifyEd25519(new Uint8Array(31), hex(c.message_hex), hex(c.signature))).ok, false);
    assert.equal((await q.verifyEd25519(hex(c.public_key), hex(c.message_hex), new Uint8Array(63))).ok, false);
    assert.equal((await q.verifyEd25519('nope', 'x', null)).ok, false);
  });
});

describe('§8 checkpoints and §10 trust files', () => {
  test('history-v1 checkpoints: final or not, for the stated reason', async () => {
    assert.equal(historyV.checkpoints.length, 7);
    const expectedFailure = {
      unknown_voter_set: ['checkpoint judges', 'cosignatures', 'quorum'],
      not_final: ['quorum'],
    };
    for (const c of historyV.checkpoints) {
      const r = await q.verifyCheckpoint(c.checkpoint, historyV.trust);
      assertReportShape(r);
      assert.equal(r.ok, c.verifies, `${c.why}: ${JSON.stringify(failed(r))}`);
      if (c.error === 'bad_cosignature') {
        assert.ok(failed(r).some((n) => n.startsWith('cosignature node')), c.why);
        assert.deepEqual(failed(r).filter((n) => !n.startsWith('cosignature node')), ['quorum']);
      } else if (c.error) {
        assert.deepEqual(failed(r), expectedFailure[c.error], c.why);
      }
      // The text path agrees.
      assert.equal((await q.verifyCheckpoint(JSON.stringify(c.checkpoint), JSON.stringify(historyV.trust))).ok, c.verifies);
    }
  });

  test('proof-v1 checkpoints are final', async () => {
    for (const cp of [proofV.old_checkpoint, proofV.receipt.checkpoint, proofV.consistency_bundle.checkpoint]) {
      const r = await q.verifyCheckpoint(cp, proofV.trust);
      assert.ok(r.ok, JSON.stringify(failed(r)));
    }
  });

  test('a validly signed checkpoint of another cluster fails only the cluster step', async () => {
    const root = hex(proofV.receipt.checkpoint.root);
    const cp = await signCheckpoint('other-cluster', 7, root, [1, 2]);
    const r = await q.verifyCheckpoint(cp, proofV.trust);
    assert.deepEqual(failed(r), ['checkpoint cluster']);
  });

  test('majority rule: floor(judges/2)+1 of the judges, each distinct, each valid', async () => {
    const root = hex(proofV.receipt.checkpoint.root);
    const t = proofV.trust; // voters 1, 2, 3; node 4 a learner
    const cases = [
      [[1, 2], true], [[3, 1], true], [[1, 2, 3], true], [[1], false], [[], false],
      [[1, 1], false], [[1, 4], false], [[1, 2, 4], false],
    ];
    for (const [nodes, ok] of cases) {
      const r = await q.verifyCheckpoint(await signCheckpoint('vectors', 7, root, nodes), t);
      assert.equal(r.ok, ok, `${nodes}: ${JSON.stringify(failed(r))}`);
    }
    const quorum = stepOf(await q.verifyCheckpoint(await signCheckpoint('vectors', 7, root, [2]), t), 'quorum');
    assert.equal(quorum.detail, '1 of 3 judges cosigned size 7; 2 needed');
    // Four voters need three.
    const four = clone(t);
    four.nodes[3].voter = true;
    assert.equal((await q.verifyCheckpoint(await signCheckpoint('vectors', 7, root, [1, 2]), four)).ok, false);
    assert.equal((await q.verifyCheckpoint(await signCheckpoint('vectors', 7, root, [1, 2, 4]), four)).ok, true);
  });

  test('voter sets: named sets, until_size, trust files without voter sets', async () => {
    const t = historyV.trust;
    const root = hex(historyV.receipt.checkpoint.root);
    const ok = async (cp, trust = t) => (await q.verifyCheckpoint(cp, trust)).ok;
    assert.equal(await ok(await signCheckpoint('vectors', 3, root, [1, 3], [1, 2, 3])), true, 'first era at its last size');
    assert.equal(await ok(await signCheckpoint('vectors', 4, root, [1, 3], [1, 2, 3])), false, 'first era past until_size');
    assert.equal(await ok(await signCheckpoint('vectors', 4, root, [1, 3], [3, 2, 1, 1])), false);
    assert.equal(await ok(await signCheckpoint('vectors', 3, root, [1, 3], [3, 2, 1, 1])), true, 'named voters are sorted and deduplicated');
    assert.equal(await ok(await signCheckpoint('vectors', 9, root, [1, 4], [])), true, '[] means none named: current voters');
    const noSets = clone(t);
    delete noSets.voter_sets;
    assert.equal(await ok(await signCheckpoint('vectors', 9, root, [1, 4], [1, 2, 4]), noSets), true, 'named = current voters');
    assert.equal(await ok(await signCheckpoint('vectors', 3, root, [1, 3], [1, 2, 3]), noSets), false);
    const unsorted = clone(t);
    unsorted.voter_sets[1].voters = [4, 2, 1];
    assert.equal(await ok(await signCheckpoint('vectors', 9, root, [1, 4], [1, 2, 4]), unsorted), false, 'a set listed unsorted matches nothing');
  });

  test('unusable trust files fail the trust step', async () => {
    const cp = proofV.receipt.checkpoint;
    const mutate = (f) => { const t = clone(proofV.trust); f(t); return t; };
    const cases = {
      'format': mutate((t) => { t.format = 'quorate-trust/v2'; }),
      'no voters': mutate((t) => { t.nodes.forEach((n) => { n.voter = false; }); }),
      'duplicate id': mutate((t) => { t.nodes[3].node_id = 1; }),
      'duplicate key (other case)': mutate((t) => { t.nodes[3].public_key = t.nodes[0].public_key.toUpperCase(); }),
      'voter set with unknown node': mutate((t) => { t.voter_sets = [{ voters: [1, 9], until_size: null }]; }),
      'empty voter set': mutate((t) => { t.voter_sets = [{ voters: [], until_size: null }]; }),
      'null voter_sets': mutate((t) => { t.voter_sets = null; }),
      'null publishers': mutate((t) => { t.publishers = null; }),
      'null region': mutate((t) => { t.nodes[0].region = null; }),
      'bad key hex': mutate((t) => { t.nodes[0].public_key = t.nodes[0].public_key.slice(2); }),
      'voter not bool': mutate((t) => { t.nodes[0].voter = 1; }),
      'missing nodes': mutate((t) => { delete t.nodes; }),
    };
    for (const [why, t] of Object.entries(cases)) {
      const r = await q.verifyCheckpoint(cp, t);
      assertReportShape(r);
      assert.equal(r.ok, false, why);
      assert.equal(stepOf(r, 'trust file').ok, false, why);
    }
    // Accepted spellings: region and publishers omitted, voter_sets [], key hex with spaces and uppercase.
    const lenient = mutate((t) => {
      delete t.publishers; delete t.nodes[0].region; t.voter_sets = [];
      t.nodes[1].public_key = `  ${t.nodes[1].public_key.toUpperCase()}\n`;
    });
    assert.ok((await q.verifyCheckpoint(cp, lenient)).ok);
    assert.equal((await q.verifyCheckpoint(cp, '{"format":"quorate-trust/v1","format":"x"}')).ok, false);
  });
});

describe('§10 receipts', () => {
  const receipts = [
    ['proof-v1', proofV.receipt, proofV.trust],
    ['history-v1 (shadowed record, second voter era)', historyV.receipt, historyV.trust],
    ['attested-answer-v1 receipt_json', answerV.answer.receipt_json, answerV.trust],
  ];

  test('the vector receipts verify, as objects and as text', async () => {
    for (const [name, receipt, trust] of receipts) {
      for (const input of [receipt, typeof receipt === 'string' ? receipt : JSON.stringify(receipt), JSON.stringify(typeof receipt === 'string' ? JSON.parse(receipt) : receipt, null, 2)]) {
        const r = await q.verifyReceipt(input, trust);
        assertReportShape(r);
        assert.ok(r.ok, `${name}: ${JSON.stringify(r.steps.filter((s) => !s.ok))}`);
      }
    }
  });

  test('the steps are listed in the order of §10 and §8', async () => {
    const r = await q.verifyReceipt(proofV.receipt, proofV.trust);
    assert.deepEqual(r.steps.map((s) => s.name), [
      'trust file', 'receipt fields', 'receipt format', 'record hash', 'record covered', 'inclusion proof',
      'checkpoint cluster', 'checkpoint judges', 'cosignature node 1', 'cosignature node 3', 'quorum',
    ]);
    assert.deepEqual(r.summary.checkpoint.judges, ['1', '2', '3']);
    assert.equal(r.summary.index, '2');
    assert.equal(r.summary.decision, 'DENY');
    const h = await q.verifyReceipt(historyV.receipt, historyV.trust);
    assert.match(stepOf(h, 'checkpoint judges').detail, /\[1, 2, 4\]/);
  });

  test('attested-answer-v1: the tampered copy fails at node 1\'s cosignature', async () => {
    assert.equal(answerV.tampered_receipt_json.length, answerV.answer.receipt_json.length);
    const r = await q.verifyReceipt(answerV.tampered_receipt_json, answerV.trust);
    assertReportShape(r);
    assert.equal(r.ok, false);
    assert.deepEqual(failed(r), ['cosignature node 1', 'quorum']);
  });

  test('wrong trust file: other cluster, other key, other voters', async () => {
    const other = (f) => { const t = clone(proofV.trust); f(t); return t; };
    const k5 = toHex((await signer(5)).pub);
    const cases = [
      ['other cluster id', other((t) => { t.cluster_id = 'vectors2'; }), ['checkpoint cluster']],
      ['other key for node 1', other((t) => { t.nodes[0].public_key = k5; }), ['cosignature node 1', 'quorum']],
      ['other key for node 3', other((t) => { t.nodes[2].public_key = k5; }), ['cosignature node 3', 'quorum']],
      ['node 3 not a voter', other((t) => { t.nodes[2].voter = false; }), ['cosignature node 3', 'quorum']],
      ['node 1 missing', other((t) => { t.nodes.splice(0, 1); }), ['cosignature node 1', 'quorum']],
      ['four voters', other((t) => { t.nodes[3].voter = true; }), ['quorum']],
      ['history trust (other voters)', historyV.trust, ['cosignature node 3', 'quorum']],
    ];
    for (const [why, trust, expected] of cases) {
      const r = await q.verifyReceipt(proofV.receipt, trust);
      assertReportShape(r);
      assert.equal(r.ok, false, why);
      assert.deepEqual(failed(r), expected, why);
    }
    // The proof-v1 trust has no voter sets: the history receipt names [1,2,4], not its current voters.
    assert.deepEqual(failed(await q.verifyReceipt(historyV.receipt, proofV.trust)), ['checkpoint judges', 'cosignatures', 'quorum']);
  });

  test('too few, duplicate or foreign cosignatures fail', async () => {
    const edit = (f) => { const r = clone(proofV.receipt); f(r.checkpoint.cosignatures, r); return r; };
    const cases = [
      ['one of three', edit((c) => c.splice(1, 1)), ['quorum']],
      ['none', edit((c) => c.splice(0)), ['quorum']],
      ['node 1 twice', edit((c) => { c[1] = clone(c[0]); }), ['cosignature node 1', 'quorum']],
      ['node 3 relabelled as node 2', edit((c) => { c[1].node_id = 2; }), ['cosignature node 2', 'quorum']],
      ['learner node 4', edit((c) => { c.push({ node_id: 4, signature: c[0].signature }); }), ['cosignature node 4', 'quorum']],
    ];
    for (const [why, receipt, expected] of cases) {
      const r = await q.verifyReceipt(receipt, proofV.trust);
      assert.deepEqual(failed(r), expected, why);
    }
    const fewer = clone(historyV.receipt);
    fewer.checkpoint.cosignatures.splice(0, 1);
    assert.ok((await q.verifyReceipt(fewer, historyV.trust)).ok, '2 of 3 still final');
    fewer.checkpoint.cosignatures.splice(0, 1);
    assert.deepEqual(failed(await q.verifyReceipt(fewer, historyV.trust)), ['quorum']);
  });

  test('receipt-level failures: format, coverage, proof length, record hash', async () => {
    const edit = (f) => { const r = clone(proofV.receipt); f(r); return r; };
    const cases = [
      ['format', edit((r) => { r.format = 'quorate-receipt/v2'; }), ['receipt format']],
      ['index beyond size', edit((r) => { r.checkpoint.size = 1; }), ['record covered', 'inclusion proof', 'cosignature node 1', 'cosignature node 3', 'quorum']],
      ['index 0', edit((r) => { r.record.index = 0; }), ['record hash', 'record covered', 'inclusion proof']],
      ['short proof', edit((r) => { r.inclusion_proof.pop(); }), ['inclusion proof']],
      ['long proof', edit((r) => { r.inclusion_proof.push(r.inclusion_proof[0]); }), ['inclusion proof']],
      ['swapped proof', edit((r) => { r.inclusion_proof.reverse(); }), ['inclusion proof']],
      // The claimed hash is still the leaf, so only the hash step notices (§10 step 4 uses record.hash).
      ['record field', edit((r) => { r.record.timestamp_ms += 1; }), ['record hash']],
      ['record hash field', edit((r) => { r.record.hash = r.record.prev_hash; }), ['record hash', 'inclusion proof']],
      ['other record, own hash', edit((r) => { r.record = decisionV[0].record; }), ['inclusion proof']],
    ];
    for (const [why, receipt, expected] of cases) {
      const r = await q.verifyReceipt(receipt, proofV.trust);
      assert.deepEqual(failed(r), expected, why);
    }
    const short = await q.verifyReceipt(edit((r) => { r.inclusion_proof.pop(); }), proofV.trust);
    assert.equal(stepOf(short, 'inclusion proof').detail, 'inclusion proof has 2 hashes; leaf index 1 of a tree of size 7 needs exactly 3');
  });

  test('§1 spellings a reader must accept', async () => {
    const text = JSON.stringify(proofV.receipt);
    const variants = {
      'uppercase digest': text.replace(proofV.receipt.record.prev_hash, proofV.receipt.record.prev_hash.toUpperCase()),
      'uppercase signature with spaces': text.replace(proofV.receipt.checkpoint.cosignatures[0].signature, ` ${proofV.receipt.checkpoint.cosignatures[0].signature.toUpperCase()}\\t\\n`),
      'unknown keys': text.replace('{"format"', '{"extra":{"x":[1,2.5]},"format"').replace('"index":2', '"index":2,"note":"hi"'),
      'voters []': text.replace('"size":7', '"size":7,"voters":[]'),
      'reordered keys': JSON.stringify(Object.fromEntries(Object.entries(proofV.receipt).reverse())),
      'whitespace': JSON.stringify(proofV.receipt, null, '\t').replace(/\n/g, '\r\n'),
    };
    for (const [why, t] of Object.entries(variants)) {
      const r = await q.verifyReceipt(t, proofV.trust);
      assert.ok(r.ok, `${why}: ${JSON.stringify(r.steps.filter((s) => !s.ok))}`);
    }
    const omitted = JSON.parse(answerV.answer.receipt_json);
    delete omitted.record.reason; delete omitted.record.request.parent;
    assert.ok((await q.verifyReceipt(omitted, answerV.trust)).ok, 'omitted nullable fields');
  });

  test('integers must be integers in 0..=2^64-1; duplicates refused', async () => {
    const text = JSON.stringify(proofV.receipt);
    const bad = {
      'size 7.0': text.replace('"size":7', '"size":7.0'),
      'size 7e0': text.replace('"size":7', '"size":7e0'),
      'size 2^64+7': text.replace('"size":7', '"size":18446744073709551623'),
      'size -7': text.replace('"size":7', '"size":-7'),
      'size "7"': text.replace('"size":7', '"size":"7"'),
      'node_id 1.0': text.replace('"node_id":1', '"node_id":1.0'),
      'index -0': text.replace('"index":2', '"index":-0'),
      'duplicate size': text.replace('"size":7', '"size":7,"size":7'),
      'duplicate unknown key': text.replace('"size":7', '"x":1,"size":7,"x":1'),
      'null cosignatures': text.replace(/"cosignatures":\[.*?\]/, '"cosignatures":null'),
      'null voters': text.replace('"size":7', '"size":7,"voters":null'),
      'null inclusion_proof': text.replace(/"inclusion_proof":\[.*?\]/, '"inclusion_proof":null'),
      'null context': text.replace('"context":"{\\"approved\\":true}"', '"context":null'),
      'reason ""': text.replace('"reason":"POLICY"', '"reason":""'),
      'decision deny': text.replace('"decision":"DENY"', '"decision":"deny"'),
      'digest with space': text.replace(`"${proofV.receipt.record.prev_hash}"`, `" ${proofV.receipt.record.prev_hash}"`),
    };
    for (const [why, t] of Object.entries(bad)) {
      assert.notEqual(t, text, why);
      const r = await q.verifyReceipt(t, proofV.trust);
      assertReportShape(r);
      assert.equal(r.ok, false, why);
    }
    // Precision: an object whose integers JSON.parse rounded is refused, not misread.
    const big = clone(proofV.receipt);
    big.record.timestamp_ms = 2 ** 60;
    assert.match(stepOf(await q.verifyReceipt(big, proofV.trust), 'receipt fields').detail, /beyond 2\^53/);
  });

  test('never throws on malformed input', async () => {
    const deep = '['.repeat(100000) + ']'.repeat(100000);
    const hugeProof = clone(proofV.receipt);
    hugeProof.inclusion_proof = Array(100000).fill(hugeProof.inclusion_proof[0]);
    const manyCosigs = clone(proofV.receipt);
    manyCosigs.checkpoint.cosignatures = Array(10000).fill(manyCosigs.checkpoint.cosignatures[0]);
    const hostile = new Proxy({}, { get() { throw new Error('boom'); }, getOwnPropertyDescriptor() { throw new Error('boom'); }, has() { throw new Error('boom'); } });
    const inputs = [undefined, null, 0, 1n, true, '', ' ', '{}', '[]', 'null', '"x"', [], {}, deep, hostile,
      new Uint8Array([0xff]), new ArrayBuffer(0), { format: 'quorate-receipt/v1' },
      { ...clone(proofV.receipt), record: null }, { ...clone(proofV.receipt), checkpoint: [] },
      { ...clone(proofV.receipt), inclusion_proof: ['zz'] }, hugeProof, manyCosigs,
      JSON.stringify(proofV.receipt).slice(0, -1), JSON.stringify(proofV.receipt) + 'x',
      { ...clone(proofV.receipt), record: { ...clone(proofV.receipt.record), request: 'x' } },
      { ...clone(proofV.receipt), record: { ...clone(proofV.receipt.record), shadow: {} } },
      { ...clone(proofV.receipt), record: { ...clone(proofV.receipt.record), request: { ...proofV.receipt.record.request, domain: '\ud800' } } }];
    const trusts = [proofV.trust, undefined, null, 'x', {}, hostile, deep];
    for (const input of inputs) {
      for (const trust of trusts) {
        const r = await q.verifyReceipt(input, trust);
        assertReportShape(r);
        assert.equal(r.ok, false);
      }
    }
    const few = await q.verifyReceipt(manyCosigs, proofV.trust);
    assert.ok(few.steps.some((s) => /cosigns twice/.test(s.detail)));
  });

  test('synthetic receipts for every index of trees of 1..9 records', async () => {
    const records = await makeRecords(9);
    const leaves = records.map((r) => hex(r.hash));
    for (let n = 1; n <= 9; n++) {
      const root = await q.merkleRoot(leaves.slice(0, n));
      const checkpoint = await signCheckpoint('vectors', n, root, [2, 3]);
      for (let i = 0; i < n; i++) {
        const receipt = { format: 'quorate-receipt/v1', record: records[i], inclusion_proof: (await refPath(i, leaves.slice(0, n))).map(toHex), checkpoint };
        const r = await q.verifyReceipt(JSON.stringify(receipt), proofV.trust);
        assert.ok(r.ok, `record ${i + 1} of ${n}: ${JSON.stringify(r.steps.filter((s) => !s.ok))}`);
        if (n > 1) {
          const wrong = { ...receipt, record: records[(i + 1) % n] };
          assert.equal((await q.verifyReceipt(wrong, proofV.trust)).ok, false);
        }
      }
    }
  });
});

// ---- one-byte edits --------------------------------------------------------
//
// FORMATS.md §1 makes some one-byte edits meaningless on purpose: hex case
// (readers accept uppercase), renaming the key of a field whose value is null
// (an unknown key is ignored and the field is then omitted, which reads as
// null), JSON whitespace, and the unsigned `voters` (dropping it may select
// the same judges). A verifier that follows the document must accept those.
// The property tested is therefore: no one-byte edit passes verification
// unless it leaves what the receipt proves unchanged, i.e. the receipt read
// back is the same record, proof, checkpoint and judges.

function normalised(input, trust, { cosigners = true } = {}) {
  const r = q.readReceipt(input);
  const t = q.readTrustFile(trust);
  const j = q.checkpointJudges(r.checkpoint, t);
  const conv = (v) => (v instanceof Uint8Array ? toHex(v) : typeof v === 'bigint' ? v.toString()
    : Array.isArray(v) ? v.map(conv) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, conv(x)])) : v);
  const c = conv(r);
  c.checkpoint.voters = j.judges ? j.judges.map(String) : ['unknown'];
  c.checkpoint.cosignatures.sort((a, b) => (BigInt(a.nodeId) < BigInt(b.nodeId) ? -1 : 1));
  if (!cosigners) delete c.checkpoint.cosignatures;
  return JSON.stringify(c);
}

async function checkEdit(mutant, original, trust, stats, label, options) {
  const r = await q.verifyReceipt(mutant, trust);
  assertReportShape(r);
  if (r.ok) {
    assert.equal(normalised(mutant, trust, options), normalised(original, trust, options), `${label} passed but changed what the receipt proves`);
    stats.equivalent++;
  } else {
    stats.failed++;
  }
}

describe('one-byte edits of honest receipts never pass unless meaningless', () => {
  const texts = [
    ['attested-answer-v1 receipt_json (compact)', answerV.answer.receipt_json, answerV.trust],
    ['proof-v1 receipt (compact)', JSON.stringify(proofV.receipt), proofV.trust],
    ['history-v1 receipt (compact)', JSON.stringify(historyV.receipt), historyV.trust],
    ['proof-v1 receipt (pretty, sampled)', JSON.stringify(proofV.receipt, null, 1), proofV.trust],
  ];
  for (const [name, text, trust] of texts) {
    test(`${name}: every position, bit 0 flipped; every 5th position, all 8 bits`, async (t) => {
      assert.ok((await q.verifyReceipt(text, trust)).ok);
      const bytes = new TextEncoder().encode(text);
      const stats = { failed: 0, equivalent: 0 };
      const pretty = name.includes('pretty');
      for (let i = 0; i < bytes.length; i++) {
        const bits = i % 5 === 0 ? [0, 1, 2, 3, 4, 5, 6, 7] : pretty ? [] : [0];
        for (const bit of bits) {
          const m = bytes.slice();
          m[i] ^= 1 << bit;
          await checkEdit(m, text, trust, stats, `byte ${i} bit ${bit} (${JSON.stringify(text[i])})`);
        }
      }
      // Deleting or duplicating a byte, at a sample of positions.
      for (let i = 0; i < bytes.length; i += 7) {
        await checkEdit(new Uint8Array([...bytes.slice(0, i), ...bytes.slice(i + 1)]), text, trust, stats, `byte ${i} deleted`);
        await checkEdit(new Uint8Array([...bytes.slice(0, i + 1), ...bytes.slice(i)]), text, trust, stats, `byte ${i} doubled`);
      }
      assert.ok(stats.failed > stats.equivalent * 5, JSON.stringify(stats));
      t.diagnostic(`${name}: ${stats.failed} edits failed, ${stats.equivalent} passed unchanged in meaning`);
    });
  }

  test('the meaningless edits are only those FORMATS.md §1 allows', async () => {
    // Spot checks of each kind, so the property above is not vacuous.
    const text = answerV.answer.receipt_json;
    const trust = answerV.trust;
    const ok = async (t) => (await q.verifyReceipt(t, trust)).ok;
    assert.equal(await ok(text.replace('"parent":null', '"parenu":null')), true, 'renamed null field = omitted');
    assert.equal(await ok(text.replace('"request_id":"req-1"', '"request_iu":"req-1"')), false, 'renamed required field');
    assert.equal(await ok(text.replace('"root":"9e9d', '"root":"9E9d')), true, 'hex case');
    assert.equal(await ok(text.replace('"root":"9e9d', '"root":"8e9d')), false, 'hex digit');
  });
});

describe('field edits of honest receipts never pass unless meaningless', () => {
  /** Every path to every value in a JSON tree. */
  function* paths(v, p = []) {
    yield p;
    if (Array.isArray(v)) for (let i = 0; i < v.length; i++) yield* paths(v[i], [...p, i]);
    else if (v && typeof v === 'object') for (const k of Object.keys(v)) yield* paths(v[k], [...p, k]);
  }
  const at = (v, p) => p.reduce((x, k) => x[k], v);
  function alternatives(v) {
    if (v === null) return ['', 'x', 0, false, [], {}];
    if (typeof v === 'string') return [v + 'x', v.slice(1), '', v.length ? String.fromCharCode(v.charCodeAt(0) ^ 1) + v.slice(1) : 'x', null, 1];
    if (typeof v === 'number') return [v + 1, v - 1, v * 2 + 1, 0, String(v), null, true];
    if (typeof v === 'boolean') return [!v, null];
    if (Array.isArray(v)) {
      const out = [[], null, {}, [...v, v[0] ?? 'x']];
      if (v.length) out.push(v.slice(1), [v[0], ...v]);
      if (v.length > 1) out.push([...v].reverse());
      return out;
    }
    return [{}, null, [], 'x'];
  }

  for (const [name, receipt, trust] of [
    ['proof-v1', proofV.receipt, proofV.trust],
    ['history-v1', historyV.receipt, historyV.trust],
    ['attested-answer-v1', JSON.parse(answerV.answer.receipt_json), answerV.trust],
  ]) {
    test(`${name}: every field replaced, and every key removed`, async () => {
      const original = JSON.stringify(receipt);
      const stats = { failed: 0, equivalent: 0 };
      for (const p of paths(receipt)) {
        if (p.length === 0) continue;
        for (const alt of alternatives(at(receipt, p))) {
          const m = clone(receipt);
          at(m, p.slice(0, -1))[p[p.length - 1]] = alt;
          // Dropping a cosignature while a majority remains is a valid receipt of the same checkpoint.
          await checkEdit(JSON.stringify(m), original, trust, stats, `${p.join('.')} = ${JSON.stringify(alt)}`, { cosigners: false });
        }
        const parent = at(receipt, p.slice(0, -1));
        if (!Array.isArray(parent)) {
          const m = clone(receipt);
          delete at(m, p.slice(0, -1))[p[p.length - 1]];
          await checkEdit(JSON.stringify(m), original, trust, stats, `${p.join('.')} removed`, { cosigners: false });
        }
      }
      assert.ok(stats.failed > 100, JSON.stringify(stats));
    });
  }
});

describe('the export vectors (§11 lines, checked with §2, §3, §7, §8, §9)', () => {
  for (const [name, v] of [['proof-v1', proofV], ['history-v1', historyV]]) {
    test(`${name} export: records chain and hash, checkpoints are final over their roots, policies hash and verify`, async () => {
      const lines = v.export.map((l) => q.parseJson(l));
      const hashes = [];
      let prev = new Uint8Array(32);
      let checkpoints = 0;
      for (const line of lines) {
        if (line.type === 'record') {
          // A record line is the JSON form of §2 plus `type`, an unknown key for readRecord.
          const r = q.readRecord(line);
          assert.equal(r.index, BigInt(hashes.length + 1));
          assert.deepEqual(r.prevHash, prev);
          assert.deepEqual(await q.recordHash(line), r.hash, `record ${r.index}`);
          hashes.push(r.hash);
          prev = r.hash;
        } else if (line.type === 'checkpoint') {
          checkpoints++;
          assert.equal(line.size, BigInt(hashes.length));
          assert.equal(toHex(await q.merkleRoot(hashes)), line.root);
          const report = await q.verifyCheckpoint(line, v.trust);
          assert.ok(report.ok, JSON.stringify(report.steps.filter((s) => !s.ok)));
        } else if (line.type === 'policy') {
          assert.equal(toHex(await q.policyContentHash(line.policy_text, line.schema)), line.hash);
          if (line.signature) {
            const sig = await q.verifyEd25519(hex(line.signature.publisher_key), q.policySignatureMessage(line.policy_text, line.schema), hex(line.signature.signature));
            assert.ok(sig.ok, sig.detail);
            assert.ok(v.trust.publishers.some((p) => p.public_key === line.signature.publisher_key));
          }
        }
      }
      assert.ok(checkpoints >= 1 && hashes.length >= 2);
    });
  }

  test('history-v1 export: a receipt for every record under every checkpoint, and every bundle between them', async () => {
    const lines = historyV.export.map((l) => JSON.parse(l));
    const records = lines.filter((l) => l.type === 'record');
    const cps = lines.filter((l) => l.type === 'checkpoint');
    const leaves = records.map((r) => hex(r.hash));
    // Record 3 is an UNKNOWN_DOMAIN DENY (policy fields null), record 5 has entities: bytes no receipt vector has.
    assert.equal(records[2].policy_version, null);
    assert.notEqual(records[4].request.entities, null);
    for (const cp of cps) {
      for (let i = 0; i < cp.size; i++) {
        const receipt = { format: 'quorate-receipt/v1', record: records[i], inclusion_proof: (await refPath(i, leaves.slice(0, cp.size))).map(toHex), checkpoint: cp };
        const r = await q.verifyReceipt(JSON.stringify(receipt), historyV.trust);
        assert.ok(r.ok, `record ${i + 1} under size ${cp.size}: ${JSON.stringify(r.steps.filter((s) => !s.ok))}`);
      }
    }
    for (const [a, b] of [[0, 1], [0, 2], [1, 2], [2, 2]]) {
      const proof = (await refSubproof(cps[a].size, leaves.slice(0, cps[b].size), true)).map(toHex);
      const bundle = { format: 'quorate-consistency/v1', old_size: cps[a].size, proof, checkpoint: cps[b] };
      const r = await q.verifyConsistency(cps[a], bundle, historyV.trust);
      assert.ok(r.ok, `${cps[a].size} -> ${cps[b].size}: ${JSON.stringify(r.steps.filter((s) => !s.ok))}`);
    }
    // history-v1's own bundle proof is the reference proof.
    assert.deepEqual((await refSubproof(3, leaves, true)).map(toHex), historyV.consistency_bundle.proof);
  });
});

describe('§10 consistency bundles', () => {
  test('proof-v1 and history-v1 bundles verify', async () => {
    for (const [old, bundle, trust] of [
      [proofV.old_checkpoint, proofV.consistency_bundle, proofV.trust],
      [historyV.checkpoints[0].checkpoint, historyV.consistency_bundle, historyV.trust],
    ]) {
      for (const args of [[old, bundle, trust], [JSON.stringify(old), JSON.stringify(bundle), JSON.stringify(trust)]]) {
        const r = await q.verifyConsistency(...args);
        assertReportShape(r);
        assert.ok(r.ok, JSON.stringify(r.steps.filter((s) => !s.ok)));
      }
    }
    const r = await q.verifyConsistency(proofV.old_checkpoint, proofV.consistency_bundle, proofV.trust);
    assert.deepEqual(r.steps.map((s) => s.name), [
      'trust file', 'bundle fields', 'bundle format', 'old size',
      'old checkpoint: checkpoint cluster', 'old checkpoint: checkpoint judges', 'old checkpoint: cosignature node 1',
      'old checkpoint: cosignature node 2', 'old checkpoint: cosignature node 3', 'old checkpoint: quorum',
      'new checkpoint: checkpoint cluster', 'new checkpoint: checkpoint judges', 'new checkpoint: cosignature node 1',
      'new checkpoint: cosignature node 3', 'new checkpoint: quorum', 'consistency proof',
    ]);
  });

  test('failures: format, old size, proof, finality of either side, swapped sides', async () => {
    const b = (f) => { const x = clone(proofV.consistency_bundle); f(x); return x; };
    const old = proofV.old_checkpoint;
    const t = proofV.trust;
    const cases = [
      ['format', old, b((x) => { x.format = 'quorate-consistency/v2'; }), ['bundle format']],
      // verify_consistency runs from the old checkpoint's own size, so only the size step fails.
      ['old_size', old, b((x) => { x.old_size = 4; }), ['old size']],
      ['short proof', old, b((x) => { x.proof.pop(); }), ['consistency proof']],
      ['flipped proof hash', old, b((x) => { x.proof[1] = x.proof[1].replace(/^./, (c) => (c === '0' ? '1' : '0')); }), ['consistency proof']],
      ['new checkpoint one cosignature', old, b((x) => { x.checkpoint.cosignatures.pop(); }), ['new checkpoint: quorum']],
      ['old checkpoint root edited', { ...clone(old), root: proofV.merkle.tree.roots[2] }, clone(proofV.consistency_bundle),
        ['old checkpoint: cosignature node 1', 'old checkpoint: cosignature node 2', 'old checkpoint: cosignature node 3', 'old checkpoint: quorum', 'consistency proof']],
    ];
    for (const [why, o, bundle, expected] of cases) {
      const r = await q.verifyConsistency(o, bundle, t);
      assertReportShape(r);
      assert.deepEqual(failed(r), expected, why);
    }
    const swapped = await q.verifyConsistency(proofV.consistency_bundle.checkpoint, { ...clone(proofV.consistency_bundle), old_size: 7 }, t);
    assert.deepEqual(failed(swapped), ['consistency proof']);
    const otherTrust = { ...clone(t), cluster_id: 'x' };
    assert.deepEqual(failed(await q.verifyConsistency(old, proofV.consistency_bundle, otherTrust)), ['old checkpoint: checkpoint cluster', 'new checkpoint: checkpoint cluster']);
  });

  test('a fork between two final checkpoints is refused', async () => {
    const a = await makeRecords(5, '');
    const b = [...a.slice(0, 2), ...await makeRecords(3, '-fork')].slice(0, 5);
    const la = a.map((r) => hex(r.hash)), lb = b.map((r) => hex(r.hash));
    const oldCp = await signCheckpoint('vectors', 3, await q.merkleRoot(la.slice(0, 3)), [1, 2]);
    const newCp = await signCheckpoint('vectors', 5, await q.merkleRoot(lb), [2, 3]);
    const proof = (await refSubproof(3, lb, true)).map(toHex);
    const r = await q.verifyConsistency(oldCp, { format: 'quorate-consistency/v1', old_size: 3, proof, checkpoint: newCp }, proofV.trust);
    assert.deepEqual(failed(r), ['consistency proof']);
    // The honest extension verifies.
    const honest = await signCheckpoint('vectors', 5, await q.merkleRoot(la), [2, 3]);
    const good = await q.verifyConsistency(oldCp, { format: 'quorate-consistency/v1', old_size: 3, proof: (await refSubproof(3, la, true)).map(toHex), checkpoint: honest }, proofV.trust);
    assert.ok(good.ok, JSON.stringify(good.steps.filter((s) => !s.ok)));
  });

  test('one-byte edits of the bundle never pass', async () => {
    const text = JSON.stringify(proofV.consistency_bundle);
    const bytes = new TextEncoder().encode(text);
    let passed = 0;
    for (let i = 0; i < bytes.length; i++) {
      const m = bytes.slice();
      m[i] ^= 1;
      const r = await q.verifyConsistency(proofV.old_checkpoint, m, proofV.trust);
      assertReportShape(r);
      if (r.ok) passed++;
    }
    // Bit 0 never turns a-f into A-F, and the bundle has no nullable keys: nothing may pass.
    assert.equal(passed, 0);
  });

  test('never throws on malformed input', async () => {
    for (const old of [undefined, null, '', '{', {}, proofV.old_checkpoint]) {
      for (const bundle of [undefined, null, 'x', [], {}, { format: 'quorate-consistency/v1', old_size: 3, proof: 'x', checkpoint: {} }]) {
        const r = await q.verifyConsistency(old, bundle, proofV.trust);
        assertReportShape(r);
        assert.equal(r.ok, false);
      }
    }
  });
});

describe('§10 attested answers', () => {
  test('attested-answer-v1: the ALLOW is believed', async () => {
    const r = await q.verifyAttestedAnswer(answerV.request, answerV.answer, answerV.trust);
    assertReportShape(r);
    assert.ok(r.ok, JSON.stringify(r.steps.filter((s) => !s.ok)));
  });

  test('the tampered copy, another request or a DENY is not', async () => {
    const tampered = await q.verifyAttestedAnswer(answerV.request, { ...answerV.answer, receipt_json: answerV.tampered_receipt_json }, answerV.trust);
    assert.deepEqual(failed(tampered), ['receipt: cosignature node 1', 'receipt: quorum']);
    const other = await q.verifyAttestedAnswer({ ...answerV.request, principal: 'User::"bob"' }, answerV.answer, answerV.trust);
    assert.deepEqual(failed(other), ['record decides the request sent']);
    const deny = await q.verifyAttestedAnswer(answerV.request, { ...answerV.answer, decision: 'DENY' }, answerV.trust);
    assert.deepEqual(failed(deny), ['answer is ALLOW']);
    const denyReceipt = await q.verifyAttestedAnswer(
      proofV.receipt.record.request, { decision: 'ALLOW', receipt_json: JSON.stringify(proofV.receipt) }, proofV.trust);
    assert.deepEqual(failed(denyReceipt), ['record is ALLOW']);
    for (const bad of [null, {}, { decision: 'ALLOW' }, { decision: 'ALLOW', receipt_json: 7 }]) {
      const r = await q.verifyAttestedAnswer(answerV.request, bad, answerV.trust);
      assertReportShape(r);
      assert.equal(r.ok, false);
    }
  });

  test('the request is compared after the edge\'s normalisation', async () => {
    const sent = { ...answerV.request, context: ' { } ', parent: '', trace_id: '' };
    assert.ok((await q.verifyAttestedAnswer(sent, answerV.answer, answerV.trust)).ok);
    const withRecord = { ...answerV.answer, record: JSON.parse(answerV.answer.receipt_json).record };
    assert.ok((await q.verifyAttestedAnswer(answerV.request, withRecord, answerV.trust)).ok);
    const otherRecord = { ...answerV.answer, record: decisionV[1].record };
    assert.deepEqual(failed(await q.verifyAttestedAnswer(answerV.request, otherRecord, answerV.trust)), ['answer record']);
  });
});
