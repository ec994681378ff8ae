#!/usr/bin/env bash
# Side-by-side SINGLE-HOP HTTP benchmark on loopback: remora next to nginx and
# haproxy, all in front of the same nginx upstream.   Run: deno task bench
#   load -> proxy (plain HTTP in, plain HTTP out) -> upstream (fixed 1 KiB body)
# Starts, all on 127.0.0.1:
#   19200  nginx upstream (1 worker, 1 KiB body)
#   19210  nginx single hop (1 worker, upstream keepalive 64)
#   19220  haproxy single hop (nbthread 1, http-reuse always)
#   19230  remora outbound (Host: upstream.bench.internal, see bench/remora-bench.yaml)
#   19231  remora inbound (-> app port 19200); admin 19232, stats 19233, health 19234
# Method per system (same as /work/shared/bench/pair-peers.sh): req/s from
# `wrk -t1 -c32 -d${DUR}s`; p50/p90/p99 from `hey -z ${DUR}s -c 10 -q 100`
# (a fixed ~1000 req/s); ratios against the nginx single hop. "RSS MB" is the
# peak RSS of the proxy's (worker) process during wrk (the kernel's high-water
# mark; sampled with ps every 0.5 s where it cannot be reset).
# Env: WORK (dir for configs, pid files, logs, raw outputs; default /tmp/remora-bench)
#      DUR  (seconds per load run, default 5)
# Everything started here is stopped on exit, on failure and on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${WORK:-/tmp/remora-bench}
DUR=${DUR:-5}
case $DUR in '' | *[!0-9]* | 0) echo "DUR must be a positive whole number of seconds, got '$DUR'" >&2; exit 2 ;; esac
mkdir -p "$W"
W=$(cd "$W" && pwd)
cd "$W"

need() { command -v "$1" >/dev/null || { apt-get update -qq >/dev/null; apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx-light; need haproxy haproxy; need wrk wrk; need hey hey
command -v deno >/dev/null || { echo "deno is not installed" >&2; exit 1; }

UP_PORT=19200 NGX_PORT=19210 HAP_PORT=19220
R_OUT=19230 R_IN=19231 R_ADMIN=19232 R_STATS=19233 R_HEALTH=19234
HOST=upstream.bench.internal
REMORA_LOG=$W/remora.log
PIDFILES=("$W/remora.pid" "$W/haproxy.pid" "$W/nginx-hop.pid" "$W/upstream.pid")

# Stop what our pid files name, but only if the pid still is the program we started.
stop_all() {
  local f pid comm waited=0 alive=()
  for f in "${PIDFILES[@]}"; do
    [ -f "$f" ] || continue
    pid=$(tr -dc '0-9' <"$f" 2>/dev/null || true)
    rm -f "$f"
    [ -n "$pid" ] || continue
    comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
    case $comm in deno | nginx | haproxy) kill "$pid" 2>/dev/null && alive+=("$pid") ;; esac
  done
  # remora drains on SIGTERM; give everything up to 8 s, then SIGKILL.
  while [ ${#alive[@]} -gt 0 ] && [ $waited -lt 80 ]; do
    local still=()
    for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
    alive=("${still[@]+"${still[@]}"}")
    [ ${#alive[@]} -gt 0 ] || break
    sleep 0.1; waited=$((waited + 1))
  done
  for pid in "${alive[@]+"${alive[@]}"}"; do kill -9 "$pid" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # background load generators / samplers this script started
  local j; for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
  stop_all
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_all # leftovers of an earlier run in the same WORK dir
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $UP_PORT $NGX_PORT $HAP_PORT $R_OUT $R_IN $R_ADMIN $R_STATS $R_HEALTH; do
  if port_busy "$p"; then echo "port 127.0.0.1:$p is already in use; stop what listens there first" >&2; exit 1; fi
done

head -c 1024 /dev/zero | tr '\0' 'x' >body.txt
cat >upstream.conf <<NG
worker_processes 1; pid $W/upstream.pid; error_log $W/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { root $W; try_files /body.txt =404; default_type text/plain; } } }
NG
cat >nginx-hop.conf <<NG
worker_processes 1; pid $W/nginx-hop.pid; error_log $W/nginx-hop.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX_PORT; location / {
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
cat >haproxy-hop.cfg <<HA
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HAP_PORT
  default_backend b
backend b
  http-reuse always
  server up 127.0.0.1:$UP_PORT
HA

nginx -c "$W/upstream.conf"
nginx -c "$W/nginx-hop.conf"
haproxy -D -f "$W/haproxy-hop.cfg" -p "$W/haproxy.pid" 2>"$W/haproxy.err"

# remora, from the repo root, as `deno task start` would run it.
(cd "$ROOT" && exec deno run -A --v8-flags=--max-semi-space-size=4,--min-semi-space-size=4,--single-threaded-gc,--enable-experimental-regexp-engine main.ts run --config bench/remora-bench.yaml \
  --outbound-port $R_OUT --inbound-port $R_IN --inbound-address 127.0.0.1 --app-port $UP_PORT \
  --admin-port $R_ADMIN --stats-port $R_STATS --health-port $R_HEALTH --log-level warn) \
  >"$REMORA_LOG" 2>&1 </dev/null &
REMORA_PID=$!
echo "$REMORA_PID" >"$W/remora.pid"

wait_http() { # url tries(0.25 s each) [pid that must stay alive]
  local i
  for ((i = 0; i < $2; i++)); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.25
  done
  return 1
}
wait_http "http://127.0.0.1:$UP_PORT/" 20 || { echo "nginx upstream did not start (see $W/upstream.err)" >&2; exit 1; }
wait_http "http://127.0.0.1:$NGX_PORT/" 20 || echo "warning: nginx single hop is not answering (see $W/nginx-hop.err)" >&2
wait_http "http://127.0.0.1:$HAP_PORT/" 20 || echo "warning: haproxy is not answering (see $W/haproxy.err)" >&2
REMORA_UP=0
if wait_http "http://127.0.0.1:$R_ADMIN/ready" 80 "$REMORA_PID"; then
  REMORA_UP=1
elif kill -0 "$REMORA_PID" 2>/dev/null; then
  echo "warning: remora is not ready after 20 s (log: $REMORA_LOG)" >&2
  echo "remora: did not become ready on http://127.0.0.1:$R_ADMIN/ready within 20 s" >>"$W/notes.pre"
else
  echo "warning: remora exited during startup (log: $REMORA_LOG)" >&2
  why=$(grep -m1 -iE 'fatal|error|refused|panic' "$REMORA_LOG" || tail -n1 "$REMORA_LOG" || true)
  echo "remora: exited during startup: $(printf '%s' "$why" | tr -d '\033' | cut -c1-160)" >>"$W/notes.pre"
fi

NGX_WORKER=$(ps -o pid= --ppid "$(cat "$W/nginx-hop.pid")" 2>/dev/null | head -n1 | tr -dc '0-9' || true)
HAP_PID=$(tr -dc '0-9' <"$W/haproxy.pid" 2>/dev/null || true)

RESULTS=$W/results.txt NOTES=$W/notes.txt
: >"$RESULTS"; cat "$W/notes.pre" >"$NOTES" 2>/dev/null || : >"$NOTES"; rm -f "$W/notes.pre"

# bench name url [host] [rss-pid]  -> appends "name rps p50 p90 p99 rss" (or "name unreachable")
bench() {
  local name=$1 url=$2 host=${3:-} rpid=${4:-} code r l rss="-" max=0 v wpid
  local hc=() hh=()
  [ -n "$host" ] && { hc=(-H "Host: $host"); hh=(-host "$host"); }
  echo "  $name ..." >&2
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${hc[@]+"${hc[@]}"}" "$url" || true)
  if [ "$code" != 200 ]; then
    echo "$name unreachable" >>"$RESULTS"
    echo "$name: $url answered HTTP ${code:-000} to a probe (000 = no connection), not measured" >>"$NOTES"
    return 0
  fi
  # Every system gets the same 2 s warm-up first: remora's JIT compiles its hot
  # path in its first seconds, and a sidecar is measured as it runs, warm.
  timeout -k 2 20 wrk -t1 -c32 -d2s "${hc[@]+"${hc[@]}"}" "$url" >/dev/null 2>&1 || true
  # Peak RSS during the load: the kernel's high-water mark (VmHWM), reset just
  # before (clear_refs 5), so nothing forks during the measurement. Where the
  # reset is not allowed, ps samples every 0.5 s instead.
  local hwm=0
  [ -n "$rpid" ] && echo 5 >"/proc/$rpid/clear_refs" 2>/dev/null && hwm=1
  timeout -k 2 $((DUR + 20)) wrk -t1 -c32 -d"${DUR}s" "${hc[@]+"${hc[@]}"}" "$url" >"$W/wrk.$name.txt" 2>&1 &
  wpid=$!
  while [ "$hwm" = 0 ] && [ -n "$rpid" ] && kill -0 "$wpid" 2>/dev/null; do
    v=$(ps -o rss= -p "$rpid" 2>/dev/null | tr -dc '0-9' || true)
    [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    sleep 0.5
  done
  wait "$wpid" || echo "$name: wrk exited with status $? (see $W/wrk.$name.txt)" >>"$NOTES"
  if [ "$hwm" = 1 ]; then
    max=$(awk '/^VmHWM:/ { print $2 }' "/proc/$rpid/status" 2>/dev/null || true)
    max=${max:-0}
  fi
  [ -n "$rpid" ] && [ "$max" -gt 0 ] && rss=$(awk -v k="$max" 'BEGIN { printf "%.1f", k / 1024 }')
  r=$(awk '/Requests\/sec/ { printf "%d", $2 }' "$W/wrk.$name.txt")
  awk -v n="$name" '/Non-2xx/ || /Socket errors/ { sub(/^ +/, ""); print n ": wrk: " $0 }' "$W/wrk.$name.txt" >>"$NOTES"
  timeout -k 2 $((DUR + 20)) hey -z "${DUR}s" -c 10 -q 100 "${hh[@]+"${hh[@]}"}" "$url" >"$W/hey.$name.txt" 2>&1 ||
    echo "$name: hey exited with status $? (see $W/hey.$name.txt)" >>"$NOTES"
  l=$(awk '/% in/ { gsub("%", "", $1); p[$1] = $3 * 1000 } END { printf "%.2f %.2f %.2f", p[50], p[90], p[99] }' "$W/hey.$name.txt")
  awk -v n="$name" '/^ *\[[0-9]+\]/ && !/\[200\]/ { sub(/^ +/, ""); print n ": hey status " $0 } /Error distribution/ { e = 1; next } e && NF { sub(/^ +/, ""); print n ": hey error " $0 }' "$W/hey.$name.txt" >>"$NOTES"
  awk -v n="$name" '/Size\/request/ && $2 != 1024 { print n ": hey: response body is " $2 " bytes, expected 1024" }' "$W/hey.$name.txt" >>"$NOTES"
  echo "$name ${r:-0} $l $rss" >>"$RESULTS"
}

echo "single-hop benchmark, ${DUR}s per run (wrk -c32, then hey at ~1000 req/s):" >&2
bench direct "http://127.0.0.1:$UP_PORT/"
bench nginx "http://127.0.0.1:$NGX_PORT/" "" "$NGX_WORKER"
bench haproxy "http://127.0.0.1:$HAP_PORT/" "" "$HAP_PID"
if [ "$REMORA_UP" = 1 ]; then
  bench remora-outbound "http://127.0.0.1:$R_OUT/" "$HOST" "$REMORA_PID"
  bench remora-inbound "http://127.0.0.1:$R_IN/" "" "$REMORA_PID"
  if ! kill -0 "$REMORA_PID" 2>/dev/null; then
    echo "remora: process $REMORA_PID exited during the run" >>"$NOTES"
    REMORA_UP=0
  fi
else
  echo "remora-outbound unreachable" >>"$RESULTS"
  echo "remora-inbound unreachable" >>"$RESULTS"
fi

echo
awk '
  BEGIN { printf "%-16s %10s %8s %8s %8s %8s %8s %7s\n", "system", "req/s@c32", "p50 ms", "p90 ms", "p99 ms", "rps/ngx", "p99/ngx", "RSS MB" }
  { n[NR] = $1; r[NR] = $2; a[NR] = $3; b[NR] = $4; c[NR] = $5; m[NR] = $6; if ($1 == "nginx" && $2 != "unreachable") { nr = $2; nc = $5 } }
  END { for (i = 1; i <= NR; i++) {
      if (r[i] == "unreachable") { printf "%-16s unreachable\n", n[i]; continue }
      printf "%-16s %10d %8.2f %8.2f %8.2f %8s %8s %7s\n", n[i], r[i], a[i], b[i], c[i],
        (nr > 0 ? sprintf("%.2f", r[i] / nr) : "-"), (nc > 0 ? sprintf("%.2f", c[i] / nc) : "-"), m[i] } }' "$RESULTS"
echo
if [ -s "$NOTES" ]; then sed 's/^/note: /' "$NOTES"; fi
if [ "$REMORA_UP" != 1 ] || grep -q '^remora-.* unreachable' "$RESULTS"; then echo "remora stderr/stdout log: $REMORA_LOG"; fi
echo "RSS MB: peak RSS of the proxy process (nginx: its worker) during wrk (VmHWM); raw outputs in $W"
echo "reproduce: deno task bench   (env DUR=$DUR seconds per run, WORK=$W)"

# Tracing cost (off vs 1% vs 100% sampling, same run): bench/tracing.sh. TRACING_BENCH=0 skips it.
if [ "${TRACING_BENCH:-1}" != 0 ]; then
  echo
  DUR=$DUR WORK="$W/tracing" bash "$ROOT/bench/tracing.sh"
fi
