#!/usr/bin/env bash
# `squall serve` with backend auto against backend local, on the emulators:
# TPC-H SF 0.1 in LocalStack's S3, both servers with 2 in-process executors (the
# local one with its work folder on disk, as it is by default; auto's in S3),
# the auto one beside `cargo lambda watch`'s function. Each query is submitted
# to one server and then the other, ITERATIONS times; prints each query's
# median end-to-end seconds (submit to succeeded, over HTTP), the ratio, and
# the Lambda invocations the auto server's job made (the target: none).
# Then a third server, auto with --burst-above 8MiB, runs SF 1 queries and
# prints where each stage ran, from the job view.
#
#   tests/emulators/start.sh && source ~/.cache/squall/run/env
#   cargo build --release --bin squall
#   tests/bench/burst_serve.sh [ITERATIONS]      # default 3
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
B="${SQUALL:-$TARGET/release/squall}"
ITERATIONS="${1:-3}"
[[ -x "$B" ]] || { echo "$B missing: cargo build --release --bin squall" >&2; exit 1; }
: "${SQUALL_TEST_BUCKET:?start the emulators and source their env (see above)}"
BUCKET="s3://$SQUALL_TEST_BUCKET"
DATA="$BUCKET/burst-bench"
W="$(mktemp -d)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
for sf in 0.1 1; do
    parts=$([[ $sf == 1 ]] && echo 8 || echo 4)
    "$B" tpch --scale "$sf" --parts "$parts" --out "$DATA/sf$sf" >/dev/null 2>&1
done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() { # name, extra flags...
    local name=$1 p
    shift
    p=$(port)
    "$B" serve --data-dir "$W/$name" --token t --allow "$DATA/" --listen "127.0.0.1:$p" \
        "$@" > "$W/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
    echo "http://127.0.0.1:$p"
}
LAMBDA=(--function "$SQUALL_TEST_LAMBDA_FUNCTION" --lambda-endpoint "$SQUALL_TEST_LAMBDA_ENDPOINT"
        --max-concurrency 4 --local-executors 2)
LOCAL=$(start local --executors 2)
AUTO=$(start auto --backend auto "${LAMBDA[@]}" --work-dir "$BUCKET/burst-work-auto")
BURST=$(start burst --backend auto "${LAMBDA[@]}" --burst-above 8MiB --work-dir "$BUCKET/burst-work-burst")

python3 - "$LOCAL" "$AUTO" "$BURST" "$DATA" "$ITERATIONS" "$("$B" --version)" <<'PY'
import json, statistics, sys, time, urllib.request

local, auto, burst, data, iterations, version = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
QUERIES = {q: open(f"control-plane/tools/src/tpch/queries/q{q:02}.sql").read() for q in range(1, 23)}

def call(base, path, body=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)

def run(base, q, sf):
    tables = [{"name": t, "url": f"{data}/sf{sf}/{t}/"} for t in TABLES]
    started = time.monotonic()
    job = call(base, "/v1/jobs", {"sql": QUERIES[q], "tables": tables})
    while True:
        view = call(base, f"/v1/jobs/{job['id']}")
        if view["state"] not in ("queued", "running"):
            break
        time.sleep(0.01)
    took = time.monotonic() - started
    if view["state"] != "succeeded":
        sys.exit(f"Q{q} on {base}: {view['state']}: {view.get('error')}")
    return took, view

print(f"squall {version}; {iterations} iterations, medians")
print("| query | local s | auto s | auto / local | auto's Lambda invocations |")
print("| ---: | ---: | ---: | ---: | ---: |")
ratios, invoked = [], 0
for q in range(1, 23):
    times = {local: [], auto: []}
    for _ in range(iterations):
        for base in (local, auto):
            took, view = run(base, q, "0.1")
            times[base].append(took)
            if base == auto:
                invoked += view["cost"]["lambda_invocations"]
                calls = view["cost"]["lambda_invocations"]
    l, a = statistics.median(times[local]), statistics.median(times[auto])
    ratios.append(a / l)
    print(f"| Q{q} | {l:.3f} | {a:.3f} | {a / l:.2f} | {calls} |")
geo = statistics.geometric_mean(ratios)
print(f"SF 0.1: auto / local geometric mean {geo:.3f}, median {statistics.median(ratios):.3f}, worst {max(ratios):.2f}; Lambda invocations in all: {invoked}")
print()
print("SF 1 on auto with --burst-above 8MiB: where each stage ran (job view)")
print("| query | s | stages on lambda (tasks) | their bytes scanned | stages here (tasks) | their bytes scanned |")
print("| ---: | ---: | --- | ---: | --- | ---: |")
for q in range(1, 23):
    took, view = run(burst, q, "1")
    on = [s for s in view["stages"] if (s.get("placement") or {}).get("place") == "lambda"]
    here = [s for s in view["stages"] if (s.get("placement") or {}).get("place") == "local"]
    mib = lambda stages: f"{sum(s['bytes_scanned'] for s in stages) / 2**20:.1f} MiB"
    print(f"| Q{q} | {took:.2f} | {len(on)} ({sum(s['lambda_tasks'] for s in on)}) | {mib(on)} | "
          f"{len(here)} ({sum(s['local_tasks'] for s in here)}) | {mib(here)} |")
PY
