// quorate console: line diffs of policy versions.
//
// A longest-common-subsequence diff over lines, written out here so the
// console needs no library. Pure functions; tests/console.test.mjs runs them.

/**
 * Text to lines: split at `\n` (a `\r` before it dropped); a final newline
 * ends the last line rather than starting an empty one. '' has no lines.
 */
export function splitLines(text) {
  const t = String(text ?? '');
  if (t === '') return [];
  const lines = t.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Above this many cells (lines of a × lines of b, after the common ends) the middle is shown as replaced. */
const MAX_CELLS = 4_000_000;

/**
 * The line diff from `a` to `b` (texts or arrays of lines): a list of
 * {op, text, a, b} with op ' ' (in both), '-' (only in a), '+' (only in
 * b), and `a`/`b` the 1-based line numbers on each side (null where the
 * line is absent). The kept lines are a longest common subsequence; within a
 * change, removals come before additions. Concatenating the ' ' and '-'
 * lines gives `a`, the ' ' and '+' lines gives `b`.
 */
export function diffLines(a, b) {
  const A = Array.isArray(a) ? a : splitLines(a);
  const B = Array.isArray(b) ? b : splitLines(b);
  let pre = 0;
  while (pre < A.length && pre < B.length && A[pre] === B[pre]) pre++;
  let suf = 0;
  while (suf < A.length - pre && suf < B.length - pre && A[A.length - 1 - suf] === B[B.length - 1 - suf]) suf++;

  const out = [];
  for (let i = 0; i < pre; i++) out.push({ op: ' ', text: A[i], a: i + 1, b: i + 1 });

  const a0 = pre, b0 = pre;
  const n = A.length - pre - suf, m = B.length - pre - suf;
  if (n * m > MAX_CELLS) {
    for (let i = 0; i < n; i++) out.push({ op: '-', text: A[a0 + i], a: a0 + i + 1, b: null });
    for (let j = 0; j < m; j++) out.push({ op: '+', text: B[b0 + j], a: null, b: b0 + j + 1 });
  } else {
    // L[i][j] = length of an LCS of A[a0+i..] and B[b0+j..], row-major in one array.
    const w = m + 1;
    const L = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[i * w + j] = A[a0 + i] === B[b0 + j] ? L[(i + 1) * w + j + 1] + 1 : Math.max(L[(i + 1) * w + j], L[i * w + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && A[a0 + i] === B[b0 + j]) {
        out.push({ op: ' ', text: A[a0 + i], a: a0 + i + 1, b: b0 + j + 1 });
        i++; j++;
      } else if (j >= m || (i < n && L[(i + 1) * w + j] >= L[i * w + j + 1])) {
        out.push({ op: '-', text: A[a0 + i], a: a0 + i + 1, b: null });
        i++;
      } else {
        out.push({ op: '+', text: B[b0 + j], a: null, b: b0 + j + 1 });
        j++;
      }
    }
  }

  for (let k = 0; k < suf; k++) {
    const ia = A.length - suf + k, ib = B.length - suf + k;
    out.push({ op: ' ', text: A[ia], a: ia + 1, b: ib + 1 });
  }
  return out;
}

/** Counts of a diff: {added, removed, same}. */
export function diffStats(ops) {
  const s = { added: 0, removed: 0, same: 0 };
  for (const o of ops) {
    if (o.op === '+') s.added++;
    else if (o.op === '-') s.removed++;
    else s.same++;
  }
  return s;
}

/**
 * Hides long runs of unchanged lines: keeps `context` lines on either side
 * of each change and replaces the rest of a run by one {op: '…', count}
 * entry (a run shorter than what it would save is kept whole). A diff with
 * no change collapses entirely to a single '…' entry (or nothing when empty).
 */
export function collapseDiff(ops, context = 3) {
  const out = [];
  let i = 0;
  while (i < ops.length) {
    if (ops[i].op !== ' ') { out.push(ops[i]); i++; continue; }
    let j = i;
    while (j < ops.length && ops[j].op === ' ') j++;
    const keepBefore = i === 0 ? 0 : context; // after a change
    const keepAfter = j === ops.length ? 0 : context; // before a change
    const hidden = j - i - keepBefore - keepAfter;
    if (hidden > 1) {
      for (let k = i; k < i + keepBefore; k++) out.push(ops[k]);
      out.push({ op: '…', count: hidden });
      for (let k = j - keepAfter; k < j; k++) out.push(ops[k]);
    } else {
      for (let k = i; k < j; k++) out.push(ops[k]);
    }
    i = j;
  }
  return out;
}
