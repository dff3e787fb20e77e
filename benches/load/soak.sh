#!/usr/bin/env bash
# Soak benchmark of issue 7: the release guard under mixed traffic at a fixed rate for a long
# time, its resident set size sampled all along, on loopback.
#
#   benches/load/soak.sh                 # 10 minutes: 2000 GET / and 50 launches a second
#   DURATION=60 benches/load/soak.sh     # a quick smoke run
#
# Two wrk instances run side by side against one guard (memory replay store, one RS512
# issuer whose JWKS the upstream nginx serves): one sends GET / (passthrough) at PASS_RATE,
# the other POST /launch with a different token each time at LAUNCH_RATE. wrk has no rate
# option: each wrk thread keeps a schedule (a slot every THREADS / rate seconds, on the
# monotonic clock through LuaJIT's ffi) and its Lua `delay()` waits until the next slot. A
# thread that falls behind sends without waiting until it has caught up. Every SAMPLE
# seconds the script reads VmRSS and VmHWM from /proc/<pid>/status (and two counters from the
# guard's /metrics) into samples.tsv. Prints a markdown table and the machine.
#
# Launch tokens: minted with PyJWT before the run, one per planned launch, each with an iat
# 10 s before and an exp TOKEN_TTL seconds after the moment it is meant to be sent, like a
# portal that mints a token just before the launch. The guard keeps a jti until exp plus
# launch.clock_skew (30 s), so its replay store stops growing about TOKEN_TTL + 35 s into
# the run (at LAUNCH_RATE x (TOKEN_TTL + 30) live jtis); keep WARMUP beyond that.
#
# Environment: DURATION (seconds, 600), PASS_RATE (GET / per second, 2000), LAUNCH_RATE
# (launches per second, 50), PASS_CONNECTIONS (20), LAUNCH_CONNECTIONS (4), THREADS (wrk
# threads of each instance, 1), SAMPLE (seconds between readings, 10), WARMUP (the reading
# growth is measured from, 60; half of DURATION when DURATION is not longer), TOKEN_TTL (20),
# BASE_PORT (18400; ports BASE_PORT+1..+3), KEEP (1 keeps the work directory, with
# samples.tsv, the wrk outputs and the guard's log).
set -euo pipefail

DURATION=${DURATION:-600}
PASS_RATE=${PASS_RATE:-2000}
LAUNCH_RATE=${LAUNCH_RATE:-50}
PASS_CONNECTIONS=${PASS_CONNECTIONS:-20}
LAUNCH_CONNECTIONS=${LAUNCH_CONNECTIONS:-4}
THREADS=${THREADS:-1}
SAMPLE=${SAMPLE:-10}
WARMUP=${WARMUP:-60}
TOKEN_TTL=${TOKEN_TTL:-20}
BASE_PORT=${BASE_PORT:-18400}
KEEP=${KEEP:-0}
CORES=$(nproc)

P_UP=$((BASE_PORT + 1))
P_GUARD=$((BASE_PORT + 2))
P_GUARD_ADMIN=$((BASE_PORT + 3))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ISS=https://portal.bench
AUD=Device/bench
GROWTH_TARGET_PCT=10
TOKEN_LEAD=10 # seconds between a token's iat and the moment it is meant to be sent

# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

if [ "$WARMUP" -ge "$DURATION" ]; then
  WARMUP=$(( DURATION / 2 / SAMPLE * SAMPLE ))
  [ "$WARMUP" -ge "$SAMPLE" ] || WARMUP=$SAMPLE
  log "WARMUP is not shorter than DURATION: using WARMUP=$WARMUP"
fi
if [ "$DURATION" -lt "$SAMPLE" ]; then
  log "DURATION ($DURATION) must be at least SAMPLE ($SAMPLE)"; exit 2
fi

# ---- tools, build, work directory ---------------------------------------------------
need_tools nginx wrk python3
need_pyjwt
build_guard
start_work soak

now_us() { local t=$EPOCHREALTIME; echo $(( 10#${t/[.,]/} )); }

# ---- keys, the upstream, the guard --------------------------------------------------------
issuer_keys RS512

upstream_conf "$P_UP" >"$WORK/upstream.conf"

{
  # The default max_lifetime (5m) holds unless TOKEN_TTL is raised near it.
  lifetime=$((TOKEN_TTL + TOKEN_LEAD))
  launch=""
  [ "$lifetime" -le 300 ] || launch="max_lifetime = \"${lifetime}s\""
  guard_conf "$P_GUARD" "$P_GUARD_ADMIN" RS512 "" "$launch"
  printf '[replay]\nstore = "memory"\n'
} >"$WORK/guard.toml"

for port in "$P_UP" "$P_GUARD" "$P_GUARD_ADMIN"; do
  if ! python3 - "$port" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1) # as the servers do: TIME_WAIT is fine
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
    log "port $port is in use: choose other ports with BASE_PORT"; exit 1
  fi
done
log "starting the upstream and hti-guard in $WORK"
nginx -p "$WORK" -e "$WORK/upstream.err" -c "$WORK/upstream.conf" &
PIDS+=($!)
wait_port "$P_UP" /jwks.json
"$GUARD" serve --config "$WORK/guard.toml" >"$WORK/guard.log" 2>&1 &
PIDS+=($!); PID_GUARD=$!
wait_ready "$P_GUARD_ADMIN"

# ---- tokens and the wrk script ------------------------------------------------------------
cat >"$WORK/mint.py" <<'EOF'
"""Mint N unique HTI 2.0 RS512 tokens, token k meant to be sent k / rate seconds after a
start time; print that start time. The start leaves room for the minting itself, timed on a
first small batch."""
import multiprocessing as mp, os, sys, time, uuid
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

key_file, iss, aud, out = sys.argv[1:5]
n, rate, lead, ttl = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
KEY = load_pem_private_key(open(key_file, "rb").read(), None)
CHUNK = 2000

def token(at):
    return jwt.encode({"iss": iss, "aud": aud, "sub": "Practitioner/123", "resource": "Task/abc",
                       "patient": "Patient/42", "intent": "plan", "jti": str(uuid.uuid4()),
                       "iat": at - lead, "exp": at + ttl},
                      KEY, algorithm="RS512", headers={"kid": "bench"})

def batch(args):
    start, lo, hi = args
    return "".join(token(int(start + k / rate)) + "\n" for k in range(lo, hi))

if __name__ == "__main__":
    procs = os.cpu_count() or 1
    t = time.time()
    for _ in range(50):
        token(int(t))
    each = (time.time() - t) / 50
    start = time.time() + n * each / procs * 1.3 + 5
    with mp.Pool(procs) as pool, open(out, "w") as f:
        for part in pool.imap(batch, [(start, lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK)]):
            f.write(part)
    print(f"{start:.3f}")
EOF

# args: rate (of this wrk instance), threads, [tokens file]. Each thread keeps its own
# schedule of slots `threads / rate` seconds apart (threads start staggered), and `delay()`
# (called by wrk before every request) waits for the next slot. With a tokens file the
# thread takes every threads-th token, so that token k goes out about k / rate seconds in.
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

local counter, threads = 0, {}
function setup(thread)
  thread:set("id", counter); counter = counter + 1; table.insert(threads, thread)
end

local period, offset, next_at, get, reqs, i = 0, 0, nil, nil, nil, 0
exhausted = 0 -- a global, so that `done` can read it with thread:get
function init(args)
  local rate, n = tonumber(args[1]), tonumber(args[2])
  period = 1000 * n / rate
  offset = period * id / n
  get = wrk.format("GET", "/")
  if args[3] then
    -- wrk 4.1 calls request() of the first thread once before the run and drops the
    -- answer: that thread's list starts with a GET / for it, so that no token is lost.
    reqs = {}
    if id == 0 then reqs[1] = get end
    local k = 0
    for line in io.lines(args[3]) do
      if line ~= "" then
        if k % n == id then
          reqs[#reqs + 1] = wrk.format("POST", "/launch",
            {["Content-Type"] = "application/x-www-form-urlencoded"},
            "token=" .. line .. "&state=soak")
        end
        k = k + 1
      end
    end
  end
end
function delay()
  local now = now_ms()
  if not next_at then next_at = now + offset end
  local wait = next_at - now
  next_at = next_at + period
  if wait < 0 then return 0 end
  return wait
end
function request()
  if not reqs then return get end
  i = i + 1
  if i > #reqs then exhausted = 1; wrk.thread:stop(); return get end
  return reqs[i]
end
function done(summary, latency, requests)
  local out = 0
  for _, t in ipairs(threads) do out = out + (t:get("exhausted") or 0) end
  if out > 0 then io.write("TOKENS_EXHAUSTED ", out, "\n") end
end
EOF

# One planned launch per slot, and a few to spare.
TOKENS=$(( LAUNCH_RATE * (DURATION + 5) ))
log "minting $TOKENS RS512 tokens"
START=$(python3 "$WORK/mint.py" "$WORK/keys/bench.key.pem" "$ISS" "$AUD" "$WORK/tokens.txt" \
  "$TOKENS" "$LAUNCH_RATE" "$TOKEN_LEAD" "$TOKEN_TTL")
START_US=$(python3 -c "print(int($START * 1000000))")
wait_us=$(( START_US - $(now_us) ))
if [ "$wait_us" -gt 0 ]; then
  sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
else
  log "minting took $(( -wait_us / 1000000 )) s longer than planned: tokens are late by that much (they stay valid for $((TOKEN_TTL + 30)) s after their slot)"
fi

# ---- the soak -----------------------------------------------------------------------------
CLK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
SAMPLES="$WORK/samples.tsv"
printf 't_s\tvmrss_kib\tvmhwm_kib\tthreads\trequests_total\tlaunches_accepted\n' >"$SAMPLES"
sample() { # elapsed seconds
  local m
  m=$(metrics "$P_GUARD_ADMIN")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(status_kib "$PID_GUARD" VmRSS)" \
    "$(status_kib "$PID_GUARD" VmHWM)" "$(status_kib "$PID_GUARD" Threads)" \
    "$(sum_of hti_guard_requests_total <<<"$m")" \
    "$(sum_of hti_guard_launches_total 'result="accepted"' <<<"$m")" >>"$SAMPLES"
}

log "soak: ${DURATION}s, GET / at $PASS_RATE/s ($PASS_CONNECTIONS connections), POST /launch at $LAUNCH_RATE/s ($LAUNCH_CONNECTIONS connections), a reading every ${SAMPLE}s"
cpu_before=$(cpu_ticks "$PID_GUARD")
t0=$(now_us)
sample 0
wrk -t"$THREADS" -c"$PASS_CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/paced.lua" \
  "http://127.0.0.1:$P_GUARD/" -- "$PASS_RATE" "$THREADS" >"$WORK/wrk-pass.txt" 2>&1 &
PIDS+=($!); PID_PASS=$!
wrk -t"$THREADS" -c"$LAUNCH_CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/paced.lua" \
  "http://127.0.0.1:$P_GUARD/" -- "$LAUNCH_RATE" "$THREADS" "$WORK/tokens.txt" \
  >"$WORK/wrk-launch.txt" 2>&1 &
PIDS+=($!); PID_LAUNCH=$!
k=1
while [ $((k * SAMPLE)) -le "$DURATION" ]; do
  wait_us=$(( t0 + k * SAMPLE * 1000000 - $(now_us) ))
  [ "$wait_us" -le 0 ] || sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
  sample $((k * SAMPLE))
  tail -n 1 "$SAMPLES" | awk -F'\t' '{printf "   %4d s  VmRSS %6.1f MiB  VmHWM %6.1f MiB  requests %d  launches %d\n", $1, $2 / 1024, $3 / 1024, $5, $6}' >&2
  k=$((k + 1))
done
wait "$PID_PASS" || { log "wrk (GET /) failed:"; cat "$WORK/wrk-pass.txt" >&2; exit 1; }
wait "$PID_LAUNCH" || { log "wrk (launch) failed:"; cat "$WORK/wrk-launch.txt" >&2; exit 1; }
GUARD_CPU_S=$(python3 -c "print(($(cpu_ticks "$PID_GUARD") - $cpu_before) / $CLK)")
END_HWM=$(status_kib "$PID_GUARD" VmHWM)
metrics "$P_GUARD_ADMIN" >"$WORK/metrics.txt"
ACCEPTED=$(sum_of hti_guard_launches_total 'result="accepted"' <"$WORK/metrics.txt")
REFUSED=$(sum_of hti_guard_launches_total 'result="rejected"' <"$WORK/metrics.txt")
REJECTED=$(sed -n '/^hti_guard_launches_total{.*result="rejected"/ s/.*reason="\([^"]*\)".* \([0-9.e+]*\)$/\2 \1/p' \
  "$WORK/metrics.txt" | awk '{printf "%s%d %s", sep, $1, $2; sep=", "}')

# ---- the table ----------------------------------------------------------------------------
echo
echo "## hti-guard soak, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $CORES cores ($(nproc --all) online), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), $(awk '/^MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo)"
echo "- $("$GUARD" --version 2>/dev/null || echo hti-guard) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', dirty')), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}'), PyJWT $(python3 -c 'import jwt; print(jwt.__version__)')"
echo "- command: \`DURATION=$DURATION PASS_RATE=$PASS_RATE LAUNCH_RATE=$LAUNCH_RATE PASS_CONNECTIONS=$PASS_CONNECTIONS LAUNCH_CONNECTIONS=$LAUNCH_CONNECTIONS THREADS=$THREADS SAMPLE=$SAMPLE WARMUP=$WARMUP TOKEN_TTL=$TOKEN_TTL benches/load/soak.sh\`; wrk shares the machine"
echo "- guard CPU over the soak: $GUARD_CPU_S s ($(python3 -c "print(f'{100 * $GUARD_CPU_S / $DURATION:.0f}')") % of one core); rejected launches: ${REJECTED:-none}"
echo
python3 - "$SAMPLES" "$WORK/wrk-pass.txt" "$WORK/wrk-launch.txt" "$WARMUP" "$DURATION" \
  "$PASS_RATE" "$LAUNCH_RATE" "$ACCEPTED" "$REFUSED" "$END_HWM" "$GROWTH_TARGET_PCT" <<'EOF'
import re, sys
samples, pass_out, launch_out = sys.argv[1:4]
warmup, duration, pass_rate, launch_rate, accepted, refused, end_hwm, target = map(int, sys.argv[4:12])
rows = [l.rstrip("\n").split("\t") for l in open(samples)][1:]
rss = [(int(r[0]), int(r[1])) for r in rows]
warm_t, warm = next((t, v) for t, v in rss if t >= warmup)
final_t, final = rss[-1]
max_t, mx = max(rss, key=lambda s: s[1])
growth = (final - warm) / warm * 100

def ms(s):
    v, u = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]

def wrk(path):
    out = open(path).read()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    err = re.search(r"Socket errors: (.*)", out)
    return {"reqs": int(re.search(r"(\d+) requests in ([\d.]+\w+)", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99": ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "max": ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)),
            "bad": int(bad.group(1)) if bad else 0,
            "err": err.group(1).strip() if err else "",
            "short": "TOKENS_EXHAUSTED" in out}

p, l = wrk(pass_out), wrk(launch_out)
planned = (pass_rate + launch_rate) * duration
done = p["reqs"] + l["reqs"]
mib = lambda kib: f"{kib / 1024:.1f} MiB"
yes = lambda ok: "yes" if ok else "**no**"
print("| measure | value | target | met? |")
print("|---|---:|---:|---|")
print(f"| VmRSS after warm-up (reading at {warm_t} s) | {mib(warm)} | | |")
print(f"| final VmRSS (reading at {final_t} s) | {mib(final)} | | |")
print(f"| max VmRSS ({len(rss)} readings; at {max_t} s) | {mib(mx)} | | |")
print(f"| VmHWM at the end | {mib(end_hwm)} | | |")
print(f"| growth after warm-up (final / warm-up - 1) | {growth:+.1f} % | <= {target} % | {yes(growth <= target)} |")
print(f"| requests done (GET / + launches) | {p['reqs']} + {l['reqs']} = {done} | {planned} planned | {yes(done >= 0.99 * planned)} |")
print(f"| non-2xx responses | {p['bad'] + l['bad']} | 0 | {yes(p['bad'] + l['bad'] == 0)} |")
errs = "; ".join(e for e in (p["err"], l["err"]) if e) or "none"
print(f"| socket errors | {errs} | none | {yes(errs == 'none')} |")
print(f"| launches accepted / refused by the guard | {accepted} / {refused} | all / 0 | {yes(refused == 0 and accepted >= l['reqs'])} |")
print()
print("| traffic | target req/s | done req/s | requests | p50 ms | p99 ms | max ms | non-2xx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, rate, w in (("GET / (passthrough)", pass_rate, p), ("POST /launch (RS512)", launch_rate, l)):
    note = " (tokens ran out)" if w["short"] else ""
    print(f"| {name}{note} | {rate} | {w['rps']:.1f} | {w['reqs']} | {w['p50']:.2f} | {w['p99']:.2f} | {w['max']:.2f} | {w['bad']} |")
EOF
if [ "$KEEP" = 1 ]; then
  echo
  echo "Readings: $SAMPLES"
fi
