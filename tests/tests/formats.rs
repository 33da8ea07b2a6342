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
