#!/usr/bin/env bash
# Where the sidecar pair's time goes at 1000 req/s: the nginx mTLS pair beside
# the smallest pair Deno can run (bench/relay.ts: bytes only, native TLS, and
# the same with plain TCP) and the remora pair (mTLS, and plain between the
# sidecars). Each round runs every system once, in turn; each run is
# `hey -z ${DUR}s -c 10 -q 100` after a short warm-up, with the CPU time each
# proxy process used (from /proc/PID/stat) divided by the requests served.
#   bash bench/floor.sh           (env ROUNDS, default 3; DUR, default 6; WORK)
# Uses the certificates and nginx configs `deno task bench:pair` writes to
# $WORK/peers, and runs a short bench:pair first when they are missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${WORK:-/tmp/remora-pair}
P=$W/peers
ROUNDS=${ROUNDS:-3} DUR=${DUR:-6}
for v in "$ROUNDS" "$DUR"; do
  case $v in '' | *[!0-9]* | 0) echo "ROUNDS and DUR must be positive whole numbers" >&2; exit 2 ;; esac
done
[ -f "$P/nginx-pair.conf" ] || DUR=1 WORK=$W bash "$ROOT/bench/pair.sh" >/dev/null
O=$W/floor
rm -rf "$O"
mkdir -p "$O"
cd "$ROOT"
V8=--v8-flags=--max-semi-space-size=4,--min-semi-space-size=4,--single-threaded-gc,--enable-experimental-regexp-engine

pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
cleanup() {
  stop
  for f in nginx-pair.pid upstream.pid; do [ -f "$P/$f" ] && kill "$(cat "$P/$f")" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ready() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not ready: $1" >&2; return 1; }

# measure NAME URL HOST PID_A PID_B: warm up, then the paced run.
measure() {
  local name=$1 url=$2 host=$3 pa=$4 pb=$5 hh=() a0 b0 a1 b1 n
  [ -n "$host" ] && hh=(-host "$host")
  wrk -t1 -c32 -d2s ${host:+-H "Host: $host"} "$url" >/dev/null
  hey -n 1000 -c 10 -q 100 "${hh[@]}" "$url" >/dev/null
  a0=$(cpu "$pa") b0=$(cpu "$pb")
  hey -z "${DUR}s" -c 10 -q 100 -o csv "${hh[@]}" "$url" >"$O/$name.csv"
  a1=$(cpu "$pa") b1=$(cpu "$pb")
  n=$(($(wc -l <"$O/$name.csv") - 1))
  awk -F, 'NR > 1 && $7 == 200 { print $1 * 1000 }' "$O/$name.csv" >>"$O/$name.ms"
  awk -F, 'NR > 1 && $7 != 200' "$O/$name.csv" | wc -l >>"$O/$name.errors"
  if [ "$pa" = "$pb" ]; then
    echo "$(((a1 - a0) * 10000 / n)) -" >>"$O/$name.cpu"
  else
    echo "$(((a1 - a0) * 10000 / n)) $(((b1 - b0) * 10000 / n))" >>"$O/$name.cpu"
  fi
}

remora() { # remora pair; $1: A's config
  deno run -A "$V8" main.ts run --identity-dir "$W/b" --app-port 19100 --inbound-port 19141 \
    --outbound-port 19151 --admin-port 19152 --stats-port 19153 --health-port 19154 \
    --log-level warn >"$O/b.log" 2>&1 &
  pids+=($!)
  deno run -A "$V8" main.ts run --identity-dir "$W/a" --config "$1" --outbound-port 19140 \
    --inbound-port 19142 --admin-port 19143 --stats-port 19144 --health-port 19145 \
    --log-level warn >"$O/a.log" 2>&1 &
  pids+=($!)
  ready http://127.0.0.1:19152/ready
  ready http://127.0.0.1:19143/ready
}

# A's config with the sidecar pair in plain text (B accepts it: PERMISSIVE).
sed -e '/serviceAccount/s/, serviceAccount: b//' "$W/a.yaml" >"$O/a_plain.yaml"
grep -q serviceAccount "$O/a_plain.yaml" && { echo "could not derive a plaintext config from $W/a.yaml" >&2; exit 1; }

for r in $(seq 1 "$ROUNDS"); do
  nginx -c "$P/upstream.conf"
  nginx -c "$P/nginx-pair.conf"
  w=$(pgrep -P "$(cat "$P/nginx-pair.pid")" | head -1)
  measure nginx-pair http://127.0.0.1:19110/ "" "$w" "$w"
  kill "$(cat "$P/nginx-pair.pid")"
  for mode in tls plain; do
    PLAIN=$([ $mode = plain ] && echo 1 || echo 0) CERTS=$P deno run -A "$V8" bench/relay.ts b &
    pids+=($!)
    PLAIN=$([ $mode = plain ] && echo 1 || echo 0) CERTS=$P deno run -A "$V8" bench/relay.ts a &
    pids+=($!)
    for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:29140/ && break; sleep 0.2; done
    measure "relay-$mode" http://127.0.0.1:29140/ "" "${pids[1]}" "${pids[0]}"
    stop
  done
  remora "$W/a.yaml"
  measure remora-mtls http://127.0.0.1:19140/ pair.bench.internal "${pids[1]}" "${pids[0]}"
  stop
  remora "$O/a_plain.yaml"
  measure remora-plain http://127.0.0.1:19140/ pair.bench.internal "${pids[1]}" "${pids[0]}"
  stop
  kill "$(cat "$P/upstream.pid")"
  sleep 0.5
done

python3 - "$O" <<'PY'
import sys
o = sys.argv[1]
def pct(v, p): return v[min(len(v) - 1, int(p / 100 * len(v)))]
print(f"{'system':13s} {'CPU/req A':>9s} {'CPU/req B':>9s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s} {'non-200':>7s}")
for name in ["nginx-pair", "relay-tls", "relay-plain", "remora-mtls", "remora-plain"]:
    v = sorted(float(x) for x in open(f"{o}/{name}.ms") if x.strip())
    rows = [l.split() for l in open(f"{o}/{name}.cpu")]
    a = sum(int(r[0]) for r in rows) / len(rows)
    b = "-" if rows[0][1] == "-" else f"{sum(int(r[1]) for r in rows) / len(rows):.0f} us"
    errs = sum(int(x) for x in open(f"{o}/{name}.errors"))
    print(f"{name:13s} {a:6.0f} us {b:>9s} {pct(v, 50):7.2f} {pct(v, 90):7.2f} {pct(v, 99):7.2f} {errs:7d}")
print("nginx-pair: both hops in one process (CPU in column A). relay: bench/relay.ts.")
PY
echo "reproduce: bash bench/floor.sh   (env ROUNDS=$ROUNDS DUR=$DUR WORK=$W)"
