#!/usr/bin/env bash
# Writes symbol-order.txt: the functions a running guard executes, most instructions first,
# for the linker to lay out side by side at the start of .text (build.rs passes it to lld
# as `--symbol-ordering-file`).
#
# Why: a page of the binary's code that is touched once stays resident, and the kernel maps
# a whole 64 KiB window around each fault. In the default layout the 2 MB of functions that
# start-up, launches and the passthrough hop run are spread over 115 of .text's 145 windows,
# so 6.3-6.9 MB of the 9.5 MB of code was resident; laid out together, 3.0 MB is
# (BENCHMARKS.md, issue 17). Instruction counts do not change; only where the code sits.
#
# How: the release guard runs under `valgrind --tool=callgrind --demangle=no` through
# start-up, its first JWKS fetch, launches (accepted, replayed, refused), passthrough
# requests on HTTP/1.1 and h2c, a session cookie, /metrics, /healthz and /readyz, and its
# graceful stop; every function with its own (self) instruction count is listed, most
# first, when the binary defines it. The names are Rust's v0 mangling (.cargo/config.toml):
# a function's path (a generic one's with its arguments) and a hash of its crate's
# metadata (version, features, the compiler), with no hash of the function's type as the
# legacy names had, so they stay valid when a function's code or signature changes; a
# renamed or new function, a dependency update or a new compiler needs the file rewritten.
# Names the binary no longer defines are skipped by the linker; functions not listed follow
# in the default order. The script prints how many of the names in the file as it was the binary defines:
# how stale it had become.
#
#   benches/load/symbol_order.sh            # build, profile, write symbol-order.txt
#   GUARD=/path/to/hti-guard BASE_PORT=18300 KEEP=1 benches/load/symbol_order.sh
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KEEP=${KEEP:-0}
CORES=1
BASE_PORT=${BASE_PORT:-18300}
OUT=${OUT:-$ROOT/symbol-order.txt}
# shellcheck source=benches/load/common.sh
. "$ROOT/benches/load/common.sh"

need_tools nginx valgrind curl python3
if [ -n "${GUARD:-}" ]; then
  log "hti-guard: $GUARD (given)"
else
  build_guard
fi
start_work symbol-order

P_UP=$((BASE_PORT + 1))
P_GUARD=$((BASE_PORT + 2))
P_ADMIN=$((BASE_PORT + 3))
ISS="https://portal.bench.example"
AUD="https://module.bench.example"

start_upstream "$P_UP"
guard_conf "$P_GUARD" "$P_ADMIN" RS512 "workers = 2" >"$WORK/guard.toml"

{
  echo "[session]"
  echo "enabled = true"
  echo "secure = false"
  echo "secret = \"$(head -c 32 /dev/urandom | base64)\""
} >"$WORK/guard-session.toml.part"
guard_conf "$P_GUARD" "$P_ADMIN" RS512 "workers = 2" >"$WORK/guard-session.toml"
cat "$WORK/guard-session.toml.part" >>"$WORK/guard-session.toml"

mint() {
  "$GUARD" mint --key "$WORK/keys/bench.key.pem" --alg RS512 --kid bench --iss "$ISS" \
    --aud "$AUD" --sub Patient/bench --resource Task/bench --count "$1"
}
BASE="http://127.0.0.1:$P_GUARD"
# expect STATUSES CURL-ARGS...: one request; fails unless its status is one of STATUSES.
expect() {
  local want=$1 got
  shift
  got=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  if ! [[ "$got" =~ ^($want)$ ]]; then
    log "curl $* answered $got, not $want"
    return 1
  fi
}
# profile NAME CONFIG LAUNCHED: the guard under callgrind through start-up, launches
# (answered LAUNCHED when accepted), passthrough requests and its stop.
profile() {
  local name=$1 config=$2 launched=$3 pid token tokens
  log "profiling the guard with $name (callgrind, a few seconds)"
  valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$WORK/callgrind.$name" \
    "$GUARD" serve --config "$config" >"$WORK/guard.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "$P_ADMIN"
  read -r -a tokens <<<"$(mint 20 | tr '\n' ' ')"
  expect "$launched" -c "$WORK/jar.$name" -d "token=${tokens[0]}" "$BASE/launch"
  expect 401 -d "token=${tokens[0]}" "$BASE/launch"
  expect 401 -d "token=a.b.c" "$BASE/launch"
  expect 200 -b "$WORK/jar.$name" "$BASE/app?x=1"
  for token in "${tokens[@]:1}"; do
    expect "$launched" -d "token=$token" "$BASE/launch"
  done
  expect 200 -b "$WORK/jar.$name" --http2-prior-knowledge "$BASE/"
  python3 - "$P_GUARD" "$WORK/jar.$name" <<'PY'
import http.client, http.cookiejar, sys
jar = http.cookiejar.MozillaCookieJar(sys.argv[2]); jar.load(ignore_discard=True)
cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
for i in range(3000):
    headers = {"Cookie": cookie} if cookie else {}
    if i % 2:
        headers["X-Request-Id"] = f"r{i}"
    c.request("GET", f"/page/{i % 7}?q={i}", headers=headers)
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}")
PY
  if [ "$name" = sessions ]; then
    expect 401 -H "Accept: text/html" "$BASE/app"
    expect "200|303" -b "$WORK/jar.$name" "$BASE/hti-guard/logout"
  fi
  expect 200 "http://127.0.0.1:$P_ADMIN/metrics"
  expect 200 "http://127.0.0.1:$P_ADMIN/healthz"
  expect 200 "http://127.0.0.1:$P_ADMIN/readyz"
  kill -TERM "$pid"
  wait "$pid" || true
}
profile forwarded "$WORK/guard.toml" 200
profile sessions "$WORK/guard-session.toml" 303

python3 - "$GUARD" "$OUT" "$WORK"/callgrind.* <<'EOF'
import collections, re, subprocess, sys

binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
cost = collections.Counter()  # self instructions by symbol, summed over the profiles
for profile in profiles:
    names, current, after_call = {}, None, False  # callgrind's name compression is per file
    with open(profile) as f:
        for line in f:
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.+))?$", line.rstrip("\n"))
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3)
                if m.group(1) == "fn":
                    current = names[m.group(2)]
                    cost[current] += 0
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the call's, inclusive
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if not after_call and current is not None and len(parts) > 1:
                    cost[current] += int(parts[1])
                after_call = False
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
defined = {p[2] for p in (line.split() for line in nm.stdout.splitlines())
           if len(p) == 3 and p[1] in "tTwW"}
ran = sorted((name for name in cost if name in defined), key=lambda name: (-cost[name], name))
try:
    with open(out) as f:
        before = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    print(f"the file as it was: {sum(n in defined for n in before)} of its {len(before)} names "
          "are this binary's")
except FileNotFoundError:
    pass
with open(out, "w") as f:
    f.write("# The linker's order for the guard's functions, most executed first: written by\n")
    f.write("# benches/load/symbol_order.sh (see there), read by build.rs.\n")
    f.writelines(name + "\n" for name in ran)
print(f"{len(ran)} of the {len(cost)} functions that ran are the binary's; wrote {out}")
EOF
