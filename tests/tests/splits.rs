//! A Parquet file larger than the target partition size is scanned by several
//! tasks, each a byte range of whole row groups, and every row is read once;
//! tasks are packed by the bytes of the columns the query reads.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use squall_engine::{JobRequest, PlanOptions, TableSpec};
use squall_tests::{compare, expected_answer, is_ordered, local_engine, run_rendered, tpch_data};
use squall_tools::tpch::{self, TABLES};

/// All of SF 0.01 `lineitem` in one file of 5,000-row row groups (13 of them).
async fn one_file_lineitem(dir: &std::path::Path) -> std::path::PathBuf {
    let data = tpch_data("0.01").await;
    let ctx = SessionContext::new();
    let batches = ctx
        .read_parquet(
            format!("{}/lineitem/", data.display()),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let path = dir.join("lineitem.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(5_000))
        .build();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    let metadata = writer.close().unwrap();
    assert_eq!(metadata.num_row_groups(), 13);
    path
}

/// The `lineitem` columns TPC-H query `q` reads (of Q1, Q6 and Q12).
fn lineitem_columns(q: usize) -> &'static [&'static str] {
    match q {
        1 => &[
            "l_quantity",
            "l_extendedprice",
            "l_discount",
            "l_tax",
            "l_returnflag",
            "l_linestatus",
            "l_shipdate",
        ],
        6 => &["l_shipdate", "l_discount", "l_quantity", "l_extendedprice"],
        12 => &[
            "l_orderkey",
            "l_shipmode",
            "l_commitdate",
            "l_receiptdate",
            "l_shipdate",
        ],
        _ => panic!("no columns listed for Q{q}"),
    }
}

/// The share of the file's compressed bytes that `columns` hold, read from
/// its footer with the parquet crate.
fn column_share(path: &std::path::Path, columns: &[&str]) -> f64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let (mut read, mut total) = (0i64, 0i64);
    for group in reader.metadata().row_groups() {
        for column in group.columns() {
            total += column.compressed_size();
            if columns.contains(&column.column_path().string().as_str()) {
                read += column.compressed_size();
            }
        }
    }
    read as f64 / total as f64
}

/// The lineitem scan (its partitions: file groups, each a scan task's share).
fn lineitem_scan(dag: &squall_engine::StageDag) -> Arc<dyn ExecutionPlan> {
    let mut stack: Vec<Arc<dyn ExecutionPlan>> =
        dag.stages.iter().map(|s| s.plan.clone()).collect();
    while let Some(node) = stack.pop() {
        let shown = displayable(node.as_ref()).one_line().to_string();
        if node.name() == "DataSourceExec" && shown.contains("lineitem.parquet") {
            return node;
        }
        stack.extend(node.children().into_iter().cloned());
    }
    panic!("no lineitem scan in\n{}", dag.display(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parquet_file_is_split_on_row_groups() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let lineitem = one_file_lineitem(dir.path()).await;
    let size = std::fs::metadata(&lineitem).unwrap().len();
    let tables: Vec<TableSpec> = TABLES
        .iter()
        .map(|t| match *t {
            "lineitem" => TableSpec::new("lineitem", lineitem.display().to_string()),
            other => TableSpec::new(other, format!("{}/{other}/", data.display())),
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(3, work.path());
    for q in [1, 6, 12] {
        // Tasks are packed by the bytes of the columns read: a target of a
        // little over a quarter of those (not a quarter: the pieces' bytes
        // are rounded up, and just over four targets' worth is five tasks
        // packed into six) is four or five tasks, of a twentieth one a row
        // group each (13), of twice the file one.
        let share = column_share(&lineitem, lineitem_columns(q));
        assert!(share > 0.1 && share < 0.7, "Q{q}: {share}");
        let weighed = (size as f64 * share) as u64;
        for (target, min_tasks, max_tasks) in [
            (weighed * 10 / 37, 4, 5),
            (weighed / 20, 13, 13),
            (size * 2, 1, 1),
        ] {
            let mut request = JobRequest::new(tpch::query(q).unwrap(), tables.clone());
            request.plan = PlanOptions {
                shuffle_partitions: 3,
                target_partition_bytes: target,
                ..PlanOptions::default()
            };
            let planned = squall_engine::plan_job(
                &request.sql,
                &request.tables,
                &request.plan,
                Arc::clone(&engine.stores),
                "memory:///w",
                "memory:///w/r",
            )
            .await
            .unwrap();
            let scan = lineitem_scan(&planned.dag);
            let partitions = scan.output_partitioning().partition_count();
            assert!(
                (min_tasks..=max_tasks).contains(&partitions),
                "Q{q}, target {target} of {size} bytes ({share:.2} read): {partitions} scan partitions\n{}",
                planned.dag.display(&[])
            );
            // What the scan reads: the share of its file (within a byte a
            // piece).
            let read = planned.splits.read_bytes(&scan);
            assert!(read.abs_diff(weighed) <= 13, "Q{q}: {read} of {weighed}");
            let rows = run_rendered(&engine, &request).await.unwrap();
            compare(&expected_answer("0.01", q), &rows, is_ordered(q))
                .unwrap_or_else(|e| panic!("Q{q} with target {target}: {e}"));
        }
    }
}
