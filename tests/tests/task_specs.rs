//! A scan task's spec carries its own files only: its size does not grow with
//! the number of tasks (files) in the stage, and the sliced plans still give
//! the whole answer.

use std::sync::Arc;

use squall_engine::{Engine, JobRequest, PlanOptions, TableSpec, plan_job};
use squall_executor::{StoreRegistry, encode_plan};

/// `count` one-row CSV files under a fresh folder.
fn many_files(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..count {
        std::fs::write(
            dir.path().join(format!("part-{i:05}.csv")),
            format!("v\n{i}\n"),
        )
        .unwrap();
    }
    dir
}

/// One scan task per file.
fn one_task_per_file() -> PlanOptions {
    PlanOptions {
        shuffle_partitions: 4,
        target_partition_bytes: 1,
        ..PlanOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_task_spec_holds_only_its_own_files() {
    let dir = many_files(10_000);
    let table = TableSpec::new("t", format!("{}/", dir.path().display()));
    let planned = plan_job(
        "SELECT sum(v) AS total FROM t",
        &[table],
        &one_task_per_file(),
        Arc::new(StoreRegistry::new()),
        "memory:///work",
        "memory:///work/result",
    )
    .await
    .unwrap();
    let scan = &planned.dag.stages[0];
    assert_eq!(scan.tasks, 10_000, "{}", planned.dag.display(&[]));
    assert!(scan.sliced_scans);
    let whole = encode_plan(scan.plan.clone()).unwrap().len();
    let first = encode_plan(scan.task_plan(0).unwrap()).unwrap().len();
    let last = encode_plan(scan.task_plan(9_999).unwrap()).unwrap().len();
    // The whole stage plan names all 10,000 files; one task's, one file and
    // 9,999 empty partitions (a few bytes each).
    assert!(whole > 500_000, "whole stage plan: {whole} bytes");
    eprintln!("stage plan {whole} bytes; task 0: {first}, task 9999: {last}");
    assert!(first < 64 * 1024, "task 0's plan: {first} bytes");
    assert!(last < 64 * 1024, "task 9999's plan: {last} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliced_scan_plans_give_the_whole_answer() {
    let dir = many_files(300);
    let work = tempfile::tempdir().unwrap();
    let engine = Engine::embedded_with(
        Arc::new(StoreRegistry::new()),
        Some(2),
        &format!("file://{}", work.path().display()),
    )
    .unwrap();
    let table = TableSpec::new("t", format!("{}/", dir.path().display()));
    let mut request = JobRequest::new(
        "SELECT count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi FROM t",
        vec![table],
    );
    request.plan = one_task_per_file();
    let result = engine.run(&request, None).await.unwrap();
    let rows = squall_tests::render(result.batches.as_deref().unwrap());
    assert_eq!(
        rows[1],
        ["300", &(0..300).sum::<i64>().to_string(), "0", "299"]
    );
}
