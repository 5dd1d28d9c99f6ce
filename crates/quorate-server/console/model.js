// quorate console: the logic of the views that does not need a page.
//
// Routing, decision-log filters (the query of docs/CONSOLE.md and the same
// semantics applied to live-tail records), time formatting, the health
// summaries and the timeline series. Nothing here touches `document`,
// `window` or the network, so tests/console.test.mjs imports it directly.

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/** The five views and the detail view, in navigation order. */
export const VIEWS = Object.freeze(['health', 'decisions', 'decision', 'lineage', 'proofs', 'policies']);

/**
 * Reads a location hash (`#/decision/12?x=1`) into {view, param, query}.
 * `query` is a plain object of the first value of each key. An empty or
 * unknown hash is the health view.
 */
export function parseRoute(hash) {
  let h = String(hash ?? '');
  if (h.startsWith('#')) h = h.slice(1);
  if (h.startsWith('/')) h = h.slice(1);
  const q = h.indexOf('?');
  const path = q < 0 ? h : h.slice(0, q);
  const query = {};
  if (q >= 0) {
    for (const [k, v] of new URLSearchParams(h.slice(q + 1))) if (!(k in query)) query[k] = v;
  }
  const [name, ...rest] = path.split('/');
  const param = rest.length ? decodeURIComponentSafe(rest.join('/')) : null;
  if (!VIEWS.includes(name)) return { view: 'health', param: null, query: {} };
  return { view: name, param: param === '' ? null : param, query };
}

/** The hash of a route: `routeHash('decisions', null, {domain: 'a'})` is `#/decisions?domain=a`. */
export function routeHash(view, param = null, query = null) {
  let h = `#/${view}`;
  if (param !== null && param !== undefined && param !== '') h += `/${encodeURIComponent(String(param))}`;
  const qs = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== null && v !== undefined && v !== '')).toString() : '';
  return qs ? `${h}?${qs}` : h;
}

function decodeURIComponentSafe(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

/** A decimal log index (1 or more) from route text, or null. */
export function parseIndex(text) {
  if (typeof text !== 'string' || !/^[0-9]{1,16}$/.test(text)) return null;
  const n = Number(text);
  return Number.isSafeInteger(n) && n >= 1 ? n : null;
}

// ---------------------------------------------------------------------------
// Decision-log filters
// ---------------------------------------------------------------------------

/** The query parameters of `GET /console/api/decisions` that filter, in the order the URL lists them. */
export const FILTER_FIELDS = Object.freeze([
  'domain', 'principal', 'action', 'resource', 'decision', 'reason',
  'policy_version', 'request_id', 'trace_id', 'since_ms', 'until_ms',
]);
const SUBSTRING_FIELDS = new Set(['principal', 'action', 'resource']);
const NUMBER_FIELDS = new Set(['policy_version', 'since_ms', 'until_ms']);

/**
 * Normalises filters from a route query or a form: only known fields, text
 * trimmed, empty values dropped, `decision` only `ALLOW`/`DENY`, numbers
 * only when they are non-negative integers. Returns a plain object.
 */
export function normalizeFilters(input) {
  const out = {};
  for (const k of FILTER_FIELDS) {
    let v = input?.[k];
    if (v === null || v === undefined) continue;
    v = String(v).trim();
    if (v === '') continue;
    if (k === 'decision') {
      v = v.toUpperCase();
      if (v !== 'ALLOW' && v !== 'DENY') continue;
    } else if (NUMBER_FIELDS.has(k)) {
      if (!/^[0-9]{1,16}$/.test(v)) continue;
      v = Number(v);
      if (!Number.isSafeInteger(v)) continue;
    }
    out[k] = v;
  }
  return out;
}

/** Filters as a query string in FILTER_FIELDS order (`domain=a&decision=DENY`); '' when none. */
export function filtersToQuery(filters) {
  const f = normalizeFilters(filters);
  const p = new URLSearchParams();
  for (const k of FILTER_FIELDS) if (k in f) p.set(k, String(f[k]));
  return p.toString();
}

/**
 * Whether a decision record (docs/FORMATS.md §2 JSON form) passes the
 * filters, with the server's semantics: `principal`, `action`, `resource`
 * are substring matches; every other field is exact; `since_ms` and
 * `until_ms` bound `timestamp_ms` inclusively.
 */
export function matchesFilters(record, filters) {
  const f = normalizeFilters(filters);
  const req = record?.request ?? {};
  for (const [k, want] of Object.entries(f)) {
    switch (k) {
      case 'since_ms': if (!(record.timestamp_ms >= want)) return false; break;
      case 'until_ms': if (!(record.timestamp_ms <= want)) return false; break;
      case 'policy_version': if (record.policy_version !== want) return false; break;
      case 'decision': if (record.decision !== want) return false; break;
      case 'reason': if (record.reason !== want) return false; break;
      default: {
        const have = req[k];
        if (typeof have !== 'string') return false;
        if (SUBSTRING_FIELDS.has(k) ? !have.includes(want) : have !== want) return false;
      }
    }
  }
  return true;
}

/** A `datetime-local` value ("2025-12-03T10:00" or with seconds) in local time to ms since the epoch, or null. */
export function datetimeLocalToMs(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(String(value ?? '').trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, s = '0', frac = '0'] = m;
  const ms = Number(frac.padEnd(3, '0'));
  const t = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms).getTime();
  return Number.isFinite(t) ? t : null;
}

/** ms since the epoch to a `datetime-local` value in local time, with seconds ("2025-12-03T10:00:05"). */
export function msToDatetimeLocal(ms) {
  const d = new Date(ms);
  if (!Number.isFinite(d.getTime())) return '';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  let s = `${p(d.getFullYear(), 4)}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  if (d.getMilliseconds()) s += `.${p(d.getMilliseconds(), 3)}`;
  return s;
}

// ---------------------------------------------------------------------------
// Time and text formatting
// ---------------------------------------------------------------------------

/**
 * `target` relative to `now` in words: "just now", "12 s ago", "in 3 min",
 * "5 h ago", "in 13 days", "2 y ago". Whole units, rounded down.
 */
export function relativeTime(target, now) {
  if (!Number.isFinite(target) || !Number.isFinite(now)) return 'unknown';
  const d = target - now;
  const a = Math.abs(d);
  if (a < 5000) return 'just now';
  let text;
  if (a < 60_000) text = `${Math.floor(a / 1000)} s`;
  else if (a < 3_600_000) text = `${Math.floor(a / 60_000)} min`;
  else if (a < 86_400_000) text = `${Math.floor(a / 3_600_000)} h`;
  else if (a < 730 * 86_400_000) { const n = Math.floor(a / 86_400_000); text = `${n} ${n === 1 ? 'day' : 'days'}`; }
  else text = `${Math.floor(a / (365.25 * 86_400_000))} y`;
  return d < 0 ? `${text} ago` : `in ${text}`;
}

/** A duration in ms as "450 ms", "12 s", "3 min 05 s", "2 h 07 min", "4 d 03 h". */
export function formatDuration(ms) {
  if (!Number.isFinite(ms)) return 'unknown';
  const a = Math.max(0, Math.floor(ms));
  const p = (n) => String(n).padStart(2, '0');
  if (a < 1000) return `${a} ms`;
  const s = Math.floor(a / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${p(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${p(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${p(h % 24)} h`;
}

/** ms since the epoch as local "YYYY-MM-DD HH:MM:SS.mmm" (milliseconds only when not zero). */
export function formatTime(ms) {
  if (!Number.isFinite(ms)) return '—';
  return msToDatetimeLocal(ms).replace('T', ' ') || '—';
}

/**
 * ms since the epoch, short, for tables: "HH:MM:SS.mmm" on the day of
 * `now`, "MM-DD HH:MM:SS" in its year, "YYYY-MM-DD HH:MM" before (local time).
 */
export function formatTimeCompact(ms, now) {
  if (!Number.isFinite(ms)) return '—';
  const full = formatTime(ms); // YYYY-MM-DD HH:MM:SS[.mmm]
  const today = formatTime(now);
  if (full.slice(0, 10) === today.slice(0, 10)) {
    const ms3 = String(new Date(ms).getMilliseconds()).padStart(3, '0');
    return `${full.slice(11, 19)}.${ms3}`;
  }
  if (full.slice(0, 4) === today.slice(0, 4)) return full.slice(5, 19);
  return full.slice(0, 16);
}

/** The first `n` characters of `s`, with an ellipsis when cut. */
export function truncate(s, n) {
  const t = String(s ?? '');
  return t.length <= n ? t : `${t.slice(0, Math.max(0, n - 1))}…`;
}

/** The first `n` hex digits of a digest (the whole text when shorter or not a string). */
export function shortHash(hex, n = 12) {
  if (typeof hex !== 'string') return '—';
  return hex.length > n ? `${hex.slice(0, n)}…` : hex;
}

/** JSON text pretty-printed with two spaces; the text itself when it does not parse. */
export function prettyJsonText(text) {
  if (typeof text !== 'string') return text === null || text === undefined ? '' : JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/**
 * How grave a containment reason (docs/FORMATS.md §5) is: `critical` for
 * a broken chain or diverged replicas, `contained` for the rest.
 */
export function reasonSeverity(reason) {
  return reason === 'INTEGRITY_FAILURE' || reason === 'DIVERGENCE' ? 'critical' : 'contained';
}

/** A certificate expiry: `expired`, `warn` (under 14 days), `ok`, or `unknown`. */
export function certExpiryLevel(expiryMs, now) {
  if (!Number.isFinite(expiryMs)) return 'unknown';
  if (expiryMs <= now) return 'expired';
  return expiryMs - now < 14 * 86_400_000 ? 'warn' : 'ok';
}

// ---------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------

/** A member's state for the dashboard: {state: quorate|contained|unreachable, reason}. */
export function nodeState(node) {
  if (!node || node.reachable === false) return { state: 'unreachable', reason: null };
  if (node.containment) return { state: 'contained', reason: node.containment.reason ?? 'UNKNOWN' };
  if (node.quorate === false) return { state: 'contained', reason: 'UNKNOWN' };
  return { state: 'quorate', reason: null };
}

/**
 * The cluster banner from a health answer. The cluster is shown contained
 * when the serving node is (its every answer is then a DENY), or when no
 * reachable member is quorate. `leader` is the leader the reachable members
 * of the highest term report.
 */
export function clusterSummary(health) {
  const nodes = Array.isArray(health?.nodes) ? health.nodes : [];
  const reachable = nodes.filter((n) => n.reachable !== false);
  const term = reachable.reduce((t, n) => (Number.isFinite(n.term) && n.term > t ? n.term : t), 0);
  const current = reachable.filter((n) => n.term === term);
  const leaderNode = current.find((n) => n.role === 'leader');
  let leader = leaderNode ? leaderNode.node_id : null;
  if (leader === null) {
    const named = current.map((n) => n.leader_id).find((id) => id !== null && id !== undefined);
    if (named !== undefined) leader = named;
  }
  const serving = nodes.find((n) => n.node_id === health?.served_by) ?? null;
  const counts = { quorate: 0, contained: 0, unreachable: 0 };
  for (const n of nodes) counts[nodeState(n).state]++;
  let contained = null;
  if (serving && nodeState(serving).state === 'contained') contained = serving;
  else if (counts.quorate === 0) contained = reachable.find((n) => nodeState(n).state === 'contained') ?? null;
  const state = contained || (counts.quorate === 0 && nodes.length > 0) ? 'contained' : 'quorate';
  return {
    state,
    leader,
    term: term || null,
    reason: state === 'contained' ? contained?.containment?.reason ?? (contained ? 'UNKNOWN' : 'UNAVAILABLE') : null,
    message: contained?.containment?.message ?? null,
    since_ms: contained?.containment?.since_ms ?? null,
    counts,
    total: nodes.length,
  };
}

// ---------------------------------------------------------------------------
// The timeline
// ---------------------------------------------------------------------------

/**
 * Decisions per second between consecutive samples of `GET
 * /console/api/timeline`: one point per sample after the first, at that
 * sample's time. A count that went down (a restarted node) counts as 0.
 */
export function throughput(samples) {
  const out = [];
  const xs = Array.isArray(samples) ? samples : [];
  for (let i = 1; i < xs.length; i++) {
    const a = xs[i - 1], b = xs[i];
    const dt = b.t_ms - a.t_ms;
    if (!(dt > 0)) continue;
    const dn = b.decisions - a.decisions;
    out.push({ t_ms: b.t_ms, rate: dn > 0 ? (dn * 1000) / dt : 0 });
  }
  return out;
}

/**
 * The time ranges in which the node was contained: consecutive samples with
 * the same non-null `contained` reason merged into {start_ms, end_ms,
 * reason}. A range ends at the next sample (the last one `interval_ms`
 * after its sample).
 */
export function containmentRanges(samples, intervalMs = 1000) {
  const out = [];
  const xs = Array.isArray(samples) ? samples : [];
  for (let i = 0; i < xs.length; i++) {
    const s = xs[i];
    if (s.contained === null || s.contained === undefined) continue;
    const end = i + 1 < xs.length ? xs[i + 1].t_ms : s.t_ms + intervalMs;
    const last = out[out.length - 1];
    if (last && last.reason === s.contained && last.end_ms === s.t_ms) last.end_ms = end;
    else out.push({ start_ms: s.t_ms, end_ms: end, reason: s.contained });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Newline-delimited JSON (the live tail)
// ---------------------------------------------------------------------------

/**
 * Splits a stream of text chunks into lines. `push(chunk)` returns the
 * lines completed by the chunk (without their `\n` or `\r\n`, blank lines
 * skipped); `end()` returns the unterminated rest, if any, as a last line.
 */
export class LineSplitter {
  constructor() { this.rest = ''; }
  push(chunk) {
    const text = this.rest + chunk;
    const parts = text.split('\n');
    this.rest = parts.pop();
    return parts.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).filter((l) => l.trim() !== '');
  }
  end() {
    const l = this.rest.endsWith('\r') ? this.rest.slice(0, -1) : this.rest;
    this.rest = '';
    return l.trim() === '' ? [] : [l];
  }
}

/** One tail line: {kind: 'heartbeat', as_of} | {kind: 'record', record} | {kind: 'bad', error}. */
export function parseTailLine(line) {
  let v;
  try { v = JSON.parse(line); } catch (e) { return { kind: 'bad', error: `not JSON: ${e.message}` }; }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { kind: 'bad', error: 'not a JSON object' };
  if ('heartbeat' in v) return { kind: 'heartbeat', as_of: v.heartbeat };
  if (!Number.isSafeInteger(v.index) || typeof v.request !== 'object' || v.request === null) return { kind: 'bad', error: 'not a decision record' };
  return { kind: 'record', record: v };
}

/** The delay before reconnecting the tail after `failures` consecutive failures: 1 s doubling to 30 s. */
export function backoffMs(failures) {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, Math.min(failures, 15)));
}

/**
 * Where administrative actions go when the node serving this page does not
 * lead: `{ id, url }` of the leader (`url` with the console token in the
 * fragment, so the browser stays signed in there, and `to` the view to
 * open), or `{ id, url: null }` when no leader answers, or null when this
 * node leads (or its own state is unknown).
 */
export function leaderConsole(health, token, to = '/policies') {
  const nodes = Array.isArray(health?.nodes) ? health.nodes : [];
  const self = nodes.find((n) => n.node_id === health?.served_by);
  if (!self || self.role === 'leader') return null;
  const leader = nodes.find((n) => n.role === 'leader' && n.reachable !== false);
  if (!leader) return { id: self.leader_id ?? null, url: null };
  const base = typeof leader.console_url === 'string' && /^https?:\/\//.test(leader.console_url)
    ? leader.console_url.replace(/#.*$/, '') : null;
  if (!base) return { id: leader.node_id, url: null };
  const url = token ? `${base}#token=${encodeURIComponent(token)}&to=${to}` : `${base}#${to}`;
  return { id: leader.node_id, url };
}

/** The route a `#token=...&to=/view` fragment asks for; `#/health` otherwise. */
export function routeAfterToken(hash) {
  const m = /&to=(\/[a-z]+)$/.exec(String(hash ?? ''));
  return m ? `#${m[1]}` : '#/health';
}
