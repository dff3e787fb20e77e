#!/usr/bin/env bash
# Memory benchmark of issue 7: the release guard's resident set size, idle and with many live
# jtis in its in-memory replay store, on loopback.
#
#   benches/load/memory.sh              # idle, after a warm-up, and with 1 000 000 live jtis
#   JTIS=20000 benches/load/memory.sh   # a quick smoke run
#
# Steps: start an nginx upstream (a small body, and the issuer's ES256 JWKS) and the guard
# (memory replay store, one issuer); when /readyz on the admin port says ready, wait SETTLE
# seconds and read VmRSS and VmHWM from /proc/<pid>/status (idle); drive GET / through the
# guard with wrk for WARMUP seconds and read them again (warm); mint JTIS unique ES256 tokens
# with PyJWT (exp - iat = 50 minutes, so every jti stays live for the whole run; the guard
# gets launch.max_lifetime = "1h" and replay.max_entries = JTIS), send each once as a form
# POST to /launch with wrk, count the accepted ones on the guard's /metrics, wait SETTLE
# seconds and read VmRSS and VmHWM a third time. Prints a markdown table and the machine.
#
# Environment: JTIS (1000000), CONNECTIONS (wrk connections, 50), THREADS (wrk threads, nproc),
# WARMUP (seconds of passthrough, 5), SETTLE (seconds before each reading, 2), BASE_PORT
# (18300; ports BASE_PORT+1..+3), KEEP (1 keeps the work directory).
set -euo pipefail

JTIS=${JTIS:-1000000}
CONNECTIONS=${CONNECTIONS:-50}
CORES=$(nproc)
THREADS=${THREADS:-$CORES}
WARMUP=${WARMUP:-5}
SETTLE=${SETTLE:-2}
BASE_PORT=${BASE_PORT:-18300}
KEEP=${KEEP:-0}

P_UP=$((BASE_PORT + 1))
P_GUARD=$((BASE_PORT + 2))
P_GUARD_ADMIN=$((BASE_PORT + 3))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ISS=https://portal.bench
AUD=Device/bench
IDLE_TARGET_MIB=20
JTIS_TARGET_MIB=200
JTIS_TARGET_N=1000000

# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

# ---- tools, build, work directory ---------------------------------------------------
need_tools nginx wrk python3
need_pyjwt
build_guard
start_work memory

metric_sum() { metrics "$P_GUARD_ADMIN" | sum_of "$@"; } # NAME [LABEL-FILTER]

# ---- keys, the upstream, the guard --------------------------------------------------------
issuer_keys ES256

upstream_conf "$P_UP" >"$WORK/upstream.conf"

{
  guard_conf "$P_GUARD" "$P_GUARD_ADMIN" ES256 "" 'max_lifetime = "1h"'
  printf '[replay]\nstore = "memory"\nmax_entries = %s\n' "$JTIS"
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

started=$(date +%s)

# ---- (a) idle, then after a passthrough warm-up -------------------------------------------
sleep "$SETTLE"
IDLE_RSS=$(status_kib "$PID_GUARD" VmRSS)
IDLE_HWM=$(status_kib "$PID_GUARD" VmHWM)
log "idle: VmRSS $IDLE_RSS KiB, VmHWM $IDLE_HWM KiB"

log "warm-up: wrk GET / for ${WARMUP}s at $CONNECTIONS connections"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$P_GUARD/" \
  >"$WORK/wrk-warmup.txt" 2>&1
WARM_REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk-warmup.txt")
WARM_BAD=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$WORK/wrk-warmup.txt")
sleep "$SETTLE"
WARM_RSS=$(status_kib "$PID_GUARD" VmRSS)
WARM_HWM=$(status_kib "$PID_GUARD" VmHWM)
log "warm: $WARM_REQS requests; VmRSS $WARM_RSS KiB, VmHWM $WARM_HWM KiB"

# ---- (b) JTIS live jtis -----------------------------------------------------------------
cat >"$WORK/mint.py" <<'EOF'
"""Mint N unique HTI 2.0 ES256 tokens with PyJWT, in parallel, one per line."""
import multiprocessing as mp, os, sys, time, uuid
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

key_file, iss, aud, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
KEY = load_pem_private_key(open(key_file, "rb").read(), None)
CHUNK = 5000

def batch(count):
    now = int(time.time())
    return "".join(jwt.encode({"iss": iss, "aud": aud, "sub": "Practitioner/123",
                               "resource": "Task/abc", "patient": "Patient/42", "intent": "plan",
                               "jti": str(uuid.uuid4()), "iat": now, "exp": now + 3000},
                              KEY, algorithm="ES256", headers={"kid": "bench"}) + "\n"
                   for _ in range(count))

if __name__ == "__main__":
    chunks = [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else [])
    with mp.Pool(os.cpu_count() or 1) as pool, open(out, "w") as f:
        for part in pool.imap_unordered(batch, chunks):
            f.write(part)
EOF

# Each wrk thread takes every THREADS-th token, one request each. Out of tokens, the thread
# sends a plain GET / (not a launch, so no token is ever sent twice) and stops. wrk 4.1 calls
# request() of the first thread once before the run, to check it, and drops what it gets: that
# thread's list starts with a GET / for it, so that no token is lost.
cat >"$WORK/launch.lua" <<'EOF'
local counter = 0
function setup(thread)
  thread:set("id", counter); counter = counter + 1
end
local reqs, i, last = {}, 0, nil
function init(args)
  local n, k = tonumber(args[2]), 0
  last = wrk.format("GET", "/")
  if id == 0 then reqs[1] = last end
  for line in io.lines(args[1]) do
    if line ~= "" then
      if k % n == id then
        reqs[#reqs + 1] = wrk.format("POST", "/launch",
          {["Content-Type"] = "application/x-www-form-urlencoded"},
          "token=" .. line .. "&state=bench")
      end
      k = k + 1
    end
  end
end
function request()
  i = i + 1
  if i > #reqs then wrk.thread:stop(); return last end
  return reqs[i]
end
EOF

log "minting $JTIS ES256 tokens"
t0=$(date +%s)
python3 "$WORK/mint.py" "$WORK/keys/bench.key.pem" "$ISS" "$AUD" "$JTIS" "$WORK/tokens.txt"
MINT_S=$(( $(date +%s) - t0 ))
log "minted in ${MINT_S}s; sending each once to POST /launch ($CONNECTIONS connections)"

# wrk sleeps for its whole -d even when every thread has stopped, so it gets a long one and
# a SIGINT (which makes it stop and print its summary) once the guard has seen every token,
# or once nothing has moved for STALL seconds.
launches() { metric_sum hti_guard_launches_total; }
base=$(launches)
wrk -t"$THREADS" -c"$CONNECTIONS" -d3600s -s "$WORK/launch.lua" "http://127.0.0.1:$P_GUARD/" \
  -- "$WORK/tokens.txt" "$THREADS" >"$WORK/wrk-launch.txt" 2>&1 &
PID_WRK=$!
PIDS+=("$PID_WRK")
STALL=30
seen=0 last_seen=-1 still=0 t0=$(date +%s)
while kill -0 "$PID_WRK" 2>/dev/null; do
  sleep 1
  seen=$(( $(launches) - base ))
  [ "$seen" -ge "$JTIS" ] && break
  if [ "$seen" = "$last_seen" ] && [ "$seen" -gt 0 ]; then
    still=$((still + 1))
    if [ "$still" -ge "$STALL" ]; then log "no launch for ${STALL}s: stopping at $seen"; break; fi
  else
    still=0
  fi
  last_seen=$seen
  if [ "$seen" = 0 ] && [ $(( $(date +%s) - t0 )) -gt 600 ]; then
    log "no launch in 600 s"; break
  fi
done
LAUNCH_S=$(( $(date +%s) - t0 ))
kill -INT "$PID_WRK" 2>/dev/null || true
wait "$PID_WRK" || true
LAUNCH_REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk-launch.txt")
LAUNCH_BAD=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$WORK/wrk-launch.txt")
LAUNCH_ERRS=$(sed -n 's/.*Socket errors: //p' "$WORK/wrk-launch.txt")

sleep "$SETTLE"
JTIS_RSS=$(status_kib "$PID_GUARD" VmRSS)
JTIS_HWM=$(status_kib "$PID_GUARD" VmHWM)
metrics "$P_GUARD_ADMIN" >"$WORK/metrics.txt"
FRESH=$(metric_sum hti_guard_replay_checks_total 'result="fresh",store="memory"')
ACCEPTED=$(metric_sum hti_guard_launches_total 'result="accepted"')
REJECTED=$(sed -n '/^hti_guard_launches_total{.*result="rejected"/ s/.*reason="\([^"]*\)".* \([0-9.e+]*\)$/\2 \1/p' \
  "$WORK/metrics.txt" | awk '{printf "%s%d %s", sep, $1, $2; sep=", "}')
log "launches: $FRESH fresh jtis, $ACCEPTED accepted; VmRSS $JTIS_RSS KiB, VmHWM $JTIS_HWM KiB"

# ---- the table ----------------------------------------------------------------------------
echo
echo "## hti-guard memory, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $CORES cores ($(nproc --all) online), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), $(awk '/^MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo)"
echo "- $("$GUARD" --version 2>/dev/null || echo hti-guard) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', dirty')), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}'), PyJWT $(python3 -c 'import jwt; print(jwt.__version__)')"
echo "- command: \`JTIS=$JTIS CONNECTIONS=$CONNECTIONS THREADS=$THREADS WARMUP=$WARMUP SETTLE=$SETTLE benches/load/memory.sh\`; wall time $(( $(date +%s) - started )) s; minting took ${MINT_S} s, the launches ${LAUNCH_S} s (wrk read ${LAUNCH_REQS:-0} responses before it stopped, non-2xx ${LAUNCH_BAD:-0}${LAUNCH_ERRS:+, socket errors: $LAUNCH_ERRS})"
echo "- warm-up: ${WARM_REQS:-0} requests GET / (non-2xx ${WARM_BAD:-0}); rejected launches: ${REJECTED:-none}"
echo
python3 - "$IDLE_RSS" "$IDLE_HWM" "$WARM_RSS" "$WARM_HWM" "$JTIS_RSS" "$JTIS_HWM" \
  "$JTIS" "$FRESH" "$ACCEPTED" "$IDLE_TARGET_MIB" "$JTIS_TARGET_MIB" "$JTIS_TARGET_N" \
  "$WARMUP" "$CONNECTIONS" <<'EOF'
import sys
(idle_rss, idle_hwm, warm_rss, warm_hwm, jtis_rss, jtis_hwm, n, fresh, accepted,
 idle_target, jtis_target, jtis_n, warmup, conns) = map(int, sys.argv[1:])
mib = lambda kib: f"{kib / 1024:.1f} MiB"
yes = lambda ok: "yes" if ok else "**no**"
print("| measure | value | target | met? |")
print("|---|---:|---:|---|")
print(f"| idle VmRSS (ready, no request yet) | {mib(idle_rss)} | <= {idle_target} MiB | {yes(idle_rss <= idle_target * 1024)} |")
print(f"| idle VmHWM | {mib(idle_hwm)} | | |")
print(f"| VmRSS after warm-up ({warmup} s GET /, {conns} conns) | {mib(warm_rss)} | | |")
print(f"| VmHWM after warm-up | {mib(warm_hwm)} | | |")
print(f"| live jtis (fresh replay checks; accepted launches {accepted}) | {fresh} | {n} | {yes(fresh == n)} |")
if n >= jtis_n:
    judged = yes(jtis_rss <= jtis_target * 1024)
else:
    judged = f"not judged (JTIS < {jtis_n})"
print(f"| VmRSS with {fresh} live jtis | {mib(jtis_rss)} | <= {jtis_target} MiB at {jtis_n} | {judged} |")
print(f"| VmHWM with {fresh} live jtis | {mib(jtis_hwm)} | | |")
per = (jtis_rss - warm_rss) * 1024 / fresh if fresh else 0
print(f"| RSS per live jti ((VmRSS with jtis - after warm-up) / live jtis) | {per:.0f} B | | |")
EOF
