#!/usr/bin/env bash
# The scale run of docs/BENCHMARKS.md: a dev cluster whose node 1 is grown
# to N decisions (crates/quorate/examples/grow_history.rs), then
#   1. nodes 2 and 3 start empty and catch up by snapshot (time, peak RSS),
#   2. decisions are served on the grown history (`quorate bench`),
#   3. the whole cluster restarts (time until every node is ready).
#
#   cargo build --release -p quorate --bins --examples
#   deploy/bench/scale.sh 10000000 [DIR]
#
# DIR (default /tmp/quorate-scale) is wiped first; at 10 M decisions it
# needs about 25 GiB. Nodes listen on the dev ports (7101-7103,
# 7201-7203): stop any dev cluster first.
set -uo pipefail

N=${1:?usage: scale.sh RECORDS [DIR]}
D=${2:-/tmp/quorate-scale}
T=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}/release
Q=$T/quorate
[ -x "$Q" ] && [ -x "$T/examples/grow_history" ] || {
    echo "build first: cargo build --release -p quorate --bins --examples" >&2
    exit 2
}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
stop() {
    kill $(cut -d= -f2 "$D/pids") 2>/dev/null
    for _ in $(seq 100); do pgrep -f "$Q node" >/dev/null || break; sleep 0.2; done
}
rss() {
    for p in $(cut -d= -f2 "$D/pids"); do
        echo "  pid $p $(grep -E 'VmHWM|VmRSS' /proc/$p/status 2>/dev/null | tr -s ' \t' ' ' | tr '\n' ' ')"
    done
}
start_nodes() {
    : > "$D/pids"
    for n in 1 2 3; do
        (cd "$D" && exec "$Q" node --config "$D/node$n.toml" --data-dir "$D/node$n" \
            >> "$D/node$n/node.log" 2>&1) &
        echo "node$n=$!" >> "$D/pids"
    done
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:720$1/readyz")" = 200 ]; }
count() {
    curl -s "http://127.0.0.1:720$1/status" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("decision_count", 0))' 2>/dev/null ||
        echo 0
}
wait_ready() {
    local s=$1
    for n in 1 2 3; do
        for _ in $(seq 6000); do ready $n && break; sleep 0.1; done
        echo "  node$n ready after $(since "$s") s"
    done
}

rm -rf "$D"
"$Q" dev --data-dir "$D" --detach > "$D.dev.log" 2>&1 || { cat "$D.dev.log"; exit 1; }
stop
export QUORATE_CA=$D/certs/ca.pem QUORATE_CERT=$D/certs/agent.pem QUORATE_KEY=$D/certs/agent.key

echo "== grow node 1 by $N decisions"
/usr/bin/time -v "$T/examples/grow_history" --dev-dir "$D" --node 1 --records "$N" \
    2> "$D.grow.time" || { cat "$D.grow.time"; exit 1; }
grep -E "Maximum resident|Elapsed" "$D.grow.time"
du -sh "$D/node1/db" "$D/node1/db/snapshots"

# Two members that kept their old log would be a majority electing one of
# them: they start empty (keys kept, the membership names them) and join.
rm -rf "$D/node2/db" "$D/node3/db"
sed -i 's/^bootstrap = true/bootstrap = false/' "$D/node2.toml" "$D/node3.toml"

echo "== catch-up: nodes 2 and 3 start empty"
s=$(now)
start_nodes
wait_ready "$s"
for _ in $(seq 3000); do
    c2=$(count 2) c3=$(count 3)
    echo "  t=$(since "$s") s node2=$c2 node3=$c3"
    rss
    [ "$c2" -ge "$N" ] && [ "$c3" -ge "$N" ] && break
    sleep 5
done
echo "== decisions on the grown history"
"$Q" bench --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 --clients 64 \
    --duration 10 --warmup 2 2>&1 | tail -4
rss

echo "== restart"
stop
s=$(now)
start_nodes
wait_ready "$s"
rss
grep -h "decision log verified" "$D"/node*/node.log | tail -3 | sed 's/\x1b\[[0-9;]*m//g'
du -sh "$D"/node*/db
stop
