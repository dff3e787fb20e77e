#!/usr/bin/env bash
# Build every fuzz target and run each for SECONDS (default 20) from the committed seed
# corpus, one after another; any crash, panic, timeout or leak fails the script.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz passes
# (a nightly toolchain works too: FUZZ_TOOLCHAIN=nightly). No sanitizer (`-s none`): the
# crate forbids `unsafe`, and aws-lc's C is not instrumented by rustc's ASan anyway; debug
# assertions and overflow checks are on (`-a`). New inputs go to fuzz/work/<target>/
# (ignored by git); the seeds in fuzz/corpus/<target>/ are only read. A crash is saved in
# fuzz/artifacts/<target>/, the run's output in fuzz/work/<target>.log. FUZZ_JOBS=2 runs two
# targets at a time; extra libFuzzer flags: FUZZ_ARGS="-max_len=20000 ...".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS_EACH="${1:-20}"
shift || true
ALL=(jws jwe launch_form session_cookie jwks introspection token_response smart_configuration config_toml verify_claims)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")

dict_of() {
    case "$1" in
    jws | jwe | jwks | verify_claims) echo dict/jose.dict ;;
    launch_form) echo dict/form.dict ;;
    config_toml) echo dict/toml.dict ;;
    *) echo dict/json.dict ;;
    esac
}

# The config target reads HTI_GUARD_* like the guard does: run it without any.
for name in $(env | sed -n 's/^\(HTI_GUARD_[^=]*\)=.*/\1/ip'); do
    unset "$name"
done

if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    CARGO=(cargo "+$FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo)
fi
FLAGS=(-s none -a)

"${CARGO[@]}" fuzz build "${FLAGS[@]}"
mkdir -p work
# One target's run; its libFuzzer output goes to work/<target>.log.
run_one() {
    local target=$1
    mkdir -p "work/$target" "corpus/$target"
    # shellcheck disable=SC2086
    "${CARGO[@]}" fuzz run "${FLAGS[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -dict="$(dict_of "$target")" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"work/$target.log" 2>&1
}
# FUZZ_JOBS targets at a time (CI: 2, one per core).
JOBS="${FUZZ_JOBS:-1}"
declare -A pids=()
failed=()
reap() {
    local target=$1
    if wait "${pids[$target]}"; then
        printf '%-20s ok    %s\n' "$target" "$(grep -E '^Done [0-9]+ runs' "work/$target.log" | tail -1)"
    else
        failed+=("$target")
        printf '%-20s FAILED, the end of work/%s.log:\n' "$target" "$target"
        grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse)|# Uses: [0-9]+$' "work/$target.log" | tail -40
    fi
    unset "pids[$target]"
}
echo "running ${#TARGETS[@]} targets for ${SECONDS_EACH}s each, $JOBS at a time"
queue=("${TARGETS[@]}")
order=()
for target in "${queue[@]}"; do
    while ((${#pids[@]} >= JOBS)); do
        reap "${order[0]}"
        order=("${order[@]:1}")
    done
    run_one "$target" &
    pids[$target]=$!
    order+=("$target")
done
for target in "${order[@]}"; do
    reap "$target"
done
if ((${#failed[@]})); then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#TARGETS[@]} fuzz targets ran ${SECONDS_EACH}s each without a crash"
