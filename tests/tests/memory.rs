//! Tasks run under a memory limit: operators that can spill (aggregation, the
//! shuffle writer) go to local disk and the answer stays exact; a task that cannot
//! fit fails with a clear, non-retryable error.

use squall_control_plane::tpch;
use squall_control_plane::{JobRequest, PlanOptions, SquallError, TaskOptions};
use squall_executor::FailureKind;
use squall_tests::{
    compare, files_under, local_engine, render, run_rendered, tpch_data, tpch_tables,
};

/// The same SQL on single-node DataFusion over the same files: the reference.
async fn reference(data: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let ctx = tpch::single_node_context(&data.display().to_string(), 2)
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    render(&batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_spills_under_a_small_limit_and_stays_exact() {
    let data = tpch_data("0.1").await;
    let sql = "SELECT l_orderkey, sum(l_quantity) AS qty, count(*) AS n, max(l_comment) AS c \
               FROM lineitem GROUP BY l_orderkey";
    let expected = reference(&data, sql).await;
    assert_eq!(expected.len(), 150_001, "150,000 orders and a header");

    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let mut request = JobRequest::new(sql, tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 1,
        ..PlanOptions::default()
    };
    let limit = 8 << 20;
    request.tasks = TaskOptions {
        memory_limit_bytes: limit,
        ..TaskOptions::default()
    };
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap());
    compare(&expected, &rows, false).unwrap();
    let spilled: u64 = result.stages.iter().map(|s| s.spilled_bytes).sum();
    assert!(
        spilled > 0,
        "an 8 MiB limit must make someone spill: {:?}",
        result.stages
    );
    assert!(files_under(work.path()).is_empty());

    // Without the limit nothing spills: the figure above measures the limit.
    request.tasks = TaskOptions::default();
    let unlimited = engine.run(&request, None).await.unwrap();
    let spilled: u64 = unlimited.stages.iter().map(|s| s.spilled_bytes).sum();
    assert_eq!(spilled, 0, "{:?}", unlimited.stages);
    let peak = unlimited
        .stages
        .iter()
        .map(|s| s.peak_memory_bytes)
        .max()
        .unwrap();
    assert!(
        peak > limit,
        "the query needs more than the limit it spilled under ({peak})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_that_cannot_fit_fails_without_retries() {
    let data = tpch_data("0.01").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    // A hash join's build side cannot spill.
    let mut request = JobRequest::new(
        "SELECT count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey",
        tpch_tables(&data),
    );
    request.tasks = TaskOptions {
        memory_limit_bytes: 64 << 10,
        ..TaskOptions::default()
    };
    let err = engine.run(&request, None).await.unwrap_err();
    match &err {
        SquallError::TaskFailed {
            attempts, failure, ..
        } => {
            assert_eq!(*attempts, 1, "running out of memory again will not help");
            assert_eq!(failure.kind, FailureKind::ResourcesExhausted, "{failure:?}");
        }
        other => panic!("expected a task failure, got {other}"),
    }
    assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
    assert!(files_under(work.path()).is_empty());
    // The same job runs with the default limit.
    request.tasks = TaskOptions::default();
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["60175".to_string()]);
}
