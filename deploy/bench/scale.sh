#!/usr/bin/env bash
# The scale run of docs/BENCHMARKS.md: a dev cluster whose node 1 is grown
# to N decisions (crates/quorate/examples/grow_history.rs), then
#   1. nodes 2 and 3 start empty and catch up by snapshot (time, peak RSS),
#   2. decisions are served on the grown history (`quorate bench`),
#   3. the whole cluster restarts (time until every node is ready).
#
#   cargo build --release -p quorate --bins --examples
#   deploy/bench/scale.sh 10000000 [DIR]
#   PERF_SVG=docs/bench/flame-10m.svg deploy/bench/scale.sh ...   # also profile the leader
#
# Step 2 runs governed decisions and no-op entries (`--peer-noop`) with
# the nodes' CPU per operation, and splits the CPU by thread name (tokio
# workers, RocksDB compaction and flush, the WAL sync thread).
#
# DIR (default /tmp/quorate-scale) is wiped first; at 10 M decisions it
# needs about 25 GiB. KEEP_HISTORY=1 keeps node 1's grown history from an
# earlier run and measures the rest again. Nodes listen on the dev ports (7101-7103,
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
# CPU seconds by thread name (digits dropped: "tokio-rt-worker",
# "rocksdb:low"), summed over the given comma-separated pids, as JSON.
threads_cpu() {
    python3 - "$1" <<'PY'
import glob, json, os, re, sys
hz = os.sysconf("SC_CLK_TCK")
out = {}
for pid in sys.argv[1].split(","):
    for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            line = open(stat).read()
        except OSError:
            continue
        name = line[line.index("(") + 1 : line.rindex(")")]
        fields = line[line.rindex(")") + 2 :].split()
        key = re.sub(r"[0-9]+$", "", name).rstrip("-:")
        out[key] = out.get(key, 0) + (int(fields[11]) + int(fields[12])) / hz
print(json.dumps(out))
PY
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

export QUORATE_CA=$D/certs/ca.pem QUORATE_CERT=$D/certs/agent.pem QUORATE_KEY=$D/certs/agent.key
if [ -n "${KEEP_HISTORY:-}" ] && [ -d "$D/node1/db" ]; then
    # Re-measure the catch-up and restart on node 1's existing history
    # (another build, say): only nodes 2 and 3 start over.
    echo "== keeping node 1's history in $D"
else
    rm -rf "$D"
    "$Q" dev --data-dir "$D" --detach > "$D.dev.log" 2>&1 || { cat "$D.dev.log"; exit 1; }
    stop
    echo "== grow node 1 by $N decisions"
    /usr/bin/time -v "$T/examples/grow_history" --dev-dir "$D" --node 1 --records "$N" \
        2> "$D.grow.time" || { cat "$D.grow.time"; exit 1; }
    grep -E "Maximum resident|Elapsed" "$D.grow.time"
    du -sh "$D/node1/db" "$D/node1/db/snapshots"
fi

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
echo "== decisions on the grown history (and no-op entries, for the ratio)"
PIDS=$(cut -d= -f2 "$D/pids" | paste -sd,)
threads_cpu "$PIDS" > "$D.threads.before"
if [ -n "${PERF_SVG:-}" ]; then
    leader=$(for n in 1 2 3; do
        curl -s "http://127.0.0.1:720$n/status" | python3 -c \
            'import json,sys; s=json.load(sys.stdin); print(s["node_id"]) if s.get("role")=="leader" else None' 2>/dev/null
    done | head -1)
    lpid=$(grep "^node${leader:-1}=" "$D/pids" | cut -d= -f2)
    # The governed rounds' measured window: after the 2 s warm-up.
    (sleep 3 && perf record -F 499 -g --call-graph dwarf,16384 -o "$D.perf.data" -p "$lpid" \
        -- sleep 8 > /dev/null 2>&1) &
    perf_job=$!
fi
"$Q" bench --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 --clients 64 \
    --duration 10 --warmup 2 --peer-noop --cpu-pids "$PIDS" 2>&1 | tail -12
# Only the profiler: the nodes are background jobs of this script too.
[ -n "${perf_job:-}" ] && wait "$perf_job"
threads_cpu "$PIDS" > "$D.threads.after"
echo "  CPU seconds by thread name over both runs (all three nodes):"
python3 - "$D.threads.before" "$D.threads.after" <<'PY'
import json, sys
b, a = (json.load(open(f)) for f in sys.argv[1:3])
d = {k: round(a.get(k, 0) - b.get(k, 0), 2) for k in a}
for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:12]:
    print(f"    {k:<24} {v:8.2f}")
PY
if [ -n "${PERF_SVG:-}" ] && [ -f "$D.perf.data" ]; then
    perf script -i "$D.perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$PERF_SVG" &&
        echo "  leader flamegraph: $PERF_SVG"
fi
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
