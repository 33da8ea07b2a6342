//! CSV (with a header row) and newline-delimited JSON inputs give the same answers
//! as Parquet. The files are written from the TPC-H Parquet data by single-node
//! DataFusion, four files per table; the answers are the reference answers.

use std::path::Path;

use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::config::{CsvOptions, JsonOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use squall_engine::{JobRequest, PlanOptions, TableFormat, TableSpec};
use squall_tests::{
    compare, expected_answer, files_under, is_ordered, local_engine, run_rendered, tpch_data,
};
use squall_tools::tpch::{self, TABLES};

/// Queries over every table, with dates, decimals, text and joins.
const QUERIES: [usize; 6] = [1, 3, 5, 6, 10, 12];

async fn convert(parquet_root: &Path, out: &Path, ext: &str) {
    let ctx = SessionContext::new();
    for table in TABLES {
        let dir = out.join(table);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(parquet_root.join(table))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let df = ctx
                .read_parquet(file.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            let target = dir.join(format!("{stem}.{ext}"));
            let target = target.to_str().unwrap();
            let options = DataFrameWriteOptions::new().with_single_file_output(true);
            match ext {
                "csv" => {
                    let csv = CsvOptions::default().with_has_header(true);
                    df.write_csv(target, options, Some(csv)).await.unwrap();
                }
                "json" => {
                    df.write_json(target, options, None).await.unwrap();
                }
                "csv.gz" => {
                    let csv = CsvOptions::default()
                        .with_has_header(true)
                        .with_compression(CompressionTypeVariant::GZIP);
                    df.write_csv(target, options, Some(csv)).await.unwrap();
                }
                "json.zst" => {
                    let json = JsonOptions {
                        compression: CompressionTypeVariant::ZSTD,
                        ..JsonOptions::default()
                    };
                    df.write_json(target, options, Some(json)).await.unwrap();
                }
                // Semicolons, no header: read with CSV options.
                "semicolons.txt" => {
                    let csv = CsvOptions::default()
                        .with_has_header(false)
                        .with_delimiter(b';');
                    df.write_csv(target, options, Some(csv)).await.unwrap();
                }
                // No telling extension: CSV content, format given by the spec.
                _ => {
                    let csv = CsvOptions::default().with_has_header(true);
                    df.write_csv(target, options, Some(csv)).await.unwrap();
                }
            };
        }
    }
}

async fn check_format(ext: &str, format: Option<TableFormat>) {
    let data = tpch_data("0.01").await;
    let converted = tempfile::tempdir().unwrap();
    convert(&data, converted.path(), ext).await;
    assert_eq!(
        files_under(converted.path()).len(),
        TABLES.len() * squall_tests::TEST_PARTS,
        "one {ext} file per Parquet file"
    );
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(3, work.path());
    let tables: Vec<TableSpec> = TABLES
        .iter()
        .map(|t| {
            let spec = TableSpec::new(*t, format!("{}/{t}/", converted.path().display()));
            match format {
                Some(f) => spec.with_format(f),
                None => spec,
            }
        })
        .collect();
    let mut failures = Vec::new();
    for q in QUERIES {
        let mut request = JobRequest::new(tpch::query(q).unwrap(), tables.clone());
        request.plan = PlanOptions {
            shuffle_partitions: 3,
            ..PlanOptions::default()
        };
        match run_rendered(&engine, &request).await {
            Ok(rows) => {
                if let Err(e) = compare(&expected_answer("0.01", q), &rows, is_ordered(q)) {
                    failures.push(format!("Q{q}: {e}"));
                }
            }
            Err(e) => failures.push(format!("Q{q} failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{ext} input:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_tables_answer_tpch() {
    check_format("csv", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_tables_answer_tpch() {
    check_format("json", None).await;
}

/// Files without a telling extension take the format given in the table spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_format_overrides_extension() {
    check_format("data", Some(TableFormat::Csv)).await;
}

/// Whole-file compressed CSV and JSON, the compression told by the last
/// extension; the plan each task decodes must keep it (datafusion-proto
/// alone drops it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_csv_tables_answer_tpch() {
    check_format("csv.gz", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_json_tables_answer_tpch() {
    check_format("json.zst", None).await;
}

/// CSV written with another delimiter and no header, read with CSV options:
/// columns are then `column_1`, `column_2`, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_options_read_other_dialects() {
    let data = tpch_data("0.01").await;
    let converted = tempfile::tempdir().unwrap();
    convert(&data, converted.path(), "semicolons.txt").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let nation = |csv: Option<&str>| {
        let mut spec = TableSpec::new("nation", format!("{}/nation/", converted.path().display()))
            .with_format(TableFormat::Csv);
        spec.csv = csv.map(|c| squall_engine::formats::CsvOptions::parse(c).unwrap());
        JobRequest::new(
            "SELECT column_2 AS name FROM nation WHERE column_1 = 7",
            vec![spec],
        )
    };
    let rows = run_rendered(&engine, &nation(Some("delimiter=semicolon,header=false")))
        .await
        .unwrap();
    assert_eq!(
        rows,
        [vec!["name".to_string()], vec!["GERMANY".to_string()]]
    );
    // Read as plain CSV, the same files are refused, naming one.
    let err = run_rendered(&engine, &nation(None)).await.unwrap_err();
    assert!(err.contains("cannot read the schema of file://"), "{err}");
}

/// The columns of orders with `NA` (or an empty field) where the reference
/// has NULL: numbers, dates, text and a Hive partition column, `status`.
const MARKED_ORDERS: &str = "SELECT o_orderkey AS okey, \
     CASE WHEN o_orderkey % 7 = 0 THEN NULL ELSE CAST(o_totalprice AS DOUBLE) END AS price, \
     CASE WHEN o_orderkey % 5 = 0 THEN NULL ELSE o_orderdate END AS day, \
     CASE WHEN o_orderkey % 3 = 0 THEN NULL ELSE o_orderpriority END AS priority, \
     CASE WHEN o_orderkey % 11 = 0 THEN NULL ELSE o_custkey END AS cust, \
     CASE WHEN o_orderkey % 13 = 0 THEN NULL ELSE o_shippriority END AS ship, \
     o_orderstatus AS status \
     FROM orders";

/// CSV with a null marker (`null=NA`): the marker and empty fields read as
/// NULL in number, date and text columns, the columns keep the types the
/// files hold, and a Hive partition filter still prunes. The answers are
/// single-node DataFusion's over the Parquet the files were written from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_null_marker_reads_marked_fields_as_null() {
    let data = tpch_data("0.01").await;
    let ctx = SessionContext::new();
    let orders = data.join("orders");
    ctx.register_parquet("orders", orders.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    ctx.sql(&format!("CREATE VIEW marked AS {MARKED_ORDERS}"))
        .await
        .unwrap();
    // NULLs written as `NA`, except the shipping priority's, written empty.
    let written = ctx
        .sql(
            "SELECT okey, COALESCE(CAST(price AS VARCHAR), 'NA') AS price, \
             COALESCE(CAST(day AS VARCHAR), 'NA') AS day, COALESCE(priority, 'NA') AS priority, \
             COALESCE(CAST(cust AS VARCHAR), 'NA') AS cust, ship, status FROM marked",
        )
        .await
        .unwrap()
        .repartition(datafusion::logical_expr::Partitioning::RoundRobinBatch(3))
        .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let folder = lake.path().join("orders");
    written
        .write_csv(
            folder.to_str().unwrap(),
            DataFrameWriteOptions::new().with_partition_by(vec!["status".into()]),
            Some(CsvOptions::default().with_has_header(true)),
        )
        .await
        .unwrap();
    assert!(folder.join("status=F").is_dir(), "Hive folders written");

    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let queries = [
        "SELECT priority, count(*) AS n, count(price) AS np, min(price) AS lo, \
         max(price) AS hi, count(day) AS nd, min(day) AS first, max(day) AS last, \
         count(cust) AS nc, sum(cust) AS sc, count(ship) AS ns, sum(ship) AS ss \
         FROM orders GROUP BY priority ORDER BY priority NULLS FIRST",
        "SELECT status, count(*) AS n, count(price) AS np, sum(cust) AS sc FROM orders \
         WHERE status = 'F' AND day >= DATE '1995-01-01' GROUP BY status",
        "SELECT okey, price, day, priority, cust FROM orders \
         WHERE cust IS NULL OR price IS NULL ORDER BY okey LIMIT 40",
    ];
    for sql in queries {
        let mut spec = TableSpec::new("orders", format!("{}/", folder.display()))
            .with_format(TableFormat::Csv);
        spec.csv = Some(squall_engine::formats::CsvOptions::parse("null=NA").unwrap());
        let request = JobRequest::new(sql, vec![spec]);
        let result = engine.run(&request, None).await.unwrap();
        let got = squall_tests::render_with_header(
            result.batches.as_deref().unwrap_or_default(),
            &result.schema,
        );
        // A filter on the partition column reads its folder alone.
        let scanned = result.cost.total.bytes_scanned;
        let held = |dir: &Path| -> u64 {
            files_under(dir)
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum()
        };
        let allowed = if sql.contains("status = 'F'") {
            held(&folder.join("status=F"))
        } else {
            held(&folder)
        };
        assert!(
            scanned > 0 && scanned <= allowed,
            "{sql}: read {scanned} of {allowed}"
        );
        let reference = ctx
            .sql(&sql.replace("FROM orders", "FROM marked"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let want = squall_tests::render(&reference);
        assert!(want.len() > 1, "{sql}: the reference has rows");
        assert_eq!(got, want, "{sql}");
    }

    // The columns have the types the files hold, not text.
    let mut spec =
        TableSpec::new("orders", format!("{}/", folder.display())).with_format(TableFormat::Csv);
    spec.csv = Some(squall_engine::formats::CsvOptions::parse("null=NA").unwrap());
    let types = run_rendered(
        &engine,
        &JobRequest::new(
            "SELECT arrow_typeof(price) AS p, arrow_typeof(day) AS d, arrow_typeof(cust) AS c, \
             arrow_typeof(ship) AS s, arrow_typeof(priority) AS t FROM orders LIMIT 1",
            vec![spec.clone()],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        types[1],
        ["Float64", "Date32", "Int64", "Int64", "Utf8"],
        "{types:?}"
    );
    // Without the marker the same files read `NA` as text: no sum of prices.
    spec.csv = None;
    let err = run_rendered(
        &engine,
        &JobRequest::new("SELECT sum(price) FROM orders", vec![spec]),
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("sum"), "{err}");
}
