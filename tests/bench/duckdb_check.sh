#!/usr/bin/env bash
# Keeps tests/bench/duckdb_tpch.py (the DuckDB column of BENCHMARKS.md) working:
# generates TPC-H SF 0.01 with the debug `squall` binary, runs all 22 queries
# once on DuckDB, and fails if the script fails, any answer differs from
# tests/tpch/answers/sf0.01, or a query has no timing.
#
# Needs the debug `squall` binary (cargo build -p squall) and DuckDB
# (tests/emulators/install.sh duckdb).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
SQUALL="${CARGO_TARGET_DIR:-$ROOT/target}/debug/squall"
PYTHON="$CACHE/tools/duckdb-2.0.1/bin/python"
[[ -x "$PYTHON" ]] || { echo "DuckDB missing: run tests/emulators/install.sh duckdb" >&2; exit 1; }
[[ -x "$SQUALL" ]] || { echo "$SQUALL missing: run cargo build -p squall" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$SQUALL" tpch --scale 0.01 --out "$WORK/tpch" >/dev/null
"$PYTHON" "$ROOT/tests/bench/duckdb_tpch.py" --data "$WORK/tpch" --iterations 1 --threads 2 \
    --out "$WORK/duckdb.json" 2> "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
"$PYTHON" - "$WORK/duckdb.json" <<'PY'
import json, sys
timings = json.load(open(sys.argv[1]))
missing = [q for q in range(1, 23) if not isinstance(timings.get(str(q)), (int, float))]
if missing:
    sys.exit(f"duckdb_tpch.py gave no timing for queries {missing}")
PY
grep -c '(ok)' "$WORK/log" | grep -qx 22 || { echo "not every DuckDB answer was checked and right:" >&2; cat "$WORK/log" >&2; exit 1; }
echo "duckdb_check: 22 TPC-H queries at SF 0.01 ran on DuckDB with the reference answers" >&2
