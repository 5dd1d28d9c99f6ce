#!/usr/bin/env bash
# Where a decision's latency goes: runs `quorate bench` with the given
# arguments against `quorate dev` and reads every node's latency summaries
# from /metrics before and after, then prints each stage's mean over the
# run, per node (docs/BENCHMARKS.md "Where one decision's time goes").
#
#   deploy/bench/stages.sh --clients 1 --duration 20 --endpoints 127.0.0.1:7101
#
# Stages, as the nodes record them:
#   quorate_authorize_seconds      Node::authorize, from the request's arrival to its answer
#   quorate_forward_seconds        a follower waiting for the leader's answer
#   quorate_propose_seconds        leader: proposal to applied (append, quorum, commit, apply)
#   quorate_attest_wait_seconds    leader: applied to a covering attested checkpoint
#   quorate_wal_sync_seconds       every node: one fsync of the RocksDB WAL
# HTTP ports: 7201-7203 (the dev cluster's); QUORATE_BIN overrides the binary.
set -euo pipefail
Q=${QUORATE_BIN:-${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}/release/quorate}
[ -x "$Q" ] || { echo "build first: cargo build --release -p quorate" >&2; exit 2; }
PORTS=${PORTS:-7201 7202 7203}
snap() {
    for p in $PORTS; do
        echo "### $p"
        curl -sf "http://127.0.0.1:$p/metrics" || echo "# node on $p did not answer"
    done
}
before=$(mktemp) after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
snap > "$before"
"$Q" bench "$@"
snap > "$after"
python3 - "$before" "$after" <<'PY'
import re, sys
STAGES = ["quorate_authorize_seconds", "quorate_forward_seconds", "quorate_propose_seconds",
          "quorate_attest_wait_seconds", "quorate_wal_sync_seconds",
          "quorate_wal_sync_batch_appends", "quorate_batch_size"]
def parse(path):
    out, port = {}, None
    for line in open(path):
        if line.startswith("### "):
            port = line[4:].strip()
            continue
        m = re.match(r'^(\w+?)_(sum|count)(\{[^}]*\})? ([0-9.eE+-]+)$', line.strip())
        if m and m.group(1) in STAGES:
            key = (port, m.group(1) + (m.group(3) or ""))
            out.setdefault(key, {})[m.group(2)] = float(m.group(4))
    return out
b, a = parse(sys.argv[1]), parse(sys.argv[2])
print(f"{'node http':<10} {'stage':<52} {'count':>8} {'mean':>10}")
for key in sorted(a):
    port, name = key
    n = a[key].get("count", 0) - b.get(key, {}).get("count", 0)
    s = a[key].get("sum", 0) - b.get(key, {}).get("sum", 0)
    if n <= 0:
        continue
    mean = s / n
    shown = f"{mean * 1e3:.3f} ms" if name.split("{")[0].endswith("_seconds") else f"{mean:.2f}"
    print(f"{port:<10} {name:<52} {int(n):>8} {shown:>10}")
PY
