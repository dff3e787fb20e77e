# shellcheck shell=bash
# shellcheck disable=SC2034 # GUARD, WORK and PIDS are set here for the sourcing script
# What the load scripts (run.sh, memory.sh, soak.sh) share: tools, the release build, the
# work directory and its clean-up, waiting for ports, the guard's /metrics and /proc, and the
# nginx upstream. Sourced after the script has set ROOT, KEEP and CORES.

log() { printf '== %s\n' "$*" >&2; }

# need_tools COMMAND...: install from Debian packages (named like the commands) whatever is
# missing, with sudo when not root; /usr/sbin joins PATH for nginx and haproxy.
need_tools() {
  local need=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
  done
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    log "installing ${need[*]} from Debian packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

need_pyjwt() {
  if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
    log "installing PyJWT and cryptography (pip, user site)"
    python3 -m pip install --quiet --user pyjwt cryptography \
      || python3 -m pip install --quiet --user --break-system-packages pyjwt cryptography
  fi
}

# build_guard: `cargo build --release`; sets GUARD.
build_guard() {
  log "building hti-guard (release)"
  (cd "$ROOT" && cargo build --release --quiet)
  GUARD="$ROOT/target/release/hti-guard"
}

# start_work NAME: a work directory /tmp/hti-guard-NAME.XXXXXX (WORK), and PIDS, every
# process in which is stopped on exit; the directory goes too unless KEEP=1. On failure the
# end of $WORK/guard.log is shown.
start_work() {
  WORK=$(mktemp -d "/tmp/hti-guard-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
cleanup() {
  local rc=$? pid
  if [ "$rc" != 0 ] && [ -s "$WORK/guard.log" ]; then
    log "failed ($rc); the end of the guard's log:"; tail -n 20 "$WORK/guard.log" >&2
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

wait_port() { # port [path]: until an HTTP answer, at most 10 s
  local _
  for _ in $(seq 100); do
    if python3 - "$1" "${2:-/}" <<'EOF' 2>/dev/null; then return 0; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", sys.argv[2]); c.getresponse()
EOF
    sleep 0.1
  done
  log "nothing answers on port $1"; return 1
}

wait_ready() { # admin port: until /readyz answers 200 {"status":"ready"}, at most 30 s
  local _
  for _ in $(seq 300); do
    if python3 - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", "/readyz"); r = c.getresponse()
sys.exit(0 if r.status == 200 and b'"ready"' in r.read() else 1)
EOF
    sleep 0.1
  done
  log "the guard on admin port $1 did not become ready"; return 1
}

metrics() { # admin port: the guard's /metrics text
  python3 - "$1" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/metrics"); sys.stdout.write(c.getresponse().read().decode())
EOF
}

# sum_of NAME [LABEL-FILTER] < metrics: the sum of every sample of NAME whose labels contain
# the filter, e.g. sum_of hti_guard_launches_total 'result="accepted"'
sum_of() {
  awk -v name="$1" -v filter="${2:-}" '
    index($0, name) == 1 && (substr($0, length(name) + 1, 1) == "{" || substr($0, length(name) + 1, 1) == " ") \
      && index($0, filter) { s += $NF } END { printf "%d\n", s }'
}

status_kib() { # pid field (VmRSS, VmHWM, Threads)
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

# issuer_keys ALG: a key pair "bench" in $WORK/keys, its JWKS in $WORK/www for the upstream
# to serve, and $WORK/tmp for nginx.
issuer_keys() {
  mkdir -p "$WORK/keys" "$WORK/www" "$WORK/tmp"
  chmod 755 "$WORK" # nginx workers run as another user when started as root
  "$GUARD" keygen --alg "$1" --kid bench --out "$WORK/keys" >/dev/null
  cp "$WORK/keys/bench.jwks.json" "$WORK/www/jwks.json"
}

# nginx_common NAME: the start of an nginx configuration (one worker per core, in the
# foreground, files under $WORK named after NAME), up to inside its http block.
nginx_common() {
  cat <<EOF
worker_processes $CORES;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
daemon off;
master_process on;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  client_body_temp_path $WORK/tmp/$1-body;
  proxy_temp_path $WORK/tmp/$1-proxy;
  fastcgi_temp_path $WORK/tmp/$1-fcgi;
  uwsgi_temp_path $WORK/tmp/$1-uwsgi;
  scgi_temp_path $WORK/tmp/$1-scgi;
EOF
}

# upstream_conf PORT: the upstream's whole nginx configuration: a 28-byte body to any
# method, and the issuer's JWKS from $WORK/www/jwks.json.
upstream_conf() {
  nginx_common upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$1;
    default_type text/plain;
    location = /jwks.json { default_type application/json; alias $WORK/www/jwks.json; }
    location / { return 200 "hello from the upstream app\n"; }
  }
}
EOF
}

# guard_conf PORT ADMIN_PORT ALG [TOP] [LAUNCH]: hti-guard's configuration up to and including
# its one issuer ($ISS, keys at the upstream's /jwks.json, audience $AUD), with TOP's lines among
# the top-level keys and LAUNCH's in [launch]; a caller appends any further sections.
guard_conf() {
  cat <<EOF
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
upstream = "http://127.0.0.1:$P_UP"
${4:-}
[launch]
audience = "$AUD"
${5:-}
[[issuers]]
iss = "$ISS"
jwks_url = "http://127.0.0.1:$P_UP/jwks.json"
algorithms = ["$3"]
EOF
}

# proxy_conf PORT UPSTREAM_PORT: the whole configuration of nginx as a reverse proxy on PORT
# to the upstream, with a keepalive pool (HTTP/1.1), files under $WORK named "proxy".
proxy_conf() {
  nginx_common proxy
  cat <<EOF
  upstream app { server 127.0.0.1:$2; keepalive 256; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

# start_upstream PORT: the bench issuer's RS512 keys (issuer_keys) and the upstream nginx
# (upstream_conf: a static body and the issuer's /jwks.json) on PORT, running and answering.
start_upstream() {
  issuer_keys RS512
  upstream_conf "$1" >"$WORK/upstream.conf"
  nginx -p "$WORK" -e "$WORK/upstream.err" -c "$WORK/upstream.conf" &
  PIDS+=($!)
  wait_port "$1" /jwks.json
}
