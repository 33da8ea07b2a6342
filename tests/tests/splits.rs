//! A Parquet file larger than the target partition size is scanned by several
//! tasks, each a byte range of whole row groups, and every row is read once.

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

/// Partitions (file groups, each a scan task's share) of the lineitem scan.
fn lineitem_scan_partitions(dag: &squall_engine::StageDag) -> usize {
    let mut stack: Vec<Arc<dyn ExecutionPlan>> =
        dag.stages.iter().map(|s| s.plan.clone()).collect();
    while let Some(node) = stack.pop() {
        let shown = displayable(node.as_ref()).one_line().to_string();
        if node.name() == "DataSourceExec" && shown.contains("lineitem.parquet") {
            return node.output_partitioning().partition_count();
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
    for (target, min_tasks, max_tasks) in [(size / 4, 4, 5), (size / 20, 13, 13), (size * 2, 1, 1)]
    {
        for q in [1, 6, 12] {
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
            let partitions = lineitem_scan_partitions(&planned.dag);
            assert!(
                (min_tasks..=max_tasks).contains(&partitions),
                "Q{q}, target {target} of {size} bytes: {partitions} scan partitions\n{}",
                planned.dag.display(&[])
            );
            let rows = run_rendered(&engine, &request).await.unwrap();
            compare(&expected_answer("0.01", q), &rows, is_ordered(q))
                .unwrap_or_else(|e| panic!("Q{q} with target {target}: {e}"));
        }
    }
}
