#!/usr/bin/env bash
# Instructions per passthrough request, counted by valgrind's callgrind: within 0.5 % from
# run to run on an idle machine (3 % on a busy one, where timing still decides how often a
# read returns short), so it can A/B a change where wrk's requests/s cannot. For each proxy (hti-guard, examples/hyper_floor.rs, nginx), with one
# worker and one keep-alive client connection:
#
#   1. start it under `valgrind --tool=callgrind`, wait until it answers, warm it up
#      (the upstream connection, the pools, the first allocations);
#   2. zero callgrind's counters, send N1 requests on a new connection, dump;
#   3. zero again, send N2 requests on another new connection, dump;
#   4. per request = (instructions of dump 3 - instructions of dump 2) / (N2 - N1).
#
# Whatever a window costs apart from its requests (the connection, callgrind's own
# zero/dump, timers that fire) is the same in both and cancels out. User-space instructions
# only (valgrind runs the program's code; the kernel's share of a syscall is not counted).
#
#   benches/load/instructions.sh                    # hti-guard, the floor, nginx
#   GUARD_B=/path/to/other/hti-guard benches/load/instructions.sh   # and an A/B row
#   N1=300 N2=1300 BASE_PORT=18200 KEEP=1           # the defaults and the knobs
#
# LAUNCH=1 adds a launch row: POST /launch with a fresh RS512 token per request (minted by
# `hti-guard mint`), the memory replay store, the 303 read whole.
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KEEP=${KEEP:-0}
CORES=1
N1=${N1:-300}
N2=${N2:-1300}
BASE_PORT=${BASE_PORT:-18200}
GUARD_B=${GUARD_B:-}
LAUNCH=${LAUNCH:-0}
# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

need_tools nginx valgrind callgrind_control python3
if [ -n "${GUARD:-}" ]; then
  log "hti-guard: $GUARD (given)"
else
  build_guard
fi
if [ -n "${FLOOR:-}" ]; then
  log "floor: $FLOOR (given)"
else
  (cd "$ROOT" && cargo build --release --quiet --example hyper_floor)
  FLOOR="$ROOT/target/release/examples/hyper_floor"
fi
start_work instructions

P_UP=$((BASE_PORT + 1))
P_SUBJECT=$((BASE_PORT + 2))
P_ADMIN=$((BASE_PORT + 3))
ISS="https://portal.bench.example"
AUD="https://module.bench.example"

start_upstream "$P_UP"

guard_conf "$P_SUBJECT" "$P_ADMIN" RS512 "workers = 1" >"$WORK/guard.toml"

# One worker (CORES=1) and no master process, so that callgrind sees the process that works.
proxy_conf "$P_SUBJECT" "$P_UP" | sed 's/^master_process on;/master_process off;/' >"$WORK/proxy.conf"

# client COUNT [launch]: COUNT requests on one new keep-alive connection, each answer read
# whole; fails on any answer but 200 (passthrough) or 303/200 (a launch). A launch takes
# its tokens from $WORK/tokens, one per line, from the line after the last one used.
cat >"$WORK/client.py" <<'EOF'
import http.client, sys
count, port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
aud, tokens = sys.argv[4], None
if mode == "launch":
    state = sys.argv[5]
    with open(state + ".next") as f:
        start = int(f.read() or 0)
    with open(state) as f:
        tokens = f.read().split()[start:start + count]
    if len(tokens) < count:
        sys.exit("not enough tokens")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for i in range(count):
    if tokens is None:
        c.request("GET", "/", headers={"Host": "module.bench.example"})
    else:
        body = "token=" + tokens[i]
        c.request("POST", "/launch", body=body, headers={
            "Host": "module.bench.example",
            "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    if r.status not in (200, 303):
        sys.exit(f"request {i}: status {r.status}")
c.close()
if tokens is not None:
    with open(state + ".next", "w") as f:
        f.write(str(start + count))
EOF
client() { python3 "$WORK/client.py" "$1" "$P_SUBJECT" "${2:-pass}" "$AUD" "$WORK/tokens"; }

# totals FILE: the instruction total of one callgrind dump.
totals() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# measure NAME MODE COMMAND...: the instructions per request of COMMAND; prints one line
# "NAME per-request n1-window n2-window".
measure() {
  local name=$1 mode=$2 pid out i1 i2
  shift 2
  out="$WORK/cg.$name"
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if [ "$name" = hti-guard ] || [ "$name" = hti-guard-b ] || [ "${name#launch}" != "$name" ]; then
    wait_ready "$P_ADMIN"
  fi
  wait_port "$P_SUBJECT"
  client 50 "$mode" # warm-up
  sleep 0.5
  callgrind_control -z "$pid" >/dev/null 2>&1
  client "$N1" "$mode"
  callgrind_control -d window1 "$pid" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  client "$N2" "$mode"
  callgrind_control -d window2 "$pid" >/dev/null 2>&1
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  i1=$(totals "$(ls "$out".$pid.* | grep -m1 -- '\.1$' || true)")
  i2=$(totals "$(ls "$out".$pid.* | grep -m1 -- '\.2$' || true)")
  if [ -z "$i1" ] || [ -z "$i2" ]; then
    log "$name: no callgrind dumps (see $WORK/$name.log)"
    return 1
  fi
  echo "$name $(((i2 - i1) / (N2 - N1))) $i1 $i2"
}

log "counting ($N1 and $N2 requests a window; each proxy runs under callgrind, about a minute each)"
RESULTS=()
RESULTS+=("$(measure hti-guard pass "$GUARD" serve --config "$WORK/guard.toml")")
if [ -n "$GUARD_B" ]; then
  RESULTS+=("$(measure hti-guard-b pass "$GUARD_B" serve --config "$WORK/guard.toml")")
fi
RESULTS+=("$(measure hyper-floor pass "$FLOOR" "127.0.0.1:$P_SUBJECT" "127.0.0.1:$P_UP" 1)")
RESULTS+=("$(HYPER_FLOOR_TIMEOUTS=1 measure floor-timers pass "$FLOOR" "127.0.0.1:$P_SUBJECT" "127.0.0.1:$P_UP" 1)")
RESULTS+=("$(measure nginx pass nginx -p "$WORK" -e "$WORK/proxy.err" -c "$WORK/proxy.conf")")
if [ "$LAUNCH" = 1 ]; then
  need_pyjwt
  total=$((50 + N1 + N2))
  "$GUARD" mint --key "$WORK/keys/bench.key.pem" --alg RS512 --kid bench --iss "$ISS" \
    --aud "$AUD" --sub Patient/bench --resource Task/bench --count "$total" >"$WORK/tokens"
  echo 0 >"$WORK/tokens.next"
  RESULTS+=("$(measure launch launch "$GUARD" serve --config "$WORK/guard.toml")")
fi

python3 - "$N1" "$N2" "${RESULTS[@]}" <<'EOF'
import sys
n1, n2 = int(sys.argv[1]), int(sys.argv[2])
rows = [line.split() for line in sys.argv[3:]]
per = {r[0]: int(r[1]) for r in rows}
label = {
    "hti-guard": "hti-guard passthrough",
    "hti-guard-b": "hti-guard passthrough (GUARD_B)",
    "hyper-floor": "bare hyper proxy (examples/hyper_floor.rs)",
    "floor-timers": "bare hyper proxy with the guard's two timers",
    "nginx": "nginx reverse proxy",
    "launch": "hti-guard launch (RS512, memory store)",
}
print(f"instructions per request, callgrind, one worker, one keep-alive connection; "
      f"(window of {n2} - window of {n1}) / {n2 - n1}\n")
print("| proxy | instructions / request | / bare hyper floor | / nginx |")
print("|---|---:|---:|---:|")
for name, value in per.items():
    floor = value / per["hyper-floor"]
    ngx = value / per["nginx"]
    print(f"| {label[name]} | {value / 1000:.2f} k | {floor:.2f} | {ngx:.2f} |")
EOF
