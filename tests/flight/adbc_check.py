"""Squall's Arrow Flight SQL endpoint through a client nobody here wrote: the
ADBC Flight SQL driver from PyPI (`tests/emulators/install.sh adbc`).

    adbc_check.py URI TOKEN QUERIES_DIR OUT_DIR Q [Q ...]

Connects with the token (a wrong one must be refused), lists the catalog's
tables and a table's schema through ADBC's GetObjects, runs the TPC-H
queries named and writes each result as OUT_DIR/qNN.csv ('|'-separated,
header first) for the caller to check against the reference answers, and
cancels a long query from another thread (it must end within seconds).
"""

import os
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager


def connect(uri, token):
    return flight_sql.connect(
        uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    )


def cell(value):
    return "" if value is None else str(value)


def main():
    uri, token, queries, out = sys.argv[1:5]
    numbers = [int(q) for q in sys.argv[5:]]

    try:
        with connect(uri, "not-the-token") as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
        sys.exit("a wrong token was accepted")
    except adbc_driver_manager.Error as e:
        if "token" not in str(e).lower() and "unauthenticated" not in str(e).lower():
            sys.exit(f"a wrong token failed for another reason: {e}")
        print("wrong token refused")

    with connect(uri, token) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = {
            t["table_name"]
            for c in objects
            for s in (c["catalog_db_schemas"] or [])
            for t in (s["db_schema_tables"] or [])
        }
        print("tables:", sorted(names))
        if "lineitem" not in names or "nation" not in names:
            sys.exit(f"GetObjects lists {sorted(names)}")
        schema = conn.adbc_get_table_schema("nation", catalog_filter="squall", db_schema_filter="public")
        if schema.names[:2] != ["n_nationkey", "n_name"]:
            sys.exit(f"nation's schema: {schema}")

        for q in numbers:
            with open(os.path.join(queries, f"q{q:02}.sql")) as f:
                sql = f.read()
            cur = conn.cursor()
            started = time.time()
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            cur.close()
            with open(os.path.join(out, f"q{q:02}.csv"), "w") as f:
                f.write("|".join(table.column_names) + "\n")
                for row in table.to_pylist():
                    f.write("|".join(cell(v) for v in row.values()) + "\n")
            print(f"Q{q}: {table.num_rows} rows in {time.time() - started:.2f} s")

        # A long query, cancelled from another thread.
        cur = conn.cursor()
        cancel = threading.Timer(1.5, cur.adbc_cancel)
        cancel.start()
        started = time.time()
        try:
            cur.execute(
                "SELECT count(*) FROM lineitem a CROSS JOIN lineitem b "
                "WHERE a.l_orderkey + b.l_orderkey < 0"
            )
            cur.fetchall()
            sys.exit("the long query was not cancelled")
        except adbc_driver_manager.Error as e:
            took = time.time() - started
            print(f"cancelled after {took:.1f} s: {type(e).__name__}")
            if took > 30:
                sys.exit("the cancel took too long")


if __name__ == "__main__":
    main()
