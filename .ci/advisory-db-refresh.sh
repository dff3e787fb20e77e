#!/usr/bin/env bash
# Refreshes .ci/advisory-db, the snapshot of the RustSec advisory database that
# `.ci/deny-advisories.sh` (and so .ci/run) checks Cargo.lock against without network.
#
#   .ci/advisory-db-refresh.sh [SOURCE [REV]]
#
# SOURCE is anything `git clone` takes (default https://github.com/rustsec/advisory-db.git)
# or a local git directory, bare or not (e.g. a mirror brought in by other means); REV is the
# revision to take (default HEAD, i.e. the source's main branch). The whole `crates/` tree is
# copied (about 1200 advisories, 2.6 MB: every crate is covered, not only today's Cargo.lock),
# with the database's license (CC0-1.0) and a manifest (SNAPSHOT) naming the commit and its
# date. Commit the result; the check is exactly as fresh as that date.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SOURCE="${1:-https://github.com/rustsec/advisory-db.git}"
REV="${2:-HEAD}"
DEST=.ci/advisory-db

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [[ -d "$SOURCE" ]] && GIT_DIR_PATH="$(git -C "$SOURCE" rev-parse --absolute-git-dir 2>/dev/null)"; then
    :
else
    git clone -q --bare --depth 1 --no-tags "$SOURCE" "$TMP/src.git"
    GIT_DIR_PATH="$TMP/src.git"
fi
git_src() { git --git-dir="$GIT_DIR_PATH" "$@"; }

COMMIT="$(git_src rev-parse --verify "$REV^{commit}")"
COMMIT_DATE="$(git_src show -s --format=%cI "$COMMIT")"

mkdir "$TMP/out"
git_src archive "$COMMIT" crates LICENSE.txt | tar -x -C "$TMP/out"
COUNT="$(find "$TMP/out/crates" -type f -name '*.md' | wc -l)"
if ((COUNT == 0)); then
    echo "no advisories under crates/ at $COMMIT: not an advisory-db?" >&2
    exit 1
fi

cat > "$TMP/out/SNAPSHOT" <<EOF
# The RustSec advisory database (https://github.com/rustsec/advisory-db) as of one commit:
# its crates/ tree and license, copied by .ci/advisory-db-refresh.sh. Do not edit by hand.
source = "https://github.com/rustsec/advisory-db"
fetched_from = "$SOURCE"
commit = "$COMMIT"
commit_date = "$COMMIT_DATE"
refreshed = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
advisories = $COUNT
EOF

rm -rf "$DEST"
mv "$TMP/out" "$DEST"
echo "$DEST: $COUNT advisories, commit $COMMIT of $COMMIT_DATE"
git status --short --untracked-files=no -- "$DEST" | sed -n '1,20p'
