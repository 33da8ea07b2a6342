#!/usr/bin/env bash
# What tracing costs: `squall bench tpch` with spans exported to a local OTLP
# receiver (tests/bench/otlp_sink.py) against the same bench without, in
# alternating runs (off, on, off, on, ...). Each run reports Squall's time over
# single-node DataFusion's in the same process; the script prints, per pair,
# the geometric-mean ratio with tracing on over the one without and the same
# of Squall's summed seconds, then their medians, and what the receiver got.
#
#   tests/bench/tracing_cost.sh DATA [PAIRS] [-- BENCH ARGS...]
#
# DATA is a TPC-H folder (data/tpch-sf1); PAIRS defaults to 2; bench args
# default to --iterations 3. SQUALL names the binary (default: the release
# build under $CARGO_TARGET_DIR, else ./target).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DATA="${1:?usage: tracing_cost.sh DATA [PAIRS] [-- BENCH ARGS...]}"
PAIRS="${2:-2}"
shift $(( $# >= 2 ? 2 : 1 ))
[[ "${1:-}" == "--" ]] && shift
BENCH=("$@")
[[ ${#BENCH[@]} -gt 0 ]] || BENCH=(--iterations 3)
SQUALL="${SQUALL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/squall}"
[[ -x "$SQUALL" ]] || { echo "tracing_cost: no squall binary at $SQUALL (cargo build --release -p squall)" >&2; exit 2; }
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
VERSION="$(sed -n 's/^GRPCIO_VERSION=//p' "$ROOT/tests/emulators/install.sh")"
"$ROOT/tests/emulators/install.sh" grpcio
PY="$CACHE/tools/grpcio-$VERSION/bin/python"

work="$(mktemp -d)"
"$PY" "$ROOT/tests/bench/otlp_sink.py" > "$work/sink.out" &
sink=$!
trap 'kill "$sink" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^port ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
port="$(sed -n 's/^port //p' "$work/sink.out")"
[[ -n "$port" ]] || { echo "tracing_cost: the receiver did not start" >&2; exit 1; }
echo "receiver on 127.0.0.1:$port; squall $("$SQUALL" --version); bench ${BENCH[*]}"

run() { # NAME [ENV...]: one bench run; prints "geomean squall_seconds"
    local name="$1"; shift
    env SQUALL_LOG=off "$@" "$SQUALL" bench tpch --data "$DATA" "${BENCH[@]}" > "$work/$name.txt"
    local geo sum
    geo="$(sed -n 's/^geometric mean of squall\/datafusion: \([0-9.]*\).*/\1/p' "$work/$name.txt")"
    sum="$(awk -F'|' '$2 ~ /^ Q[0-9]+ $/ {s += $3} END {printf "%.3f", s}' "$work/$name.txt")"
    [[ -n "$geo" ]] || { cat "$work/$name.txt" >&2; echo "tracing_cost: no geometric mean in $name" >&2; exit 1; }
    # Every answer checked: a wrong one ends the comparison.
    if grep -E '^\| Q[0-9]+ ' "$work/$name.txt" | grep -v '| ok |$'; then
        echo "tracing_cost: wrong answers in $name (above)" >&2; exit 1
    fi
    echo "$geo $sum"
}

ratios=(); sums=()
for pair in $(seq "$PAIRS"); do
    read -r off_geo off_sum < <(run "off-$pair")
    read -r on_geo on_sum < <(run "on-$pair" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port")
    [[ -n "${off_geo:-}" && -n "${on_geo:-}" ]] || { echo "tracing_cost: pair $pair failed" >&2; exit 1; }
    ratio="$(awk -v a="$on_geo" -v b="$off_geo" 'BEGIN {printf "%.3f", a / b}')"
    sum_ratio="$(awk -v a="$on_sum" -v b="$off_sum" 'BEGIN {printf "%.3f", a / b}')"
    echo "pair $pair: squall/datafusion off $off_geo, on $on_geo (on/off $ratio); squall seconds off $off_sum, on $on_sum (on/off $sum_ratio)"
    ratios+=("$ratio"); sums+=("$sum_ratio")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "median on/off: geometric mean $(median "${ratios[@]}"), summed seconds $(median "${sums[@]}")"
kill "$sink"; wait "$sink" 2>/dev/null || true
echo "receiver: $(tail -1 "$work/sink.out")"
