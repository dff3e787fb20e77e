#!/usr/bin/env bash
# Checks the Dockerfile without Docker (no Docker engine runs on the project's machines).
#
#   docker/verify-build-steps.sh [--ref GITREF] [SCRATCH_DIR]
#
# SCRATCH_DIR defaults to /tmp/dockercheck and is wiped first. The context is the working tree
# as it is, or with --ref the files of that commit (e.g. --ref HEAD: what a CI checkout would
# build); the Dockerfile and .dockerignore always come from the working tree.
#
# 1. Builds the context the way `docker build .` would: the repository's files filtered by
#    .dockerignore (patterns in order, the last match wins, `!` re-includes, a pattern that
#    matches a directory covers everything under it).
# 2. Replays the build stage the runtime stage copies from, step by step as the Dockerfile
#    says: WORKDIR, COPY from the context, ENV, and RUN with /bin/sh -c in the emulated working
#    directory, in a clean environment with an empty CARGO_HOME (so `cargo build --locked`
#    fetches every crate from crates.io as in a fresh rust image). Container paths map to
#    SCRATCH_DIR/fs/<path>. An instruction the script does not know fails the run.
# 3. Checks the binary the runtime stage copies against the runtime image
#    (gcr.io/distroless/cc-debian12, glibc 2.36 + libgcc_s): ELF x86-64 with the usual glibc
#    loader, every NEEDED library among those the image ships, no symbol newer than
#    GLIBC_2.36, nothing unresolved (ldd), and it runs: --version, `check --offline` with the
#    example config via $HTI_GUARD_CONFIG, exit 2 when that file is missing.
# 4. Checks the runtime stage's settings: non-root user 65532, ports 8080 and 9090,
#    HTI_GUARD_CONFIG, ENTRYPOINT on the copied binary, CMD ["serve"].
#
# Needs: the Rust 1.95 toolchain (rustup), gcc, python3, readelf/objdump (binutils), network
# access to crates.io. Takes 4 to 11 minutes on 2 cores (a cold release build; see README).
# The RUN steps use this machine's tools, not the rust image's; the slim image has gcc and
# libc6-dev, and neither has cmake, perl or make (aws-lc-sys, the only C, needs none).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF=""
if [[ "${1:-}" == "--ref" ]]; then
    REF="${2:?--ref needs a git revision}"
    shift 2
fi
SCRATCH="${1:-/tmp/dockercheck}"
# glibc of Debian 12, which both rust:1.95-bookworm and distroless/cc-debian12 are built on.
RUNTIME_GLIBC="2.36"
# Shared objects distroless/cc-debian12 provides that a Rust binary may link: glibc's
# (libc, libm, libpthread, libdl, librt, the loader) and libgcc_s.
RUNTIME_LIBS="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

case "$SCRATCH" in
/ | "$REPO" | "$REPO"/*) fail "refusing scratch directory $SCRATCH" ;;
esac

step "toolchain"
rustc --version
cargo --version
rustc --version | grep -q '^rustc 1\.95\.' || fail "the Dockerfile builds with rust:1.95; this rustc differs"
if ! grep -q '^VERSION_ID="12"' /etc/os-release 2>/dev/null; then
    echo "note: not Debian 12; the GLIBC_${RUNTIME_GLIBC} check below still tells whether the binary fits the runtime image"
fi
RUSTUP_HOME_DIR="${RUSTUP_HOME:-$HOME/.rustup}"
TOOLCHAIN_BIN="$(dirname "$(command -v cargo)")"

step "context and build stage from $REPO/Dockerfile in $SCRATCH"
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/context" "$SCRATCH/fs" "$SCRATCH/home" "$SCRATCH/cargo-home"
# The tree the context is taken from.
SOURCE="$REPO"
if [[ -n "$REF" ]]; then
    SOURCE="$SCRATCH/tree"
    mkdir -p "$SOURCE"
    git -C "$REPO" archive --format=tar "$REF" | tar -x -C "$SOURCE"
    cp "$REPO/Dockerfile" "$SOURCE/Dockerfile"
    if [[ -f "$REPO/.dockerignore" ]]; then cp "$REPO/.dockerignore" "$SOURCE/.dockerignore"; fi
    echo "context from $REF ($(git -C "$REPO" rev-parse --short "$REF")), Dockerfile and .dockerignore from the working tree"
fi

# Prints the runtime facts as KEY=VALUE lines for the shell checks below.
python3 - "$SOURCE" "$SCRATCH" "$RUSTUP_HOME_DIR" "$TOOLCHAIN_BIN" >"$SCRATCH/runtime.env" <<'PY'
import json, os, re, shlex, shutil, subprocess, sys

repo, scratch, rustup_home, toolchain_bin = sys.argv[1:5]
context = os.path.join(scratch, "context")
fs = os.path.join(scratch, "fs")

def log(*parts):
    print(*parts, file=sys.stderr, flush=True)

def die(message):
    log(f"FAIL: {message}")
    sys.exit(1)

# --- the Dockerfile: comments and blank lines dropped, continuation lines joined ----------
instructions, pending = [], ""
with open(os.path.join(repo, "Dockerfile")) as f:
    for raw in f:
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))

stages, current = [], None
for keyword, rest in instructions:
    if keyword == "FROM":
        words = rest.split()
        current = {"image": words[0], "name": words[2] if len(words) == 3 and words[1].lower() == "as" else None, "steps": []}
        stages.append(current)
    elif current is None:
        die(f"{keyword} before FROM")
    else:
        current["steps"].append((keyword, rest))
if len(stages) < 2:
    die("expected a build stage and a runtime stage")
runtime = stages[-1]

# --- the runtime stage: what it copies from which stage, and its settings -----------------
copy_from, facts = None, {"RUNTIME_IMAGE": runtime["image"]}
for keyword, rest in runtime["steps"]:
    if keyword == "COPY":
        words = shlex.split(rest)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        source = next((w.split("=", 1)[1] for w in flags if w.startswith("--from=")), None)
        if source is None:
            die("the runtime stage copies from the context; the script only knows COPY --from")
        if copy_from is not None:
            die("the script expects one COPY --from in the runtime stage")
        copy_from = (source, paths[0], paths[1])
    elif keyword == "ENV":
        name, _, value = rest.partition("=")
        facts[f"ENV_{name.strip()}"] = value.strip()
    elif keyword in ("USER", "EXPOSE", "CMD", "ENTRYPOINT"):
        facts[keyword] = rest
    else:
        die(f"runtime stage: unexpected instruction {keyword}")
if copy_from is None:
    die("the runtime stage copies nothing from a build stage")
build = next((s for s in stages[:-1] if s["name"] == copy_from[0]), None)
if build is None:
    die(f"no stage named {copy_from[0]}")
facts["BUILD_IMAGE"] = build["image"]

# --- the context, as .dockerignore leaves it ------------------------------------------------
def compile_pattern(pattern):
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.compile(regex + r"\Z")

rules = []
ignore = os.path.join(repo, ".dockerignore")
if os.path.exists(ignore):
    for line in open(ignore):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().strip("/"))
        rules.append((negate, pattern, compile_pattern(pattern)))

def excluded(rel):
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, _, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result

def may_reinclude_under(rel):
    return any(negate and (pattern + "/").startswith(rel + "/") or negate and "*" in pattern
               for negate, pattern, _ in rules)

copied = 0
for root, dirs, files in os.walk(repo):
    rel_root = os.path.relpath(root, repo)
    rel_root = "" if rel_root == "." else rel_root
    keep = []
    for d in dirs:
        rel = f"{rel_root}/{d}" if rel_root else d
        if excluded(rel) and not may_reinclude_under(rel):
            continue
        keep.append(d)
    dirs[:] = keep
    for name in files:
        rel = f"{rel_root}/{name}" if rel_root else name
        if excluded(rel):
            continue
        target = os.path.join(context, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, name), target)
        copied += 1
log(f"context: {copied} files: {' '.join(sorted(os.listdir(context)))}")

# --- the build stage, replayed ----------------------------------------------------------------
def host(path, workdir):
    path = path if path.startswith("/") else os.path.join(workdir, path)
    return os.path.join(fs, os.path.normpath(path).lstrip("/"))

env = {
    "HOME": os.path.join(scratch, "home"),
    "PATH": f"{toolchain_bin}:/usr/local/bin:/usr/bin:/bin",
    "RUSTUP_HOME": rustup_home,
    "CARGO_HOME": os.path.join(scratch, "cargo-home"),
    "LANG": "C.UTF-8",
}
for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
    if name in os.environ:
        env[name] = os.environ[name]
workdir = "/"
for keyword, rest in build["steps"]:
    log(f"--- {keyword} {rest}")
    if keyword == "WORKDIR":
        workdir = rest if rest.startswith("/") else os.path.join(workdir, rest)
        os.makedirs(host(workdir, "/"), exist_ok=True)
    elif keyword == "COPY":
        words = shlex.split(rest)
        if any(w.startswith("--") for w in words):
            die(f"build stage: COPY flags are not replayed: {rest}")
        *sources, dest = words
        dest_host = host(dest, workdir)
        for source in sources:
            source_host = os.path.join(context, source)
            if not os.path.exists(source_host):
                die(f"COPY {source}: not in the build context (see .dockerignore)")
            if os.path.isdir(source_host):
                shutil.copytree(source_host, dest_host, dirs_exist_ok=True)  # the contents
            else:
                into = dest.endswith("/") or len(sources) > 1 or os.path.isdir(dest_host)
                target = os.path.join(dest_host, os.path.basename(source)) if into else dest_host
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(source_host, target)
    elif keyword == "ENV":
        name, _, value = rest.partition("=")
        env[name.strip()] = value.strip()
    elif keyword == "RUN":
        if rest.startswith("["):
            die("build stage: exec-form RUN is not replayed")
        for match in re.finditer(r"(?<![\w.])/[\w./-]+", rest):
            if not match.group(0).startswith("/dev/"):
                die(f"RUN uses an absolute path ({match.group(0)}), which cannot be replayed here")
        done = subprocess.run(["/bin/sh", "-c", rest], cwd=host(workdir, "/"), env=env, stdout=sys.stderr)
        if done.returncode != 0:
            die(f"RUN exited {done.returncode}: {rest}")
    else:
        die(f"build stage: the script does not replay {keyword}; extend it")

binary = host(copy_from[1], "/")
if not os.path.isfile(binary):
    die(f"the runtime stage copies {copy_from[1]}, which the build stage did not produce")
facts["BINARY"] = binary
facts["BINARY_DEST"] = copy_from[2]
for key, value in facts.items():
    print(f"DF_{key}={shlex.quote(value)}")
PY

# shellcheck disable=SC1091
source "$SCRATCH/runtime.env"
echo "build stage: $DF_BUILD_IMAGE -> $DF_BINARY"
echo "runtime stage: $DF_RUNTIME_IMAGE, binary at $DF_BINARY_DEST"

step "the binary against $DF_RUNTIME_IMAGE"
case "$DF_RUNTIME_IMAGE" in
gcr.io/distroless/cc-debian12*) ;;
*) fail "the library checks here are for gcr.io/distroless/cc-debian12, not $DF_RUNTIME_IMAGE" ;;
esac
case "$DF_BUILD_IMAGE" in
rust:1.95-bookworm | rust:1.95.[0-9]*-bookworm | rust:1.95-slim-bookworm | rust:1.95.[0-9]*-slim-bookworm) ;;
*) fail "the build stage image $DF_BUILD_IMAGE is not rust:1.95 on bookworm" ;;
esac
readelf -h "$DF_BINARY" | grep -q 'Class:.*ELF64' || fail "not a 64-bit ELF file"
readelf -h "$DF_BINARY" | grep -q 'Machine:.*X86-64' || fail "not x86-64"
interpreter="$(readelf -l "$DF_BINARY" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
echo "interpreter: $interpreter"
[[ "$interpreter" == /lib64/ld-linux-x86-64.so.2 ]] || fail "unexpected program interpreter $interpreter"
needed="$(readelf -d "$DF_BINARY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort)"
echo "NEEDED: $(echo "$needed" | tr '\n' ' ')"
for lib in $needed; do
    [[ " $RUNTIME_LIBS " == *" $lib "* ]] || fail "$lib is not in the runtime image"
done
ldd_out="$(ldd "$DF_BINARY")"
echo "$ldd_out"
if grep -q 'not found' <<<"$ldd_out"; then fail "unresolved libraries"; fi
newest="$(objdump -T "$DF_BINARY" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)"
echo "newest glibc symbol version: GLIBC_$newest (runtime image: $RUNTIME_GLIBC)"
[[ "$(printf '%s\n%s\n' "$newest" "$RUNTIME_GLIBC" | sort -V | tail -n 1)" == "$RUNTIME_GLIBC" ]] ||
    fail "needs GLIBC_$newest, newer than the runtime image's $RUNTIME_GLIBC"

step "the binary runs"
run_clean() { env -i PATH=/usr/bin:/bin "$@"; }
run_clean "$DF_BINARY" --version
config="$SCRATCH/config.toml"
cp "$SOURCE/config.toml" "$config"
run_clean HTI_GUARD_CONFIG="$config" "$DF_BINARY" check --offline >"$SCRATCH/check.out" 2>&1 ||
    { cat "$SCRATCH/check.out"; fail "check --offline with HTI_GUARD_CONFIG=$config"; }
echo "check --offline with HTI_GUARD_CONFIG=<example config.toml>: exit 0"
set +e
run_clean HTI_GUARD_CONFIG="$SCRATCH/missing/config.toml" "$DF_BINARY" serve >"$SCRATCH/missing.out" 2>&1
code=$?
set -e
echo "serve with no file at HTI_GUARD_CONFIG: exit $code: $(head -c 300 "$SCRATCH/missing.out")"
[[ $code -eq 2 ]] || fail "expected exit 2 (configuration error) without a config file"

step "runtime stage settings"
[[ "${DF_USER:-}" == "65532:65532" || "${DF_USER:-}" == "65532" || "${DF_USER:-}" == "nonroot" || "${DF_USER:-}" == "nonroot:nonroot" ]] ||
    fail "USER is '${DF_USER:-}', expected 65532 (nonroot)"
[[ " ${DF_EXPOSE:-} " == *" 8080 "* && " ${DF_EXPOSE:-} " == *" 9090 "* ]] || fail "EXPOSE is '${DF_EXPOSE:-}'"
[[ "${DF_ENV_HTI_GUARD_CONFIG:-}" == /etc/hti-guard/config.toml ]] || fail "HTI_GUARD_CONFIG is '${DF_ENV_HTI_GUARD_CONFIG:-}'"
[[ "${DF_ENTRYPOINT:-}" == "[\"$DF_BINARY_DEST\"]" ]] || fail "ENTRYPOINT '${DF_ENTRYPOINT:-}' does not run $DF_BINARY_DEST"
[[ "${DF_CMD:-}" == '["serve"]' ]] || fail "CMD is '${DF_CMD:-}'"
echo "USER $DF_USER, EXPOSE $DF_EXPOSE, HTI_GUARD_CONFIG=$DF_ENV_HTI_GUARD_CONFIG, ENTRYPOINT $DF_ENTRYPOINT, CMD $DF_CMD"

step "ok: the Dockerfile's build steps work outside Docker and the binary fits $DF_RUNTIME_IMAGE"
