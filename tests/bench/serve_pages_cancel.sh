#!/usr/bin/env bash
# What a caller of `squall serve` waits for: a page of a large result, and a
# cancel of a job whose task computes without ever awaiting. Runs a release
# server (local backend, 2 executors) on loopback over TPC-H SF 1 and prints
# medians of 7 requests per page and of 5 cancels, and the server's CPU after.
#
#   cargo build --release
#   tests/bench/serve_pages_cancel.sh [DATA_ROOT]   # default data/; SF 1 made if missing
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
B="${SQUALL:-$TARGET/release/squall}"
DATA="$(cd "${1:-$ROOT/data}" 2>/dev/null && pwd || { mkdir -p "${1:-$ROOT/data}"; cd "${1:-$ROOT/data}" && pwd; })"
[[ -x "$B" ]] || { echo "$B missing: cargo build --release" >&2; exit 1; }
[[ -d "$DATA/tpch-sf1" ]] || "$B" tpch --scale 1 --parts 8 --out "$DATA/tpch-sf1" >&2
W="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$B" serve --data-dir "$W/server" --token t --allow "$DATA" --listen "127.0.0.1:$PORT" \
    --executors 2 > "$W/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$W"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
H="Authorization: Bearer t"; S="http://127.0.0.1:$PORT"
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
submit() { curl -s -H "$H" -d "$1" "$S/v1/jobs" | field id; }
wait_end() {
    while :; do
        st=$(curl -s -H "$H" "$S/v1/jobs/$1" | field state)
        [[ $st == queued || $st == running ]] || { echo "$st"; return; }
        sleep 0.2
    done
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# One result file: ORDER BY gathers the result into one task.
id=$(submit "{\"sql\": \"SELECT * FROM lineitem WHERE l_orderkey % 4 = 0 ORDER BY l_orderkey, l_linenumber\",
              \"tables\": [{\"name\": \"lineitem\", \"url\": \"$DATA/tpch-sf1/lineitem/\"}]}")
echo "result job: $(wait_end "$id")"
file=$(find "$W/server/work/results/$id" -name '*.parquet')
echo "result file: $(stat -c %s "$file") bytes, $(curl -s -H "$H" "$S/v1/jobs/$id/result?limit=1" | field total) rows"
total=$(curl -s -H "$H" "$S/v1/jobs/$id/result?limit=1" | field total)
for offset in 0 $((total / 2)) $((total - 1)); do
    for limit in 1 10000; do
        t=$(for _ in 1 2 3 4 5 6 7; do
            curl -s -o /dev/null -w '%{time_total}\n' -H "$H" "$S/v1/jobs/$id/result?offset=$offset&limit=$limit"
        done | median)
        echo "page offset=$offset limit=$limit: median $t s"
    done
done

# A cross join feeding a count never awaits; cancelled 2 s in.
t=$(for _ in 1 2 3 4 5; do
    id=$(submit '{"sql": "SELECT count(*) AS n FROM generate_series(1, 100000) a, generate_series(1, 1000000000) b"}')
    sleep 2
    curl -s -o /dev/null -w '%{time_total}\n' -X DELETE -H "$H" "$S/v1/jobs/$id"
done | median)
echo "cancel of a running cross join: median $t s"
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$SERVER/stat"; }
before=$(cpu); sleep 2; after=$(cpu)
echo "server CPU in the 2 s after the last cancel: $(echo "$after - $before" | bc) s"

# SIGTERM while that job runs: the server stops its tasks and exits.
submit '{"sql": "SELECT count(*) AS n FROM generate_series(1, 100000) a, generate_series(1, 1000000000) b"}' >/dev/null
sleep 2
started=$(date +%s.%N)
kill -TERM "$SERVER"
wait "$SERVER" || true
echo "SIGTERM to exit with the job running: $(echo "$(date +%s.%N) - $started" | bc) s"
