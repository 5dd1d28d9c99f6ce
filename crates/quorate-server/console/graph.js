// quorate console: geometry of the pictures the console draws.
//
// The layered layout of a lineage graph (decisions linked parent → child)
// and the scales of the throughput chart. Pure functions that return
// coordinates and SVG path text; the page turns them into elements.

/** Default box sizes and gaps of the lineage layout, in SVG user units (px). */
export const LINEAGE_LAYOUT = Object.freeze({ nodeWidth: 190, nodeHeight: 58, gapX: 64, gapY: 16, pad: 16 });

/**
 * Lays out a lineage graph (the `nodes` and `edges` of `GET
 * /console/api/lineage/...`) in layers, left to right:
 * - a node's layer is its depth along the parent chain: 0 for a root (no
 *   edge into it from a node of the graph), else one more than its deepest
 *   parent; an edge that would close a cycle is drawn but ignored for depth
 *   (nodes are visited in index order, so the result is deterministic);
 * - within a layer, nodes are ordered by index, top to bottom, and each
 *   layer is centred on the tallest one;
 * - an edge runs from the right middle of its parent to the left middle of
 *   its child as a cubic Bézier; edges naming a node not in the graph, and
 *   duplicates, are dropped.
 * Returns {width, height, layers, nodes: [{index, layer, order, x, y, w, h,
 * node}], edges: [{from, to, d, x1, y1, x2, y2}]}.
 */
export function layoutLineage(nodes, edges, options = {}) {
  const o = { ...LINEAGE_LAYOUT, ...options };
  const byIndex = new Map();
  for (const n of Array.isArray(nodes) ? nodes : []) {
    if (Number.isSafeInteger(n?.index) && !byIndex.has(n.index)) byIndex.set(n.index, n);
  }
  const order = [...byIndex.keys()].sort((a, b) => a - b);

  const seen = new Set();
  const kept = [];
  const parents = new Map(order.map((i) => [i, []]));
  for (const e of Array.isArray(edges) ? edges : []) {
    if (!byIndex.has(e?.from) || !byIndex.has(e?.to) || e.from === e.to) continue;
    const key = `${e.from}>${e.to}`;
    if (seen.has(key)) continue;
    seen.add(key);
    kept.push({ from: e.from, to: e.to });
    parents.get(e.to).push(e.from);
  }
  for (const ps of parents.values()) ps.sort((a, b) => a - b);

  // Longest path from a root, iteratively (a chain of 1,000 nodes must not
  // exhaust the stack); a parent still on the path is a back edge.
  const depth = new Map();
  const onPath = new Set();
  for (const start of order) {
    if (depth.has(start)) continue;
    const stack = [{ i: start, k: 0, d: 0 }];
    onPath.add(start);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const ps = parents.get(top.i);
      if (top.k < ps.length) {
        const p = ps[top.k++];
        if (depth.has(p)) top.d = Math.max(top.d, depth.get(p) + 1);
        else if (!onPath.has(p)) { onPath.add(p); stack.push({ i: p, k: 0, d: 0 }); }
        continue;
      }
      stack.pop();
      onPath.delete(top.i);
      depth.set(top.i, top.d);
      const below = stack[stack.length - 1];
      if (below) below.d = Math.max(below.d, top.d + 1);
    }
  }

  const layers = [];
  for (const i of order) {
    const d = depth.get(i);
    (layers[d] ??= []).push(i);
  }
  for (let d = 0; d < layers.length; d++) layers[d] ??= [];
  const tallest = layers.reduce((m, l) => Math.max(m, l.length), 0);
  const rowH = o.nodeHeight + o.gapY;
  const placed = new Map();
  layers.forEach((layer, d) => {
    const offset = ((tallest - layer.length) * rowH) / 2;
    layer.forEach((i, k) => {
      placed.set(i, {
        index: i, layer: d, order: k,
        x: o.pad + d * (o.nodeWidth + o.gapX),
        y: o.pad + offset + k * rowH,
        w: o.nodeWidth, h: o.nodeHeight,
        node: byIndex.get(i),
      });
    });
  });

  const outEdges = kept.map(({ from, to }) => {
    const a = placed.get(from), b = placed.get(to);
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const bend = Math.max(24, Math.abs(x2 - x1) / 2);
    const d = `M${r(x1)},${r(y1)} C${r(x1 + bend)},${r(y1)} ${r(x2 - bend)},${r(y2)} ${r(x2)},${r(y2)}`;
    return { from, to, d, x1, y1, x2, y2 };
  });

  const width = layers.length ? 2 * o.pad + layers.length * o.nodeWidth + (layers.length - 1) * o.gapX : 2 * o.pad;
  const height = tallest ? 2 * o.pad + tallest * o.nodeHeight + (tallest - 1) * o.gapY : 2 * o.pad;
  return { width, height, layers, nodes: order.map((i) => placed.get(i)), edges: outEdges };
}

const r = (v) => Math.round(v * 10) / 10;

/** The smallest of 1, 2, 5 × 10^k that is at least `v` (1 for v ≤ 1). */
export function niceCeil(v) {
  if (!(v > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v - 1e-9 * p) return m * p;
  return 10 * p;
}

/**
 * The throughput chart: points {t_ms, rate} over the window [t0, t1] in a
 * width × height box with `pad` {left, right, top, bottom}. Returns {yMax,
 * line, area, x(t), y(rate)}: `line` and `area` are SVG path text ('' with
 * fewer than one point), the y scale runs from 0 to `yMax` = niceCeil of the
 * largest rate.
 */
export function chartGeometry(points, { t0, t1, width, height, pad = { left: 0, right: 0, top: 0, bottom: 0 } }) {
  const xs = (Array.isArray(points) ? points : []).filter((p) => p.t_ms >= t0 && p.t_ms <= t1);
  const yMax = niceCeil(xs.reduce((m, p) => Math.max(m, p.rate), 0));
  const iw = width - pad.left - pad.right, ih = height - pad.top - pad.bottom;
  const span = t1 > t0 ? t1 - t0 : 1;
  const x = (t) => pad.left + ((t - t0) / span) * iw;
  const y = (v) => pad.top + ih - (v / yMax) * ih;
  if (xs.length === 0) return { yMax, line: '', area: '', x, y };
  const pts = xs.map((p) => `${r(x(p.t_ms))},${r(y(p.rate))}`);
  const line = `M${pts.join(' L')}`;
  const base = r(pad.top + ih);
  const area = `${line} L${r(x(xs[xs.length - 1].t_ms))},${base} L${r(x(xs[0].t_ms))},${base} Z`;
  return { yMax, line, area, x, y };
}
