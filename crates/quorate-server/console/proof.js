// quorate proof viewer: verification in the browser.
//
// Verifies quorate receipts (`quorate-receipt/v1`) and consistency bundles
// (`quorate-consistency/v1`) against a trust file (`quorate-trust/v1`),
// following docs/FORMATS.md alone. Section numbers (§n) below refer to that
// document. Plain ES module: no dependencies, no build step. Cryptography is
// WebCrypto only (`crypto.subtle`: SHA-256 `digest`, Ed25519 `verify`); the
// Ed25519 acceptance rules of §8 that WebCrypto does not promise (S < L,
// small-order and undecodable points) are checked here first, in plain JS.
//
// Conventions:
// - Every u64 (index, size, node id, timestamp, ...) is a BigInt internally.
// - JSON text is read by `parseJson`, which refuses duplicate keys, keeps
//   integers exact (BigInt) and marks non-integers (`JsonFloat`), because
//   `JSON.parse` can do neither and §1 requires both.
// - `verifyReceipt`, `verifyConsistency`, `verifyCheckpoint` and
//   `verifyAttestedAnswer` never throw and never reject: everything wrong is
//   a failed step. `report.ok` is true only when every step passed (fail
//   closed: a check that could not run is a failed step).
//
// Note for the console: `crypto.subtle` exists only in secure contexts
// (https:// or localhost); without it (or without Ed25519 support) every
// hash or signature step fails with a detail saying so. The trust file must
// come from somewhere other than the server whose proofs are being checked
// (§10: "obtained out of band ... checked by a human").
//
// Usage:
//   import { verifyReceipt, verifyConsistency } from './proof.js';
//   const report = await verifyReceipt(receiptJsonText, trustJsonText);
//   if (!report.ok) for (const s of report.steps) if (!s.ok) show(s.name, s.detail);
//   // report.steps: [{ name, section, ok, detail }, ...] in the order checked.
// Pass JSON *text* where you have it (GetReceipt's `json`, `receipt_json`):
// only text lets the reader refuse duplicate keys and read u64s exactly.

// ---------------------------------------------------------------------------
// Format identifiers (§10) and reason codes (§5)
// ---------------------------------------------------------------------------

export const TRUST_FORMAT = 'quorate-trust/v1';
export const RECEIPT_FORMAT = 'quorate-receipt/v1';
export const CONSISTENCY_FORMAT = 'quorate-consistency/v1';

const DECISION_TAG = 'quorate/decision/v1'; // §2
const POLICY_TAG = 'quorate/policy/v1'; // §3
const CHECKPOINT_TAG = 'quorate/checkpoint/v1'; // §8
const POLICY_SIGNATURE_TAG = 'quorate/policy-signature/v1'; // §9

/** §5: every code a reader parses. Any other string ("" included) is malformed. */
export const REASON_CODES = Object.freeze([
  'POLICY', 'UNKNOWN_DOMAIN', 'NO_ACTIVE_POLICY', 'INVALID_REQUEST', 'UNVERIFIABLE_POLICY',
  'NO_QUORUM', 'COMMIT_TIMEOUT', 'INTEGRITY_FAILURE', 'DIVERGENCE', 'UNAVAILABLE',
  'REQUEST_ID_CONFLICT', 'UNATTESTED',
]);

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);

/** A malformed input, with the JSON path of what is wrong. */
export class FormatError extends Error {
  constructor(path, message) {
    super(path ? `${path}: ${message}` : message);
    this.name = 'FormatError';
    this.path = path;
  }
}

// ---------------------------------------------------------------------------
// §1 Primitives: hex, UTF-8, the canonical encoder
// ---------------------------------------------------------------------------

const HEX_RE = /^[0-9a-fA-F]*$/;

/** Hex text to bytes. Either case (§1); throws FormatError on anything else. */
export function hexToBytes(text, expectedLength, path = '') {
  if (typeof text !== 'string') throw new FormatError(path, `expected a hex string, got ${describe(text)}`);
  if (text.length % 2 !== 0 || !HEX_RE.test(text)) {
    throw new FormatError(path, `not hex: ${quote(text)}`);
  }
  if (expectedLength !== undefined && text.length !== 2 * expectedLength) {
    throw new FormatError(path, `expected ${2 * expectedLength} hex characters, got ${text.length}`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes to lowercase hex, as quorate writes it (§1). */
export function bytesToHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Two byte strings are equal (length and content). */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** True when `s` is valid Unicode (no lone surrogate), so it has a UTF-8 encoding. */
function wellFormed(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c >= 0xdc00) return false; // trailing surrogate without a leading one
    const d = s.charCodeAt(i + 1); // NaN past the end
    if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
    i++;
  }
  return true;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of a string; a lone surrogate (no UTF-8 form) is an error, never U+FFFD. */
export function utf8(s, path = '') {
  if (!wellFormed(s)) throw new FormatError(path, 'string holds a lone surrogate (not valid Unicode)');
  return encoder.encode(s);
}

/**
 * §1 canonical encoding: tag(T), u8, u32, u64, str, opt_str, str_list,
 * digest, all big-endian.
 */
class Encoder {
  constructor(tag) {
    this.parts = [];
    this.length = 0;
    this.push(utf8(tag));
    this.push(new Uint8Array([0]));
  }
  push(bytes) { this.parts.push(bytes); this.length += bytes.length; return this; }
  u8(v) { return this.push(new Uint8Array([v])); }
  u32(v) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v);
    return this.push(b);
  }
  u64(v) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v));
    return this.push(b);
  }
  str(s) {
    const bytes = utf8(s);
    if (bytes.length > 0xffffffff) throw new FormatError('', 'string longer than 4 GiB');
    return this.u32(bytes.length).push(bytes);
  }
  optStr(s) { return s === null ? this.u8(0) : this.u8(1).str(s); }
  strList(xs) {
    this.u32(xs.length);
    for (const x of xs) this.str(x);
    return this;
  }
  digest(d) {
    if (d.length !== 32) throw new FormatError('', 'a digest is 32 bytes');
    return this.push(d);
  }
  bytes() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) { out.set(p, at); at += p.length; }
    return out;
  }
}

/** SHA-256 (FIPS 180-4) through WebCrypto. */
export async function sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error('WebCrypto (crypto.subtle) is unavailable: the page must be served over https or from localhost');
  return new Uint8Array(await subtle.digest('SHA-256', bytes));
}

// ---------------------------------------------------------------------------
// §1 JSON conventions: a strict JSON reader
// ---------------------------------------------------------------------------

/**
 * A JSON number written with a fraction or an exponent (or `-0`): an IEEE
 * double, not an integer. §1: such a number where an integer is expected is
 * an error; §4: it is printed in float form.
 */
export class JsonFloat {
  constructor(value) { this.value = value; Object.freeze(this); }
}

/**
 * Parses JSON text (RFC 8259, as serde_json reads it).
 * - integers without fraction or exponent become BigInt (exact), except
 *   `-0`, which is a JsonFloat (§4: "-0 is not such an integer");
 * - other numbers become JsonFloat; a number beyond the double range is an error;
 * - objects are null-prototype objects; a duplicate key is an error
 *   (§1) unless `duplicates: 'last'` (serde_json's Value, as the API edge
 *   canonicalises context and entities, §4, keeps the last value);
 * - a lone surrogate, raw control character, bad escape, trailing text or
 *   nesting deeper than serde_json's 127 levels is an error.
 * Throws FormatError.
 */
export function parseJson(text, { duplicates = 'error' } = {}) {
  if (text instanceof ArrayBuffer) text = new Uint8Array(text);
  if (text instanceof Uint8Array) {
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(text);
    } catch {
      throw new FormatError('', 'not valid UTF-8');
    }
  }
  if (typeof text !== 'string') throw new FormatError('', `expected JSON text, got ${describe(text)}`);
  if (!wellFormed(text)) throw new FormatError('', 'text holds a lone surrogate (not valid Unicode)');
  const p = new JsonParser(text, duplicates === 'last');
  p.ws();
  const v = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail('trailing characters after the JSON value');
  return v;
}

const MAX_DEPTH = 127; // serde_json's recursion limit (128, exclusive)
const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

class JsonParser {
  constructor(s, lastWins) { this.s = s; this.i = 0; this.lastWins = lastWins; }

  fail(msg) {
    const before = this.s.slice(0, this.i);
    const line = before.split('\n').length;
    const column = this.i - before.lastIndexOf('\n');
    throw new FormatError('', `invalid JSON at line ${line} column ${column}: ${msg}`);
  }

  ws() {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }

  value(depth) {
    const c = this.s[this.i];
    if (c === '{' || c === '[') {
      if (depth >= MAX_DEPTH) this.fail('nested too deeply');
      return c === '{' ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (this.s.startsWith(word, this.i)) { this.i += word.length; return v; }
    }
    return this.fail(c === undefined ? 'unexpected end of input' : `unexpected character ${quote(c)}`);
  }

  object(depth) {
    const out = Object.create(null);
    const seen = new Set();
    this.i++; // {
    this.ws();
    if (this.s[this.i] === '}') { this.i++; return out; }
    for (;;) {
      if (this.s[this.i] !== '"') this.fail('expected a string key');
      const key = this.string();
      if (seen.has(key) && !this.lastWins) this.fail(`duplicate key ${quote(key)}`);
      seen.add(key);
      this.ws();
      if (this.s[this.i] !== ':') this.fail("expected ':'");
      this.i++;
      this.ws();
      out[key] = this.value(depth); // own property even for "__proto__": null prototype
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') { this.i--; this.fail("expected ',' or '}'"); }
      this.ws();
    }
  }

  array(depth) {
    const out = [];
    this.i++; // [
    this.ws();
    if (this.s[this.i] === ']') { this.i++; return out; }
    for (;;) {
      out.push(this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') { this.i--; this.fail("expected ',' or ']'"); }
      this.ws();
    }
  }

  hex4() {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail('bad \\u escape');
    this.i += 4;
    return parseInt(h, 16);
  }

  string() {
    const s = this.s;
    this.i++; // opening quote
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) { out += s.slice(start, this.i); this.i++; return out; }
      if (c < 0x20) this.fail('control character in a string (must be escaped)');
      if (c !== 0x5c) { this.i++; continue; }
      out += s.slice(start, this.i);
      this.i++;
      const e = s[this.i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const u = this.hex4();
          if (u >= 0xdc00 && u <= 0xdfff) this.fail('lone trailing surrogate in a \\u escape');
          if (u >= 0xd800 && u <= 0xdbff) {
            if (s[this.i] !== '\\' || s[this.i + 1] !== 'u') this.fail('lone leading surrogate in a \\u escape');
            this.i += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo > 0xdfff) this.fail('lone leading surrogate in a \\u escape');
            out += String.fromCharCode(u, lo);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default: this.i--; this.fail('invalid escape');
      }
      start = this.i;
    }
  }

  number() {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m) this.fail('invalid number');
    const lit = m[0];
    // A digit straight after the match is a leading zero ("01").
    const next = this.s[this.i + lit.length];
    if (next !== undefined && next >= '0' && next <= '9') this.fail('invalid number');
    this.i += lit.length;
    if (m[1] === undefined && m[2] === undefined && lit !== '-0') return BigInt(lit);
    const v = Number(lit);
    if (!Number.isFinite(v)) this.fail(`number out of range: ${lit}`);
    return new JsonFloat(v);
  }
}

// ---------------------------------------------------------------------------
// §4 Canonical JSON
// ---------------------------------------------------------------------------

/** Compares two strings by their UTF-8 bytes (= by code points). */
function compareUtf8(a, b) {
  const x = utf8(a), y = utf8(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** §4 string form: \" \\ \b \t \n \f \r, other U+0000–U+001F as \u00xx, the rest raw. */
function canonicalString(s) {
  if (!wellFormed(s)) throw new FormatError('', 'string holds a lone surrogate (refused, §4)');
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0d) out += '\\r';
    else if (c < 0x20) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/**
 * §4 float form: the shortest digits that read back as the same double;
 * positional (always with a fraction) when the decimal exponent of the first
 * significant digit is in −5..=15, otherwise d[.ddd]e±x.
 */
function canonicalFloat(v) {
  if (!Number.isFinite(v)) throw new FormatError('', `number out of range: ${v}`);
  const sign = v < 0 || Object.is(v, -0) ? '-' : '';
  const a = Math.abs(v);
  if (a === 0) return sign + '0.0';
  // toExponential() without an argument gives the shortest round-trip digits.
  const [mant, expText] = a.toExponential().split('e');
  const digits = mant.replace('.', '');
  const exp = Number(expText);
  if (exp >= -5 && exp <= 15) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    const intPart = digits.length > exp + 1 ? digits.slice(0, exp + 1) : digits.padEnd(exp + 1, '0');
    const frac = digits.length > exp + 1 ? digits.slice(exp + 1) : '0';
    return `${sign}${intPart}.${frac}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${Math.abs(exp)}`;
}

/**
 * §4: the canonical JSON text of a value: object keys sorted by their UTF-8
 * bytes, recursively; array order kept; no whitespace; §4 string escapes;
 * integers in −2^63..=2^64−1 in decimal, every other number in the float form.
 *
 * Numbers: a BigInt is an integer (outside −2^63..=2^64−1 it becomes a
 * double, as serde_json reads such a literal); a `JsonFloat` (from
 * `parseJson`) is a double; a JS number is an integer when it is a safe
 * integer other than −0, a double otherwise (pass BigInt for integers
 * beyond 2^53, and use `canonicalizeJson` on text to keep `1.0` a float).
 * Throws on values JSON cannot hold (undefined, functions, NaN, lone surrogates).
 */
export function canonicalJson(value) {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'string') return canonicalString(value);
  if (typeof value === 'bigint') {
    return value >= I64_MIN && value <= U64_MAX ? value.toString() : canonicalFloat(Number(value));
  }
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && !Object.is(value, -0) ? String(value) : canonicalFloat(value);
  }
  if (value instanceof JsonFloat) return canonicalFloat(value.value);
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']';
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value);
    if (proto !== null && proto !== Object.prototype) {
      throw new TypeError(`canonicalJson: not a JSON value (${describe(value)})`);
    }
    const keys = Object.keys(value).sort(compareUtf8);
    return '{' + keys.map((k) => canonicalString(k) + ':' + canonicalJson(value[k])).join(',') + '}';
  }
  throw new TypeError(`canonicalJson: not a JSON value (${describe(value)})`);
}

/** Rust `str::trim` whitespace (Unicode White_Space), used for "blank" and for hex trimming. */
const RUST_WS = '\t\n\u000b\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';
function rustTrim(s) {
  let a = 0, b = s.length;
  while (a < b && RUST_WS.includes(s[a])) a++;
  while (b > a && RUST_WS.includes(s[b - 1])) b--;
  return s.slice(a, b);
}

/**
 * §4, what the API edge does to the text a client sends: `kind` 'context'
 * (a JSON object; empty or blank is "{}"), 'entities' (a JSON array; blank is
 * null, i.e. absent) or 'any'. Parsed as serde_json does (a duplicate key
 * keeps its last value), then `canonicalJson`. Throws FormatError.
 */
export function canonicalizeJson(text, kind = 'any') {
  if (typeof text !== 'string') throw new FormatError('', `expected JSON text, got ${describe(text)}`);
  if (kind === 'context' && rustTrim(text) === '') return '{}';
  if (kind === 'entities' && rustTrim(text) === '') return null;
  const v = parseJson(text, { duplicates: 'last' });
  if (kind === 'context' && !isObject(v)) throw new FormatError('context', 'must be a JSON object');
  if (kind === 'entities' && !Array.isArray(v)) throw new FormatError('entities', 'must be a JSON array');
  return canonicalJson(v);
}

// ---------------------------------------------------------------------------
// §1 JSON conventions: typed readers (field presence, null, integers, hex)
// ---------------------------------------------------------------------------

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof JsonFloat) &&
    !(v instanceof Uint8Array);
}

function describe(v) {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof JsonFloat) return `the non-integer number ${v.value}`;
  if (typeof v === 'bigint') return `the integer ${v}`;
  if (typeof v === 'string') return `the string ${quote(v)}`;
  return `${typeof v === 'object' ? 'an object' : `a ${typeof v}`}`;
}

function quote(s) {
  const t = JSON.stringify(String(s));
  return t.length > 80 ? t.slice(0, 77) + '…"' : t;
}

function join(path, key) {
  return typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key;
}

/** The own property `key` of `obj`, or undefined (never an inherited one). */
function get(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

function readObject(v, path) {
  if (!isObject(v)) throw new FormatError(path, `expected an object, got ${describe(v)}`);
  return v;
}

/** A required field: absent or null is an error (§1 "Absent values"). */
function required(obj, key, path) {
  const v = get(obj, key);
  if (v === undefined) throw new FormatError(join(path, key), 'missing');
  if (v === null) throw new FormatError(join(path, key), 'is null; it is required');
  return v;
}

/** A nullable-or-omittable field: absent and null both mean "absent". */
function optional(obj, key) {
  const v = get(obj, key);
  return v === undefined ? null : v;
}

/** §1: an integer in 0..=2^64−1; `1.0`, `-1`, `1e3` are errors. */
function readU64(v, path) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) throw new FormatError(path, `integer ${v} is outside 0..=2^64-1`);
    return v;
  }
  if (typeof v === 'number') {
    // A JS number (an object not read by parseJson): only exact integers.
    if (!Number.isInteger(v) || Object.is(v, -0)) throw new FormatError(path, `expected an integer, got ${v}`);
    if (!Number.isSafeInteger(v)) {
      throw new FormatError(path, `integer ${v} is beyond 2^53 and may have been rounded; pass the JSON text so it is read exactly`);
    }
    if (v < 0) throw new FormatError(path, `integer ${v} is outside 0..=2^64-1`);
    return BigInt(v);
  }
  throw new FormatError(path, `expected an integer, got ${describe(v)}`);
}

function readString(v, path) {
  if (typeof v !== 'string') throw new FormatError(path, `expected a string, got ${describe(v)}`);
  if (!wellFormed(v)) throw new FormatError(path, 'string holds a lone surrogate (not valid Unicode)');
  return v;
}

function readBool(v, path) {
  if (typeof v !== 'boolean') throw new FormatError(path, `expected true or false, got ${describe(v)}`);
  return v;
}

function readArray(v, path) {
  if (!Array.isArray(v)) throw new FormatError(path, `expected an array, got ${describe(v)}`);
  return v;
}

function readStringList(v, path) {
  return readArray(v, path).map((x, i) => readString(x, join(path, i)));
}

/** §1: a digest is exactly 64 hex characters (either case, no whitespace). */
function readDigest(v, path) {
  if (typeof v !== 'string') throw new FormatError(path, `expected a digest (64 hex characters), got ${describe(v)}`);
  return hexToBytes(v, 32, path);
}

/** §1: keys (64) and signatures (128) are hex; whitespace around them is ignored. */
function readHexTrimmed(v, n, what, path) {
  if (typeof v !== 'string') throw new FormatError(path, `expected a ${what} (${2 * n} hex characters), got ${describe(v)}`);
  return hexToBytes(rustTrim(v), n, path);
}

function readDecision(v, path) {
  if (v !== 'ALLOW' && v !== 'DENY') throw new FormatError(path, `expected "ALLOW" or "DENY", got ${describe(v)}`);
  return v;
}

/** §5: null (absent) or one of the codes of the table; "" is malformed. */
function readReason(v, path) {
  if (v === null) return null;
  if (typeof v !== 'string' || !REASON_CODES.includes(v)) {
    throw new FormatError(path, `expected null or a reason code of FORMATS.md §5, got ${describe(v)}`);
  }
  return v;
}

function readOptString(obj, key, path) {
  const v = optional(obj, key);
  return v === null ? null : readString(v, join(path, key));
}

// ---------------------------------------------------------------------------
// §2 Decision record: JSON form, canonical bytes, hash
// ---------------------------------------------------------------------------

/**
 * Reads a decision record in the JSON form of §2 (a parsed value, or JSON
 * text). Returns a normalised record: u64s as BigInt, digests as bytes,
 * absent values as null. Unknown keys are ignored (§1). Throws FormatError.
 */
export function readRecord(value, path = 'record') {
  if (typeof value === 'string' || value instanceof Uint8Array) value = parseJson(value);
  const o = readObject(value, path);
  const rq = readObject(required(o, 'request', path), join(path, 'request'));
  const rp = join(path, 'request');
  const policyVersion = optional(o, 'policy_version');
  const policyHash = optional(o, 'policy_hash');
  const shadowValue = optional(o, 'shadow');
  let shadow = null;
  if (shadowValue !== null) {
    const sp = join(path, 'shadow');
    const s = readObject(shadowValue, sp);
    shadow = {
      rolloutId: readString(required(s, 'rollout_id', sp), join(sp, 'rollout_id')),
      candidateVersion: readU64(required(s, 'candidate_version', sp), join(sp, 'candidate_version')),
      candidateHash: readDigest(required(s, 'candidate_hash', sp), join(sp, 'candidate_hash')),
      decision: readDecision(required(s, 'decision', sp), join(sp, 'decision')),
      reason: readReason(optional(s, 'reason'), join(sp, 'reason')),
      determiningPolicies: readStringList(required(s, 'determining_policies', sp), join(sp, 'determining_policies')),
      errors: readStringList(required(s, 'errors', sp), join(sp, 'errors')),
    };
  }
  return {
    index: readU64(required(o, 'index', path), join(path, 'index')),
    logIndex: readU64(required(o, 'log_index', path), join(path, 'log_index')),
    request: {
      domain: readString(required(rq, 'domain', rp), join(rp, 'domain')),
      requestId: readString(required(rq, 'request_id', rp), join(rp, 'request_id')),
      principal: readString(required(rq, 'principal', rp), join(rp, 'principal')),
      action: readString(required(rq, 'action', rp), join(rp, 'action')),
      resource: readString(required(rq, 'resource', rp), join(rp, 'resource')),
      context: readString(required(rq, 'context', rp), join(rp, 'context')),
      entities: readOptString(rq, 'entities', rp),
      parent: readOptString(rq, 'parent', rp),
      traceId: readOptString(rq, 'trace_id', rp),
    },
    decision: readDecision(required(o, 'decision', path), join(path, 'decision')),
    reason: readReason(optional(o, 'reason'), join(path, 'reason')),
    determiningPolicies: readStringList(required(o, 'determining_policies', path), join(path, 'determining_policies')),
    errors: readStringList(required(o, 'errors', path), join(path, 'errors')),
    policyVersion: policyVersion === null ? null : readU64(policyVersion, join(path, 'policy_version')),
    policyHash: policyHash === null ? null : readDigest(policyHash, join(path, 'policy_hash')),
    timestampMs: readU64(required(o, 'timestamp_ms', path), join(path, 'timestamp_ms')),
    prevHash: readDigest(required(o, 'prev_hash', path), join(path, 'prev_hash')),
    hash: readDigest(required(o, 'hash', path), join(path, 'hash')),
    shadow,
  };
}

function isNormalisedRecord(r) {
  return isObject(r) && r.hash instanceof Uint8Array && isObject(r.request) && typeof r.index === 'bigint';
}

const ZERO32 = new Uint8Array(32);

/**
 * §2: the canonical bytes of a record (the `hash` field excluded), in the
 * exact order of the table, with the shadow section appended only when the
 * record has a shadow. Accepts the JSON form (value or text) or the result
 * of `readRecord`. Throws FormatError.
 */
export function recordCanonicalBytes(record) {
  const r = isNormalisedRecord(record) ? record : readRecord(record);
  const q = r.request;
  const e = new Encoder(DECISION_TAG)
    .u64(r.index)
    .u64(r.logIndex)
    .str(q.domain)
    .str(q.requestId)
    .str(q.principal)
    .str(q.action)
    .str(q.resource)
    .str(q.context) // hashed as held: a verifier never re-canonicalises (§4)
    .optStr(q.entities)
    .optStr(q.parent)
    .optStr(q.traceId)
    .u8(r.decision === 'ALLOW' ? 1 : 0)
    .str(r.reason ?? '') // null is str("")
    .strList(r.determiningPolicies) // in the order given, never sorted
    .strList(r.errors)
    .u64(r.policyVersion ?? 0n) // null is u64(0)
    .digest(r.policyHash ?? ZERO32) // null is 32 zero bytes
    .u64(r.timestampMs)
    .digest(r.prevHash);
  if (r.shadow !== null) {
    const s = r.shadow;
    e.str('shadow')
      .str(s.rolloutId)
      .u64(s.candidateVersion)
      .digest(s.candidateHash)
      .u8(s.decision === 'ALLOW' ? 1 : 0)
      .str(s.reason ?? '')
      .strList(s.determiningPolicies)
      .strList(s.errors);
  }
  return e.bytes();
}

/** §2: SHA-256 of the record's canonical bytes. Rejects with FormatError on a malformed record. */
export async function recordHash(record) {
  return sha256(recordCanonicalBytes(record));
}

/** §3: content hash of a policy version: SHA-256(tag, str(policy_text), opt_str(schema)). */
export async function policyContentHash(policyText, schema = null) {
  return sha256(new Encoder(POLICY_TAG).str(policyText).optStr(schema).bytes());
}

/** §9: the bytes a policy publisher signs. */
export function policySignatureMessage(policyText, schema = null) {
  return new Encoder(POLICY_SIGNATURE_TAG).str(policyText).optStr(schema).bytes();
}

// ---------------------------------------------------------------------------
// §7 Merkle tree (RFC 9162 §2.1)
// ---------------------------------------------------------------------------

/** §7 leaf_hash(d) = SHA-256(0x00 || d). */
export async function leafHash(data) {
  const b = new Uint8Array(1 + data.length);
  b.set(data, 1);
  return sha256(b);
}

/** §7 node_hash(l, r) = SHA-256(0x01 || l || r). */
export async function nodeHash(left, right) {
  const b = new Uint8Array(65);
  b[0] = 1;
  b.set(left, 1);
  b.set(right, 33);
  return sha256(b);
}

/** §7 MTH over a list of leaf data (record hashes). Split at the largest power of two below n. */
export async function merkleRoot(leafData) {
  const n = leafData.length;
  if (n === 0) return sha256(new Uint8Array(0));
  if (n === 1) return leafHash(leafData[0]);
  let k = 1;
  while (k * 2 < n) k *= 2;
  return nodeHash(await merkleRoot(leafData.slice(0, k)), await merkleRoot(leafData.slice(k)));
}

function big(v) {
  return typeof v === 'bigint' ? v : BigInt(v);
}

/** The exact inclusion proof length §7 (RFC 9162 §2.1.3.2) implies for leaf m of n (m < n). */
export function inclusionProofLength(m, n) {
  let fn = big(m), sn = big(n) - 1n, len = 0;
  while (sn !== 0n) {
    if ((fn & 1n) === 0n && fn === sn) {
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    }
    fn >>= 1n; sn >>= 1n; len++;
  }
  return len;
}

function isPowerOfTwo(x) {
  return x > 0n && (x & (x - 1n)) === 0n;
}

/** The exact consistency proof length §7 (RFC 9162 §2.1.4.2) implies from m to n (0 < m < n). */
export function consistencyProofLength(m, n) {
  let fn = big(m) - 1n, sn = big(n) - 1n, len = 0;
  while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
  while (sn !== 0n) {
    if ((fn & 1n) === 0n && fn === sn) {
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    }
    fn >>= 1n; sn >>= 1n; len++;
  }
  return isPowerOfTwo(big(m)) ? len : len + 1;
}

const short = (d) => bytesToHex(d.slice(0, 4)) + '…';

/**
 * §7 verify_inclusion(leaf, m, n, proof, root), with the exact proof length
 * required. `leaf` is the leaf *hash*; sizes are BigInt. Returns {ok, detail}.
 */
export async function verifyInclusion(leaf, m, n, proof, root) {
  m = big(m); n = big(n);
  if (!(m < n)) return { ok: false, detail: `leaf index ${m} is out of range for a tree of size ${n}` };
  const expected = inclusionProofLength(m, n);
  if (proof.length !== expected) {
    return {
      ok: false,
      detail: `inclusion proof has ${proof.length} hash${proof.length === 1 ? '' : 'es'}; leaf index ${m} of a tree of size ${n} needs exactly ${expected}`,
    };
  }
  let fn = m, sn = n - 1n, r = leaf;
  for (const p of proof) {
    if (sn === 0n) return { ok: false, detail: 'inclusion proof too long' };
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) return { ok: false, detail: 'inclusion proof too short' };
  if (!bytesEqual(r, root)) {
    return { ok: false, detail: `the proof leads to root ${short(r)}, not the checkpoint's root ${short(root)} of the tree of size ${n}` };
  }
  return { ok: true, detail: `leaf ${m} of ${n}: ${proof.length} hash${proof.length === 1 ? '' : 'es'} reproduce the root ${short(root)}` };
}

/**
 * §7 verify_consistency(m, n, old_root, new_root, proof), with the exact
 * proof length required. Returns {ok, detail}.
 */
export async function verifyConsistencyProof(m, n, oldRoot, newRoot, proof) {
  m = big(m); n = big(n);
  if (!(m > 0n && m <= n)) return { ok: false, detail: `a consistency proof needs 0 < old size <= new size; got ${m} and ${n}` };
  if (m === n) {
    if (proof.length !== 0) return { ok: false, detail: `equal sizes need an empty proof; it has ${proof.length} hashes` };
    if (!bytesEqual(oldRoot, newRoot)) return { ok: false, detail: `same size ${n} but different roots ${short(oldRoot)} and ${short(newRoot)}: a fork` };
    return { ok: true, detail: `same size ${n}, same root` };
  }
  const expected = consistencyProofLength(m, n);
  if (proof.length !== expected) {
    return { ok: false, detail: `consistency proof has ${proof.length} hashes; from size ${m} to size ${n} it needs exactly ${expected}` };
  }
  const path = isPowerOfTwo(m) ? [oldRoot, ...proof] : proof;
  if (path.length === 0) return { ok: false, detail: 'consistency proof is empty' };
  let fn = m - 1n, sn = n - 1n;
  while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) return { ok: false, detail: 'consistency proof too long' };
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) return { ok: false, detail: 'consistency proof too short' };
  if (!bytesEqual(fr, oldRoot)) return { ok: false, detail: `the proof does not lead to the old root ${short(oldRoot)} of size ${m} (got ${short(fr)})` };
  if (!bytesEqual(sr, newRoot)) return { ok: false, detail: `the proof does not lead to the new root ${short(newRoot)} of size ${n} (got ${short(sr)})` };
  return { ok: true, detail: `the tree of size ${n} (root ${short(newRoot)}) extends the tree of size ${m} (root ${short(oldRoot)}); ${proof.length} hashes` };
}

// ---------------------------------------------------------------------------
// §8 Ed25519 as quorate verifies it (ed25519-dalek verify_strict)
// ---------------------------------------------------------------------------
//
// WebCrypto computes the verification equation; before it, this code applies
// the acceptance rules §8 lists and WebCrypto implementations differ on
// (Node's OpenSSL, for one, accepts small-order keys and R):
//   step 1/3  A and R must decode (y taken mod p; sign bit applied as given);
//   step 2    S < L;
//   step 4    A and R must not have small order.
// Two deliberate, documented choices on top:
//   - a non-canonical key (y >= p) is refused, as §8's last paragraph allows
//     (no seed produces one; WebCrypto implementations disagree on them);
//   - a non-canonical R is refused (§8 step 6: it never verifies anyway);
//   - when A is torsion-free (every real key), R must be torsion-free too:
//     [S]B − [k]A is then torsion-free, so dalek's cofactorless check can only
//     accept such an R, and it makes a cofactored WebCrypto agree with it.

const P = (1n << 255n) - 19n;
const L = (1n << 252n) + 27742317777372353535851937790883648493n;
const mod = (a) => { const r = a % P; return r < 0n ? r + P : r; };
function powMod(b, e) {
  let r = 1n;
  b = mod(b);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return r;
}
const ED_D = mod(-121665n * powMod(121666n, P - 2n));
const ED_D2 = mod(2n * ED_D);
const SQRT_M1 = powMod(2n, (P - 1n) / 4n);

function littleEndian(bytes) {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

/**
 * §8 step 1: decodes 32 bytes as an Edwards point. Returns null when no x
 * solves the curve equation, else {point, canonical} (canonical: y < p).
 * `point` is in extended coordinates [X, Y, Z, T].
 */
function decodePoint(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) return null;
  const sign = bytes[31] >> 7;
  const yRaw = littleEndian(bytes) & ((1n << 255n) - 1n);
  const canonical = yRaw < P;
  const y = mod(yRaw);
  const y2 = (y * y) % P;
  const u = mod(y2 - 1n);
  const v = mod(ED_D * y2 + 1n);
  const v3 = (v * v % P) * v % P;
  let x = (u * v3 % P) * powMod(u * v3 % P * v3 % P * v % P, (P - 5n) / 8n) % P;
  const vx2 = v * x % P * x % P;
  if (vx2 === u) { /* x is a root */ } else if (vx2 === mod(-u)) x = x * SQRT_M1 % P;
  else return null;
  if (Number(x & 1n) !== sign) x = mod(-x); // applied as given, even when x = 0
  return { point: [x, y, 1n, x * y % P], canonical };
}

function pointAdd([X1, Y1, Z1, T1], [X2, Y2, Z2, T2]) {
  // add-2008-hwcd-3, complete for a = −1.
  const A = mod((Y1 - X1) * (Y2 - X2));
  const B = mod((Y1 + X1) * (Y2 + X2));
  const C = mod(T1 * ED_D2 % P * T2);
  const D = mod(2n * Z1 * Z2);
  const E = B - A, F = D - C, G = D + C, H = B + A;
  return [mod(E * F), mod(G * H), mod(F * G), mod(E * H)];
}

function pointDouble(p) {
  return pointAdd(p, p);
}

function isIdentity([X, Y, Z]) {
  return X === 0n && mod(Y - Z) === 0n;
}

function scalarMul(p, k) {
  let r = [0n, 1n, 1n, 0n];
  let q = p;
  while (k > 0n) {
    if (k & 1n) r = pointAdd(r, q);
    q = pointDouble(q);
    k >>= 1n;
  }
  return r;
}

/** §8 step 4: 8·P is the identity. */
function hasSmallOrder(point) {
  return isIdentity(pointDouble(pointDouble(pointDouble(point))));
}

const torsionCache = new Map();
/** [L]P is the identity: P is in the prime-order subgroup. Cached (keys and R repeat). */
function isTorsionFree(point, hex) {
  let v = torsionCache.get(hex);
  if (v === undefined) {
    v = isIdentity(scalarMul(point, L));
    if (torsionCache.size > 4096) torsionCache.clear();
    torsionCache.set(hex, v);
  }
  return v;
}

/**
 * What §8 step 1 and step 4 say of a 32-byte key: does it decode, is it
 * canonical, has it small order. For the `public_keys` of ed25519-v1.json.
 */
export function inspectEd25519Point(bytes) {
  const d = decodePoint(bytes);
  if (d === null) return { decodes: false, canonical: false, smallOrder: false };
  return { decodes: true, canonical: d.canonical, smallOrder: hasSmallOrder(d.point) };
}

const keyCache = new Map();
async function importEd25519(publicKey) {
  const hex = bytesToHex(publicKey);
  let k = keyCache.get(hex);
  if (k === undefined) {
    const subtle = globalThis.crypto?.subtle;
    if (!subtle) throw new Error('WebCrypto (crypto.subtle) is unavailable: the page must be served over https or from localhost');
    k = subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
    if (keyCache.size > 256) keyCache.clear();
    keyCache.set(hex, k);
    k.catch(() => keyCache.delete(hex));
  }
  return k;
}

/**
 * §8: verifies an Ed25519 signature (pure, RFC 8032) with quorate's strict
 * rules. Never throws. Returns {ok, detail}.
 */
export async function verifyEd25519(publicKey, message, signature) {
  try {
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return { ok: false, detail: 'a public key is 32 bytes' };
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return { ok: false, detail: 'a signature is 64 bytes' };
    const a = decodePoint(publicKey);
    if (a === null) return { ok: false, detail: 'bad public key: it does not decode to a curve point' };
    if (!a.canonical) return { ok: false, detail: 'bad public key: not canonically encoded (y >= p); this verifier refuses such keys, as FORMATS.md §8 allows' };
    if (littleEndian(signature.subarray(32)) >= L) return { ok: false, detail: 'signature does not verify: S is not below L (non-canonical S)' };
    const r = decodePoint(signature.subarray(0, 32));
    if (r === null || !r.canonical) return { ok: false, detail: 'signature does not verify: R is not a canonically encoded point' };
    if (hasSmallOrder(a.point)) return { ok: false, detail: 'bad public key: it has small order' };
    if (hasSmallOrder(r.point)) return { ok: false, detail: 'signature does not verify: R has small order' };
    const keyHex = bytesToHex(publicKey);
    if (isTorsionFree(a.point, 'A' + keyHex) && !isTorsionFree(r.point, 'R' + bytesToHex(signature.subarray(0, 32)))) {
      return { ok: false, detail: 'signature does not verify: R has a torsion component' };
    }
    let key;
    try {
      key = await importEd25519(publicKey);
    } catch (e) {
      return { ok: false, detail: `this browser cannot verify Ed25519 (WebCrypto importKey failed: ${e?.message ?? e})` };
    }
    const good = await globalThis.crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
    return good ? { ok: true, detail: 'signature verifies' } : { ok: false, detail: 'signature does not verify' };
  } catch (e) {
    return { ok: false, detail: `signature could not be verified: ${e?.message ?? e}` };
  }
}

// ---------------------------------------------------------------------------
// §8 Checkpoints
// ---------------------------------------------------------------------------

/** §8: the bytes a voter signs: tag, str(cluster_id), u64(size), digest(root). */
export function checkpointMessage(clusterId, size, root) {
  return new Encoder(CHECKPOINT_TAG).str(clusterId).u64(big(size)).digest(root).bytes();
}

/**
 * Reads a checkpoint in the JSON form of §8 (value or text). `voters`
 * omitted or [] means "none named"; null is refused. Throws FormatError.
 */
export function readCheckpoint(value, path = 'checkpoint') {
  if (typeof value === 'string' || value instanceof Uint8Array) value = parseJson(value);
  const o = readObject(value, path);
  const cosigs = readArray(required(o, 'cosignatures', path), join(path, 'cosignatures'));
  const votersValue = get(o, 'voters');
  if (votersValue === null) throw new FormatError(join(path, 'voters'), 'is null; omit it or write [] when no voters are named');
  const voters = votersValue === undefined ? [] :
    readArray(votersValue, join(path, 'voters')).map((v, i) => readU64(v, join(join(path, 'voters'), i)));
  return {
    clusterId: readString(required(o, 'cluster_id', path), join(path, 'cluster_id')),
    size: readU64(required(o, 'size', path), join(path, 'size')),
    root: readDigest(required(o, 'root', path), join(path, 'root')),
    cosignatures: cosigs.map((c, i) => {
      const cp = join(join(path, 'cosignatures'), i);
      const co = readObject(c, cp);
      return {
        nodeId: readU64(required(co, 'node_id', cp), join(cp, 'node_id')),
        signature: readHexTrimmed(required(co, 'signature', cp), 64, 'signature', join(cp, 'signature')),
      };
    }),
    voters,
  };
}

// ---------------------------------------------------------------------------
// §10 Trust file
// ---------------------------------------------------------------------------

/**
 * Reads a trust file (value or text) per §10 and §1 (`region` and
 * `publishers` may be omitted, not null; `voter_sets` may be omitted or [],
 * not null; `until_size` null or omitted means current). Throws FormatError.
 * Usability is `checkTrustFile`.
 */
export function readTrustFile(value, path = 'trust') {
  if (typeof value === 'string' || value instanceof Uint8Array) value = parseJson(value);
  const o = readObject(value, path);
  const nodes = readArray(required(o, 'nodes', path), join(path, 'nodes')).map((n, i) => {
    const np = join(join(path, 'nodes'), i);
    const no = readObject(n, np);
    const region = get(no, 'region');
    if (region === null) throw new FormatError(join(np, 'region'), 'is null; omit it or write ""');
    return {
      nodeId: readU64(required(no, 'node_id', np), join(np, 'node_id')),
      publicKey: readHexTrimmed(required(no, 'public_key', np), 32, 'public key', join(np, 'public_key')),
      voter: readBool(required(no, 'voter', np), join(np, 'voter')),
      region: region === undefined ? '' : readString(region, join(np, 'region')),
    };
  });
  const pubValue = get(o, 'publishers');
  if (pubValue === null) throw new FormatError(join(path, 'publishers'), 'is null; omit it or write []');
  const publishers = pubValue === undefined ? [] : readArray(pubValue, join(path, 'publishers')).map((p, i) => {
    const pp = join(join(path, 'publishers'), i);
    const po = readObject(p, pp);
    return {
      name: readString(required(po, 'name', pp), join(pp, 'name')),
      publicKey: readHexTrimmed(required(po, 'public_key', pp), 32, 'public key', join(pp, 'public_key')),
    };
  });
  const setsValue = get(o, 'voter_sets');
  if (setsValue === null) throw new FormatError(join(path, 'voter_sets'), 'is null; omit it or write []');
  const voterSets = setsValue === undefined ? [] : readArray(setsValue, join(path, 'voter_sets')).map((s, i) => {
    const sp = join(join(path, 'voter_sets'), i);
    const so = readObject(s, sp);
    const vp = join(sp, 'voters');
    const until = optional(so, 'until_size');
    return {
      voters: readArray(required(so, 'voters', sp), vp).map((v, j) => readU64(v, join(vp, j))),
      untilSize: until === null ? null : readU64(until, join(sp, 'until_size')),
    };
  });
  return {
    format: readString(required(o, 'format', path), join(path, 'format')),
    clusterId: readString(required(o, 'cluster_id', path), join(path, 'cluster_id')),
    nodes,
    publishers,
    voterSets,
  };
}

/**
 * §10 "A trust file is usable when": format quorate-trust/v1, at least one
 * voter, no node_id or public_key twice (keys compared as bytes), every
 * voter set non-empty and naming only listed nodes. Returns a problem
 * string, or null when usable.
 */
export function checkTrustFile(trust) {
  if (trust.format !== TRUST_FORMAT) return `format is ${quote(trust.format)}; this verifier reads ${quote(TRUST_FORMAT)}`;
  if (!trust.nodes.some((n) => n.voter)) return 'lists no voters';
  const ids = new Set(), keys = new Set();
  for (const n of trust.nodes) {
    if (ids.has(n.nodeId)) return `node ${n.nodeId} is listed twice`;
    ids.add(n.nodeId);
    const k = bytesToHex(n.publicKey);
    if (keys.has(k)) return `public key ${k.slice(0, 8)}… is listed twice`;
    keys.add(k);
  }
  for (const s of trust.voterSets) {
    if (s.voters.length === 0) return 'a voter set is empty';
    const missing = s.voters.find((v) => !ids.has(v));
    if (missing !== undefined) return `voter set [${s.voters.join(',')}] names node ${missing}, which the trust file does not list`;
  }
  return null;
}

function currentVoters(trust) {
  return trust.nodes.filter((n) => n.voter).map((n) => n.nodeId).sort(cmpBig);
}

function cmpBig(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

const listText = (xs) => `[${xs.join(', ')}]`;
const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * §8 finality step 2: the judges of a checkpoint under a trust file.
 * Returns {judges} or {problem}.
 */
export function checkpointJudges(cp, trust) {
  const current = currentVoters(trust);
  if (cp.voters.length === 0) return { judges: current, how: 'names no voters: judged by the trust file\'s current voters' };
  const named = [...new Set(cp.voters)].sort(cmpBig);
  if (trust.voterSets.length > 0) {
    const match = trust.voterSets.find((s) => sameList(s.voters, named) && (s.untilSize === null || cp.size <= s.untilSize));
    if (match) {
      return { judges: named, how: `names voters ${listText(named)}, a voter set of the trust file ${match.untilSize === null ? '(current)' : `(until size ${match.untilSize})`}` };
    }
    const retired = trust.voterSets.find((s) => sameList(s.voters, named));
    return {
      problem: retired
        ? `checkpoint at size ${cp.size} names voters ${listText(named)}, a voter set the trust file retires at size ${retired.untilSize}: it cannot vouch for size ${cp.size}`
        : `checkpoint at size ${cp.size} names voters ${listText(named)}, which the trust file does not list as a voter set`,
    };
  }
  if (sameList(named, current)) return { judges: named, how: `names voters ${listText(named)}, the trust file's current voters` };
  return { problem: `checkpoint names voters ${listText(named)}; the trust file lists no voter sets and its current voters are ${listText(current)}` };
}

/**
 * §8 "final under a trust file", steps 1–4 in order, as report steps.
 * `prefix` names the checkpoint in step names ("old checkpoint: ...").
 */
async function checkpointSteps(cp, trust, prefix, steps) {
  const add = (name, section, ok, detail) => steps.push({ name: prefix + name, section, ok, detail });
  // Step 1: cluster id.
  add('checkpoint cluster', '§8 final 1', cp.clusterId === trust.clusterId,
    cp.clusterId === trust.clusterId
      ? `checkpoint is for cluster ${quote(cp.clusterId)}, as the trust file`
      : `checkpoint is for cluster ${quote(cp.clusterId)}, the trust file is for ${quote(trust.clusterId)}`);
  // Step 2: judges.
  const j = checkpointJudges(cp, trust);
  if (j.problem) {
    add('checkpoint judges', '§8 final 2', false, j.problem);
    add('cosignatures', '§8 final 3', false, 'not checked: the checkpoint\'s judges are unknown');
    add('quorum', '§8 final 4', false, 'not checked: the checkpoint\'s judges are unknown');
    return { final: false, judges: null };
  }
  add('checkpoint judges', '§8 final 2', true, `${j.how}: ${listText(j.judges)}`);
  // Step 3: every cosignature, in order.
  const message = checkpointMessage(cp.clusterId, cp.size, cp.root);
  const keyOf = new Map(trust.nodes.map((n) => [n.nodeId, n.publicKey]));
  const judgeSet = new Set(j.judges);
  const seen = new Set();
  let allValid = true;
  for (const [i, c] of cp.cosignatures.entries()) {
    const name = `cosignature node ${c.nodeId}`;
    let problem = null;
    if (seen.has(c.nodeId)) problem = `node ${c.nodeId} cosigns twice (cosignature ${i})`;
    else if (!judgeSet.has(c.nodeId)) problem = `node ${c.nodeId} is not one of the judges ${listText(j.judges)}: a cosignature by anyone else makes the checkpoint invalid`;
    else if (!keyOf.has(c.nodeId)) problem = `node ${c.nodeId} has no key in the trust file`;
    seen.add(c.nodeId);
    if (problem === null) {
      const v = await verifyEd25519(keyOf.get(c.nodeId), message, c.signature);
      if (!v.ok) problem = `${v.detail} (node ${c.nodeId}'s key over cluster ${quote(cp.clusterId)}, size ${cp.size}, root ${short(cp.root)})`;
    }
    add(name, '§8 final 3', problem === null, problem ?? `verifies under node ${c.nodeId}'s key in the trust file`);
    if (problem !== null) allValid = false;
  }
  // Step 4: a majority of the judges.
  const needed = Math.floor(j.judges.length / 2) + 1;
  const count = cp.cosignatures.length;
  if (!allValid) {
    add('quorum', '§8 final 4', false, 'not counted: a cosignature that is not valid makes the checkpoint invalid, not merely uncounted');
  } else {
    add('quorum', '§8 final 4', count >= needed,
      `${count} of ${j.judges.length} judges cosigned size ${cp.size}; ${needed} needed`);
  }
  return { final: allValid && count >= needed, judges: j.judges };
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

function finish(steps, summary) {
  const ok = steps.length > 0 && steps.every((s) => s.ok === true);
  return { ok, steps, summary };
}

function errText(e) {
  return e instanceof FormatError ? e.message : `unexpected error: ${e?.message ?? e}`;
}

/** Reads JSON text (or a value) for a step; returns {value} or {error}. */
function parseInput(input, what, steps) {
  if (typeof input === 'string' || input instanceof Uint8Array || input instanceof ArrayBuffer) {
    try {
      const value = parseJson(input);
      steps.push({ name: `${what} parses`, section: '§1', ok: true, detail: 'valid JSON, no duplicate keys' });
      return { value };
    } catch (e) {
      steps.push({ name: `${what} parses`, section: '§1', ok: false, detail: errText(e) });
      return { error: errText(e) };
    }
  }
  return { value: input };
}

/** Trust step: read and §10 usability. Returns the trust file or null. */
function trustStep(input, steps) {
  const parsed = parseInput(input, 'trust file', steps);
  if (parsed.error) {
    steps.push({ name: 'trust file', section: '§10', ok: false, detail: 'not checked: the trust file does not parse' });
    return null;
  }
  try {
    const t = readTrustFile(parsed.value);
    const problem = checkTrustFile(t);
    if (problem) {
      steps.push({ name: 'trust file', section: '§10', ok: false, detail: `the trust file is not usable: ${problem}` });
      return null;
    }
    const voters = currentVoters(t);
    steps.push({
      name: 'trust file', section: '§10', ok: true,
      detail: `cluster ${quote(t.clusterId)}, ${t.nodes.length} nodes, current voters ${listText(voters)}${t.voterSets.length ? `, ${t.voterSets.length} voter sets` : ''}`,
    });
    return t;
  } catch (e) {
    steps.push({ name: 'trust file', section: '§10', ok: false, detail: `the trust file is not usable: ${errText(e)}` });
    return null;
  }
}

function tryRead(fn) {
  try { return { value: fn() }; } catch (e) { return { error: errText(e) }; }
}

function summaryOfCheckpoint(cp) {
  return { clusterId: cp.clusterId, size: cp.size.toString(), root: bytesToHex(cp.root), cosigners: cp.cosignatures.map((c) => c.nodeId.toString()) };
}

async function guarded(body) {
  const steps = [];
  const summary = {};
  try {
    await body(steps, summary);
  } catch (e) {
    steps.push({ name: 'internal error', section: '', ok: false, detail: `verification stopped: ${e?.message ?? e}` });
  }
  return finish(steps, summary);
}

function notChecked(steps, names, why) {
  for (const [name, section] of names) steps.push({ name, section, ok: false, detail: `not checked: ${why}` });
}

// ---------------------------------------------------------------------------
// §8 verifyCheckpoint
// ---------------------------------------------------------------------------

/**
 * §8: is `checkpoint` (value or JSON text) final under `trust` (value or
 * JSON text)? Never throws. Returns {ok, steps, summary}.
 */
export function verifyCheckpoint(checkpoint, trust) {
  return guarded(async (steps, summary) => {
    const parsed = parseInput(checkpoint, 'checkpoint', steps);
    const t = trustStep(trust, steps);
    const cp = parsed.error ? { error: 'it does not parse' } : tryRead(() => readCheckpoint(parsed.value));
    steps.push({ name: 'checkpoint fields', section: '§8', ok: !cp.error, detail: cp.error ?? 'all fields present and well-typed' });
    const names = [['checkpoint cluster', '§8 final 1'], ['checkpoint judges', '§8 final 2'], ['quorum', '§8 final 4']];
    if (cp.error) return notChecked(steps, names, 'the checkpoint is malformed');
    Object.assign(summary, { checkpoint: summaryOfCheckpoint(cp.value) });
    if (!t) return notChecked(steps, names, 'no usable trust file');
    const r = await checkpointSteps(cp.value, t, '', steps);
    if (r.judges) summary.checkpoint.judges = r.judges.map(String);
  });
}

// ---------------------------------------------------------------------------
// §10 Receipts
// ---------------------------------------------------------------------------

/**
 * Reads a receipt (value or text): {format, record, inclusionProof,
 * checkpoint}, each read independently so that one malformed part does not
 * hide the others. Returns {format, record, inclusionProof, checkpoint}
 * where each is {value} or {error}.
 */
function readReceiptParts(value) {
  if (!isObject(value)) {
    const e = { error: `receipt: expected an object, got ${describe(value)}` };
    return { format: e, record: e, inclusionProof: e, checkpoint: e };
  }
  return {
    format: tryRead(() => readString(required(value, 'format', 'receipt'), 'receipt.format')),
    record: tryRead(() => readRecord(required(value, 'record', 'receipt'), 'receipt.record')),
    inclusionProof: tryRead(() => readArray(required(value, 'inclusion_proof', 'receipt'), 'receipt.inclusion_proof')
      .map((h, i) => readDigest(h, `receipt.inclusion_proof[${i}]`))),
    checkpoint: tryRead(() => readCheckpoint(required(value, 'checkpoint', 'receipt'), 'receipt.checkpoint')),
  };
}

/**
 * Reads a whole receipt (value or JSON text) into its normalised form
 * (BigInt integers, byte digests, null for absent values). Throws FormatError.
 */
export function readReceipt(value) {
  if (typeof value === 'string' || value instanceof Uint8Array) value = parseJson(value);
  const parts = readReceiptParts(value);
  for (const p of Object.values(parts)) if (p.error) throw new FormatError('', p.error);
  return { format: parts.format.value, record: parts.record.value, inclusionProof: parts.inclusionProof.value, checkpoint: parts.checkpoint.value };
}

/**
 * §10 Receipt: verifies `receipt` (JSON text, bytes, or a parsed value)
 * against `trust` (JSON text or value). Steps, in order: the inputs parse;
 * the trust file is usable (§10); the receipt's fields are well-formed
 * (§1, §2, §8); 1. format; 2. record hash; 3. 1 <= index <= size;
 * 4. inclusion proof; 5. checkpoint final (§8 steps 1–4, one step per
 * cosignature). Never throws. Returns {ok, steps, summary}.
 *
 * Passing JSON text is the strict path: a parsed value cannot show
 * duplicate keys, and `JSON.parse` rounds integers beyond 2^53 and turns
 * 7.0 into 7 (such values are refused only where detectable).
 */
export function verifyReceipt(receipt, trust) {
  return guarded(async (steps, summary) => {
    const parsed = parseInput(receipt, 'receipt', steps);
    const t = trustStep(trust, steps);
    const parts = parsed.error
      ? Object.fromEntries(['format', 'record', 'inclusionProof', 'checkpoint'].map((k) => [k, { error: 'the receipt does not parse' }]))
      : readReceiptParts(parsed.value);
    const errors = [...new Set(Object.values(parts).filter((p) => p.error).map((p) => p.error))];
    steps.push({
      name: 'receipt fields', section: '§1 §2 §8 §10', ok: errors.length === 0,
      detail: errors.length ? errors.join('; ') : 'all fields present and well-typed',
    });

    // §10 step 1: format.
    const f = parts.format;
    steps.push(f.error
      ? { name: 'receipt format', section: '§10 step 1', ok: false, detail: `not checked: ${f.error}` }
      : { name: 'receipt format', section: '§10 step 1', ok: f.value === RECEIPT_FORMAT,
          detail: f.value === RECEIPT_FORMAT ? `format is ${quote(RECEIPT_FORMAT)}` : `format is ${quote(f.value)}; this verifier reads ${quote(RECEIPT_FORMAT)}` });

    // §10 step 2: the record's hash.
    const rec = parts.record;
    let hashOk = false;
    if (rec.error) {
      steps.push({ name: 'record hash', section: '§10 step 2', ok: false, detail: `not checked: ${rec.error}` });
    } else {
      const r = rec.value;
      Object.assign(summary, { index: r.index.toString(), decision: r.decision, reason: r.reason, domain: r.request.domain, requestId: r.request.requestId, recordHash: bytesToHex(r.hash) });
      try {
        const h = await recordHash(r);
        hashOk = bytesEqual(h, r.hash);
        steps.push({
          name: 'record hash', section: '§10 step 2', ok: hashOk,
          detail: hashOk ? `SHA-256 of the record's canonical bytes (§2) is its hash ${short(h)}`
            : `the record's canonical bytes (§2) hash to ${bytesToHex(h)}, but the record says ${bytesToHex(r.hash)}`,
        });
      } catch (e) {
        steps.push({ name: 'record hash', section: '§10 step 2', ok: false, detail: errText(e) });
      }
    }

    // §10 step 3: the checkpoint covers the record.
    const cp = parts.checkpoint;
    if (!cp.error) summary.checkpoint = summaryOfCheckpoint(cp.value);
    if (rec.error || cp.error) {
      steps.push({ name: 'record covered', section: '§10 step 3', ok: false, detail: `not checked: ${rec.error ?? cp.error}` });
    } else {
      const { index } = rec.value, { size } = cp.value;
      const ok = index >= 1n && index <= size;
      steps.push({ name: 'record covered', section: '§10 step 3', ok,
        detail: ok ? `record ${index} is within the checkpoint's size ${size}` : `record ${index} is not covered by a checkpoint of size ${size} (needs 1 <= index <= size)` });
    }

    // §10 step 4: the inclusion proof reproduces the checkpoint's root.
    const ip = parts.inclusionProof;
    if (rec.error || cp.error || ip.error) {
      steps.push({ name: 'inclusion proof', section: '§10 step 4, §7', ok: false, detail: `not checked: ${rec.error ?? cp.error ?? ip.error}` });
    } else if (!(rec.value.index >= 1n && rec.value.index <= cp.value.size)) {
      steps.push({ name: 'inclusion proof', section: '§10 step 4, §7', ok: false, detail: 'not checked: the record is not covered by the checkpoint' });
    } else {
      try {
        const leaf = await leafHash(rec.value.hash);
        const v = await verifyInclusion(leaf, rec.value.index - 1n, cp.value.size, ip.value, cp.value.root);
        steps.push({ name: 'inclusion proof', section: '§10 step 4, §7', ok: v.ok, detail: v.detail });
      } catch (e) {
        steps.push({ name: 'inclusion proof', section: '§10 step 4, §7', ok: false, detail: errText(e) });
      }
    }

    // §10 step 5: the checkpoint is final under the trust file (§8).
    const names = [['checkpoint cluster', '§8 final 1'], ['checkpoint judges', '§8 final 2'], ['quorum', '§8 final 4']];
    if (cp.error) return notChecked(steps, names, cp.error);
    if (!t) return notChecked(steps, names, 'no usable trust file');
    const fin = await checkpointSteps(cp.value, t, '', steps);
    if (fin.judges) summary.checkpoint.judges = fin.judges.map(String);
  });
}

// ---------------------------------------------------------------------------
// §10 Consistency bundles
// ---------------------------------------------------------------------------

/**
 * §10 Consistency bundle: verifies that `bundle` (text or value) extends
 * `oldCheckpoint` (text or value), both final under `trust`. Steps: inputs
 * parse; trust usable; fields well-formed; format; old_size equals the old
 * checkpoint's size; old checkpoint final; new checkpoint final;
 * verify_consistency (§7). Never throws.
 */
export function verifyConsistency(oldCheckpoint, bundle, trust) {
  return guarded(async (steps, summary) => {
    const oldParsed = parseInput(oldCheckpoint, 'old checkpoint', steps);
    const bParsed = parseInput(bundle, 'consistency bundle', steps);
    const t = trustStep(trust, steps);

    const old = oldParsed.error ? { error: 'the old checkpoint does not parse' } : tryRead(() => readCheckpoint(oldParsed.value, 'old_checkpoint'));
    let format, oldSize, proof, cp;
    if (bParsed.error) {
      format = oldSize = proof = cp = { error: 'the bundle does not parse' };
    } else if (!isObject(bParsed.value)) {
      format = oldSize = proof = cp = { error: `bundle: expected an object, got ${describe(bParsed.value)}` };
    } else {
      const b = bParsed.value;
      format = tryRead(() => readString(required(b, 'format', 'bundle'), 'bundle.format'));
      oldSize = tryRead(() => readU64(required(b, 'old_size', 'bundle'), 'bundle.old_size'));
      proof = tryRead(() => readArray(required(b, 'proof', 'bundle'), 'bundle.proof').map((h, i) => readDigest(h, `bundle.proof[${i}]`)));
      cp = tryRead(() => readCheckpoint(required(b, 'checkpoint', 'bundle'), 'bundle.checkpoint'));
    }
    const errors = [...new Set([old, format, oldSize, proof, cp].filter((p) => p.error).map((p) => p.error))];
    steps.push({ name: 'bundle fields', section: '§1 §8 §10', ok: errors.length === 0, detail: errors.length ? errors.join('; ') : 'all fields present and well-typed' });
    if (!old.error) summary.old = summaryOfCheckpoint(old.value);
    if (!cp.error) summary.new = summaryOfCheckpoint(cp.value);

    steps.push(format.error
      ? { name: 'bundle format', section: '§10', ok: false, detail: `not checked: ${format.error}` }
      : { name: 'bundle format', section: '§10', ok: format.value === CONSISTENCY_FORMAT,
          detail: format.value === CONSISTENCY_FORMAT ? `format is ${quote(CONSISTENCY_FORMAT)}` : `format is ${quote(format.value)}; this verifier reads ${quote(CONSISTENCY_FORMAT)}` });

    if (old.error || oldSize.error) {
      steps.push({ name: 'old size', section: '§10', ok: false, detail: `not checked: ${old.error ?? oldSize.error}` });
    } else {
      const ok = oldSize.value === old.value.size;
      steps.push({ name: 'old size', section: '§10', ok, detail: ok ? `the bundle proves from size ${oldSize.value}, the old checkpoint's size` : `the bundle proves from size ${oldSize.value} but the old checkpoint has size ${old.value.size}` });
    }

    const names = (p) => [[`${p}checkpoint cluster`, '§8 final 1'], [`${p}checkpoint judges`, '§8 final 2'], [`${p}quorum`, '§8 final 4']];
    for (const [c, prefix] of [[old, 'old checkpoint: '], [cp, 'new checkpoint: ']]) {
      if (c.error) notChecked(steps, names(prefix), c.error);
      else if (!t) notChecked(steps, names(prefix), 'no usable trust file');
      else await checkpointSteps(c.value, t, prefix, steps);
    }

    if (old.error || cp.error || proof.error) {
      steps.push({ name: 'consistency proof', section: '§10, §7', ok: false, detail: `not checked: ${old.error ?? cp.error ?? proof.error}` });
    } else {
      const v = await verifyConsistencyProof(old.value.size, cp.value.size, old.value.root, cp.value.root, proof.value);
      steps.push({ name: 'consistency proof', section: '§10, §7', ok: v.ok, detail: v.detail });
    }
  });
}

// ---------------------------------------------------------------------------
// §10 Attested answers
// ---------------------------------------------------------------------------

/**
 * §10 "Attested answers": should a client believe an ALLOW? `request` is
 * what was sent (the nine fields of §2, JSON names; context and entities as
 * the text the client sent), `answer` is {decision, receipt_json, record?}
 * (`record`, if given, the answer's record in the JSON form of §2). Steps:
 * the answer is an ALLOW; the receipt parses; its record equals the
 * answer's (when the answer carries one); the record decides the request
 * sent, after the edge's normalisation (context and entities canonicalised
 * per §4, blank context "{}", blank entities and empty parent/trace_id
 * absent, §2); the record says ALLOW; the receipt verifies. Never throws.
 */
export function verifyAttestedAnswer(request, answer, trust) {
  return guarded(async (steps, summary) => {
    const a = isObject(answer) ? answer : {};
    const decision = get(a, 'decision');
    steps.push({ name: 'answer is ALLOW', section: '§10 attested', ok: decision === 'ALLOW',
      detail: decision === 'ALLOW' ? 'the answer says ALLOW' : `the answer's decision is ${describe(decision)}; only an ALLOW carries a receipt` });
    const text = get(a, 'receipt_json');
    if (typeof text !== 'string') {
      steps.push({ name: 'receipt', section: '§10 attested 1', ok: false, detail: `the answer carries no receipt_json (got ${describe(text)})` });
      return;
    }
    let record = null;
    try {
      const v = parseJson(text);
      record = isObject(v) ? readRecord(required(v, 'record', 'receipt'), 'receipt.record') : null;
    } catch { /* reported by verifyReceipt below */ }

    const ansRecord = get(a, 'record');
    if (ansRecord !== undefined && ansRecord !== null) {
      let same = false, detail;
      try {
        const r = readRecord(ansRecord, 'answer.record');
        same = record !== null && canonicalJson(normalForm(r)) === canonicalJson(normalForm(record));
        detail = same ? 'the receipt\'s record is the answer\'s record' : 'the receipt\'s record differs from the answer\'s record';
      } catch (e) { detail = errText(e); }
      steps.push({ name: 'answer record', section: '§10 attested 1', ok: same, detail });
    }

    let reqOk = false, reqDetail;
    try {
      const sent = normaliseSentRequest(request);
      if (record === null) reqDetail = 'not checked: the receipt\'s record cannot be read';
      else {
        const got = record.request;
        const diff = Object.keys(sent).filter((k) => sent[k] !== got[k]);
        reqOk = diff.length === 0;
        reqDetail = reqOk ? 'the record decides the request that was sent, field for field'
          : `the record's request differs from the request sent in ${diff.map((k) => `${SENT_FIELDS[k]} (sent ${quote(sent[k])}, recorded ${quote(got[k])})`).join(', ')}`;
      }
    } catch (e) { reqDetail = `the request sent is malformed: ${errText(e)}`; }
    steps.push({ name: 'record decides the request sent', section: '§10 attested 2', ok: reqOk, detail: reqDetail });
    const allow = record !== null && record.decision === 'ALLOW';
    steps.push({ name: 'record is ALLOW', section: '§10 attested 2', ok: allow,
      detail: record === null ? 'not checked: the receipt\'s record cannot be read' : `the record's decision is ${record.decision}` });

    const r = await verifyReceipt(text, trust);
    for (const s of r.steps) steps.push({ ...s, name: `receipt: ${s.name}` });
    Object.assign(summary, r.summary);
  });
}

const SENT_FIELDS = { domain: 'domain', requestId: 'request_id', principal: 'principal', action: 'action', resource: 'resource', context: 'context', entities: 'entities', parent: 'parent', traceId: 'trace_id' };

function normaliseSentRequest(request) {
  const o = readObject(request, 'request');
  const str = (k) => readString(required(o, k, 'request'), `request.${k}`);
  const opt = (k) => readOptString(o, k, 'request');
  const entities = opt('entities');
  const parent = opt('parent');
  const traceId = opt('trace_id');
  return {
    domain: str('domain'),
    requestId: str('request_id'),
    principal: str('principal'),
    action: str('action'),
    resource: str('resource'),
    context: canonicalizeJson(readString(optional(o, 'context') ?? '', 'request.context'), 'context'),
    entities: entities === null ? null : canonicalizeJson(entities, 'entities'),
    parent: parent === '' ? null : parent,
    traceId: traceId === '' ? null : traceId,
  };
}

/** A normalised record as a plain JSON value (for comparisons). */
function normalForm(r) {
  const conv = (v) => (v instanceof Uint8Array ? bytesToHex(v) : typeof v === 'bigint' ? v.toString()
    : Array.isArray(v) ? v.map(conv) : isObject(v) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, conv(x)])) : v);
  return conv(r);
}
