#!/usr/bin/env bash
# Fuzzes `squall serve` from its own /openapi.json with schemathesis: a real
# server (local backend, fresh data dir, one token) on a free loopback port,
# a bounded number of examples per operation, a fixed seed so CI is repeatable
# (SQUALL_ST_SEED to explore others, SQUALL_ST_EXAMPLES for more examples).
#
# Checks: no 5xx; every status, content type, header and body as documented;
# schema-violating requests refused; auth not ignored. Not checked: that every
# schema-valid request is accepted (`positive_data_acceptance`) — random SQL
# and table URLs fit the schema yet are rightly refused with 400.
#
# Needs the debug `squall` binary (cargo build -p squall) and
# schemathesis (tests/emulators/install.sh schemathesis).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ST="$CACHE/tools/schemathesis-4.32.5/bin/st"
SQUALL="$TARGET/debug/squall"
[[ -x "$ST" ]] || { echo "schemathesis missing: run tests/emulators/install.sh schemathesis" >&2; exit 1; }
[[ -x "$SQUALL" ]] || { echo "$SQUALL missing: run cargo build -p squall" >&2; exit 1; }

WORK="$(mktemp -d)"
# The server and schemathesis run inside WORK: fuzzed jobs name relative
# output paths, and schemathesis keeps a cache in its working directory;
# neither may land in the checkout.
cd "$WORK"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="schemathesis-$RANDOM$RANDOM"
# Callers may use $WORK/allowed: fuzzed URLs elsewhere are refused with 403.
mkdir -p "$WORK/allowed"
printf 'a,b\n1,2\n' > "$WORK/allowed/t.csv"
SQUALL_LOG=warn "$SQUALL" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
    --token "$TOKEN" --executors 2 --allow "$WORK/allowed" > "$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
done

status=0
"$ST" run "http://127.0.0.1:$PORT/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "${SQUALL_ST_EXAMPLES:-30}" \
    --seed "${SQUALL_ST_SEED:-20261126}" \
    --generation-database none \
    --request-timeout 30 \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,missing_required_header,unsupported_method,ignored_auth \
    --no-color || status=$?
if grep -q "panicked" "$WORK/server.log"; then
    echo "squall serve panicked during the run:" >&2
    grep -A5 "panicked" "$WORK/server.log" >&2
    status=1
fi
exit "$status"
