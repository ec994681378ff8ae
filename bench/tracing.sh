#!/usr/bin/env bash
# Tracing cost, same run: remora with tracing off next to remora exporting
# spans at 1% sampling (and at 100%, for scale) to a local fake OTLP collector.
#   load (wrk -t1 -c32) -> remora inbound (plain HTTP) -> nginx (1 KiB body)
# Off and 1% are run ROUNDS times each, alternating which goes first, so that
# drift of the shared machine hits both alike; 100% follows, for scale. The
# table shows the median req/s per variant and the cost against "off".
# Run: deno task bench
# (after bench/run.sh) or bash bench/tracing.sh.
# Ports on 127.0.0.1: 19250 nginx, 19251 fake collector, 19252.. remoras.
# Env: WORK (default /tmp/remora-bench-tracing), DUR (s per run, default 5), ROUNDS (default 6).
# Everything started here is stopped on exit, on failure and on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${WORK:-/tmp/remora-bench-tracing}
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-6}
case $DUR in '' | *[!0-9]* | 0) echo "DUR must be a positive whole number of seconds, got '$DUR'" >&2; exit 2 ;; esac
case $ROUNDS in '' | *[!0-9]* | 0) echo "ROUNDS must be a positive whole number, got '$ROUNDS'" >&2; exit 2 ;; esac
mkdir -p "$W"
W=$(cd "$W" && pwd)
cd "$W"

need() { command -v "$1" >/dev/null || { apt-get update -qq >/dev/null; apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx-light; need wrk wrk
command -v deno >/dev/null || { echo "deno is not installed" >&2; exit 1; }

UP=19250 COLLECTOR=19251
PIDS=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/upstream.pid" ] && kill "$(tr -dc '0-9' <"$W/upstream.pid")" 2>/dev/null || true
  rm -f "$W/upstream.pid"
  sleep 0.5
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -9 "$p" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

head -c 1024 /dev/zero | tr '\0' 'x' >body.txt
cat >upstream.conf <<NG
worker_processes 1; pid $W/upstream.pid; error_log $W/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { root $W; try_files /body.txt =404; default_type text/plain; } } }
NG
nginx -c "$W/upstream.conf"

# The fake collector: accepts every OTLP/HTTP POST, counts spans.
cat >collector.ts <<'TS'
let spans = 0;
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen: () => {} }, async (req) => {
  if (req.method === "POST") {
    const body = await req.json();
    for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans) spans += ss.spans.length;
    return new Response("{}", { headers: { "content-type": "application/json" } });
  }
  return new Response(String(spans));
});
TS
deno run -A collector.ts $COLLECTOR >"$W/collector.log" 2>&1 &
PIDS+=($!)

# variant name, base port, extra flags
start_remora() {
  local name=$1 base=$2; shift 2
  (cd "$ROOT" && exec deno run -A --v8-flags=--max-semi-space-size=4,--min-semi-space-size=4,--single-threaded-gc,--enable-experimental-regexp-engine main.ts run \
    --outbound-port $base --inbound-port $((base + 1)) --inbound-address 127.0.0.1 --app-port $UP \
    --admin-port $((base + 2)) --stats-port $((base + 3)) --health-port $((base + 4)) \
    --log-level warn "$@") >"$W/remora-$name.log" 2>&1 </dev/null &
  PIDS+=($!)
}
start_remora off 19252
start_remora 1pct 19257 --otlp-endpoint "http://127.0.0.1:$COLLECTOR/v1/traces" --trace-sampling 1
start_remora 100pct 19262 --otlp-endpoint "http://127.0.0.1:$COLLECTOR/v1/traces" --trace-sampling 100

wait_http() { local i; for ((i = 0; i < 80; i++)); do curl -sf -o /dev/null --max-time 1 "$1" && return 0; sleep 0.25; done; return 1; }
wait_http "http://127.0.0.1:$UP/" || { echo "nginx did not start" >&2; exit 1; }
wait_http "http://127.0.0.1:$COLLECTOR/" || { echo "collector did not start" >&2; exit 1; }
for p in 19253 19258 19263; do wait_http "http://127.0.0.1:$p/" || { echo "remora on $p did not start (logs in $W)" >&2; exit 1; }; done

VARIANTS=("off:19253" "1pct:19258" "100pct:19263")
echo "tracing benchmark: ${ROUNDS} rounds x ${DUR}s of off and 1% (order alternating), then 100% (wrk -t1 -c32, remora inbound -> nginx 1 KiB)" >&2
# Warm every variant up first (JIT, pools), so that round 1 measures the same thing as the others.
for v in "${VARIANTS[@]}"; do
  timeout -k 2 20 wrk -t1 -c32 -d2s "http://127.0.0.1:${v##*:}/" >/dev/null 2>&1 || true
done
# measure name port round -> appends "name rps" to $W/rounds.txt
measure() {
  local name=$1 port=$2 r=$3 rps bad
  timeout -k 2 $((DUR + 20)) wrk -t1 -c32 -d"${DUR}s" "http://127.0.0.1:$port/" >"$W/wrk.$name.$r.txt" 2>&1
  rps=$(awk '/Requests\/sec/ { printf "%d", $2 }' "$W/wrk.$name.$r.txt")
  bad=$(awk '/Non-2xx|Socket errors/ { sub(/^ +/, ""); print }' "$W/wrk.$name.$r.txt")
  [ -n "$bad" ] && echo "note: $name round $r: $bad" >&2
  echo "  round $r $name: ${rps:-0} req/s" >&2
  echo "$name ${rps:-0}" >>"$W/rounds.txt"
}
: >"$W/rounds.txt"
# Off and 1% alternate which goes first, so that drift of the shared machine
# and the after-effects of one run on the next hit both alike. The 100% run
# (for scale) comes after them: its collector load would spill into them.
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then measure off 19253 "$r"; measure 1pct 19258 "$r"
  else measure 1pct 19258 "$r"; measure off 19253 "$r"; fi
done
for ((r = 1; r <= (ROUNDS + 1) / 2; r++)); do measure 100pct 19263 "$r"; done
sleep 1.5 # let the last batches leave
exported=$(curl -s "http://127.0.0.1:$COLLECTOR/")
dropped=$(curl -s "http://127.0.0.1:19260/stats/prometheus" "http://127.0.0.1:19265/stats/prometheus" |
  awk '/^remora_spans_dropped_total/ { s += $2 } END { print s + 0 }')

# The median of each variant's runs (one odd run does not move it), and the cost against off.
median() { awk -v n="$1" '$1 == n { print $2 }' "$W/rounds.txt" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%d", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
printf "%-22s %10s %8s\n" "remora inbound" "req/s@c32" "cost"
off=$(median off)
for v in "${VARIANTS[@]}"; do
  name=${v%%:*}
  med=$(median "$name")
  cost=$(awk -v m="$med" -v o="$off" 'BEGIN { if (o > 0) printf "%+.1f%%", (m - o) * 100 / o; else print "-" }')
  label=$name; [ "$name" = off ] && label="tracing off"; [ "$name" = 1pct ] && label="OTLP, 1% sampled"; [ "$name" = 100pct ] && label="OTLP, 100% sampled"
  printf "%-22s %10d %8s\n" "$label" "$med" "$([ "$name" = off ] && echo "-" || echo "$cost")"
done
echo "spans received by the fake collector: $exported; dropped (all variants): $dropped"
echo "raw outputs in $W; reproduce: bash bench/tracing.sh (env DUR=$DUR ROUNDS=$ROUNDS)"
