"""A large result out of `squall serve` four ways: JSON pages (objects and
arrays), one Arrow IPC stream and one CSV stream over HTTP, and Arrow Flight
SQL through ADBC's driver. Prints each way's median time and bytes.

    flight_vs_json.py HTTP_URL GRPC_URI TOKEN TABLE_URL [RUNS]

TABLE_URL becomes catalog table `t`; the result is `SELECT * FROM t`. The
HTTP ways read one job's result; each Flight SQL run is a job of its own, so
its transfer time is its total less that job's run time (from the API).
Needs the venv `tests/emulators/install.sh adbc` makes.
"""

import json
import statistics
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql

http, grpc, token, table_url = sys.argv[1:5]
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(http + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read()


def job_seconds(job_id):
    view = json.loads(call("GET", f"/v1/jobs/{job_id}"))
    return (view["finished_at_ms"] - view["started_at_ms"]) / 1000


call("PUT", "/v1/tables/t", {"url": table_url})
accepted = json.loads(call("POST", "/v1/jobs", {
    "sql": "SELECT * FROM t", "tables": [{"name": "t"}], "wait_timeout": "50s"}))
job = accepted["id"]
rows = accepted["result"]["total"]


def pages(fmt):
    total, offset = 0, 0
    while offset is not None:
        body = call("GET", f"/v1/jobs/{job}/result?offset={offset}&limit=10000&format={fmt}")
        total += len(body)
        offset = json.loads(body).get("next_offset")
    return total


def stream(fmt):
    return len(call("GET", f"/v1/jobs/{job}/result?format={fmt}"))


def flight():
    with flight_sql.connect(grpc, db_kwargs={
            "adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
        cur = conn.cursor()
        started = time.time()
        cur.execute("SELECT * FROM t")
        table = cur.fetch_arrow_table()
        total = time.time() - started
        assert table.num_rows == rows, table.num_rows
    newest = json.loads(call("GET", "/v1/jobs?limit=1"))["jobs"][0]["id"]
    return total - job_seconds(newest), table.nbytes


ways = {
    "JSON pages (objects)": lambda: pages("objects"),
    "JSON pages (arrays)": lambda: pages("arrays"),
    "CSV stream": lambda: stream("csv"),
    "Arrow IPC stream (HTTP)": lambda: stream("arrow"),
}
print(f"{rows} rows; the job ran {job_seconds(job):.2f} s")
results = {}
for _ in range(runs):
    for name, way in ways.items():
        started = time.time()
        size = way()
        results.setdefault(name, []).append((time.time() - started, size))
    seconds, size = flight()
    results.setdefault("Flight SQL (ADBC), transfer", []).append((seconds, size))
for name, measured in results.items():
    seconds = statistics.median(s for s, _ in measured)
    size = measured[0][1]
    print(f"{name:30} {seconds:7.2f} s  {size / 1e6:8.1f} MB  "
          f"({', '.join(f'{s:.2f}' for s, _ in measured)})")
