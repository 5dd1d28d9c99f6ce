#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, the peer `quorate bench --peer-etcd`
# measures quorate against (docs/BENCHMARKS.md). Installs etcd from Debian's
# packages when it is missing.
#
#   deploy/bench/etcd3.sh start [DIR]   # members on 127.0.0.1:2379, :22379, :32379
#   deploy/bench/etcd3.sh stop  [DIR]
#   deploy/bench/etcd3.sh endpoints     # prints the --peer-etcd value
#   deploy/bench/etcd3.sh pids  [DIR]   # prints the --etcd-cpu-pids value
#
# DIR (default /tmp/quorate-bench-etcd) holds each member's data and log.
# `start` wipes DIR first, so every run starts from an empty cluster. etcd
# runs with its defaults: every put is fsynced by the leader and a quorum
# before it is acknowledged, as quorate's decisions are.
set -euo pipefail

cmd=${1:-}
dir=${2:-/tmp/quorate-bench-etcd}
clients=(2379 22379 32379)
peers=(2380 22380 32380)
endpoints="127.0.0.1:${clients[0]},127.0.0.1:${clients[1]},127.0.0.1:${clients[2]}"

install_etcd() {
  command -v etcd >/dev/null 2>&1 && return 0
  echo "etcd is not installed: installing Debian's etcd-server" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 ||
    { $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; }
  # The package may start a system etcd on the default ports; this cluster
  # needs them.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop etcd >/dev/null 2>&1 || true; fi
  pkill -x etcd >/dev/null 2>&1 || true
  command -v etcd >/dev/null 2>&1 || { echo "error: etcd-server installed but no etcd binary on PATH" >&2; exit 2; }
}

healthy() { # port: etcd's /health says true
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET /health HTTP/1.0\r\n\r\n' >&3
    grep -q '"health":"true"' <&3
  ) 2>/dev/null
}

stop() {
  for i in 0 1 2; do
    local pidfile="$dir/m$i.pid"
    if [ -f "$pidfile" ]; then
      local pid
      pid=$(cat "$pidfile")
      kill "$pid" >/dev/null 2>&1 || true
      # Wait for it to let go of its ports before anything reuses them.
      for _ in $(seq 1 50); do kill -0 "$pid" >/dev/null 2>&1 || break; sleep 0.1; done
      rm -f "$pidfile"
    fi
  done
}

case "$cmd" in
  start)
    install_etcd
    stop
    rm -rf "$dir"
    mkdir -p "$dir"
    cluster="m0=http://127.0.0.1:${peers[0]},m1=http://127.0.0.1:${peers[1]},m2=http://127.0.0.1:${peers[2]}"
    for i in 0 1 2; do
      nohup etcd --name "m$i" --data-dir "$dir/m$i" --logger=zap \
        --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token quorate-bench >"$dir/m$i.log" 2>&1 &
      echo $! >"$dir/m$i.pid"
    done
    for _ in $(seq 1 100); do
      if healthy "${clients[0]}" && healthy "${clients[1]}" && healthy "${clients[2]}"; then
        echo "etcd: 3 members healthy; quorate bench --peer-etcd $endpoints" >&2
        echo "$endpoints"
        exit 0
      fi
      sleep 0.2
    done
    echo "error: etcd did not become healthy in 20 s; see $dir/m*.log" >&2
    stop
    exit 1
    ;;
  stop) stop ;;
  endpoints) echo "$endpoints" ;;
  pids) cat "$dir"/m0.pid "$dir"/m1.pid "$dir"/m2.pid | paste -sd, ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
