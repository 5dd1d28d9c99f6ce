// Tests of the console's page-free logic: model.js (routes, filters, time,
// health, timeline, NDJSON), graph.js (lineage layout, chart scales),
// diff.js (line LCS diff) and api.js (token capture, errors, the tail
// reader against a fake fetch).
// Run: node --test /work/main/crates/quorate-server/console/tests/
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as M from '../model.js';
import { layoutLineage, niceCeil, chartGeometry, LINEAGE_LAYOUT } from '../graph.js';
import { diffLines, splitLines, diffStats, collapseDiff } from '../diff.js';
import * as A from '../api.js';

// ---- routes -------------------------------------------------------------

describe('routes', () => {
  test('hashes map to views, params and queries', () => {
    assert.deepEqual(M.parseRoute(''), { view: 'health', param: null, query: {} });
    assert.deepEqual(M.parseRoute('#/'), { view: 'health', param: null, query: {} });
    assert.deepEqual(M.parseRoute('#/nowhere/3'), { view: 'health', param: null, query: {} });
    assert.deepEqual(M.parseRoute('#/decision/12'), { view: 'decision', param: '12', query: {} });
    assert.deepEqual(M.parseRoute('#/lineage/40'), { view: 'lineage', param: '40', query: {} });
    assert.deepEqual(M.parseRoute('#/lineage?trace_id=t%201'), { view: 'lineage', param: null, query: { trace_id: 't 1' } });
    assert.deepEqual(M.parseRoute('#/proofs?index=7'), { view: 'proofs', param: null, query: { index: '7' } });
    assert.deepEqual(M.parseRoute('#/decisions?domain=pay&decision=DENY&domain=x'), { view: 'decisions', param: null, query: { domain: 'pay', decision: 'DENY' } });
    assert.deepEqual(M.parseRoute('#/policies'), { view: 'policies', param: null, query: {} });
  });

  test('routeHash round-trips through parseRoute', () => {
    const h = M.routeHash('lineage', null, { trace_id: 'a&b=c', empty: '' });
    assert.equal(h, '#/lineage?trace_id=a%26b%3Dc');
    assert.deepEqual(M.parseRoute(h).query, { trace_id: 'a&b=c' });
    assert.equal(M.routeHash('decision', 5), '#/decision/5');
    assert.equal(M.routeHash('health'), '#/health');
  });

  test('parseIndex accepts positive decimal integers only', () => {
    assert.equal(M.parseIndex('12'), 12);
    for (const bad of ['0', '-1', '1.5', '1e3', '', ' 3', 'abc', '99999999999999999']) assert.equal(M.parseIndex(bad), null, bad);
    assert.equal(M.parseIndex(null), null);
  });
});

// ---- filters ------------------------------------------------------------

const rec = (over = {}) => ({
  index: 4, log_index: 8,
  request: { domain: 'pay', request_id: 'r-4', principal: 'User::"bob"', action: 'Action::"read"', resource: 'Doc::"2"', context: '{}', entities: null, parent: null, trace_id: 't-1', ...(over.request ?? {}) },
  decision: 'ALLOW', reason: null, determining_policies: ['p0'], errors: [], policy_version: 2, policy_hash: 'aa', timestamp_ms: 1000,
  prev_hash: '00', hash: 'bb',
  ...Object.fromEntries(Object.entries(over).filter(([k]) => k !== 'request')),
});

describe('decision filters', () => {
  test('normalizeFilters keeps known, non-empty, well-formed values', () => {
    assert.deepEqual(M.normalizeFilters({
      domain: ' pay ', principal: '', decision: 'deny', reason: 'POLICY', policy_version: '3', since_ms: 'x', until_ms: '2000', limit: '5', bogus: 'y',
    }), { domain: 'pay', decision: 'DENY', reason: 'POLICY', policy_version: 3, until_ms: 2000 });
    assert.deepEqual(M.normalizeFilters({ decision: 'maybe', policy_version: '-1' }), {});
    assert.deepEqual(M.normalizeFilters(null), {});
  });

  test('filtersToQuery lists the parameters of CONSOLE.md in a fixed order', () => {
    assert.equal(M.filtersToQuery({ until_ms: 9, domain: 'pay', principal: 'User::"b"', decision: 'ALLOW' }),
      'domain=pay&principal=User%3A%3A%22b%22&decision=ALLOW&until_ms=9');
    assert.equal(M.filtersToQuery({}), '');
    const q = M.filtersToQuery({ trace_id: 't 1', request_id: 'r&1', since_ms: 5 });
    assert.deepEqual(M.normalizeFilters(Object.fromEntries(new URLSearchParams(q))), { request_id: 'r&1', trace_id: 't 1', since_ms: 5 });
  });

  test('substring for principal, action, resource; exact for the rest', () => {
    const r = rec();
    assert.ok(M.matchesFilters(r, {}));
    assert.ok(M.matchesFilters(r, { principal: 'bob' }));
    assert.ok(M.matchesFilters(r, { action: 'read', resource: 'Doc::' }));
    assert.ok(!M.matchesFilters(r, { principal: 'alice' }));
    assert.ok(!M.matchesFilters(r, { principal: 'BOB' }), 'substring matching is case-sensitive');
    assert.ok(M.matchesFilters(r, { domain: 'pay' }));
    assert.ok(!M.matchesFilters(r, { domain: 'pa' }), 'domain is exact');
    assert.ok(!M.matchesFilters(r, { request_id: 'r-' }), 'request_id is exact');
    assert.ok(M.matchesFilters(r, { trace_id: 't-1' }));
    assert.ok(!M.matchesFilters(r, { trace_id: 't-' }));
    assert.ok(!M.matchesFilters(rec({ request: { trace_id: null } }), { trace_id: 't-1' }));
    assert.ok(M.matchesFilters(r, { decision: 'ALLOW' }));
    assert.ok(!M.matchesFilters(r, { decision: 'DENY' }));
    assert.ok(M.matchesFilters(rec({ decision: 'DENY', reason: 'POLICY' }), { decision: 'DENY', reason: 'POLICY' }));
    assert.ok(!M.matchesFilters(r, { reason: 'POLICY' }));
    assert.ok(M.matchesFilters(r, { policy_version: '2' }));
    assert.ok(!M.matchesFilters(r, { policy_version: 3 }));
    assert.ok(!M.matchesFilters(rec({ policy_version: null }), { policy_version: 2 }));
  });

  test('since_ms and until_ms are inclusive bounds on timestamp_ms', () => {
    const r = rec({ timestamp_ms: 1000 });
    assert.ok(M.matchesFilters(r, { since_ms: 1000, until_ms: 1000 }));
    assert.ok(!M.matchesFilters(r, { since_ms: 1001 }));
    assert.ok(!M.matchesFilters(r, { until_ms: 999 }));
  });

  test('datetime-local values convert to local ms and back', () => {
    const ms = M.datetimeLocalToMs('2025-12-03T10:07');
    assert.equal(ms, new Date(2025, 11, 3, 10, 7, 0, 0).getTime());
    assert.equal(M.datetimeLocalToMs('2025-12-03T10:07:05'), ms + 5000);
    assert.equal(M.datetimeLocalToMs('2025-12-03T10:07:05.25'), ms + 5250);
    assert.equal(M.msToDatetimeLocal(ms + 5000), '2025-12-03T10:07:05');
    assert.equal(M.msToDatetimeLocal(ms + 5250), '2025-12-03T10:07:05.250');
    assert.equal(M.datetimeLocalToMs(M.msToDatetimeLocal(1764800000123)), 1764800000123);
    assert.equal(M.datetimeLocalToMs(''), null);
    assert.equal(M.datetimeLocalToMs('yesterday'), null);
  });
});

// ---- formatting ---------------------------------------------------------

describe('time formatting', () => {
  const now = 1_764_800_000_000;
  test('relativeTime in both directions', () => {
    assert.equal(M.relativeTime(now, now), 'just now');
    assert.equal(M.relativeTime(now - 4999, now), 'just now');
    assert.equal(M.relativeTime(now - 12_000, now), '12 s ago');
    assert.equal(M.relativeTime(now + 12_500, now), 'in 12 s');
    assert.equal(M.relativeTime(now - 3 * 60_000 - 59_000, now), '3 min ago');
    assert.equal(M.relativeTime(now + 5 * 3_600_000, now), 'in 5 h');
    assert.equal(M.relativeTime(now + 86_400_000, now), 'in 1 day');
    assert.equal(M.relativeTime(now + 13.5 * 86_400_000, now), 'in 13 days');
    assert.equal(M.relativeTime(now + 400 * 86_400_000, now), 'in 400 days');
    assert.equal(M.relativeTime(now - 3 * 365 * 86_400_000, now), '2 y ago');
    assert.equal(M.relativeTime(NaN, now), 'unknown');
  });

  test('formatDuration', () => {
    assert.equal(M.formatDuration(450), '450 ms');
    assert.equal(M.formatDuration(12_300), '12 s');
    assert.equal(M.formatDuration(185_000), '3 min 05 s');
    assert.equal(M.formatDuration(2 * 3_600_000 + 7 * 60_000), '2 h 07 min');
    assert.equal(M.formatDuration(4 * 86_400_000 + 3 * 3_600_000), '4 d 03 h');
    assert.equal(M.formatDuration(-5), '0 ms');
  });

  test('certificate expiry levels warn under 14 days', () => {
    const day = 86_400_000;
    assert.equal(M.certExpiryLevel(now + 30 * day, now), 'ok');
    assert.equal(M.certExpiryLevel(now + 14 * day, now), 'ok');
    assert.equal(M.certExpiryLevel(now + 14 * day - 1, now), 'warn');
    assert.equal(M.certExpiryLevel(now, now), 'expired');
    assert.equal(M.certExpiryLevel(undefined, now), 'unknown');
  });

  test('formatTimeCompact shortens by distance from now', () => {
    const at = (y, mo, d, h, mi, s, ms = 0) => new Date(y, mo - 1, d, h, mi, s, ms).getTime();
    const today = at(2025, 12, 3, 18, 0, 0);
    assert.equal(M.formatTimeCompact(at(2025, 12, 3, 9, 5, 7, 42), today), '09:05:07.042');
    assert.equal(M.formatTimeCompact(at(2025, 11, 30, 23, 59, 1), today), '11-30 23:59:01');
    assert.equal(M.formatTimeCompact(at(2024, 1, 2, 3, 4, 5), today), '2024-01-02 03:04');
    assert.equal(M.formatTime(at(2024, 1, 2, 3, 4, 5)), '2024-01-02 03:04:05');
    assert.equal(M.formatTimeCompact(undefined, today), '—');
  });

  test('truncate, shortHash, prettyJsonText', () => {
    assert.equal(M.truncate('abcdef', 4), 'abc…');
    assert.equal(M.truncate('abc', 4), 'abc');
    assert.equal(M.truncate(null, 4), '');
    assert.equal(M.shortHash('0123456789abcdef', 8), '01234567…');
    assert.equal(M.shortHash(null), '—');
    assert.equal(M.prettyJsonText('{"a":[1,2]}'), '{\n  "a": [\n    1,\n    2\n  ]\n}');
    assert.equal(M.prettyJsonText('not json'), 'not json');
  });
});

// ---- health -------------------------------------------------------------

const node = (id, over = {}) => ({
  node_id: id, addr: `127.0.0.1:710${id}`, region: 'local', voter: true, reachable: true, error: null,
  role: 'follower', term: 3, leader_id: 1, quorate: true, containment: null,
  last_log_index: 10, commit_index: 10, applied_index: 10, lag: 0, ...over,
});

describe('health', () => {
  test('nodeState', () => {
    assert.deepEqual(M.nodeState(node(1)), { state: 'quorate', reason: null });
    assert.deepEqual(M.nodeState(node(2, { quorate: false, containment: { reason: 'NO_QUORUM', message: 'm', since_ms: 1 } })), { state: 'contained', reason: 'NO_QUORUM' });
    assert.deepEqual(M.nodeState({ node_id: 3, reachable: false, error: 'timeout' }), { state: 'unreachable', reason: null });
  });

  test('a quorate cluster names its leader and term', () => {
    const s = M.clusterSummary({ served_by: 2, nodes: [node(1, { role: 'leader' }), node(2), node(3, { reachable: false, term: undefined })] });
    assert.equal(s.state, 'quorate');
    assert.equal(s.leader, 1);
    assert.equal(s.term, 3);
    assert.deepEqual(s.counts, { quorate: 2, contained: 0, unreachable: 1 });
    assert.equal(s.reason, null);
  });

  test('the serving node contained makes the banner contained, with its reason', () => {
    const c = { reason: 'NO_QUORUM', message: 'no leader for 3 s', since_ms: 500 };
    const s = M.clusterSummary({ served_by: 3, nodes: [node(1, { role: 'leader', term: 4 }), node(2, { term: 4 }), node(3, { quorate: false, containment: c, role: 'candidate', term: 9 })] });
    assert.equal(s.state, 'contained');
    assert.equal(s.reason, 'NO_QUORUM');
    assert.equal(s.message, 'no leader for 3 s');
    assert.equal(s.since_ms, 500);
  });

  test('a contained minority seen from the majority leaves the banner quorate', () => {
    const c = { reason: 'NO_QUORUM', message: 'm', since_ms: 500 };
    const s = M.clusterSummary({ served_by: 1, nodes: [node(1, { role: 'leader' }), node(2), node(3, { quorate: false, containment: c })] });
    assert.equal(s.state, 'quorate');
    assert.equal(s.counts.contained, 1);
  });

  test('no quorate member at all is contained', () => {
    const c = { reason: 'DIVERGENCE', message: 'roots differ', since_ms: 7 };
    const s = M.clusterSummary({ served_by: 9, nodes: [node(1, { quorate: false, containment: c }), { node_id: 2, reachable: false }] });
    assert.equal(s.state, 'contained');
    assert.equal(s.reason, 'DIVERGENCE');
    assert.equal(M.reasonSeverity(s.reason), 'critical');
    assert.equal(M.reasonSeverity('NO_QUORUM'), 'contained');
  });

  test('without a leader role the leader_id of the current term is used', () => {
    const s = M.clusterSummary({ served_by: 2, nodes: [node(2, { leader_id: 5, term: 6 }), node(3, { leader_id: 4, term: 5 })] });
    assert.equal(s.leader, 5);
    assert.equal(s.term, 6);
  });
});

// ---- timeline -----------------------------------------------------------

describe('leader console', () => {
  const health = (servedBy, extra = {}) => ({
    served_by: servedBy,
    nodes: [
      { node_id: 1, role: 'leader', reachable: true, console_url: 'https://10.0.0.1:7201/', ...extra },
      { node_id: 2, role: 'follower', leader_id: 1, reachable: true, console_url: 'https://10.0.0.2:7201/' },
    ],
  });
  test('none on the leader, or when this node is unknown', () => {
    assert.equal(M.leaderConsole(health(1), 't'), null);
    assert.equal(M.leaderConsole(health(9), 't'), null);
    assert.equal(M.leaderConsole(null, 't'), null);
  });
  test("a follower links to the leader's console, signed in with the token", () => {
    assert.deepEqual(M.leaderConsole(health(2), 'a.b c'), { id: 1, url: 'https://10.0.0.1:7201/#token=a.b%20c&to=/policies' });
    assert.deepEqual(M.leaderConsole(health(2), null), { id: 1, url: 'https://10.0.0.1:7201/#/policies' });
  });
  test('no link without a leader or a usable URL', () => {
    assert.deepEqual(M.leaderConsole(health(2, { reachable: false }), 't'), { id: 1, url: null });
    assert.deepEqual(M.leaderConsole(health(2, { console_url: 'javascript:alert(1)' }), 't'), { id: 1, url: null });
    assert.deepEqual(M.leaderConsole(health(2, { console_url: '' }), 't'), { id: 1, url: null });
  });
  test('the view a token link asks for', () => {
    assert.equal(M.routeAfterToken('#token=abc&to=/policies'), '#/policies');
    assert.equal(M.routeAfterToken('#token=abc'), '#/health');
    assert.equal(M.routeAfterToken('#token=abc&to=https://evil'), '#/health');
  });
});

describe('timeline', () => {
  test('throughput is the per-second delta of decisions', () => {
    const samples = [
      { t_ms: 0, decisions: 10, contained: null },
      { t_ms: 1000, decisions: 15, contained: null },
      { t_ms: 3000, decisions: 25, contained: null },
      { t_ms: 3000, decisions: 30, contained: null }, // same time: skipped
      { t_ms: 4000, decisions: 2, contained: null }, // restarted: 0, not negative
    ];
    assert.deepEqual(M.throughput(samples), [{ t_ms: 1000, rate: 5 }, { t_ms: 3000, rate: 5 }, { t_ms: 4000, rate: 0 }]);
    assert.deepEqual(M.throughput([]), []);
    assert.deepEqual(M.throughput([{ t_ms: 0, decisions: 1 }]), []);
  });

  test('containment ranges merge equal consecutive reasons', () => {
    const s = (t, contained) => ({ t_ms: t, decisions: 0, contained });
    const samples = [s(0, null), s(1000, 'NO_QUORUM'), s(2000, 'NO_QUORUM'), s(3000, 'DIVERGENCE'), s(4000, null), s(5000, 'NO_QUORUM')];
    assert.deepEqual(M.containmentRanges(samples, 1000), [
      { start_ms: 1000, end_ms: 3000, reason: 'NO_QUORUM' },
      { start_ms: 3000, end_ms: 4000, reason: 'DIVERGENCE' },
      { start_ms: 5000, end_ms: 6000, reason: 'NO_QUORUM' },
    ]);
    assert.deepEqual(M.containmentRanges([s(0, null), s(1000, null)]), []);
  });

  test('a range lasts until the next sample', () => {
    const s = (t, contained) => ({ t_ms: t, decisions: 0, contained });
    // The range of the sample at 1000 ends at the next sample (5000), so the two merge.
    assert.deepEqual(M.containmentRanges([s(1000, 'X'), s(5000, 'X')], 1000), [{ start_ms: 1000, end_ms: 6000, reason: 'X' }]);
  });
});

// ---- NDJSON -------------------------------------------------------------

describe('NDJSON tail', () => {
  test('LineSplitter joins lines across chunk boundaries', () => {
    const sp = new M.LineSplitter();
    assert.deepEqual(sp.push('{"a":1}\n{"b"'), ['{"a":1}']);
    assert.deepEqual(sp.push(':2}\r\n\n  \n{"c"'), ['{"b":2}']);
    assert.deepEqual(sp.push(':3}'), []);
    assert.deepEqual(sp.end(), ['{"c":3}']);
    assert.deepEqual(sp.end(), []);
  });

  test('every split of a stream yields the same lines', () => {
    const text = '{"heartbeat":5}\n{"index":6,"request":{}}\n{"index":7,"request":{}}\n';
    for (let cut = 0; cut <= text.length; cut++) {
      const sp = new M.LineSplitter();
      const lines = [...sp.push(text.slice(0, cut)), ...sp.push(text.slice(cut)), ...sp.end()];
      assert.equal(lines.length, 3, `cut at ${cut}`);
      assert.equal(lines[2], '{"index":7,"request":{}}');
    }
  });

  test('parseTailLine tells heartbeats from records', () => {
    assert.deepEqual(M.parseTailLine('{"heartbeat":97}'), { kind: 'heartbeat', as_of: 97 });
    const r = M.parseTailLine(JSON.stringify(rec()));
    assert.equal(r.kind, 'record');
    assert.equal(r.record.index, 4);
    assert.equal(M.parseTailLine('nope').kind, 'bad');
    assert.equal(M.parseTailLine('[1]').kind, 'bad');
    assert.equal(M.parseTailLine('{"index":"4","request":{}}').kind, 'bad');
  });

  test('backoff doubles from 1 s to at most 30 s', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 50].map(M.backoffMs), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});

// ---- lineage layout -----------------------------------------------------

const lnode = (index, decision = 'ALLOW') => ({ index, decision, action: 'a', principal: 'p' });

describe('lineage layout', () => {
  const { nodeWidth: W, nodeHeight: H, gapX, gapY, pad } = LINEAGE_LAYOUT;

  test('a chain is one node per layer, left to right', () => {
    const lay = layoutLineage([lnode(3), lnode(1), lnode(2)], [{ from: 1, to: 2 }, { from: 2, to: 3 }]);
    assert.deepEqual(lay.layers, [[1], [2], [3]]);
    assert.deepEqual(lay.nodes.map((n) => [n.index, n.layer, n.x, n.y]), [
      [1, 0, pad, pad], [2, 1, pad + W + gapX, pad], [3, 2, pad + 2 * (W + gapX), pad],
    ]);
    assert.equal(lay.width, 2 * pad + 3 * W + 2 * gapX);
    assert.equal(lay.height, 2 * pad + H);
    assert.equal(lay.edges.length, 2);
    const e = lay.edges[0];
    assert.deepEqual([e.from, e.to, e.x1, e.y1, e.x2, e.y2], [1, 2, pad + W, pad + H / 2, pad + W + gapX, pad + H / 2]);
    assert.match(e.d, /^M[\d.]+,[\d.]+ C[\d.]+,[\d.]+ [\d.]+,[\d.]+ [\d.]+,[\d.]+$/);
  });

  test('depth is the longest parent chain; layers are ordered by index and centred', () => {
    // 1 → 5, 1 → 2, 2 → 4, 5 → 4 (4 is at depth 2), 7 is a second root.
    const nodes = [1, 2, 4, 5, 7].map((i) => lnode(i));
    const lay = layoutLineage(nodes, [{ from: 1, to: 5 }, { from: 1, to: 2 }, { from: 2, to: 4 }, { from: 5, to: 4 }]);
    assert.deepEqual(lay.layers, [[1, 7], [2, 5], [4]]);
    const at = Object.fromEntries(lay.nodes.map((n) => [n.index, n]));
    assert.equal(at[2].y, pad);
    assert.equal(at[5].y, pad + H + gapY);
    assert.equal(at[2].order, 0);
    assert.equal(at[5].order, 1);
    // the one-node layer sits in the middle of the two-node ones
    assert.equal(at[4].y, pad + (H + gapY) / 2);
    assert.equal(lay.height, 2 * pad + 2 * H + gapY);
  });

  test('edges to unknown nodes, self edges and duplicates are dropped', () => {
    const lay = layoutLineage([lnode(1), lnode(2)], [{ from: 1, to: 2 }, { from: 1, to: 2 }, { from: 1, to: 99 }, { from: 2, to: 2 }, { from: 42, to: 1 }]);
    assert.deepEqual(lay.edges.map((e) => [e.from, e.to]), [[1, 2]]);
    assert.deepEqual(lay.layers, [[1], [2]]);
  });

  test('a cycle does not hang and gives each node a layer', () => {
    const lay = layoutLineage([lnode(1), lnode(2), lnode(3)], [{ from: 1, to: 2 }, { from: 2, to: 3 }, { from: 3, to: 1 }]);
    assert.equal(lay.nodes.length, 3);
    assert.equal(lay.edges.length, 3, 'the back edge is still drawn');
    assert.deepEqual(lay.layers.flat().sort(), [1, 2, 3]);
    assert.deepEqual(lay.nodes.map((n) => n.layer), [2, 0, 1], 'visited in index order: 1 sees 3 → 2 → (1 on the path)');
  });

  test('a long chain is laid out without recursion', () => {
    const n = 5000;
    const nodes = Array.from({ length: n }, (_, i) => lnode(i + 1));
    const edges = Array.from({ length: n - 1 }, (_, i) => ({ from: i + 1, to: i + 2 }));
    const lay = layoutLineage(nodes.reverse(), edges);
    assert.equal(lay.layers.length, n);
    assert.equal(lay.nodes[n - 1].layer, n - 1);
  });

  test('an empty graph', () => {
    const lay = layoutLineage([], []);
    assert.deepEqual(lay.nodes, []);
    assert.equal(lay.width, 2 * pad);
  });
});

// ---- chart --------------------------------------------------------------

describe('chart geometry', () => {
  test('niceCeil', () => {
    assert.deepEqual([0, 0.4, 1, 1.2, 2, 3, 7, 10, 11, 47, 200, 201].map(niceCeil), [1, 1, 1, 2, 2, 5, 10, 10, 20, 50, 200, 500]);
  });

  test('points map into the padded box', () => {
    const g = chartGeometry([{ t_ms: 0, rate: 0 }, { t_ms: 50, rate: 4 }, { t_ms: 100, rate: 2 }, { t_ms: 500, rate: 99 }],
      { t0: 0, t1: 100, width: 120, height: 60, pad: { left: 10, right: 10, top: 5, bottom: 5 } });
    assert.equal(g.yMax, 5, 'the point outside the window is ignored');
    assert.equal(g.line, 'M10,55 L60,15 L110,35');
    assert.equal(g.area, 'M10,55 L60,15 L110,35 L110,55 L10,55 Z');
    assert.equal(g.x(100), 110);
    assert.equal(g.y(5), 5);
  });

  test('no points, no path', () => {
    const g = chartGeometry([], { t0: 0, t1: 10, width: 10, height: 10 });
    assert.equal(g.line, '');
    assert.equal(g.yMax, 1);
  });
});

// ---- diff ---------------------------------------------------------------

const sides = (ops) => ({
  a: ops.filter((o) => o.op !== '+').map((o) => o.text),
  b: ops.filter((o) => o.op !== '-').map((o) => o.text),
});

describe('line diff', () => {
  test('splitLines', () => {
    assert.deepEqual(splitLines(''), []);
    assert.deepEqual(splitLines('a'), ['a']);
    assert.deepEqual(splitLines('a\nb\n'), ['a', 'b']);
    assert.deepEqual(splitLines('a\r\nb\n\n'), ['a', 'b', '']);
  });

  test('identical texts are all kept', () => {
    const ops = diffLines('a\nb\nc\n', 'a\nb\nc\n');
    assert.deepEqual(ops.map((o) => o.op).join(''), '   ');
    assert.deepEqual(ops[2], { op: ' ', text: 'c', a: 3, b: 3 });
  });

  test('an insertion and a removal in the middle, with line numbers', () => {
    const ops = diffLines('permit(a);\nforbid(b);\npermit(c);', 'permit(a);\npermit(c);\npermit(d);');
    assert.deepEqual(ops, [
      { op: ' ', text: 'permit(a);', a: 1, b: 1 },
      { op: '-', text: 'forbid(b);', a: 2, b: null },
      { op: ' ', text: 'permit(c);', a: 3, b: 2 },
      { op: '+', text: 'permit(d);', a: null, b: 3 },
    ]);
    assert.deepEqual(diffStats(ops), { added: 1, removed: 1, same: 2 });
  });

  test('a changed line is a removal then an addition', () => {
    assert.deepEqual(diffLines('x\nold\ny', 'x\nnew\ny').map((o) => `${o.op}${o.text}`), [' x', '-old', '+new', ' y']);
  });

  test('from and to empty', () => {
    assert.deepEqual(diffLines('', 'a\nb').map((o) => o.op), ['+', '+']);
    assert.deepEqual(diffLines('a\nb', '').map((o) => o.op), ['-', '-']);
    assert.deepEqual(diffLines('', ''), []);
  });

  test('the kept lines are a longest common subsequence', () => {
    // LCS of ABCBDAB and BDCABA has length 4.
    const ops = diffLines([...'ABCBDAB'], [...'BDCABA']);
    assert.equal(diffStats(ops).same, 4);
    assert.deepEqual(sides(ops), { a: [...'ABCBDAB'], b: [...'BDCABA'] });
  });

  test('random texts: each side is reproduced and the LCS is optimal', () => {
    let seed = 7;
    const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    const lcsLen = (a, b) => {
      const L = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
      for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
      return L[0][0];
    };
    for (let t = 0; t < 200; t++) {
      const a = Array.from({ length: rand(12) }, () => 'abcd'[rand(4)]);
      const b = Array.from({ length: rand(12) }, () => 'abcd'[rand(4)]);
      const ops = diffLines(a, b);
      assert.deepEqual(sides(ops), { a, b });
      assert.equal(diffStats(ops).same, lcsLen(a, b));
      for (const o of ops) {
        if (o.op !== '+') assert.equal(a[o.a - 1], o.text);
        if (o.op !== '-') assert.equal(b[o.b - 1], o.text);
      }
    }
  });

  test('collapseDiff keeps context around changes', () => {
    const a = Array.from({ length: 20 }, (_, i) => `l${i}`);
    const b = [...a];
    b[10] = 'changed';
    const c = collapseDiff(diffLines(a, b), 2);
    assert.deepEqual(c.map((o) => (o.op === '…' ? `…${o.count}` : o.op + o.text)),
      ['…8', ' l8', ' l9', '-l10', '+changed', ' l11', ' l12', '…7']);
    assert.deepEqual(collapseDiff(diffLines(['a', 'b'], ['a', 'b']), 3), [{ op: '…', count: 2 }]);
    assert.deepEqual(collapseDiff([], 3), []);
    // a run that would hide a single line is kept whole
    assert.deepEqual(collapseDiff(diffLines(['x', 'a', 'b', 'c', 'y'], ['X', 'a', 'b', 'c', 'Y']), 1).map((o) => o.op).join(''), '-+   -+');
  });
});

// ---- api ----------------------------------------------------------------

function fakeStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
}

describe('api client', () => {
  test('tokenFromHash', () => {
    assert.equal(A.tokenFromHash('#token=qct1.abc.def'), 'qct1.abc.def');
    assert.equal(A.tokenFromHash('#token=qct1.a%2Eb.c&x=1'), 'qct1.a.b.c');
    assert.equal(A.tokenFromHash('#token='), null);
    assert.equal(A.tokenFromHash('#/health'), null);
    assert.equal(A.tokenFromHash(''), null);
  });

  test('errorFromResponse reads the API error body, or falls back on the status', () => {
    const e = A.errorFromResponse(403, '{"error":"PERMISSION_DENIED","message":"needs auditor"}');
    assert.ok(e instanceof A.ApiError);
    assert.deepEqual([e.status, e.code, e.message], [403, 'PERMISSION_DENIED', 'needs auditor']);
    const f = A.errorFromResponse(401, '\n  Unauthorized\nat line 2');
    assert.deepEqual([f.code, f.message], ['UNAUTHENTICATED', '  Unauthorized']);
    assert.equal(A.errorFromResponse(502, '').code, 'UNAVAILABLE');
    assert.equal(A.errorFromResponse(418, '').code, 'HTTP_418');
    assert.equal(A.errorFromResponse(400, 'x'.repeat(1000)).message.length, 300);
    assert.match(A.errorHint('PERMISSION_DENIED'), /quorate console login --role auditor/);
    assert.equal(A.errorHint('INVALID_ARGUMENT'), null);
  });

  test('calls send the stored token and surface API errors', async () => {
    const saved = { fetch: globalThis.fetch, ss: Object.getOwnPropertyDescriptor(globalThis, 'sessionStorage') };
    const seen = [];
    Object.defineProperty(globalThis, 'sessionStorage', { value: fakeStorage(), configurable: true, writable: true });
    globalThis.fetch = async (url, init) => {
      seen.push({ url, auth: init.headers.Authorization ?? null, method: init.method, body: init.body ?? null });
      if (url === '/console/api/decisions/9') return new Response('{"error":"NOT_FOUND","message":"no decision 9"}', { status: 404 });
      return new Response('{"ok":true}', { status: 200 });
    };
    try {
      assert.deepEqual(await A.api.session(), { ok: true });
      A.setToken('  qct1.x.y ');
      assert.equal(A.getToken(), 'qct1.x.y');
      await A.api.whatif({ domain: 'd', version: 2, last: 5 });
      await assert.rejects(A.api.decision(9), (e) => e.code === 'NOT_FOUND' && e.status === 404 && e.message === 'no decision 9');
      A.clearToken();
      await A.api.health();
      assert.deepEqual(seen.map((s) => [s.url, s.auth, s.method]), [
        ['/console/api/session', null, 'GET'],
        ['/console/api/whatif', 'Bearer qct1.x.y', 'POST'],
        ['/console/api/decisions/9', 'Bearer qct1.x.y', 'GET'],
        ['/console/api/health', null, 'GET'],
      ]);
      assert.equal(seen[1].body, '{"domain":"d","version":2,"last":5}');
    } finally {
      globalThis.fetch = saved.fetch;
      if (saved.ss) Object.defineProperty(globalThis, 'sessionStorage', saved.ss); else delete globalThis.sessionStorage;
    }
  });

  test('a network failure is UNAVAILABLE', async () => {
    const saved = globalThis.fetch;
    globalThis.fetch = async () => { throw new TypeError('Failed to fetch'); };
    try {
      await assert.rejects(A.api.health(), (e) => e instanceof A.ApiError && e.code === 'UNAVAILABLE' && e.status === 0);
    } finally { globalThis.fetch = saved; }
  });

  test('a call that hangs times out as UNAVAILABLE; an abort stays an abort', async () => {
    const saved = globalThis.fetch;
    globalThis.fetch = (url, init) => new Promise((_, reject) => {
      init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    });
    try {
      await assert.rejects(A.getJson('/console/api/health', { timeoutMs: 30 }), (e) => e instanceof A.ApiError && e.code === 'UNAVAILABLE' && /within 0.03 s/.test(e.message));
      const ctl = new AbortController();
      const p = A.getJson('/console/api/health', { signal: ctl.signal, timeoutMs: 5000 });
      ctl.abort();
      await assert.rejects(p, (e) => e.name === 'AbortError');
    } finally { globalThis.fetch = saved; }
  });

  test('the tail is read line by line from a stream split anywhere', async () => {
    const saved = globalThis.fetch;
    const chunks = ['{"index":5,"requ', 'est":{}}\n{"heart', 'beat":5}\n', '{"index":6,"request":{}}'];
    let url;
    globalThis.fetch = async (u) => {
      url = u;
      const enc = new TextEncoder();
      const body = new ReadableStream({ start(c) { for (const x of chunks) c.enqueue(enc.encode(x)); c.close(); } });
      return new Response(body, { status: 200, headers: { 'content-type': 'application/x-ndjson' } });
    };
    try {
      const lines = [];
      let opened = false;
      await A.api.tail(4, { onOpen: () => { opened = true; }, onLine: (l) => lines.push(M.parseTailLine(l)) });
      assert.equal(url, '/console/api/tail?after=4');
      assert.ok(opened);
      assert.deepEqual(lines.map((l) => l.kind), ['record', 'heartbeat', 'record']);
      assert.equal(lines[2].record.index, 6);
    } finally { globalThis.fetch = saved; }
  });

  test('trace and lineage URLs', async () => {
    const saved = globalThis.fetch;
    const urls = [];
    globalThis.fetch = async (u) => { urls.push(u); return new Response('{}', { status: 200 }); };
    try {
      await A.api.lineage(40, 200);
      await A.api.trace('t 1&x', null, 200);
      await A.api.trace('t', 17, 50);
      await A.api.decisions('domain=pay');
      await A.api.decisions('');
      assert.deepEqual(urls, [
        '/console/api/lineage/40?limit=200',
        '/console/api/lineage?trace_id=t+1%26x&limit=200',
        '/console/api/lineage?trace_id=t&after=17&limit=50',
        '/console/api/decisions?domain=pay',
        '/console/api/decisions',
      ]);
    } finally { globalThis.fetch = saved; }
  });
});
