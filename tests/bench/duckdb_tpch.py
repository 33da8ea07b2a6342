#!/usr/bin/env python3
"""Times DuckDB on the TPC-H Parquet files `squall tpch` writes, for the same
queries `squall bench tpch` runs, and writes the medians as JSON
({"1": seconds, ...}) for `squall bench tpch --duckdb FILE`.

    python3 -m pip install duckdb==2.0.1
    python3 tests/bench/duckdb_tpch.py --data data/tpch-sf1 --out duckdb-sf1.json

DuckDB runs with as many threads as `--threads` (default: cores), over views of
the Parquet files (no import), each query `--iterations` times; the median is
kept. Results are checked against the reference answers when they exist
(tests/tpch/answers/sfX); a wrong answer ends the script with an error, after
the JSON is written.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "control-plane" / "tools" / "src" / "tpch" / "queries"
ANSWERS = REPO / "tests" / "tpch" / "answers"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding one folder of Parquet files per table")
    p.add_argument("--queries", default=",".join(str(q) for q in range(1, 23)))
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", help="write the JSON here (default: stdout)")
    return p.parse_args()


def same(expected, got):
    e, g = expected.rstrip(), got.rstrip()
    if e == g:
        return True
    try:
        x, y = float(e), float(g)
    except ValueError:
        return False
    return abs(x - y) <= 1e-6 * max(abs(x), abs(y))


def check(rows, answer_path):
    with open(answer_path, newline="") as f:
        expected = list(csv.reader(f, delimiter="|"))[1:]
    got = [["" if v is None else str(v) for v in row] for row in rows]
    if len(got) != len(expected):
        return f"expected {len(expected)} rows, got {len(got)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        if not all(same(x, y) for x, y in zip(e, g)):
            return f"row {i}: expected {e}, got {g}"
    return None


def main():
    args = parse_args()
    try:
        import duckdb
    except ImportError:
        sys.exit("duckdb is not installed: python3 -m pip install duckdb==2.0.1")
    data = Path(args.data).resolve()
    missing = [t for t in TABLES if not any((data / t).glob("*.parquet"))]
    if missing:
        sys.exit(f"no Parquet files for {', '.join(missing)} under {data}")
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data / t}/*.parquet')")
    customers = con.execute("SELECT count(*) FROM customer").fetchone()[0]
    scale = f"{customers / 150000:g}"
    if not QUERIES.is_dir():
        sys.exit(f"the TPC-H queries are not at {QUERIES}")
    results = {}
    wrong = []
    for q in [int(x) for x in args.queries.split(",") if x.strip()]:
        sql = (QUERIES / f"q{q:02d}.sql").read_text()
        times = []
        rows = None
        for _ in range(args.iterations):
            started = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times.append(time.perf_counter() - started)
        results[str(q)] = statistics.median(times)
        answer = ANSWERS / f"sf{scale}" / f"q{q:02d}.csv"
        verdict = check(rows, answer) if answer.exists() else "not checked"
        print(f"Q{q}: {results[str(q)]:.3f} s ({verdict or 'ok'})", file=sys.stderr)
        if verdict and verdict != "not checked":
            wrong.append(f"Q{q}: {verdict}")
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    if wrong:
        sys.exit(f"DuckDB's answers differ from the reference for {len(wrong)} queries: " + "; ".join(wrong))


if __name__ == "__main__":
    main()
