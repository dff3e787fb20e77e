#!/usr/bin/env bash
# Memory per idle connection (issue 13, item 9): the release guard's resident set size before
# and after CONNS client connections are opened and left idle, on loopback.
#
#   benches/load/idle_conns.sh                        # 2000 connections, the release build
#   GUARD=/tmp/old/hti-guard benches/load/idle_conns.sh   # another binary, to compare
#
# Two kinds of idle connection, one after the other, each on a fresh guard:
# - silent: connected, never a byte sent (what a port scan or a slowloris leaves);
# - kept-alive: one request (GET /, answered 502: no upstream runs), then nothing.
# For each: wait SETTLE seconds, read VmRSS from /proc/<pid>/status, open the connections,
# wait SETTLE seconds, read VmRSS again; the difference over CONNS is the cost of one. The
# guard's timeouts.idle (60 s) is longer than the run. No upstream and no key set are needed:
# the guard serves while not ready.
#
# Environment: CONNS (2000), SETTLE (seconds, 2), BASE_PORT (18400; ports +1, +2), GUARD (a
# binary; default: build the release guard), KEEP (1 keeps the work directory).
set -euo pipefail

CONNS=${CONNS:-2000}
SETTLE=${SETTLE:-2}
BASE_PORT=${BASE_PORT:-18400}
KEEP=${KEEP:-0}
CORES=$(nproc)

P_GUARD=$((BASE_PORT + 1))
P_GUARD_ADMIN=$((BASE_PORT + 2))
P_NONE=$((BASE_PORT + 9)) # nothing listens here: the upstream and the JWKS URL

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

need_tools python3
if [ -n "${GUARD:-}" ]; then
  log "using $GUARD"
else
  build_guard
fi
start_work idle-conns
# The guard and the client each hold CONNS descriptors (and the guard's default
# limits.max_connections follows its open-files limit).
ulimit -n "$(ulimit -Hn)"

cat >"$WORK/guard.toml" <<EOF
listen = "127.0.0.1:$P_GUARD"
admin_listen = "127.0.0.1:$P_GUARD_ADMIN"
upstream = "http://127.0.0.1:$P_NONE"
workers = $CORES
[launch]
audience = "Device/bench"
[[issuers]]
iss = "https://portal.bench"
jwks_url = "http://127.0.0.1:$P_NONE/jwks.json"
EOF

# hold.py MODE PORT N: open N connections (MODE silent or request), print "open" when all
# are, then keep them until stdin closes.
cat >"$WORK/hold.py" <<'EOF'
import socket, sys
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "request":
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("connection closed before the response")
            got += chunk
    held.append(s)
print("open", flush=True)
sys.stdin.read()
EOF

# measure MODE: prints "MODE before_kib after_kib per_connection_bytes"
measure() {
  local mode=$1 pid before after
  "$GUARD" serve --config "$WORK/guard.toml" >"$WORK/guard.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$P_GUARD_ADMIN" /healthz
  sleep "$SETTLE"
  before=$(status_kib "$pid" VmRSS)
  mkfifo "$WORK/hold.in"
  python3 "$WORK/hold.py" "$mode" "$P_GUARD" "$CONNS" <"$WORK/hold.in" >"$WORK/hold.out" &
  PIDS+=($!)
  exec 3>"$WORK/hold.in"
  local _
  for _ in $(seq 600); do
    grep -q open "$WORK/hold.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q open "$WORK/hold.out" || { log "$mode: connections not open in 60 s"; exit 1; }
  sleep "$SETTLE"
  after=$(status_kib "$pid" VmRSS)
  exec 3>&-
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$WORK/hold.in" "$WORK/hold.out"
  echo "$mode $before $after $(((after - before) * 1024 / CONNS))"
}

log "measuring $CONNS idle connections (SETTLE=${SETTLE}s)"
{
  echo "| idle connection | VmRSS before | VmRSS with $CONNS open | per connection |"
  echo "|---|---|---|---|"
  for mode in silent request; do
    read -r m before after per < <(measure "$mode")
    [ "$m" = request ] && m=kept-alive
    echo "| $m | $before KiB | $after KiB | $per bytes |"
  done
} | tee "$WORK/result.md"
log "machine: $(nproc) cores, $(awk '/MemTotal/ {print $2}' /proc/meminfo) KiB, $(uname -r)"
