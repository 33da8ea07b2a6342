#!/usr/bin/env python3
"""One process per query, as a user runs them from a shell: `squall run` (the
embedded in-process backend) against single-node DataFusion 55 from PyPI
(`datafusion` 55.0.0, the same version line as Squall's engine), each query a
fresh process, timed from start to exit; medians of `--iterations`.

    tests/emulators/install.sh datafusion          # DataFusion's Python package, into ~/.cache/squall/tools
    cargo build --release --bin squall
    python3 tests/bench/one_process.py --data data/tpch-sf1 --squall $CARGO_TARGET_DIR/release/squall

Both sides read the same Parquet files with as many threads as cores; both
print their rows (to /dev/null). The total is what the issue's target names
("within 1.3x"), printed with the ratio per query. Each run's row count is
compared between the two sides.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "control-plane" / "tools" / "src" / "tpch" / "queries"
TOOLS = Path(os.environ.get("SQUALL_CACHE", Path.home() / ".cache" / "squall")) / "tools"
DATAFUSION_PYTHON = TOOLS / "datafusion-55.0.0" / "bin" / "python"

# The DataFusion side: register the tables, run the query, print the row count.
DATAFUSION = """
import sys
from datafusion import SessionContext
data, sql = sys.argv[1], open(sys.argv[2]).read()
ctx = SessionContext()
for t in %r:
    ctx.register_parquet(t, f"{data}/{t}/")
batches = ctx.sql(sql).collect()
print(sum(b.num_rows for b in batches))
""" % (TABLES,)


def timed(cmd):
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
    return took, done.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of one folder of Parquet files per table")
    p.add_argument("--squall", required=True, help="the squall binary (a release build)")
    p.add_argument("--queries", default=",".join(str(q) for q in range(1, 23)))
    p.add_argument("--iterations", type=int, default=3)
    args = p.parse_args()
    if not DATAFUSION_PYTHON.exists():
        sys.exit(f"{DATAFUSION_PYTHON} missing: tests/emulators/install.sh datafusion")
    data = str(Path(args.data).resolve())
    tables = [f"--table={t}={data}/{t}/" for t in TABLES]
    print(f"| query | squall run s | datafusion s | squall / datafusion | rows |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    totals = [0.0, 0.0]
    for q in [int(x) for x in args.queries.split(",")]:
        sql = QUERIES / f"q{q:02}.sql"
        times = [[], []]
        for _ in range(args.iterations):
            took, out = timed([args.squall, "run", "--sql-file", str(sql), "--format", "csv", *tables])
            times[0].append(took)
            ours = max(len([line for line in out.splitlines() if line.strip()]) - 1, 0)
            took, out = timed([str(DATAFUSION_PYTHON), "-c", DATAFUSION, data, str(sql)])
            times[1].append(took)
            theirs = int(out.strip().splitlines()[-1])
            if ours != theirs:
                sys.exit(f"Q{q}: squall printed {ours} rows, DataFusion {theirs}")
        s, d = statistics.median(times[0]), statistics.median(times[1])
        totals[0] += s
        totals[1] += d
        print(f"| Q{q} | {s:.3f} | {d:.3f} | {s / d:.2f} | {theirs} |")
    print(f"| total | {totals[0]:.2f} | {totals[1]:.2f} | {totals[0] / totals[1]:.2f} | |")


if __name__ == "__main__":
    main()
