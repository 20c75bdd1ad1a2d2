#!/usr/bin/env bash
# CPU per message of mllp-loadgen and its own sink: 32 connections, 1 KiB ORU, closed loop,
# loadgen pinned to CPU 0 (one thread) and sink to CPU 1. CPU comes from getrusage
# (/usr/bin/time) for the loadgen and /proc/PID/stat for the sink.
#   scripts/loadgen-cpu.sh [plain|tls] [DURATION]      (build first: cargo build --release -p loadgen)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-plain}; duration=${2:-5s}
bin=target/release/mllp-loadgen
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
server=(); client=()
if [[ $mode == tls ]]; then
    # A throwaway P-256 CA and a leaf for localhost (webpki refuses a CA as the leaf).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=loadgen test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/key.pem" -out "$work/leaf.csr" -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$work/ext"
    openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
        -CAcreateserial -days 2 -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
    server=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
    client=(--tls --ca "$work/ca.pem" --sni localhost)
fi
taskset -c 1 "$bin" sink --listen 127.0.0.1:0 "${server[@]}" >"$work/sink.out" 2>&1 &
sink=$!
for _ in $(seq 50); do grep -q listening "$work/sink.out" && break; sleep 0.1; done
addr=$(grep -o '127.0.0.1:[0-9]*' "$work/sink.out")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$sink")
/usr/bin/time -f "%U %S" -o "$work/time" taskset -c 0 "$bin" send --target "$addr" "${client[@]}" \
    --connections 32 --threads 1 --duration "$duration" --json "$work/run.json" --quiet >/dev/null
after=$(ticks "$sink")
kill -INT "$sink"; wait "$sink" 2>/dev/null || true
python3 - "$before" "$after" "$(getconf CLK_TCK)" "$work" "$mode" <<'PY'
import json, sys
before, after, hz, work, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
run = json.load(open(f"{work}/run.json"))
user, system = map(float, open(f"{work}/time").read().split()[-2:])
n = run["acked"]
print(f"{mode}: {run['throughput_msgs_per_s']:.0f} msg/s, p50 {run['latency_us']['p50']:.0f} µs, "
      f"p99 {run['latency_us']['p99']:.0f} µs, errors {sum(run['errors'].values())}; "
      f"loadgen {1e6 * (user + system) / n:.2f} µs/msg (user {1e6 * user / n:.2f}, sys {1e6 * system / n:.2f}); "
      f"sink {1e6 * (after - before) / hz / n:.2f} µs/msg")
PY
