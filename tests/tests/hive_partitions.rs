//! A Hive-partitioned lake written by another tool: DuckDB (from PyPI,
//! `tests/emulators/install.sh duckdb`) writes TPC-H SF 0.01 lineitem under
//! `year=/month=` folders and orders under `o_orderpriority=` folders, and
//! answers queries over them itself. Squall's answers must equal DuckDB's;
//! a query's partition predicates must leave the other folders unlisted and
//! unread (LIST requests, bytes scanned and the scan limit show it).
//! `cargo test -p squall-tests --features pypi`, as tests/run runs it.

use std::path::Path;

use squall_engine::{JobRequest, JobResult, PlanOptions, TableSpec};
use squall_tests::{files_under, local_engine, render_with_header, tpch_data};
use squall_tools::tpch::answers;

/// Runs `script` with DuckDB's Python, `args` after it.
fn duckdb(script: &str, args: &[&str]) -> String {
    let args = ["-c", script].iter().chain(args).map(Into::into).collect();
    squall_tests::run_tool("duckdb", "DUCKDB_VERSION", "duckdb", args)
}

const WRITE: &str = r#"
import sys, duckdb
data, lake = sys.argv[1], sys.argv[2]
duckdb.sql(f"""COPY (SELECT *, year(l_shipdate) AS year, month(l_shipdate) AS month
    FROM read_parquet('{data}/lineitem/*.parquet'))
    TO '{lake}/lineitem' (FORMAT parquet, PARTITION_BY (year, month))""")
duckdb.sql(f"""COPY (SELECT * FROM read_parquet('{data}/orders/*.parquet'))
    TO '{lake}/orders' (FORMAT parquet, PARTITION_BY (o_orderpriority))""")
"#;

/// Writes each query's answer (`|`-separated, a header first) to `out/qN.csv`.
const ANSWER: &str = r#"
import sys, duckdb
lake, out = sys.argv[1], sys.argv[2]
for t in ("lineitem", "orders"):
    duckdb.sql(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/**/*.parquet', hive_partitioning = true)")
for i, sql in enumerate(sys.argv[3:]):
    rel = duckdb.sql(sql)
    with open(f"{out}/q{i}.csv", "w") as f:
        f.write("|".join(rel.columns) + "\n")
        for row in rel.fetchall():
            f.write("|".join("" if v is None else str(v) for v in row) + "\n")
"#;

/// lineitem's `year=` and `month=` folders a query may read (None: every one).
type Folders = Option<&'static [(i64, i64)]>;

/// Queries, each with the folders of lineitem it may read.
const QUERIES: &[(&str, Folders)] = &[
    (
        "SELECT year, month, count(*) AS n, sum(l_quantity) AS q FROM lineitem \
         WHERE year = 1995 AND month <= 3 GROUP BY year, month ORDER BY year, month",
        Some(&[(1995, 1), (1995, 2), (1995, 3)]),
    ),
    (
        "SELECT count(*) AS n, sum(l_extendedprice) AS s FROM lineitem \
         WHERE year IN (1993, 1997) AND month = 6 AND l_discount > 0.05",
        Some(&[(1993, 6), (1997, 6)]),
    ),
    (
        "SELECT o_orderpriority, count(*) AS n FROM orders JOIN lineitem ON o_orderkey = l_orderkey \
         WHERE o_orderpriority = '1-URGENT' AND lineitem.year = 1996 AND lineitem.month = 12 \
         GROUP BY o_orderpriority ORDER BY o_orderpriority",
        Some(&[(1996, 12)]),
    ),
    (
        "SELECT count(*) AS n FROM lineitem WHERE year = 1998 AND month = 1 AND l_orderkey IN \
         (SELECT o_orderkey FROM orders WHERE o_orderpriority IN ('5-LOW', '4-NOT SPECIFIED'))",
        Some(&[(1998, 1)]),
    ),
    // Two scans of one table: what either reads.
    (
        "SELECT count(*) AS n FROM lineitem a JOIN lineitem b \
         ON a.l_orderkey = b.l_orderkey AND a.l_linenumber = b.l_linenumber \
         WHERE a.year = 1994 AND a.month = 2 AND b.month = 2 AND b.year >= 1994 AND b.year <= 1994",
        Some(&[(1994, 2)]),
    ),
    (
        "SELECT year, count(*) AS n FROM lineitem GROUP BY year ORDER BY year",
        None,
    ),
    (
        "SELECT count(*) AS n FROM lineitem WHERE year = 1900",
        Some(&[]),
    ),
];

fn tables(lake: &Path) -> Vec<TableSpec> {
    ["lineitem", "orders"]
        .iter()
        .map(|t| TableSpec::new(*t, format!("{}/{t}/", lake.display())))
        .collect()
}

/// Bytes of lineitem's files in the `folders` given (all: None).
fn lineitem_bytes(lake: &Path, folders: Option<&[(i64, i64)]>) -> u64 {
    files_under(&lake.join("lineitem"))
        .iter()
        .filter(|f| {
            let path = f.to_string_lossy();
            folders.is_none_or(|folders| {
                folders
                    .iter()
                    .any(|(y, m)| path.contains(&format!("/year={y}/month={m}/")))
            })
        })
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

async fn run(request: &JobRequest, work: &Path) -> JobResult {
    local_engine(2, work)
        .run(request, None)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", request.sql))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_duckdb_wrote_answers_as_duckdb_and_reads_only_the_folders_it_needs() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let answers_dir = dir.path().join("answers");
    std::fs::create_dir_all(&lake).unwrap();
    std::fs::create_dir_all(&answers_dir).unwrap();
    let path = |p: &Path| p.to_string_lossy().to_string();
    duckdb(WRITE, &[&path(&data), &path(&lake)]);
    let mut args = vec![path(&lake), path(&answers_dir)];
    args.extend(QUERIES.iter().map(|(sql, _)| sql.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    duckdb(ANSWER, &args);

    let all_bytes = lineitem_bytes(&lake, None);
    let mut lists = Vec::new();
    for (i, (sql, folders)) in QUERIES.iter().enumerate() {
        let mut request = JobRequest::new(*sql, tables(&lake));
        request.plan = PlanOptions {
            shuffle_partitions: 2,
            ..PlanOptions::default()
        };
        let result = run(&request, &dir.path().join("work")).await;
        let got = render_with_header(
            result.batches.as_deref().unwrap_or_default(),
            &result.schema,
        );
        let expected = answers::load(&answers_dir.join(format!("q{i}.csv"))).unwrap();
        answers::compare(&expected, &got, true).unwrap_or_else(|e| panic!("{sql}: {e}"));

        // What was read: no byte outside the folders the query names.
        let scanned = result.cost.total.bytes_scanned;
        let allowed = lineitem_bytes(&lake, *folders)
            + if sql.contains("orders") {
                files_under(&lake.join("orders"))
                    .iter()
                    .map(|f| std::fs::metadata(f).unwrap().len())
                    .sum()
            } else {
                0
            };
        assert!(
            scanned <= allowed,
            "{sql}: read {scanned} bytes, its folders hold {allowed}"
        );
        if folders.is_some_and(|f| !f.is_empty()) {
            assert!(scanned > 0, "{sql}");
        }
        println!(
            "{sql}: {scanned} of {allowed} bytes, {} LISTs",
            result.cost.total.requests.list
        );
        lists.push(result.cost.total.requests.list);
    }
    // Pruned listings: the whole table's take many more LISTs than a month's.
    let whole = lists[5];
    for (i, n) in lists.iter().enumerate().filter(|(i, _)| *i != 5) {
        assert!(
            n * 4 <= whole,
            "query {i}: {n} LISTs, the whole table {whole}: {lists:?}"
        );
    }

    // The scan limit counts only the folders left: a month passes a limit
    // the whole table is refused by.
    let one_month = lineitem_bytes(&lake, Some(&[(1995, 1)]));
    assert!(one_month * 10 < all_bytes);
    let limited = |sql: &str| {
        let mut request = JobRequest::new(sql, tables(&lake));
        request.scan_limit_bytes = Some(one_month);
        request
    };
    let month = limited("SELECT count(*) FROM lineitem WHERE year = 1995 AND month = 1");
    run(&month, &dir.path().join("work")).await;
    let whole = limited("SELECT count(*) FROM lineitem WHERE month = 1");
    let err = local_engine(2, &dir.path().join("work"))
        .run(&whole, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("scan limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_partition_columns_are_checked_against_the_folders() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let path = |p: &Path| p.to_string_lossy().to_string();
    duckdb(WRITE, &[&path(&data), &path(&lake)]);
    let work = dir.path().join("work");
    let with = |partitions: &str| {
        let mut table = TableSpec::new("lineitem", format!("{}/lineitem/", lake.display()));
        squall_engine::tables::set_partitions(
            std::slice::from_mut(&mut table),
            &[partitions.to_string()],
        )
        .unwrap();
        JobRequest::new(
            "SELECT count(*) AS n FROM lineitem WHERE year = '1995' AND month = 1",
            vec![table],
        )
    };
    // Declared as text: the same rows.
    let as_text = run(&with("year:string,month:int"), &work).await;
    let inferred = run(
        &JobRequest::new(
            "SELECT count(*) AS n FROM lineitem WHERE year = 1995 AND month = 1",
            tables(&lake),
        ),
        &work,
    )
    .await;
    let n = |r: &JobResult| render_with_header(r.batches.as_deref().unwrap(), &r.schema);
    assert_eq!(n(&as_text), n(&inferred));
    assert_ne!(n(&inferred)[1][0], "0");
    // Names the folders do not have: refused, naming the table and folder.
    let err = local_engine(2, &work)
        .run(&with("year,day"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table 'lineitem'") && err.contains("'month=...'"),
        "{err}"
    );
}
