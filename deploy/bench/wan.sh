#!/usr/bin/env bash
# Cross-region round trips on one machine (docs/BENCHMARKS.md, "How it
# scales"): a 3-node cluster whose node-to-node traffic (Raft, attestations,
# forwarded requests) passes through delay proxies
# (crates/quorate/examples/delay_proxy.rs; this kernel has no netem), so
# every message between two nodes pays RTT/2 each way, while each client
# talks to its own nearby node directly. For each round trip and each
# `batch.max_in_flight` it runs `quorate bench` with 1 and with 64 clients
# (CLIENTS="1 64 512" to change) and prints one table (and the JSON of
# every run under DIR).
#
#   cargo build --release -p quorate --bins --examples
#   deploy/bench/wan.sh ["RTTS_MS"] ["MAX_IN_FLIGHT"] [DIR]
#   deploy/bench/wan.sh "0 10 50" "2 8"
#
# Nodes listen on the dev ports (7101-7103, 7201-7203), proxies on
# 8101-8103: stop any dev cluster first. DIR (default /tmp/quorate-wan) is
# wiped first.
set -uo pipefail

RTTS=${1:-"0 10 50"}
INFLIGHT=${2:-"2 8"}
D=${3:-/tmp/quorate-wan}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
Q=$T/quorate
P=$T/examples/delay_proxy
[ -x "$Q" ] && [ -x "$P" ] || {
    echo "build first: cargo build --release -p quorate --bins --examples" >&2
    exit 2
}
DURATION=${DURATION:-10}

stop_all() {
    [ -f "$D/pids" ] && kill $(cut -d= -f2 "$D/pids") 2>/dev/null
    for _ in $(seq 100); do pgrep -f "$Q node" >/dev/null || pgrep -f "$P " >/dev/null || break; sleep 0.1; done
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:720$1/readyz")" = 200 ]; }

rm -rf "$D"
"$Q" dev --data-dir "$D" --detach > "$D.dev.log" 2>&1 || { cat "$D.dev.log"; exit 1; }
stop_all
for n in 1 2 3; do cp "$D/node$n.toml" "$D/node$n.toml.orig"; done
export QUORATE_CA=$D/certs/ca.pem QUORATE_CERT=$D/certs/admin.pem QUORATE_KEY=$D/certs/admin.key
results=()
for rtt in $RTTS; do
    for inflight in $INFLIGHT; do
        : > "$D/pids"
        for n in 1 2 3; do
            rm -rf "$D/node$n/db"
            cfg=$D/node$n.toml
            cp "$cfg.orig" "$cfg"
            sed -i "s/^max_in_flight = .*/max_in_flight = $inflight/" "$cfg"
            if [ "$rtt" -gt 0 ]; then
                # Peers reach node m at its proxy; each node still listens on 710m.
                sed -i 's/^addr = "127.0.0.1:710\([0-9]\)"/addr = "127.0.0.1:810\1"/' "$cfg"
                "$P" "127.0.0.1:810$n" "127.0.0.1:710$n" $((rtt / 2)) >> "$D/proxy$n.log" 2>&1 &
                echo "proxy$n=$!" >> "$D/pids"
            fi
        done
        for n in 1 2 3; do
            (cd "$D" && exec "$Q" node --config "$D/node$n.toml" --data-dir "$D/node$n" \
                >> "$D/node$n.log" 2>&1) &
            echo "node$n=$!" >> "$D/pids"
        done
        for n in 1 2 3; do
            for _ in $(seq 600); do ready $n && break; sleep 0.1; done
            ready $n || { echo "node$n not ready; see $D/node$n.log" >&2; stop_all; exit 1; }
        done
        "$Q" policy publish --endpoint 127.0.0.1:7101 --domain demo \
            --file "$ROOT/config/dev/demo.cedar" --activate > /dev/null ||
            { echo "cannot publish the demo policy" >&2; stop_all; exit 1; }
        for clients in ${CLIENTS:-1 64}; do
            out=$D/rtt$rtt-inflight$inflight-c$clients.json
            QUORATE_CERT=$D/certs/agent.pem QUORATE_KEY=$D/certs/agent.key \
                "$Q" bench --clients "$clients" --duration "$DURATION" --warmup 2 --json > "$out" ||
                { echo "bench failed: rtt $rtt, in flight $inflight, $clients clients" >&2; }
            results+=("$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["quorate"]
l = r["latency_ms"]
print("| %s | %s | %s | %.0f | %.1f | %.1f | %d |" % (sys.argv[2], sys.argv[3], sys.argv[4], r["ops_per_s"], l["p50"], l["p99"], r["errors"]))
' "$out" "$rtt" "$inflight" "$clients" 2>/dev/null || echo "| $rtt | $inflight | $clients | failed | | | |")")
            echo "${results[-1]}"
        done
        stop_all
    done
done
echo
echo "| node-to-node RTT ms | batch.max_in_flight | clients | decisions/s | p50 ms | p99 ms | errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
