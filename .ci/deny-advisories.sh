#!/usr/bin/env bash
# `cargo deny check advisories` against the committed snapshot of the RustSec advisory
# database (.ci/advisory-db, see SNAPSHOT there), with no network: .ci/run runs it, and so can
# anyone. Extra arguments go to cargo-deny before `check` (e.g. --manifest-path to check
# another crate against the same snapshot).
#
# cargo-deny 0.20 opens a database at DB_PATH/<name>-<hash of its URL>, reads every
# crates/**/*.md there, and with --offline takes the modification time of .git/FETCH_HEAD as
# the database's age (refusing one older than deny.toml's maximum-db-staleness). A git clone
# of this repository cannot hold a nested .git, so the snapshot is staged in a temporary
# directory (crates/ a symlink to the snapshot's, a copy costs seconds on a busy disk) with a
# FETCH_HEAD dated to the snapshot's commit: the staleness limit counts from the advisories'
# real date, not from when CI ran.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SNAP=.ci/advisory-db
# The directory name cargo-deny 0.20 derives from the default db-url,
# https://github.com/RustSec/advisory-db (`advisory-db-` + xxhash64 of the lowercased URL).
DB_NAME=advisory-db-3157b0e258782691

manifest() { sed -n "s/^$1 = \"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}\$/\\1/p" "$SNAP/SNAPSHOT"; }
COMMIT="$(manifest commit)"
COMMIT_DATE="$(manifest commit_date)"
if [[ -z "$COMMIT" || -z "$COMMIT_DATE" || ! -d "$SNAP/crates" ]]; then
    echo "$SNAP is incomplete (no SNAPSHOT commit/commit_date or no crates/): run .ci/advisory-db-refresh.sh" >&2
    exit 1
fi
AGE_DAYS=$((($(date -u +%s) - $(date -u -d "$COMMIT_DATE" +%s)) / 86400))
echo "advisory database: rustsec/advisory-db $COMMIT of $COMMIT_DATE ($AGE_DAYS days old, $(manifest advisories) advisories)"
if ((AGE_DAYS > 90)); then
    echo "warning: the advisory snapshot is $AGE_DAYS days old; advisories published since $COMMIT_DATE are not checked. Refresh it: .ci/advisory-db-refresh.sh (needs github.com)"
fi

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/$DB_NAME/.git"
ln -s "$PWD/$SNAP/crates" "$STAGE/$DB_NAME/crates"
touch -d "$COMMIT_DATE" "$STAGE/$DB_NAME/.git/FETCH_HEAD"
# deny.toml as it is, pointed at the staged database.
sed "s#^\[advisories\]\$#[advisories]\ndb-path = \"$STAGE\"#" deny.toml > "$STAGE/deny.toml"
grep -q "^db-path = \"$STAGE\"" "$STAGE/deny.toml" || {
    echo "deny.toml has no [advisories] table" >&2
    exit 1
}

cargo deny --locked --offline --config "$STAGE/deny.toml" "$@" check --hide-inclusion-graph advisories
