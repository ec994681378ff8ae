#!/usr/bin/env bash
# The sidecar pair benchmark: load -> remora A (plain HTTP in, mTLS out) ->
# remora B (mTLS in, plain out) -> nginx upstream, measured in one run beside
# the nginx and haproxy mTLS pairs of ../shared/bench/pair-peers.sh.
# Env: WORK (default /tmp/remora-pair), DUR (seconds per run, default 5),
#      PEERS (path of pair-peers.sh, default ../shared/bench/pair-peers.sh).
# Prints pair-peers.sh's table (req/s at 32 connections, latency at 1000 req/s,
# ratios against the nginx pair), then the peak RSS of both remoras.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${WORK:-/tmp/remora-pair}
PEERS=${PEERS:-$ROOT/../shared/bench/pair-peers.sh}
[ -f "$PEERS" ] || { echo "pair-peers.sh not found at $PEERS (set PEERS)"; exit 1; }
mkdir -p "$W"
cd "$ROOT"
REMORA=(deno run -A --v8-flags=--max-semi-space-size=4,--min-semi-space-size=4,--single-threaded-gc,--enable-experimental-regexp-engine main.ts)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"${REMORA[@]}" ca init --trust-domain cluster.local --out "$W/ca" --force >/dev/null
for sa in a b; do
  "${REMORA[@]}" ca issue --ca "$W/ca" --id "spiffe://cluster.local/ns/default/sa/$sa" --ttl 24h --out "$W/$sa" >/dev/null
done
cat > "$W/a.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: pair }
spec:
  hosts: [pair.bench.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: 19141 }, serviceAccount: b }]
YAML
"${REMORA[@]}" run --identity-dir "$W/b" --app-port 19100 --inbound-port 19141 --outbound-port 19151 \
  --admin-port 19152 --stats-port 19153 --health-port 19154 --log-level warn >"$W/b.log" 2>&1 &
pids+=($!)
"${REMORA[@]}" run --identity-dir "$W/a" --config "$W/a.yaml" --outbound-port 19140 --inbound-port 19142 \
  --admin-port 19143 --stats-port 19144 --health-port 19145 --log-level warn >"$W/a.log" 2>&1 &
pids+=($!)
for port in 19152 19143; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
done

# Peak RSS of both remoras under load: the kernel's high-water mark, reset now
# (clear_refs 5) and read at the end. Nothing samples during the run, so no
# forked ps/pgrep steals CPU from the latency measurement.
PID_B=${pids[0]} PID_A=${pids[1]}
for p in "$PID_A" "$PID_B"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# The remora pair is measured twice: first as started (its JIT compiles the
# hot path during that run), then warm, as a sidecar runs for days. Both rows
# are printed; the second is the one to compare.
WORK="$W/peers" DUR="${DUR:-5}" bash "$PEERS" "remora-pair-cold=http://127.0.0.1:19140/#pair.bench.internal" \
  "remora-pair=http://127.0.0.1:19140/#pair.bench.internal"
echo "remora peak RSS: A $(hwm "$PID_A") MB, B $(hwm "$PID_B") MB"
echo "reproduce: deno task bench:pair   (env DUR=5, WORK=$W)"
