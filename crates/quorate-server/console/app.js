// quorate console: the page.
//
// The shell (hash routing, session, sign-in), the six views of
// docs/CONSOLE.md and the test hooks the browser tests drive
// (`body[data-view]`, `body[data-loaded]`, `data-test` attributes). The
// logic that needs no page lives in model.js, graph.js and diff.js; the
// API client in api.js; receipt verification in proof.js. Every value from
// the network reaches the page through textContent or an attribute, never
// through HTML parsing.

import {
  api, ApiError, errorHint, getToken, setToken, clearToken, tokenFromHash,
  getPinnedTrust, setPinnedTrust, clearPinnedTrust,
} from './api.js';
import * as M from './model.js';
import { layoutLineage, chartGeometry } from './graph.js';
import { diffLines, collapseDiff, diffStats } from './diff.js';
import { verifyReceipt, sha256, bytesToHex, utf8, parseJson, canonicalJson, REASON_CODES } from './proof.js';

// ---------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'indeterminate', 'readOnly', 'tabIndex']);

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, kids) {
  for (const c of kids) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h('td', {class: 'x', 'data-index': 3}, 'text', child). */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

/** An SVG element. */
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, kids);
  return el;
}

const $ = (id) => document.getElementById(id);
const mono = (text, title) => h('span', { class: 'mono', title: title ?? null }, text);
const dash = '—';
const show = (v) => (v === null || v === undefined || v === '' ? dash : String(v));

function badge(kind, text, attrs = {}) {
  return h('span', { ...attrs, class: ['badge', `badge-${kind}`, attrs.class] }, text);
}

function outcomeBadge(decision) {
  return badge(decision === 'ALLOW' ? 'allow' : decision === 'DENY' ? 'deny' : 'muted', show(decision));
}

function timeCell(ms, compact = true) {
  const iso = Number.isFinite(ms) ? new Date(ms).toISOString() : null;
  return h('time', { datetime: iso, title: Number.isFinite(ms) ? `${M.formatTime(ms)} (${iso})` : null }, compact ? M.formatTimeCompact(ms, Date.now()) : M.formatTime(ms));
}

/** A table cell of monospace text that ends in an ellipsis when the column is narrow (full text on hover). */
function truncCell(text) {
  const t = show(text);
  return h('td', { class: 'mono', title: t }, h('span', { class: 'trunc' }, M.truncate(t, 120)));
}

function card(title, ...kids) {
  return h('section', { class: 'card' }, title ? h('h2', { class: 'card-title' }, title) : null, ...kids);
}

/** A definition list from [label, value] rows (rows that are null are skipped). */
function dl(rows, cls = 'kv') {
  const el = h('dl', { class: cls });
  for (const r of rows) if (r) el.append(h('dt', null, r[0]), h('dd', null, r[1]));
  return el;
}

/** The error box of any failed call: code, message, what to do. Never a stack trace. */
function errorBox(err, context) {
  const code = err instanceof ApiError ? err.code : 'CLIENT_ERROR';
  const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : '';
  const message = err instanceof ApiError ? err.message : String(err?.message ?? err);
  const hint = errorHint(code);
  return h('div', { class: 'error-box', role: 'alert', 'data-test': 'error', 'data-code': code },
    h('div', { class: 'error-head' }, h('strong', null, code), status, context ? ` — ${context}` : ''),
    message ? h('p', { class: 'error-message' }, message) : null,
    hint ? h('p', { class: 'error-hint' }, hint) : null);
}

function notice(kind, ...kids) {
  return h('div', { class: ['notice', `notice-${kind}`], role: kind === 'warn' ? 'note' : null }, ...kids);
}

function link(hash, text, attrs = {}) {
  return h('a', { ...attrs, href: hash }, text);
}

const isAbort = (e) => e?.name === 'AbortError';

// ---------------------------------------------------------------------------
// The shell: routing, view lifetimes, session
// ---------------------------------------------------------------------------

const TITLES = { health: 'Cluster health', decisions: 'Decision log', decision: 'Decision', lineage: 'Lineage', proofs: 'Proof viewer', policies: 'Policies and rollouts' };
const NAV_OF = { decision: 'decisions' };

const state = {
  session: null, // the last /console/api/session answer
  sessionError: null,
  ctx: null, // the current view's lifetime
  clockOffset: 0, // server clock minus ours, from the health answer
  tail: { on: false }, // the decision log's live-tail toggle, kept across re-renders
  panelOpen: false,
};

const serverNow = () => Date.now() + state.clockOffset;

/**
 * A view's lifetime: its abort signal (aborted on navigation and on
 * sign-in/out, so no answer obtained before lands on the page after),
 * timers, and the `data-loaded` hook.
 */
class ViewCtx {
  constructor(route, root) {
    this.route = route;
    this.root = root;
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this.timers = new Set();
    this.isLoaded = false;
  }
  get alive() { return !this.signal.aborted; }
  close() {
    this.controller.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
  loaded() {
    if (!this.alive || this.isLoaded) return;
    this.isLoaded = true;
    document.body.dataset.loaded = 'true';
  }
  sleep(ms, signal = this.signal) {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      this.timers.add(t);
      function done() { signal.removeEventListener('abort', done); clearTimeout(t); resolve(); }
      signal.addEventListener('abort', done, { once: true });
    });
  }
  /** Runs `fn` now and then `ms` after each run ends, while the view lives. Resolves after the first run. */
  poll(fn, ms) {
    const run = async () => {
      try { await fn(); } catch (e) { if (!isAbort(e)) console.error(e); }
    };
    const first = run();
    (async () => {
      await first;
      while (this.alive) {
        await this.sleep(ms);
        if (!this.alive) break;
        await run();
      }
    })();
    return first;
  }
}

function route() {
  const r = M.parseRoute(location.hash);
  state.ctx?.close();
  const root = $('view');
  const ctx = new ViewCtx(r, root);
  state.ctx = ctx;
  document.body.dataset.view = r.view;
  document.body.dataset.loaded = 'false';
  $('view-title').textContent = TITLES[r.view];
  document.title = `${TITLES[r.view]} · quorate`;
  const nav = NAV_OF[r.view] ?? r.view;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  root.replaceChildren();
  Promise.resolve()
    .then(() => VIEWS[r.view](ctx))
    .catch((e) => {
      if (isAbort(e) || !ctx.alive) return;
      root.append(errorBox(e));
    })
    .finally(() => ctx.loaded());
}

/** Takes a `#token=` fragment into sessionStorage and out of the address bar. True when there was one. */
function captureToken() {
  if (!location.hash.startsWith('#token=')) return false;
  const t = tokenFromHash(location.hash);
  if (t) setToken(t);
  history.replaceState(null, '', `${location.pathname}${location.search}${M.routeAfterToken(location.hash)}`);
  return true;
}

/** Forgets everything shown for the previous identity and starts the view again. */
function identityChanged() {
  state.ctx?.close();
  document.body.dataset.loaded = 'false';
  state.tail = { on: false };
  policyUi.clear();
  $('view').replaceChildren();
  state.session = null;
  renderSession();
  loadSession().finally(route);
}

async function loadSession() {
  try {
    state.session = await api.session();
    state.sessionError = null;
  } catch (e) {
    state.session = null;
    state.sessionError = e;
  }
  renderSession();
}

const canAudit = () => !!state.session?.can?.audit;
const canAdminister = () => !!state.session?.can?.administer;

function shortIdentity(id) {
  if (typeof id !== 'string' || id === '') return 'anonymous';
  const parts = id.split('/');
  return parts[parts.length - 1] || id;
}

function renderSession() {
  const area = $('session-area');
  const sess = state.session;
  const cid = $('cluster-id');
  cid.textContent = sess ? `${sess.cluster_id} · node ${sess.node_id}${sess.tls ? '' : ' · insecure'}` : '';

  let chipText, role;
  if (sess) {
    role = sess.role ?? 'anonymous';
    chipText = sess.via === 'insecure' ? 'insecure node (open)' : sess.identity ? shortIdentity(sess.identity) : 'not signed in';
  } else {
    role = 'unknown';
    chipText = state.sessionError ? `session: ${state.sessionError.code ?? 'error'}` : 'session…';
  }
  const chip = h('button', { type: 'button', class: 'session-chip', 'data-test': 'session', 'data-role': sess?.role ?? '', 'aria-expanded': String(state.panelOpen),
    onclick: () => { state.panelOpen = !state.panelOpen; renderSession(); if (state.panelOpen) $('token-field')?.focus(); } },
  h('span', { class: ['role-dot', `role-${role}`] }), h('span', { class: 'session-id' }, chipText), h('span', { class: 'session-role' }, role));

  for (const a of document.querySelectorAll('[data-nav]')) {
    const needsAudit = ['decisions', 'lineage', 'policies'].includes(a.dataset.nav);
    a.classList.toggle('locked', !!sess && needsAudit && !canAudit());
    a.title = a.classList.contains('locked') ? 'needs an auditor or admin identity' : '';
  }

  const children = [chip];
  const typed = $('token-field')?.value ?? ''; // a refresh must not lose a half-pasted token
  if (state.panelOpen) children.push(sessionPanel(sess));
  area.replaceChildren(...children);
  if (typed && $('token-field')) $('token-field').value = typed;
}

function sessionPanel(sess) {
  const field = h('textarea', { id: 'token-field', class: 'token-field', rows: 3, spellcheck: 'false', autocomplete: 'off', placeholder: 'qct1.… (from quorate console login --role auditor)', 'data-test': 'token-input' });
  const signIn = (ev) => {
    ev.preventDefault();
    let t = field.value.trim();
    const at = t.indexOf('#token='); // a whole login URL pasted
    if (at >= 0) t = tokenFromHash(t.slice(at)) ?? '';
    if (!t) return;
    setToken(t);
    state.panelOpen = false;
    identityChanged();
  };
  const rows = [];
  if (sess) {
    rows.push(['Identity', mono(show(sess.identity))], ['Role', show(sess.role)], ['Via', show(sess.via)]);
    if (sess.expires_ms) rows.push(['Expires', `${M.relativeTime(sess.expires_ms, Date.now())} (${M.formatTime(sess.expires_ms)})`]);
    const can = sess.can ?? {};
    rows.push(['May', ['health', 'audit', 'administer'].filter((k) => can[k]).join(', ') || 'nothing']);
  } else if (state.sessionError) {
    rows.push(['Session', `${state.sessionError.code}: ${state.sessionError.message}`]);
  }
  return h('div', { class: 'session-panel', role: 'dialog', 'aria-label': 'Session' },
    dl(rows),
    sess?.via === 'certificate' ? notice('info', 'Signed in with a client certificate: it stays in use until you remove it from the browser.') : null,
    h('form', { class: 'token-form', onsubmit: signIn },
      h('label', { for: 'token-field' }, 'Console token'), field,
      h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'btn btn-primary', 'data-test': 'sign-in' }, 'Sign in'),
        h('button', { type: 'button', class: 'btn', 'data-test': 'sign-out', disabled: !getToken(),
          onclick: () => { clearToken(); state.panelOpen = false; identityChanged(); } }, 'Sign out'))));
}

// ---------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------

async function healthView(ctx) {
  const root = ctx.root;
  const banner = h('div', { class: 'banner-slot' });
  const err = h('div');
  const meta = h('p', { class: 'muted view-meta' }, 'loading…');
  const grid = h('div', { class: 'node-grid' });
  const chartSlot = h('div', { class: 'chart-slot' }, h('p', { class: 'muted' }, 'loading timeline…'));
  const timelineErr = h('div');
  root.append(banner, meta, err, grid, card('Throughput and containment (this node, last 10 minutes)', timelineErr, chartSlot));

  let lastOk = 0;
  const loadHealth = async () => {
    try {
      const t0 = Date.now();
      const hl = await api.health({ signal: ctx.signal });
      if (!ctx.alive) return;
      if (Number.isFinite(hl.as_of_ms)) state.clockOffset = hl.as_of_ms - Math.round((t0 + Date.now()) / 2);
      lastOk = Date.now();
      err.replaceChildren();
      grid.classList.remove('stale');
      renderHealth(hl, banner, meta, grid);
    } catch (e) {
      if (isAbort(e) || !ctx.alive) return;
      err.replaceChildren(errorBox(e, lastOk ? `health (last answer ${M.relativeTime(lastOk, Date.now())})` : 'health'));
      grid.classList.add('stale');
    } finally {
      ctx.loaded();
    }
  };
  const loadTimeline = async () => {
    try {
      const tl = await api.timeline({ signal: ctx.signal });
      if (!ctx.alive) return;
      timelineErr.replaceChildren();
      chartSlot.replaceChildren(timelineChart(tl));
    } catch (e) {
      if (isAbort(e) || !ctx.alive) return;
      timelineErr.replaceChildren(errorBox(e, 'timeline'));
    }
  };
  ctx.poll(loadTimeline, 2000);
  await ctx.poll(loadHealth, 1000);
}

function renderHealth(hl, bannerSlot, meta, grid) {
  const now = serverNow();
  const sum = M.clusterSummary(hl);
  const bannerKids = [];
  if (sum.state === 'contained') {
    bannerKids.push(h('div', { class: 'banner-title' }, `CONTAINED: every answer is DENY ${sum.reason}`));
    const sub = [];
    if (sum.message) sub.push(sum.message);
    if (Number.isFinite(sum.since_ms)) sub.push(`since ${M.relativeTime(sum.since_ms, now)} (${M.formatTime(sum.since_ms)})`);
    if (sub.length) bannerKids.push(h('div', { class: 'banner-sub' }, sub.join(' · ')));
  } else {
    bannerKids.push(h('div', { class: 'banner-title' }, 'Quorate'));
  }
  bannerKids.push(h('div', { class: 'banner-facts' },
    fact('Leader', sum.leader === null ? 'none known' : `node ${sum.leader}`),
    fact('Term', show(sum.term)),
    fact('Members', `${sum.counts.quorate} quorate · ${sum.counts.contained} contained · ${sum.counts.unreachable} unreachable`)));
  const sev = sum.state === 'contained' ? M.reasonSeverity(sum.reason) : 'ok';
  bannerSlot.replaceChildren(h('div', { class: ['banner', `banner-${sum.state}`, `sev-${sev}`], 'data-test': 'cluster-banner', 'data-state': sum.state, 'data-reason': sum.reason ?? null, role: 'status' }, ...bannerKids));

  meta.textContent = `Cluster ${show(hl.cluster_id)}, as seen by node ${show(hl.served_by)} at ${M.formatTime(hl.as_of_ms)}; refreshed every second.`;
  const nodes = [...(hl.nodes ?? [])].sort((a, b) => a.node_id - b.node_id);
  grid.replaceChildren(...nodes.map((n) => nodeCard(n, hl.served_by, now)));
}

function fact(label, value) {
  return h('span', { class: 'fact' }, h('span', { class: 'fact-label' }, label), h('span', { class: 'fact-value' }, value));
}

function nodeCard(n, servedBy, now) {
  const st = M.nodeState(n);
  const stateBadge = st.state === 'quorate' ? badge('allow', 'QUORATE')
    : st.state === 'contained' ? badge(M.reasonSeverity(st.reason) === 'critical' ? 'deny' : 'contained', `CONTAINED · ${st.reason}`)
      : badge('unreachable', 'UNREACHABLE');
  const head = h('div', { class: 'node-head' },
    h('div', { class: 'node-name' }, `Node ${n.node_id}`,
      n.node_id === servedBy ? h('span', { class: 'chip' }, 'this node') : null,
      n.voter === false ? h('span', { class: 'chip' }, 'learner') : null),
    h('div', { class: 'node-badges' }, n.role ? badge(n.role === 'leader' ? 'accent' : 'muted', n.role) : null, stateBadge));

  const reach = st.state !== 'unreachable';
  const expiry = n.tls_cert_expiry_ms;
  const lvl = M.certExpiryLevel(expiry, now);
  const cp = n.last_final_checkpoint;
  const rows = [
    ['Region', show(n.region)],
    ['Address', mono(show(n.addr))],
    reach ? ['Term', show(n.term)] : null,
    reach ? ['Log', h('span', { class: 'mono' }, `${show(n.last_log_index)} last · ${show(n.commit_index)} commit · ${show(n.applied_index)} applied`)] : null,
    ['Lag', n.lag === null || n.lag === undefined ? h('span', { class: 'muted' }, 'known on the leader') : h('span', { class: n.lag > 0 ? 'warn-text' : null }, `${n.lag} entries`)],
    reach ? ['Decisions', show(n.decision_count)] : null,
    reach ? ['Checkpoint', cp ? `size ${show(cp.size)} · cosigned by ${(cp.cosigners ?? []).join(', ') || 'none'}` : 'none final yet'] : null,
    reach ? ['TLS cert', Number.isFinite(expiry)
      ? h('span', { class: lvl === 'ok' ? null : 'warn-text', title: M.formatTime(expiry) }, lvl === 'expired' ? `expired ${M.relativeTime(expiry, now)}` : `expires ${M.relativeTime(expiry, now)}`, lvl === 'warn' ? ' ⚠' : '')
      : h('span', { class: 'muted' }, 'no TLS')] : null,
    reach && n.chain_head_hash ? ['Chain head', mono(M.shortHash(n.chain_head_hash, 16), n.chain_head_hash)] : null,
  ];
  const extra = [];
  if (st.state === 'contained') {
    const c = n.containment ?? {};
    extra.push(h('div', { class: ['containment', `sev-${M.reasonSeverity(st.reason)}`] },
      h('strong', null, show(c.reason ?? st.reason)),
      c.message ? h('div', null, c.message) : null,
      Number.isFinite(c.since_ms) ? h('div', { class: 'muted' }, `since ${M.relativeTime(c.since_ms, now)} · ${M.formatDuration(now - c.since_ms)} · ${M.formatTime(c.since_ms)}`) : null));
  }
  if (st.state === 'unreachable') extra.push(h('div', { class: 'containment sev-unreachable' }, h('strong', null, 'Did not answer'), n.error ? h('div', null, n.error) : null));
  return h('article', { class: ['card', 'node', `state-${st.state}`], 'data-test': 'node', 'data-node-id': n.node_id, 'data-state': st.state, 'data-reason': st.reason },
    head, ...extra, dl(rows));
}

function timelineChart(tl) {
  const samples = Array.isArray(tl?.samples) ? tl.samples : [];
  const interval = tl?.interval_ms || 1000;
  if (samples.length < 2) return h('p', { class: 'muted' }, 'Not enough samples yet.');
  const t1 = samples[samples.length - 1].t_ms;
  const t0 = t1 - 600_000;
  const W = 960, H = 180;
  const pad = { left: 48, right: 12, top: 12, bottom: 22 };
  const pts = M.throughput(samples);
  const g = chartGeometry(pts, { t0, t1, width: W, height: H, pad });
  const svgKids = [];
  for (const f of [0, 0.5, 1]) {
    const y = g.y(g.yMax * f);
    svgKids.push(s('line', { x1: pad.left, x2: W - pad.right, y1: y, y2: y, class: 'grid-line' }));
    svgKids.push(s('text', { x: pad.left - 6, y: y + 4, class: 'axis-label', 'text-anchor': 'end' }, fmtRate(g.yMax * f)));
  }
  for (const [t, label] of [[t0, '−10 min'], [t0 + 300_000, '−5 min'], [t1, 'now']]) {
    svgKids.push(s('text', { x: g.x(t), y: H - 6, class: 'axis-label', 'text-anchor': t === t0 ? 'start' : t === t1 ? 'end' : 'middle' }, label));
  }
  const ranges = M.containmentRanges(samples, interval).filter((r) => r.end_ms > t0);
  for (const r of ranges) {
    const x1 = g.x(Math.max(r.start_ms, t0)), x2 = g.x(Math.min(r.end_ms, t1));
    svgKids.push(s('rect', { x: x1, y: pad.top, width: Math.max(1, x2 - x1), height: H - pad.top - pad.bottom, class: `shade sev-${M.reasonSeverity(r.reason)}` }));
  }
  svgKids.push(s('path', { d: g.area, class: 'rate-area' }), s('path', { d: g.line, class: 'rate-line' }));
  const chart = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': 'decisions per second', 'data-test': 'throughput-chart' }, ...svgKids);

  const SH = 22;
  const stripKids = [s('rect', { x: pad.left, y: 2, width: W - pad.left - pad.right, height: SH - 4, class: 'strip-bg' })];
  for (const r of ranges) {
    const x1 = g.x(Math.max(r.start_ms, t0)), x2 = g.x(Math.min(r.end_ms, t1));
    stripKids.push(s('rect', { x: x1, y: 2, width: Math.max(2, x2 - x1), height: SH - 4, class: `strip sev-${M.reasonSeverity(r.reason)}`, 'data-test': 'containment-range', 'data-reason': r.reason },
      s('title', null, `${r.reason}: ${M.formatTime(r.start_ms)} for ${M.formatDuration(r.end_ms - r.start_ms)}`)));
  }
  stripKids.push(s('text', { x: pad.left - 6, y: SH / 2 + 4, class: 'axis-label', 'text-anchor': 'end' }, 'state'));
  const strip = s('svg', { viewBox: `0 0 ${W} ${SH}`, class: 'strip-svg', role: 'img', 'aria-label': 'containment', 'data-test': 'containment-strip' }, ...stripKids);

  const recent = pts.slice(-10);
  const avg = recent.length ? recent.reduce((a, p) => a + p.rate, 0) / recent.length : 0;
  const peak = pts.reduce((m, p) => (p.t_ms >= t0 && p.rate > m ? p.rate : m), 0);
  const containedMs = ranges.reduce((a, r) => a + Math.min(r.end_ms, t1) - Math.max(r.start_ms, t0), 0);
  return h('div', null,
    h('div', { class: 'chart-facts' },
      fact('Now (10 s avg)', `${fmtRate(avg)}/s`), fact('Peak', `${fmtRate(peak)}/s`),
      fact('Contained', containedMs > 0 ? M.formatDuration(containedMs) : 'never in this window'),
      fact('Applied', show(samples[samples.length - 1].decisions))),
    chart, strip,
    h('div', { class: 'legend' },
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-rate' }), 'decisions/s'),
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-contained' }), 'contained'),
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-critical' }), 'INTEGRITY_FAILURE / DIVERGENCE')));
}

function fmtRate(v) {
  if (!Number.isFinite(v)) return '0';
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1).replace(/\.0$/, '');
  return v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

const FIELD_LABELS = {
  domain: 'Domain', principal: 'Principal', action: 'Action', resource: 'Resource', decision: 'Decision',
  reason: 'Reason', policy_version: 'Policy version', request_id: 'Request id', trace_id: 'Trace id', since: 'Since', until: 'Until',
};
const MAX_ROWS = 1000;

function filterForm(filters, onApply) {
  const text = (name, placeholder, extra = {}) => h('label', { class: 'field' }, h('span', null, FIELD_LABELS[name]),
    h('input', { name, type: 'text', value: filters[name] ?? '', placeholder, autocomplete: 'off', spellcheck: 'false', ...extra }));
  const decision = h('select', { name: 'decision' },
    ...[['', 'any'], ['ALLOW', 'ALLOW'], ['DENY', 'DENY']].map(([v, t]) => h('option', { value: v, selected: (filters.decision ?? '') === v }, t)));
  const reasons = h('datalist', { id: 'reason-codes' }, ...REASON_CODES.map((c) => h('option', { value: c })));
  const dt = (name, ms) => h('label', { class: 'field' }, h('span', null, FIELD_LABELS[name]),
    h('input', { name, type: 'datetime-local', step: '1', value: Number.isFinite(ms) ? M.msToDatetimeLocal(ms) : '' }));
  const form = h('form', { class: 'filters', 'data-test': 'filters', autocomplete: 'off' },
    text('domain', 'exact'), text('principal', 'contains, e.g. User::"bob"'), text('action', 'contains'), text('resource', 'contains'),
    h('label', { class: 'field' }, h('span', null, FIELD_LABELS.decision), decision),
    text('reason', 'code, e.g. POLICY', { list: 'reason-codes' }), reasons,
    text('policy_version', 'number', { inputmode: 'numeric' }),
    text('request_id', 'exact'), text('trace_id', 'exact'),
    dt('since', filters.since_ms), dt('until', filters.until_ms),
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-test': 'apply-filters' }, 'Apply'),
      h('button', { type: 'button', class: 'btn', 'data-test': 'clear-filters', onclick: () => onApply({}) }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const raw = {};
    for (const k of M.FILTER_FIELDS) if (fd.has(k)) raw[k] = fd.get(k);
    const since = M.datetimeLocalToMs(fd.get('since')), until = M.datetimeLocalToMs(fd.get('until'));
    if (since !== null) raw.since_ms = since;
    if (until !== null) raw.until_ms = until;
    onApply(M.normalizeFilters(raw));
  });
  return form;
}

function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

async function decisionsView(ctx) {
  const filters = M.normalizeFilters(ctx.route.query);
  const limit = M.parseIndex(ctx.route.query.limit ?? '') ?? 50;
  const apply = (f) => navigate(M.routeHash('decisions', null, Object.fromEntries(new URLSearchParams(M.filtersToQuery(f)))));
  const root = ctx.root;

  const tailBox = h('input', { type: 'checkbox', 'data-test': 'tail-toggle', checked: state.tail.on });
  const tailStatus = h('span', { class: 'tail-status muted', 'data-test': 'tail-status' }, state.tail.on ? 'connecting…' : 'off');
  const meta = h('span', { class: 'muted' });
  const err = h('div');
  const tbody = h('tbody');
  const table = h('table', { class: 'table decisions', 'data-test': 'decision-table' },
    h('thead', null, h('tr', null, ...['Index', 'Time', 'Domain', 'Principal', 'Action', 'Resource', 'Outcome', 'Reason', 'Policy'].map((c) => h('th', null, c)))),
    tbody);
  const older = h('button', { type: 'button', class: 'btn', 'data-test': 'load-older', hidden: true }, 'Load older');
  const olderNote = h('span', { class: 'muted' });
  const active = Object.keys(filters).length;
  root.append(
    h('details', { class: 'card filter-card', open: true },
      h('summary', null, 'Filters', active ? h('span', { class: 'chip' }, `${active} active`) : null),
      filterForm(filters, apply)),
    h('div', { class: 'toolbar' }, meta, h('label', { class: 'toggle' }, tailBox, h('span', null, 'Live tail')), tailStatus),
    err,
    h('div', { class: 'table-wrap' }, table),
    h('div', { class: 'pager' }, older, olderNote));

  const st = { shown: new Set(), maxShown: 0, minShown: Infinity, cursor: null, after: 0, tailCtl: null, tailGen: 0, fresh: 0 };

  const row = (rec, isNew) => {
    const q = rec.request ?? {};
    const open = () => { location.hash = `#/decision/${rec.index}`; };
    return h('tr', { class: ['clickable', isNew ? 'row-new' : null], tabindex: 0, 'data-test': 'decision-row', 'data-index': rec.index, 'data-decision': rec.decision,
      onclick: (ev) => { if (!ev.target.closest('a')) open(); }, onkeydown: (ev) => { if (ev.key === 'Enter') open(); } },
    h('td', { class: 'num' }, link(`#/decision/${rec.index}`, String(rec.index))),
    h('td', { class: 'nowrap' }, timeCell(rec.timestamp_ms)),
    h('td', null, show(q.domain)),
    truncCell(q.principal),
    truncCell(q.action),
    truncCell(q.resource),
    h('td', null, outcomeBadge(rec.decision)),
    h('td', null, rec.reason ? h('span', { class: 'mono' }, rec.reason) : h('span', { class: 'muted' }, dash)),
    h('td', { class: 'num' }, rec.policy_version === null || rec.policy_version === undefined ? dash : `v${rec.policy_version}`));
  };
  const note = (r) => { st.shown.add(r.index); st.maxShown = Math.max(st.maxShown, r.index); st.minShown = Math.min(st.minShown, r.index); };
  const emptyRow = () => h('tr', { class: 'empty' }, h('td', { colspan: 9 }, active ? 'No decision matches these filters.' : 'No decisions yet.'));
  const updateOlder = () => {
    older.hidden = st.cursor === null;
    olderNote.textContent = st.cursor === null ? (st.shown.size ? 'This is the oldest matching decision.' : '') : `continues below index ${st.cursor}`;
  };

  const query = (before) => {
    const p = new URLSearchParams(M.filtersToQuery(filters));
    if (before) p.set('before', String(before));
    p.set('limit', String(limit));
    return p.toString();
  };

  try {
    const page = await api.decisions(query(null), { signal: ctx.signal });
    if (!ctx.alive) return;
    const recs = page.records ?? [];
    tbody.replaceChildren(...(recs.length ? recs.map((r) => row(r, false)) : [emptyRow()]));
    recs.forEach(note);
    st.cursor = page.next_before ?? null;
    st.after = Math.max(st.maxShown, Number.isSafeInteger(page.as_of) ? page.as_of : 0);
    meta.textContent = `as of record ${show(page.as_of)}${page.linearized === false ? ' · not linearized (this node may be behind)' : ''} · scanned ${show(page.scanned)}`;
    updateOlder();
  } catch (e) {
    if (isAbort(e) || !ctx.alive) return;
    err.replaceChildren(errorBox(e, 'decision log'));
    table.hidden = true;
    tailBox.disabled = true;
    return;
  }

  older.addEventListener('click', async () => {
    older.disabled = true;
    try {
      const page = await api.decisions(query(st.cursor), { signal: ctx.signal });
      if (!ctx.alive) return;
      const recs = (page.records ?? []).filter((r) => !st.shown.has(r.index));
      if (recs.length) tbody.querySelector('tr.empty')?.remove();
      tbody.append(...recs.map((r) => row(r, false)));
      recs.forEach(note);
      st.cursor = page.next_before ?? null;
      updateOlder();
    } catch (e) {
      if (!isAbort(e) && ctx.alive) err.replaceChildren(errorBox(e, 'older decisions'));
    } finally { older.disabled = false; }
  });

  const onRecord = (rec) => {
    st.after = Math.max(st.after, rec.index);
    if (st.shown.has(rec.index) || !M.matchesFilters(rec, filters)) return;
    tbody.querySelector('tr.empty')?.remove();
    note(rec);
    tbody.prepend(row(rec, true));
    st.fresh++;
    // Bound the page: drop the oldest rows; "load older" continues from them.
    while (tbody.rows.length > MAX_ROWS) {
      const last = tbody.rows[tbody.rows.length - 1];
      st.shown.delete(Number(last.dataset.index));
      last.remove();
      st.cursor = Number(tbody.rows[tbody.rows.length - 1].dataset.index);
    }
    updateOlder();
  };

  const runTail = async () => {
    const gen = ++st.tailGen; // a toggle off and on again must not leave two readers
    let failures = 0;
    while (ctx.alive && state.tail.on && gen === st.tailGen) {
      const ctl = new AbortController();
      const stop = () => ctl.abort();
      ctx.signal.addEventListener('abort', stop, { once: true });
      st.tailCtl = ctl;
      tailStatus.textContent = failures ? `reconnecting after ${st.after}…` : `connecting after ${st.after}…`;
      try {
        await api.tail(st.after, {
          signal: ctl.signal,
          onOpen: () => { tailStatus.textContent = `live · after ${st.after}`; },
          onLine: (line) => {
            if (!ctx.alive) return;
            const t = M.parseTailLine(line);
            failures = 0;
            if (t.kind === 'heartbeat') tailStatus.textContent = `live · heartbeat ${M.formatTime(Date.now())} · ${st.fresh} new`;
            else if (t.kind === 'record') { onRecord(t.record); tailStatus.textContent = `live · ${st.fresh} new`; }
          },
        });
        if (ctl.signal.aborted || !ctx.alive) return;
        failures++;
        tailStatus.textContent = `stream ended; reconnecting in ${M.backoffMs(failures - 1) / 1000} s`;
      } catch (e) {
        if (isAbort(e) || ctl.signal.aborted || !ctx.alive) return;
        if (e instanceof ApiError && [400, 401, 403, 404].includes(e.status)) {
          err.replaceChildren(errorBox(e, 'live tail'));
          state.tail.on = false;
          tailBox.checked = false;
          tailStatus.textContent = 'off';
          return;
        }
        failures++;
        tailStatus.textContent = `${e.code ?? 'error'}: ${e.message}; reconnecting in ${M.backoffMs(failures - 1) / 1000} s`;
      } finally {
        ctx.signal.removeEventListener('abort', stop);
      }
      await ctx.sleep(M.backoffMs(failures - 1), ctl.signal);
    }
  };

  tailBox.addEventListener('change', () => {
    state.tail.on = tailBox.checked;
    if (state.tail.on) runTail();
    else { st.tailGen++; st.tailCtl?.abort(); tailStatus.textContent = 'off'; }
  });
  if (state.tail.on) runTail();
}

// ---------------------------------------------------------------------------
// Decision detail
// ---------------------------------------------------------------------------

async function decisionView(ctx) {
  const index = M.parseIndex(ctx.route.param ?? '');
  if (index === null) throw new ApiError(0, 'INVALID_ARGUMENT', `“${show(ctx.route.param)}” is not a decision index (1 or more)`);
  $('view-title').textContent = `Decision ${index}`;
  const d = await api.decision(index, { signal: ctx.signal });
  if (!ctx.alive) return;
  const rec = d.record ?? {};
  const q = rec.request ?? {};
  const lin = d.lineage ?? {};
  const pol = d.policy;

  const head = h('div', { class: 'detail-head' },
    h('div', { class: 'detail-title' }, h('span', { class: 'detail-index' }, `#${rec.index ?? index}`), outcomeBadge(rec.decision),
      rec.reason ? h('span', { class: 'mono reason' }, rec.reason) : null,
      h('span', { class: 'muted' }, `${show(q.domain)} · ${M.formatTime(rec.timestamp_ms)}`)),
    h('div', { class: 'row' },
      index > 1 ? link(`#/decision/${index - 1}`, `← ${index - 1}`, { class: 'btn btn-ghost' }) : null,
      link(`#/decision/${index + 1}`, `${index + 1} →`, { class: 'btn btn-ghost' }),
      link(`#/lineage/${index}`, 'Open lineage', { class: 'btn', 'data-test': 'open-lineage' }),
      link(`#/proofs?index=${index}`, 'Verify proof', { class: 'btn btn-primary', 'data-test': 'verify-proof' })));

  const request = card('Request', dl([
    ['Domain', show(q.domain)],
    ['Request id', mono(show(q.request_id))],
    ['Principal', mono(show(q.principal))],
    ['Action', mono(show(q.action))],
    ['Resource', mono(show(q.resource))],
    ['Parent', q.parent === null || q.parent === undefined ? h('span', { class: 'muted' }, 'none')
      : h('span', null, mono(q.parent), ' ', lin.parent_index ? link(`#/decision/${lin.parent_index}`, `→ decision ${lin.parent_index}`) : h('span', { class: 'muted' }, '(no decision has this request id)'))],
    ['Trace id', q.trace_id ? h('span', null, mono(q.trace_id), ' ', link(M.routeHash('lineage', null, { trace_id: q.trace_id }), 'trace →')) : h('span', { class: 'muted' }, 'none')],
    ['Children', show(lin.children)],
  ]));
  const record = card('Record', dl([
    ['Index', show(rec.index)],
    ['Raft log index', show(rec.log_index)],
    ['Time', h('span', null, M.formatTime(rec.timestamp_ms), h('span', { class: 'muted' }, ` (${M.relativeTime(rec.timestamp_ms, Date.now())})`))],
    ['Policy', pol ? h('span', null, `${show(pol.domain)} v${show(pol.version)} `, badge(pol.active ? 'allow' : 'muted', pol.active ? 'active' : 'not active'))
      : rec.policy_version ? `v${rec.policy_version}` : h('span', { class: 'muted' }, 'none applied')],
    ['Policy hash', mono(show(rec.policy_hash))],
    ['Previous hash', mono(show(rec.prev_hash))],
    ['Hash', mono(show(rec.hash))],
  ], 'kv kv-hash'));

  const why = d.why ?? {};
  const whySection = h('section', { class: 'card why', 'data-test': 'why' },
    h('h2', { class: 'card-title' }, 'Why'),
    h('p', { class: ['why-summary', rec.decision === 'ALLOW' ? 'allow-text' : 'deny-text'] }, show(why.summary)),
    ...whyPolicies(why.policies, 'why-policy'));

  const errors = [...new Set([...(rec.errors ?? []), ...(why.errors ?? [])])];
  const parts = [head, h('div', { class: 'grid-2' }, request, record),
    card('Context', h('pre', { class: 'code' }, M.prettyJsonText(q.context ?? '{}'))),
    q.entities === null || q.entities === undefined ? null : card('Entities', h('pre', { class: 'code' }, M.prettyJsonText(q.entities))),
    whySection,
    errors.length ? card('Errors', h('ul', { class: 'errors-list' }, ...errors.map((e) => h('li', { class: 'mono' }, e)))) : null];

  if (rec.shadow) parts.push(shadowCard(rec, d.shadow_why));
  ctx.root.append(h('div', { class: 'detail', 'data-test': 'decision-detail', 'data-index': rec.index ?? index }, ...parts));
}

function whyPolicies(policies, testName) {
  const ps = Array.isArray(policies) ? policies : [];
  if (!ps.length) return [h('p', { class: 'muted' }, 'No policy determined this decision.')];
  return ps.map((p) => h('div', { class: 'why-policy', 'data-test': testName, 'data-policy-id': p.id },
    h('div', { class: 'why-policy-head' }, h('span', { class: 'mono' }, show(p.id)), badge(p.effect === 'permit' ? 'allow' : p.effect === 'forbid' ? 'deny' : 'muted', show(p.effect))),
    p.text ? h('pre', { class: 'code' }, p.text) : h('p', { class: 'muted' }, 'no text')));
}

function shadowCard(rec, shadowWhy) {
  const sh = rec.shadow;
  const differs = sh.decision !== rec.decision;
  const kids = [dl([
    ['Rollout', link(`#/policies`, show(sh.rollout_id))],
    ['Candidate', `v${show(sh.candidate_version)}`],
    ['Candidate hash', mono(show(sh.candidate_hash))],
    ['Would have', h('span', null, outcomeBadge(sh.decision), sh.reason ? h('span', { class: 'mono reason' }, ` ${sh.reason}`) : null,
      differs ? badge('contained', 'differs from enforced', { class: 'ml' }) : h('span', { class: 'muted' }, ' (same as enforced)'))],
    ['Determining', (sh.determining_policies ?? []).join(', ') || dash],
    (sh.errors ?? []).length ? ['Errors', sh.errors.join('; ')] : null,
  ], 'kv kv-hash')];
  if (shadowWhy && typeof shadowWhy === 'object') {
    kids.push(h('div', { class: 'shadow-why', 'data-test': 'shadow-why' },
      h('h3', null, 'Why (candidate)'), h('p', { class: 'why-summary' }, show(shadowWhy.summary)),
      ...whyPolicies(shadowWhy.policies, 'shadow-why-policy')));
  }
  return card('Shadow evaluation', ...kids);
}

// ---------------------------------------------------------------------------
// Lineage
// ---------------------------------------------------------------------------

async function lineageView(ctx) {
  const { param, query } = ctx.route;
  const index = param === null ? null : M.parseIndex(param);
  const traceId = query.trace_id ?? null;
  const limit = Math.min(1000, M.parseIndex(query.limit ?? '') ?? 200);
  const root = ctx.root;

  const idxInput = h('input', { type: 'number', name: 'index', min: 1, value: index ?? '', placeholder: 'index', class: 'narrow' });
  const traceInput = h('input', { type: 'text', name: 'trace_id', value: traceId ?? '', placeholder: 'trace id', 'data-test': 'trace-input', spellcheck: 'false' });
  root.append(h('div', { class: 'card lineage-forms' },
    h('form', { class: 'inline-form', onsubmit: (ev) => { ev.preventDefault(); const i = M.parseIndex(idxInput.value.trim()); if (i) navigate(`#/lineage/${i}`); } },
      h('label', null, 'Decision ', idxInput), h('button', { class: 'btn', type: 'submit' }, 'Show lineage')),
    h('form', { class: 'inline-form', 'data-test': 'trace-form', onsubmit: (ev) => { ev.preventDefault(); const t = traceInput.value.trim(); if (t) navigate(M.routeHash('lineage', null, { trace_id: t })); } },
      h('label', null, 'Trace ', traceInput), h('button', { class: 'btn', type: 'submit', 'data-test': 'trace-submit' }, 'Show trace'))));

  if (param !== null && index === null) throw new ApiError(0, 'INVALID_ARGUMENT', `“${param}” is not a decision index (1 or more)`);
  if (index === null && !traceId) {
    root.append(notice('info', 'Pick a decision (or open one from the decision log and choose “Open lineage”), or give a trace id.'));
    return;
  }

  const info = h('div', { class: 'lineage-info' });
  const graphSlot = h('div', { class: 'graph-scroll' });
  const listSlot = h('div');
  const more = h('div', { class: 'pager' });
  root.append(info, card(null, graphSlot, more), listSlot);

  let data;
  if (index !== null) {
    $('view-title').textContent = `Lineage of decision ${index}`;
    data = await api.lineage(index, limit, { signal: ctx.signal });
  } else {
    $('view-title').textContent = 'Trace';
    data = await api.trace(traceId, null, limit, { signal: ctx.signal });
  }
  if (!ctx.alive) return;

  const nodes = new Map();
  const edges = new Map();
  const merge = (d) => {
    for (const n of d.nodes ?? []) nodes.set(n.index, n);
    for (const e of d.edges ?? []) edges.set(`${e.from}>${e.to}`, e);
  };
  merge(data);
  const focus = index !== null ? data.focus ?? index : null;

  const draw = (d) => {
    const ns = [...nodes.values()];
    const facts = [fact('Decisions', String(ns.length)), fact('Links', String(edges.size))];
    if (index !== null) facts.unshift(fact('Focus', `#${show(d.focus ?? index)}`), fact('Root', d.root === null || d.root === undefined ? dash : `#${d.root}`));
    else facts.unshift(fact('Trace', traceId));
    const infoKids = [h('div', { class: 'banner-facts' }, ...facts)];
    if (d.truncated) {
      infoKids.push(noticeWith('warn', { 'data-test': 'truncated' }, `Truncated: the graph shows at most ${limit} descendants. `,
        limit < 1000 ? link(`#/lineage/${index}?limit=1000`, 'Show up to 1000') : null));
    }
    info.replaceChildren(...infoKids);
    graphSlot.replaceChildren(ns.length ? lineageSvg(ns, [...edges.values()], focus) : h('p', { class: 'muted' }, 'No decisions.'));
    listSlot.replaceChildren(lineageTable(ns, focus));
  };
  draw(data);

  if (index === null) {
    let next = data.next_after ?? null;
    const btn = h('button', { type: 'button', class: 'btn', 'data-test': 'load-more' }, 'Load more of this trace');
    const refresh = () => { more.replaceChildren(...(next ? [btn, h('span', { class: 'muted' }, ` after index ${next}`)] : [])); };
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      try {
        const d = await api.trace(traceId, next, limit, { signal: ctx.signal });
        if (!ctx.alive) return;
        merge(d);
        next = d.next_after ?? null;
        draw(d);
      } catch (e) {
        if (!isAbort(e) && ctx.alive) more.append(errorBox(e, 'more of the trace'));
      } finally { btn.disabled = false; refresh(); }
    });
    refresh();
  }
}

/** Notice helper accepting attributes as its first argument. */
function noticeWith(kind, attrs, ...kids) {
  return h('div', { ...attrs, class: ['notice', `notice-${kind}`] }, ...kids);
}

function lineageSvg(nodes, edges, focus) {
  const lay = layoutLineage(nodes, edges);
  const open = (i) => { location.hash = `#/decision/${i}`; };
  const defs = s('defs', null,
    s('marker', { id: 'lineage-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse', markerUnits: 'strokeWidth' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-head' })));
  const edgeEls = lay.edges.map((e) => s('path', { d: e.d, class: 'edge', 'marker-end': 'url(#lineage-arrow)', 'data-test': 'lineage-edge', 'data-from': e.from, 'data-to': e.to }));
  const nodeEls = lay.nodes.map((p) => {
    const n = p.node;
    const cls = ['lnode', n.decision === 'ALLOW' ? 'lnode-allow' : 'lnode-deny', p.index === focus ? 'lnode-focus' : ''].join(' ');
    const title = `#${n.index} ${n.decision}${n.reason ? ` ${n.reason}` : ''}\n${n.domain} · ${n.request_id}\nprincipal ${n.principal}\naction ${n.action}\nresource ${n.resource}\n${M.formatTime(n.timestamp_ms)}${n.parent && n.parent_index === null ? `\nparent ${n.parent} (no decision)` : ''}`;
    return s('g', { class: cls, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'link', 'aria-label': `decision ${n.index} ${n.decision}`,
      'data-test': 'lineage-node', 'data-index': n.index, 'data-decision': n.decision,
      onclick: () => open(n.index), onkeydown: (ev) => { if (ev.key === 'Enter') open(n.index); } },
    s('title', null, title),
    s('rect', { width: p.w, height: p.h, rx: 8, ry: 8 }),
    s('rect', { width: 5, height: p.h, rx: 2, class: 'lnode-stripe' }),
    s('text', { x: 14, y: 18, class: 'lnode-title' }, `#${n.index} · ${n.decision}${n.reason && n.reason !== 'POLICY' ? ` ${n.reason}` : ''}`),
    s('text', { x: 14, y: 34, class: 'lnode-line' }, M.truncate(n.action, 23)),
    s('text', { x: 14, y: 49, class: 'lnode-line lnode-muted' }, M.truncate(n.principal, 23)));
  });
  return s('svg', { class: 'lineage-graph', 'data-test': 'lineage-graph', width: lay.width, height: lay.height, viewBox: `0 0 ${lay.width} ${lay.height}`, role: 'group', 'aria-label': 'lineage graph' },
    defs, s('g', { class: 'edges' }, ...edgeEls), s('g', { class: 'nodes' }, ...nodeEls));
}

function lineageTable(nodes, focus) {
  const sorted = [...nodes].sort((a, b) => a.index - b.index);
  return card('Decisions in this graph', h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
    h('thead', null, h('tr', null, ...['Index', 'Time', 'Domain', 'Request id', 'Parent', 'Principal', 'Action', 'Resource', 'Outcome'].map((c) => h('th', null, c)))),
    h('tbody', null, ...sorted.map((n) => h('tr', { class: ['clickable', n.index === focus ? 'row-focus' : null], onclick: (ev) => { if (!ev.target.closest('a')) location.hash = `#/decision/${n.index}`; } },
      h('td', { class: 'num' }, link(`#/decision/${n.index}`, String(n.index))),
      h('td', { class: 'nowrap' }, timeCell(n.timestamp_ms)),
      h('td', null, show(n.domain)),
      h('td', { class: 'mono' }, show(n.request_id)),
      h('td', { class: 'mono' }, n.parent ? (n.parent_index ? link(`#/decision/${n.parent_index}`, n.parent) : `${n.parent} (none)`) : dash),
      truncCell(n.principal),
      truncCell(n.action),
      truncCell(n.resource),
      h('td', null, outcomeBadge(n.decision))))))));
}

// ---------------------------------------------------------------------------
// Proofs
// ---------------------------------------------------------------------------

// A trust file's fingerprint: the SHA-256 of its canonical JSON (§1), so
// the same file prints the same fingerprint however it is formatted;
// `quorate keys export` prints it too. Text that is not JSON is hashed as is
// (verification will fail on it anyway).
async function fingerprint(text) {
  let bytes;
  try { bytes = utf8(canonicalJson(parseJson(text))); } catch { bytes = utf8(text); }
  return bytesToHex(await sha256(bytes));
}

async function proofsView(ctx) {
  const root = ctx.root;
  const routeIndex = M.parseIndex(ctx.route.query.index ?? '');
  const pinned = getPinnedTrust();

  const indexInput = h('input', { type: 'number', min: 1, name: 'index', class: 'narrow', value: routeIndex ?? '', placeholder: 'index', 'data-test': 'receipt-index' });
  const receiptInput = h('textarea', { class: 'code-input', rows: 16, spellcheck: 'false', autocomplete: 'off', 'data-test': 'receipt-input', placeholder: '{"format":"quorate-receipt/v1","record":{…},"inclusion_proof":[…],"checkpoint":{…}}' });
  const receiptNote = h('div');
  const trustInput = h('textarea', { class: 'code-input', rows: 10, spellcheck: 'false', autocomplete: 'off', 'data-test': 'trust-input', placeholder: '{"format":"quorate-trust/v1","cluster_id":…,"nodes":[…]}', value: pinned?.text ?? '' });
  const trustPrint = h('div', { class: 'fingerprint-line muted', 'data-test': 'trust-fingerprint' });
  const pinSlot = h('div');
  const trustNote = h('div');
  const fileInput = h('input', { type: 'file', accept: '.json,application/json', 'data-test': 'trust-file', class: 'file-input' });
  const result = h('div', { class: 'proof-result', 'data-test': 'proof-result', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Paste or fetch a receipt, provide a trust file, then verify.'));
  const verifyBtn = h('button', { type: 'button', class: 'btn btn-primary btn-lg', 'data-test': 'verify' }, 'Verify in this browser');

  const renderPin = () => {
    const p = getPinnedTrust();
    if (!p) { pinSlot.replaceChildren(h('p', { class: 'muted' }, 'No trust file pinned in this browser.')); return; }
    pinSlot.replaceChildren(h('div', { class: 'pinned', 'data-test': 'pinned-trust', 'data-sha256': p.sha256 },
      h('div', null, h('strong', null, 'Pinned trust file'), h('span', { class: 'muted' }, ` · pinned ${M.relativeTime(p.pinned_ms, Date.now())}`)),
      h('div', { class: 'fingerprint' }, p.sha256),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'btn btn-sm', onclick: () => { trustInput.value = p.text; updatePrint(); } }, 'Use pinned'),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-test': 'unpin-trust', onclick: () => { clearPinnedTrust(); trustNote.replaceChildren(); renderPin(); updatePrint(); } }, 'Unpin'))));
  };

  let printRun = 0;
  const updatePrint = async () => {
    const run = ++printRun;
    const text = trustInput.value;
    if (!text.trim()) { trustPrint.textContent = getPinnedTrust() ? 'Empty: verification uses the pinned trust file.' : 'No trust file yet.'; return; }
    try {
      const fp = await fingerprint(text);
      if (run !== printRun || !ctx.alive) return;
      const p = getPinnedTrust();
      trustPrint.replaceChildren('Fingerprint (SHA-256 of its canonical JSON): ', h('span', { class: 'mono' }, fp),
        p ? (p.sha256 === fp ? badge('allow', 'pinned', { class: 'ml' }) : badge('contained', 'not the pinned file', { class: 'ml' })) : null);
    } catch (e) {
      if (run === printRun) trustPrint.textContent = `SHA-256 unavailable: ${e.message}`;
    }
  };
  trustInput.addEventListener('input', updatePrint);

  fileInput.addEventListener('change', async () => {
    const f = fileInput.files?.[0];
    if (!f) return;
    trustInput.value = await f.text();
    trustNote.replaceChildren(notice('info', `Read ${f.name} (${f.size} bytes).`));
    updatePrint();
  });

  const pinBtn = h('button', { type: 'button', class: 'btn', 'data-test': 'pin-trust' }, 'Pin this cluster’s trust file');
  pinBtn.addEventListener('click', async () => {
    pinBtn.disabled = true;
    try {
      const text = await api.trust({ signal: ctx.signal });
      const fp = await fingerprint(text);
      if (!ctx.alive) return;
      setPinnedTrust(text, fp);
      trustInput.value = text;
      trustNote.replaceChildren(h('div', { class: 'notice notice-warn', 'data-test': 'trust-warning' },
        h('strong', null, 'Compare this fingerprint out of band before you rely on it.'),
        h('div', { class: 'fingerprint fingerprint-big' }, fp),
        h('p', null, 'This trust file was fetched from the node whose proofs you are checking, so it proves nothing about that node: a compromised node would serve a trust file that vouches for its own forgeries. Check the SHA-256 above against the output of ',
          h('code', null, 'quorate keys export'), ' prints (its “fingerprint” line), obtained another way (a colleague, a different node, a printed copy).')));
      renderPin();
      updatePrint();
    } catch (e) {
      if (!isAbort(e) && ctx.alive) trustNote.replaceChildren(errorBox(e, 'trust file'));
    } finally { pinBtn.disabled = false; }
  });

  const fetchReceipt = async (i) => {
    receiptNote.replaceChildren(h('p', { class: 'muted' }, `fetching the receipt of decision ${i}…`));
    try {
      const text = await api.receipt(i, { signal: ctx.signal });
      if (!ctx.alive) return false;
      receiptInput.value = text;
      receiptNote.replaceChildren(h('p', { class: 'muted' }, `Receipt of decision ${i} as node ${show(state.session?.node_id)} sent it at ${M.formatTime(Date.now())}. `, link(`#/decision/${i}`, 'open the decision')));
      return true;
    } catch (e) {
      if (!isAbort(e) && ctx.alive) receiptNote.replaceChildren(errorBox(e, `receipt of decision ${i}`));
      return false;
    }
  };
  const fetchBtn = h('button', { type: 'button', class: 'btn', 'data-test': 'fetch-receipt' }, 'Fetch receipt');
  fetchBtn.addEventListener('click', async () => {
    const i = M.parseIndex(indexInput.value.trim());
    if (i === null) { receiptNote.replaceChildren(errorBox(new ApiError(0, 'INVALID_ARGUMENT', 'give a decision index (1 or more)'))); return; }
    fetchBtn.disabled = true;
    await fetchReceipt(i);
    fetchBtn.disabled = false;
  });

  let verifyRun = 0;
  const verify = async () => {
    const run = ++verifyRun;
    const receiptText = receiptInput.value; // exactly what is in the box: one edited byte must fail
    let trustText = trustInput.value;
    let trustSource = 'the trust file in the box';
    const p = getPinnedTrust();
    if (!trustText.trim() && p) { trustText = p.text; trustInput.value = p.text; trustSource = 'the pinned trust file'; updatePrint(); }
    result.removeAttribute('data-ok');
    result.replaceChildren(h('p', { class: 'muted' }, 'verifying…'));
    const report = await verifyReceipt(receiptText, trustText);
    let fp = null;
    try { fp = trustText ? await fingerprint(trustText) : null; } catch { /* shown by the steps */ }
    if (run !== verifyRun || !ctx.alive) return;
    if (p && fp === p.sha256) trustSource = 'the pinned trust file';
    renderReport(result, report, { trustSource, fp, pinned: p });
  };
  verifyBtn.addEventListener('click', verify);

  root.append(
    h('p', { class: 'lede' }, 'A receipt proves that one decision is in the log under a checkpoint a quorum of the cluster signed. This page checks it here, with your browser’s own SHA-256 and Ed25519, against a trust file you choose; nothing is sent to the node.'),
    h('div', { class: 'grid-2' },
      card('Receipt',
        h('div', { class: 'row' }, h('label', null, 'Decision ', indexInput), fetchBtn),
        receiptNote, receiptInput),
      card('Trust file',
        pinSlot,
        h('div', { class: 'row' }, pinBtn, h('label', { class: 'btn file-label' }, 'Open file…', fileInput)),
        trustNote, trustInput, trustPrint)),
    h('div', { class: 'verify-bar' }, verifyBtn),
    result);
  renderPin();
  updatePrint();

  if (routeIndex !== null) {
    const ok = await fetchReceipt(routeIndex);
    if (ok && (trustInput.value.trim() || getPinnedTrust())) await verify();
  }
}

function renderReport(box, report, { trustSource, fp, pinned }) {
  const failed = report.steps.filter((x) => !x.ok).length;
  const sm = report.summary ?? {};
  const verdict = report.ok
    ? h('div', { class: 'verdict verdict-ok' }, h('span', { class: 'verdict-mark' }, '✓'), h('div', null, h('strong', null, 'Receipt verified'),
      h('div', null, `Decision ${show(sm.index)} (${show(sm.decision)}${sm.reason ? ` ${sm.reason}` : ''}, ${show(sm.domain)} / ${show(sm.requestId)}) is in the log under a final checkpoint of size ${show(sm.checkpoint?.size)}.`)))
    : h('div', { class: 'verdict verdict-fail' }, h('span', { class: 'verdict-mark' }, '✗'), h('div', null, h('strong', null, 'Receipt NOT verified'),
      h('div', null, `${failed} of ${report.steps.length} checks failed. Do not rely on this receipt.`)));
  const facts = [];
  if (sm.recordHash) facts.push(['Record hash', mono(sm.recordHash)]);
  if (sm.checkpoint) {
    facts.push(['Checkpoint', `cluster ${show(sm.checkpoint.clusterId)} · size ${show(sm.checkpoint.size)}`]);
    facts.push(['Checkpoint root', mono(show(sm.checkpoint.root))]);
    facts.push(['Signed by', (sm.checkpoint.judges ?? sm.checkpoint.cosigners ?? []).join(', ') || dash]);
  }
  facts.push(['Trust file', h('span', null, `${trustSource}`, fp ? h('span', null, ' · SHA-256 ', mono(fp)) : null,
    pinned && fp && fp !== pinned.sha256 ? badge('contained', 'not the pinned file', { class: 'ml' }) : null)]);
  const steps = h('ol', { class: 'steps' }, ...report.steps.map((x) => h('li', { class: ['step', x.ok ? 'step-ok' : 'step-fail'], 'data-test': 'proof-step', 'data-ok': String(x.ok) },
    h('span', { class: 'step-mark', 'aria-label': x.ok ? 'passed' : 'failed' }, x.ok ? '✓' : '✗'),
    h('span', { class: 'step-name' }, x.name),
    x.section ? h('span', { class: 'step-section' }, x.section) : null,
    h('span', { class: 'step-detail' }, x.detail))));
  box.replaceChildren(verdict, dl(facts, 'kv kv-hash'), steps);
  box.dataset.ok = String(report.ok);
}

// ---------------------------------------------------------------------------
// Policies and rollouts
// ---------------------------------------------------------------------------

/** Per-domain choices on the policies page (diff sides, shown version), kept across refreshes. */
const policyUi = new Map();

async function policiesView(ctx) {
  const root = ctx.root;
  const actionSlot = h('div', { 'data-test': 'action-result' });
  const leaderSlot = h('div', { 'data-test': 'leader-notice' });
  const err = h('div');
  const domainsSlot = h('div', { class: 'domains' });
  const rolloutsSlot = h('div');
  const whatifSlot = h('div');
  root.append(leaderSlot, actionSlot, err,
    h('h2', { class: 'section-title' }, 'Domains'), domainsSlot,
    h('h2', { class: 'section-title' }, 'Rollouts'), rolloutsSlot,
    h('h2', { class: 'section-title' }, 'What if'), whatifSlot);

  let domainsSig = null;
  let whatifBuilt = false;
  let first = true;
  const load = async () => {
    try {
      const p = await api.policies({ signal: ctx.signal });
      if (!ctx.alive) return;
      err.replaceChildren();
      const domains = p.domains ?? [];
      const sig = JSON.stringify([canAdminister(), domains]);
      if (sig !== domainsSig) {
        domainsSig = sig;
        domainsSlot.replaceChildren(...(domains.length ? domains.map((d) => domainCard(d, reload, actionSlot)) : [h('p', { class: 'muted' }, 'No policy domain has been published.')]));
      }
      const openIds = new Set([...rolloutsSlot.querySelectorAll('details[open][data-key]')].map((e) => e.dataset.key));
      rolloutsSlot.replaceChildren(...((p.rollouts ?? []).length ? p.rollouts.map((r) => rolloutCard(r, reload, actionSlot, openIds)) : [h('p', { class: 'muted' }, 'No rollout has been started.')]));
      if (!whatifBuilt) { whatifBuilt = true; whatifSlot.replaceChildren(whatifForm(ctx, domains)); }
      leaderSlot.replaceChildren(...(canAdminister() ? leaderNotice(await api.health({ signal: ctx.signal }).catch(() => null)) : []));
    } catch (e) {
      if (isAbort(e) || !ctx.alive) return;
      err.replaceChildren(errorBox(e, first ? 'policies' : 'policies (showing the last answer)'));
    } finally {
      first = false;
      ctx.loaded();
    }
  };
  const reload = () => load();
  await ctx.poll(load, 5000);
}

/** Actions are proposed by the leader: on a follower, say so and link to the leader's console. */
function leaderNotice(health) {
  const lc = M.leaderConsole(health, getToken());
  if (!lc) return [];
  const who = lc.id !== null && lc.id !== undefined ? `node ${lc.id}` : 'the leader';
  return [notice('info', `Actions are taken on the leader, and this node follows ${who}. `,
    lc.url ? h('a', { href: lc.url, 'data-test': 'leader-console' }, `Open ${who}'s console`)
      : 'No leader answers right now; actions will be refused until one does.')];
}

function versionOf(domain, v) {
  return (domain.versions ?? []).find((x) => x.version === v) ?? null;
}

function signerText(signer) {
  if (signer === null || signer === undefined) return null;
  if (typeof signer === 'string') return signer;
  if (typeof signer === 'object') return signer.name ?? signer.publisher ?? signer.public_key ?? JSON.stringify(signer);
  return String(signer);
}

function domainCard(d, reload, actionSlot) {
  const versions = [...(d.versions ?? [])].sort((a, b) => b.version - a.version);
  const ui = policyUi.get(d.domain) ?? {};
  policyUi.set(d.domain, ui);
  const newest = versions[0]?.version ?? null;
  const activeV = d.active_version ?? null;
  if (ui.b === undefined || !versionOf(d, ui.b)) ui.b = newest;
  if (ui.a === undefined || !versionOf(d, ui.a)) ui.a = (activeV !== null && activeV !== ui.b ? activeV : versions[1]?.version) ?? newest;

  const textSlot = h('div');
  const showText = (v) => {
    ui.open = ui.open === v ? null : v;
    renderText();
  };
  const renderText = () => {
    const ver = ui.open === null || ui.open === undefined ? null : versionOf(d, ui.open);
    for (const tr of tbody.rows) tr.classList.toggle('row-focus', Number(tr.dataset.version) === ui.open);
    if (!ver) { textSlot.replaceChildren(); return; }
    textSlot.replaceChildren(h('div', { class: 'policy-text', 'data-test': 'policy-text', 'data-version': ver.version },
      h('h3', null, `${d.domain} v${ver.version}`, h('span', { class: 'muted' }, ` · ${(ver.policies ?? []).length} policies`)),
      h('pre', { class: 'code' }, ver.policy_text ?? ''),
      ver.schema ? h('details', null, h('summary', null, 'Schema'), h('pre', { class: 'code' }, M.prettyJsonText(ver.schema))) : null));
  };

  const tbody = h('tbody', null, ...versions.map((v) => {
    const signer = signerText(v.signer);
    return h('tr', { class: 'clickable', 'data-test': 'policy-version', 'data-version': v.version, 'data-active': String(!!v.active), tabindex: 0,
      onclick: (ev) => { if (!ev.target.closest('button')) showText(v.version); }, onkeydown: (ev) => { if (ev.key === 'Enter') showText(v.version); } },
    h('td', { class: 'num' }, `v${v.version}`),
    h('td', null, mono(M.shortHash(v.hash, 16), v.hash)),
    h('td', null, signer ? mono(M.truncate(signer, 28), signer) : h('span', { class: 'muted' }, 'unsigned')),
    h('td', { class: 'nowrap' }, timeCell(v.published_at_ms)),
    h('td', null, v.active ? badge('allow', 'active') : null),
    h('td', { class: 'actions' }, canAdminister() && !v.active ? h('button', { type: 'button', class: 'btn btn-sm', 'data-test': 'activate',
      onclick: () => adminAction(`Activate ${d.domain} v${v.version}? Every new decision of ${d.domain} is then evaluated under it.`, () => api.activate(d.domain, v.version), `${d.domain} v${v.version} activated`, reload, actionSlot) }, 'Activate') : null));
  }));
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
    h('thead', null, h('tr', null, ...['Version', 'Hash', 'Signer', 'Published', '', ''].map((c) => h('th', null, c)))), tbody));

  const options = (sel) => versions.map((v) => h('option', { value: v.version, selected: v.version === sel }, `v${v.version}${v.active ? ' (active)' : ''}`));
  const selA = h('select', { 'data-test': 'diff-a', name: 'diff-a' }, ...options(ui.a));
  const selB = h('select', { 'data-test': 'diff-b', name: 'diff-b' }, ...options(ui.b));
  const diffOut = h('div', { class: 'diff', 'data-test': 'policy-diff' });
  const renderDiff = () => {
    ui.a = Number(selA.value); ui.b = Number(selB.value);
    const va = versionOf(d, ui.a), vb = versionOf(d, ui.b);
    diffOut.dataset.a = String(ui.a); diffOut.dataset.b = String(ui.b);
    if (!va || !vb) { diffOut.replaceChildren(h('p', { class: 'muted' }, 'Nothing to compare.')); return; }
    const ops = diffLines(va.policy_text ?? '', vb.policy_text ?? '');
    const st = diffStats(ops);
    diffOut.dataset.added = String(st.added); diffOut.dataset.removed = String(st.removed);
    const lines = collapseDiff(ops, 3).map((o) => (o.op === '…'
      ? h('div', { class: 'dl dl-skip' }, h('span', { class: 'ln' }), h('span', { class: 'ln' }), h('span', { class: 'dl-op' }), h('span', { class: 'dl-text' }, `… ${o.count} unchanged lines`))
      : h('div', { class: ['dl', o.op === '+' ? 'dl-add' : o.op === '-' ? 'dl-del' : 'dl-same'] },
        h('span', { class: 'ln' }, o.a ?? ''), h('span', { class: 'ln' }, o.b ?? ''),
        h('span', { class: 'dl-op' }, o.op === '-' ? '−' : o.op), h('span', { class: 'dl-text' }, o.text))));
    diffOut.replaceChildren(
      h('div', { class: 'diff-stats' }, h('span', { class: 'add-text' }, `+${st.added}`), ' ', h('span', { class: 'del-text' }, `−${st.removed}`), h('span', { class: 'muted' }, ` · v${ui.a} → v${ui.b}`)),
      st.added + st.removed === 0 ? h('p', { class: 'muted' }, ui.a === ui.b ? 'The same version on both sides.' : 'The two texts are identical.') : h('div', { class: 'diff-lines' }, ...lines));
  };
  selA.addEventListener('change', renderDiff);
  selB.addEventListener('change', renderDiff);
  renderDiff();

  const el = h('section', { class: 'card domain', 'data-test': 'policy-domain', 'data-domain': d.domain },
    h('div', { class: 'domain-head' }, h('h3', { class: 'domain-name' }, d.domain),
      activeV !== null ? badge('allow', `active v${activeV}`) : badge('deny', 'no active version'),
      h('span', { class: 'muted' }, `${versions.length} version${versions.length === 1 ? '' : 's'}`)),
    table, textSlot,
    h('div', { class: 'diff-head' }, h('strong', null, 'Diff '), h('label', null, 'from ', selA), h('label', null, ' to ', selB)),
    diffOut);
  renderText();
  return el;
}

async function adminAction(question, call, done, reload, slot) {
  if (!window.confirm(question)) return;
  slot.replaceChildren(notice('info', 'working…'));
  try {
    await call();
    slot.replaceChildren(notice('ok', done));
  } catch (e) {
    if (!isAbort(e)) slot.replaceChildren(errorBox(e, 'the action was refused'));
  }
  reload();
}

function rolloutCard(r, reload, actionSlot, openIds) {
  const phaseKind = r.phase === 'shadow' ? 'contained' : r.phase === 'complete' ? 'allow' : r.phase === 'rolled_back' ? 'deny' : 'muted';
  const stages = Array.isArray(r.stages) ? r.stages : [];
  const actions = [];
  if (canAdminister() && r.phase === 'shadow') {
    const force = h('input', { type: 'checkbox', 'data-test': 'promote-force' });
    actions.push(h('button', { type: 'button', class: 'btn btn-primary btn-sm', 'data-test': 'promote',
      onclick: () => adminAction(`Promote stage ${(r.stage ?? 0) + 1} of rollout ${r.id}${force.checked ? ' (forced, before its shadow period is over)' : ''}? Its candidates become the active versions.`,
        () => api.promote(r.id, force.checked), `rollout ${r.id} promoted`, reload, actionSlot) }, 'Promote'),
    h('label', { class: 'small' }, force, ' force'));
  }
  if (canAdminister() && (r.phase === 'shadow' || r.phase === 'complete')) {
    actions.push(h('button', { type: 'button', class: 'btn btn-danger btn-sm', 'data-test': 'rollback',
      onclick: () => adminAction(`Roll back rollout ${r.id}? Every promoted domain returns to its previous version.`, () => api.rollback(r.id), `rollout ${r.id} rolled back`, reload, actionSlot) }, 'Roll back'));
  }
  const stageEls = stages.map((stg, i) => {
    const current = r.phase === 'shadow' && i === r.stage;
    const status = stg.promoted_log_index !== null && stg.promoted_log_index !== undefined ? `promoted at log index ${stg.promoted_log_index}`
      : current ? `in shadow${Number.isFinite(stg.shadow_since_ms) ? ` since ${M.relativeTime(stg.shadow_since_ms, serverNow())}` : ''}` : 'waiting';
    const needs = [stg.shadow_decisions ? `${stg.shadow_decisions} decisions` : null, stg.shadow_ms ? M.formatDuration(stg.shadow_ms) : null].filter(Boolean).join(' and ');
    const rows = (stg.domains ?? []).map((dm) => {
      const c = dm.counts ?? {};
      return h('tr', { 'data-test': 'rollout-domain', 'data-domain': dm.domain },
        h('td', null, dm.domain),
        h('td', { class: 'nowrap' }, `v${show(dm.previous_version)} → v${show(dm.candidate_version)}`),
        h('td', { class: 'num' }, show(c.shadowed)),
        h('td', { class: 'num' }, show(c.same)),
        h('td', { class: ['num', c.allow_to_deny ? 'deny-text' : null] }, show(c.allow_to_deny)),
        h('td', { class: ['num', c.deny_to_allow ? 'allow-text' : null] }, show(c.deny_to_allow)));
    });
    const samples = (stg.domains ?? []).flatMap((dm) => (dm.samples ?? []).map((x) => ({ ...x, domain: dm.domain })));
    const key = `${r.id}/${i}`;
    return h('div', { class: ['stage', current ? 'stage-current' : null] },
      h('div', { class: 'stage-head' }, h('strong', null, `Stage ${i + 1}`), h('span', { class: 'muted' }, ` · ${status}${needs ? ` · shadow needs ${needs}` : ''}`)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact' },
        h('thead', null, h('tr', null, ...['Domain', 'Versions', 'Shadowed', 'Same', 'Would have denied', 'Would have allowed'].map((c) => h('th', null, c)))),
        h('tbody', null, ...rows))),
      samples.length ? h('details', { 'data-key': key, open: openIds.has(key) }, h('summary', null, `${samples.length} differing samples`),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact' },
          h('thead', null, h('tr', null, ...['Index', 'Domain', 'Principal', 'Action', 'Resource', 'Enforced', 'Candidate'].map((c) => h('th', null, c)))),
          h('tbody', null, ...samples.map((x) => h('tr', null,
            h('td', { class: 'num' }, Number.isSafeInteger(x.index) ? link(`#/decision/${x.index}`, String(x.index)) : dash),
            h('td', null, x.domain),
            truncCell(x.principal),
            truncCell(x.action),
            truncCell(x.resource),
            h('td', null, outcomeBadge(x.current)),
            h('td', null, outcomeBadge(x.candidate)))))))) : null);
  });
  return h('section', { class: 'card rollout', 'data-test': 'rollout', 'data-rollout-id': r.id, 'data-phase': r.phase },
    h('div', { class: 'domain-head' }, h('h3', { class: 'domain-name' }, show(r.id)), badge(phaseKind, show(r.phase)),
      r.phase === 'shadow' ? h('span', { class: 'muted' }, `stage ${(r.stage ?? 0) + 1} of ${stages.length}`) : null,
      h('span', { class: 'muted' }, Number.isFinite(r.started_ms) ? `started ${M.relativeTime(r.started_ms, serverNow())}` : ''),
      h('span', { class: 'spacer' }), ...actions),
    ...stageEls);
}

function whatifForm(ctx, domains) {
  const doms = domains.map((d) => d.domain);
  const domainSel = h('select', { name: 'domain' }, ...doms.map((d) => h('option', { value: d }, d)));
  const versionSel = h('select', { name: 'version' });
  const fillVersions = () => {
    const d = domains.find((x) => x.domain === domainSel.value);
    const vs = [...(d?.versions ?? [])].sort((a, b) => b.version - a.version);
    const pick = vs.find((v) => !v.active) ?? vs[0];
    versionSel.replaceChildren(...vs.map((v) => h('option', { value: v.version, selected: v === pick }, `v${v.version}${v.active ? ' (active)' : ''}`)));
  };
  domainSel.addEventListener('change', fillVersions);
  fillVersions();
  const modeReq = h('input', { type: 'radio', name: 'mode', value: 'request', checked: true });
  const modeLast = h('input', { type: 'radio', name: 'mode', value: 'last' });
  const field = (label, el) => h('label', { class: 'field' }, h('span', null, label), el);
  const principal = h('input', { name: 'principal', type: 'text', placeholder: 'User::"bob"', spellcheck: 'false' });
  const action = h('input', { name: 'action', type: 'text', placeholder: 'Action::"read"', spellcheck: 'false' });
  const resource = h('input', { name: 'resource', type: 'text', placeholder: 'Doc::"1"', spellcheck: 'false' });
  const context = h('textarea', { name: 'context', rows: 3, class: 'code-input', spellcheck: 'false', value: '{}' });
  const entities = h('textarea', { name: 'entities', rows: 3, class: 'code-input', spellcheck: 'false', value: '[]' });
  const last = h('input', { name: 'last', type: 'number', min: 1, max: 1000, value: 100, class: 'narrow' });
  const reqBox = h('div', { class: 'whatif-request' }, field('Principal', principal), field('Action', action), field('Resource', resource), field('Context (JSON object)', context), field('Entities (JSON array)', entities));
  const lastBox = h('div', { class: 'whatif-last', hidden: true }, field('Replay the last N decisions of the domain', last));
  const sync = () => { reqBox.hidden = !modeReq.checked; lastBox.hidden = modeReq.checked; };
  modeReq.addEventListener('change', sync); modeLast.addEventListener('change', sync);
  const out = h('div', { class: 'whatif-result', 'data-test': 'whatif-result' });
  const run = h('button', { type: 'submit', class: 'btn btn-primary', 'data-test': 'whatif-run' }, 'Evaluate');

  const form = h('form', { class: 'card whatif', 'data-test': 'whatif', autocomplete: 'off' },
    h('p', { class: 'muted' }, 'Evaluates under a candidate version without committing anything: nothing is proposed or written.'),
    h('div', { class: 'row' }, field('Domain', domainSel), field('Candidate version', versionSel),
      h('div', { class: 'field' }, h('span', null, 'Evaluate'), h('div', { class: 'row' }, h('label', null, modeReq, ' a request'), h('label', null, modeLast, ' the last decisions')))),
    reqBox, lastBox, h('div', { class: 'row' }, run), out);

  let runId = 0;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = ++runId;
    const body = { domain: domainSel.value, version: Number(versionSel.value) };
    try {
      if (!body.domain || !Number.isSafeInteger(body.version)) throw new ApiError(0, 'INVALID_ARGUMENT', 'choose a domain and a candidate version');
      if (modeReq.checked) {
        const ctxV = parseJsonField(context.value, '{}', 'context', (v) => v !== null && typeof v === 'object' && !Array.isArray(v), 'a JSON object');
        const entV = parseJsonField(entities.value, '[]', 'entities', Array.isArray, 'a JSON array');
        body.request = { principal: principal.value.trim(), action: action.value.trim(), resource: resource.value.trim(), context: ctxV, entities: entV };
      } else {
        const n = M.parseIndex(last.value.trim());
        if (n === null || n > 1000) throw new ApiError(0, 'INVALID_ARGUMENT', 'N is a number from 1 to 1000');
        body.last = n;
      }
    } catch (e) {
      out.replaceChildren(errorBox(e));
      out.dataset.state = 'error';
      return;
    }
    run.disabled = true;
    out.dataset.state = 'running';
    out.replaceChildren(h('p', { class: 'muted' }, 'evaluating…'));
    try {
      const res = await api.whatif(body, { signal: ctx.signal });
      if (id !== runId || !ctx.alive) return;
      out.replaceChildren(...whatifResult(res));
      out.dataset.state = 'done';
    } catch (e) {
      if (isAbort(e) || !ctx.alive) return;
      out.replaceChildren(errorBox(e, 'what-if'));
      out.dataset.state = 'error';
    } finally { run.disabled = false; }
  });
  if (!doms.length) run.disabled = true;
  return form;
}

function parseJsonField(text, blank, name, check, what) {
  const t = text.trim() === '' ? blank : text;
  let v;
  try { v = JSON.parse(t); } catch (e) { throw new ApiError(0, 'INVALID_ARGUMENT', `${name} is not JSON: ${e.message}`); }
  if (!check(v)) throw new ApiError(0, 'INVALID_ARGUMENT', `${name} must be ${what}`);
  return v;
}

function whatifResult(res) {
  const sm = res.summary ?? {};
  const results = Array.isArray(res.results) ? res.results : [];
  const outcome = (o) => h('span', null, outcomeBadge(o?.decision), o?.reason ? h('span', { class: 'mono reason' }, ` ${o.reason}`) : null,
    (o?.determining_policies ?? []).length ? h('div', { class: 'muted small mono' }, o.determining_policies.join(', ')) : null);
  return [
    h('div', { class: 'banner-facts whatif-summary' },
      fact('Candidate', `${show(res.domain)} v${show(res.version)}`), fact('Hash', M.shortHash(res.hash, 16)),
      fact('Evaluated', show(sm.evaluated)), fact('Would allow', show(sm.would_allow)), fact('Would deny', show(sm.would_deny)),
      fact('Changed', h('span', { class: sm.changed ? 'warn-text' : null }, show(sm.changed)))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact' },
      h('thead', null, h('tr', null, ...['Index', 'Principal', 'Action', 'Resource', 'Now', 'Candidate', 'Changed'].map((c) => h('th', null, c)))),
      h('tbody', null, ...results.map((x) => h('tr', { class: x.changed ? 'row-changed' : null, 'data-test': 'whatif-row', 'data-changed': String(!!x.changed) },
        h('td', { class: 'num' }, Number.isSafeInteger(x.index) ? link(`#/decision/${x.index}`, String(x.index)) : h('span', { class: 'muted' }, 'request')),
        truncCell(x.request?.principal),
        truncCell(x.request?.action),
        truncCell(x.request?.resource),
        h('td', null, outcome(x.current)),
        h('td', null, outcome(x.candidate)),
        h('td', null, x.changed ? badge('contained', 'changed') : h('span', { class: 'muted' }, 'same'))))))),
  ];
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

const VIEWS = { health: healthView, decisions: decisionsView, decision: decisionView, lineage: lineageView, proofs: proofsView, policies: policiesView };

function start() {
  captureToken();
  document.body.dataset.view = M.parseRoute(location.hash).view;
  document.body.dataset.loaded = 'false';
  window.addEventListener('hashchange', () => {
    if (captureToken()) { identityChanged(); return; }
    route();
  });
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && state.panelOpen) { state.panelOpen = false; renderSession(); } });
  document.addEventListener('click', (ev) => {
    // The path, not the target: the chip re-renders (and leaves the page) while its click is handled.
    if (state.panelOpen && !ev.composedPath().includes($('session-area'))) { state.panelOpen = false; renderSession(); }
  });
  renderSession();
  // The first view waits (briefly) for the session, so admin-only controls know the role.
  Promise.race([loadSession(), new Promise((r) => setTimeout(r, 3000))]).finally(route);
  // The session can expire or be revoked: check it every 30 s.
  setInterval(loadSession, 30_000);
}

start();
