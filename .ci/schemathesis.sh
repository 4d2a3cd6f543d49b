#!/usr/bin/env bash
# schemathesis (PyPI) against a live server: it reads the OpenAPI document
# the server serves at /api/v1/openapi.json, generates requests from it
# (valid and invalid ones) and fails on any 5xx, undocumented status,
# content type or header, or body not matching the document's schemas.
#
# Runs the debug binary that `cargo test` built (no build of its own) on a
# free port with a temporary data folder, cheap password hashes and no
# register/login rate limit (its 429 is tested in tests/e2e/openapi.rs).
# Bounded: SCHEMATHESIS_EXAMPLES cases per operation (default 50) within
# SCHEMATHESIS_SECONDS (default 60), from SCHEMATHESIS_SEED (default 1).
# schemathesis goes into a virtualenv under target/; when it cannot be
# installed the run fails under CI=true and is skipped with a message
# otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/schemathesis-venv
binary=target/debug/confab
examples=${SCHEMATHESIS_EXAMPLES:-50}
seconds=${SCHEMATHESIS_SECONDS:-60}

skip_or_fail() {
    if [ "${CI:-}" = true ]; then
        echo "schemathesis: $1" >&2
        exit 1
    fi
    echo "schemathesis skipped: $1" >&2
    exit 0
}

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
    echo "installing schemathesis $version into $venv"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$version"; } \
        || skip_or_fail "cannot install schemathesis $version from PyPI"
fi
[ -x "$binary" ] || skip_or_fail "$binary is missing (run cargo test first)"

data=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT

# Only this run's settings: none of the caller's CONFAB_* leak in.
for name in $(env | sed -n 's/^\(CONFAB_[A-Z0-9_]*\)=.*/\1/p'); do unset "$name"; done
CONFAB_HOST=127.0.0.1 CONFAB_PORT=0 CONFAB_DATA_DIR="$data" CONFAB_LOG=warn,confab=info \
    CONFAB_ARGON2_MEMORY_KIB=64 CONFAB_ARGON2_ITERATIONS=1 \
    CONFAB_AUTH_RATE_PER_SEC=100000 CONFAB_AUTH_RATE_BURST=100000 \
    "$binary" >"$data/server.log" 2>&1 &
server=$!
port=
for _ in $(seq 300); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$data/server.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    cat "$data/server.log" >&2
    echo "schemathesis: the server did not start" >&2
    exit 1
fi
base="http://127.0.0.1:$port"
echo "server at $base"

# A token for the operations behind the bearer scheme, of a new user.
new_token() {
    curl -sS --fail -H 'Content-Type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"stapled-battery-9\"}" \
        "$base/api/v1/register" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}

# The operations that end the caller's device session (or account): run
# after the others, with a token of their own, so that the others are not
# answered 401 for the rest of the run.
ending=(--include-operation-id logout --include-operation-id logoutAll
    --include-operation-id deleteAccount --include-operation-id endSession)
keeping=(--exclude-operation-id logout --exclude-operation-id logoutAll
    --exclude-operation-id deleteAccount --exclude-operation-id endSession)

status=0
# From the temporary folder, where schemathesis leaves its cache.
root=$(pwd)
cd "$data"
for pass in keeping ending; do
    token=$(new_token "schemathesis-$pass")
    [ -n "$token" ] || { echo "schemathesis: cannot register" >&2; exit 1; }
    declare -n filter=$pass
    "$root/$venv/bin/schemathesis" --config-file "$root/.ci/schemathesis.toml" run "$base/api/v1/openapi.json" \
        "${filter[@]}" \
        --checks all \
        --header "Authorization: Bearer $token" \
        --max-examples "$examples" \
        --max-time "$seconds" \
        --request-timeout 10 \
        --workers 2 \
        --seed "${SCHEMATHESIS_SEED:-1}" \
        --generation-database none \
        --no-color || status=$?
    [ "$status" -eq 0 ] || break
done
if [ "$status" -ne 0 ]; then
    echo "== server log" >&2
    tail -n 50 "$data/server.log" >&2
    exit "$status"
fi
if grep -q 'panicked' "$data/server.log"; then
    grep -A5 'panicked' "$data/server.log" >&2
    echo "schemathesis: the server panicked" >&2
    exit 1
fi
