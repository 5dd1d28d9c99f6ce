// quorate console: the client of `/console/api/` (docs/CONSOLE.md).
//
// Owns the console token (sessionStorage, sent as `Authorization: Bearer`),
// turns every failure into an ApiError {status, code, message} and reads the
// live tail as newline-delimited JSON. Touches no DOM; storage and `fetch`
// are looked up when called, so tests can import this module under Node.

import { LineSplitter } from './model.js';

export const TOKEN_KEY = 'quorate.console.token';
export const PINNED_TRUST_KEY = 'quorate.console.pinned-trust';

function storage(kind) {
  try { return globalThis[kind] ?? null; } catch { return null; } // a sandboxed page may refuse access
}

/** The stored console token, or null. */
export function getToken() {
  try { return storage('sessionStorage')?.getItem(TOKEN_KEY) || null; } catch { return null; }
}

/** Stores a token (trimmed); an empty one clears it. */
export function setToken(token) {
  const t = String(token ?? '').trim();
  const s = storage('sessionStorage');
  if (!s) return;
  if (t) s.setItem(TOKEN_KEY, t); else s.removeItem(TOKEN_KEY);
}

export function clearToken() {
  try { storage('sessionStorage')?.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
}

/**
 * The token of a `#token=<t>` fragment (`quorate console login` prints
 * such a URL), or null. Anything after a further `&` is ignored.
 */
export function tokenFromHash(hash) {
  const m = /^#token=([^&]*)/.exec(String(hash ?? ''));
  if (!m) return null;
  let t = m[1];
  try { t = decodeURIComponent(t); } catch { /* keep it as written */ }
  t = t.trim();
  return t === '' ? null : t;
}

/** The pinned trust file {text, sha256, pinned_ms}, or null. */
export function getPinnedTrust() {
  try {
    const v = JSON.parse(storage('localStorage')?.getItem(PINNED_TRUST_KEY) ?? 'null');
    return v && typeof v.text === 'string' && typeof v.sha256 === 'string' ? v : null;
  } catch { return null; }
}

export function setPinnedTrust(text, sha256Hex) {
  storage('localStorage')?.setItem(PINNED_TRUST_KEY, JSON.stringify({ text, sha256: sha256Hex, pinned_ms: Date.now() }));
}

export function clearPinnedTrust() {
  try { storage('localStorage')?.removeItem(PINNED_TRUST_KEY); } catch { /* nothing pinned */ }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const STATUS_CODES = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 503: 'UNAVAILABLE' };

/** A failed call: the HTTP status (0 when there was no answer), the API error code and its message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * An ApiError from an error answer's status and body text: the body's
 * `{"error", "message"}` when it is one, else a code from the status and
 * the first line of the body (never more than 300 characters).
 */
export function errorFromResponse(status, bodyText) {
  try {
    const v = JSON.parse(bodyText);
    if (v && typeof v.error === 'string' && v.error) {
      return new ApiError(status, v.error, typeof v.message === 'string' ? v.message : '');
    }
  } catch { /* not JSON */ }
  const code = STATUS_CODES[status] ?? (status >= 500 ? 'UNAVAILABLE' : `HTTP_${status}`);
  const first = String(bodyText ?? '').split('\n').find((l) => l.trim() !== '') ?? '';
  return new ApiError(status, code, first.slice(0, 300) || `the node answered HTTP ${status}`);
}

/** What to do about an error code, for the error box (null when the message says enough). */
export function errorHint(code) {
  switch (code) {
    case 'UNAUTHENTICATED': return 'Sign in: paste a console token from `quorate console login --role auditor` (or open the URL it prints), or use a client certificate of the cluster.';
    case 'PERMISSION_DENIED': return 'This view needs an auditor or admin identity — sign in with `quorate console login --role auditor`.';
    case 'UNAVAILABLE': return 'The node could not answer now; it retries on its own or try another node of the cluster.';
    case 'NOT_FOUND': return 'Nothing with that name or index exists on this node.';
    default: return null;
  }
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const t = getToken();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/**
 * Runs `fn(signal)` under a signal that follows `outer` and also aborts
 * after `ms` (0: never); a timeout becomes ApiError UNAVAILABLE, while an
 * abort of `outer` stays the AbortError.
 */
async function withTimeout(outer, ms, fn) {
  const ctl = new AbortController();
  let timedOut = false;
  const follow = () => ctl.abort();
  if (outer?.aborted) ctl.abort();
  else outer?.addEventListener('abort', follow, { once: true });
  const timer = ms ? setTimeout(() => { timedOut = true; ctl.abort(); }, ms) : null;
  try {
    return await fn(ctl.signal);
  } catch (e) {
    if (timedOut && e?.name === 'AbortError') throw new ApiError(0, 'UNAVAILABLE', `the node did not answer within ${ms / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', follow);
  }
}

async function call(path, { method = 'GET', body, signal, accept } = {}) {
  const init = { method, signal, cache: 'no-store', credentials: 'same-origin', headers: headers(accept ? { Accept: accept } : {}) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new ApiError(0, 'UNAVAILABLE', `the node did not answer (${e?.message ?? 'network error'})`);
  }
  if (!res.ok) throw errorFromResponse(res.status, await res.text().catch(() => ''));
  return res;
}

const timeoutOf = (opts) => opts.timeoutMs ?? (opts.method === 'POST' ? 60_000 : 15_000);

/** GET (or another method) and parse the JSON answer. Gives up after 15 s (a POST after 60 s). */
export function getJson(path, opts = {}) {
  return withTimeout(opts.signal, timeoutOf(opts), async (signal) => {
    const res = await call(path, { ...opts, signal });
    const text = await res.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(res.status, 'INVALID_RESPONSE', `the node's answer to ${path} is not JSON`);
    }
  });
}

/** GET the answer as exact text (receipts and trust files are verified byte for byte). */
export function getText(path, opts = {}) {
  return withTimeout(opts.signal, timeoutOf(opts), async (signal) => (await call(path, { ...opts, signal })).text());
}

export function postJson(path, body, opts = {}) {
  return getJson(path, { ...opts, method: 'POST', body });
}

/**
 * Reads a newline-delimited JSON answer (the live tail) until it ends or
 * `signal` aborts, calling `onLine(text)` for each line. `onOpen()` is
 * called once the node has answered 200. Resolves when the stream ends;
 * rejects with an ApiError when the node refuses, or the AbortError.
 */
export async function streamLines(path, { signal, onLine, onOpen } = {}) {
  const res = await call(path, { signal, accept: 'application/x-ndjson' });
  onOpen?.();
  const split = new LineSplitter();
  if (!res.body) {
    for (const l of split.push(await res.text())) onLine(l);
  } else {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const l of split.push(dec.decode(value, { stream: true }))) onLine(l);
      }
      for (const l of split.push(dec.decode())) onLine(l);
    } finally {
      reader.releaseLock?.();
    }
  }
  for (const l of split.end()) onLine(l);
}

export const api = {
  session: (o) => getJson('/console/api/session', o),
  health: (o) => getJson('/console/api/health', o),
  timeline: (o) => getJson('/console/api/timeline', o),
  decisions: (query, o) => getJson(`/console/api/decisions${query ? `?${query}` : ''}`, o),
  decision: (i, o) => getJson(`/console/api/decisions/${encodeURIComponent(i)}`, o),
  lineage: (i, limit, o) => getJson(`/console/api/lineage/${encodeURIComponent(i)}?limit=${limit}`, o),
  trace: (traceId, after, limit, o) => getJson(`/console/api/lineage?${new URLSearchParams({ trace_id: traceId, ...(after ? { after: String(after) } : {}), limit: String(limit) })}`, o),
  receipt: (i, o) => getText(`/console/api/receipts/${encodeURIComponent(i)}`, o),
  trust: (o) => getText('/console/api/trust', o),
  policies: (o) => getJson('/console/api/policies', o),
  whatif: (body, o) => postJson('/console/api/whatif', body, o),
  activate: (domain, version, o) => postJson(`/console/api/policies/${encodeURIComponent(domain)}/${encodeURIComponent(version)}/activate`, {}, o),
  promote: (id, force, o) => postJson(`/console/api/rollouts/${encodeURIComponent(id)}/promote`, { force: !!force }, o),
  rollback: (id, o) => postJson(`/console/api/rollouts/${encodeURIComponent(id)}/rollback`, {}, o),
  tail: (after, o) => streamLines(`/console/api/tail?after=${encodeURIComponent(after)}`, o),
};
