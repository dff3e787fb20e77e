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
# fuzz/artifacts/<target>/. Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 ...".
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
failed=()
for target in "${TARGETS[@]}"; do
    mkdir -p "work/$target" "corpus/$target"
    echo "==> $target for ${SECONDS_EACH}s"
    # shellcheck disable=SC2086
    if ! "${CARGO[@]}" fuzz run "${FLAGS[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -dict="$(dict_of "$target")" -print_final_stats=1 ${FUZZ_ARGS:-} \
        2> >(grep -Ev '^#[0-9]+\s+(NEW|REDUCE|pulse)|# Uses: [0-9]+$' >&2); then
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#TARGETS[@]} fuzz targets ran ${SECONDS_EACH}s each without a crash"
