//! DataFusion's own dynamic filters inside one task: a TopK (`ORDER BY ...
//! LIMIT`) in the stage of the scan it reads prunes that scan's files as its
//! heap fills, through Squall's plan encoding (the sort and the scan share
//! one filter again when the task decodes its plan). Joins' dynamic filters
//! stay off: they wait for every partition of the plan, and a task runs one.

use squall_engine::{JobRequest, PlanOptions, TableSpec};
use squall_tests::{local_engine, render, write_int_parquet};

/// Eight files of 1,000 rows each, file `f` holding keys `f*1000..f*1000+999`.
fn write_table(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("t")).unwrap();
    for f in 0..8i64 {
        let keys: Vec<Option<i64>> = (0..1000).map(|i| Some(f * 1000 + i)).collect();
        let values: Vec<Option<i64>> = keys.iter().map(|k| k.map(|k| k * 7 % 1013)).collect();
        write_int_parquet(
            &root.join(format!("t/part-{f}.parquet")),
            &["k", "v"],
            vec![keys, values],
        );
    }
}

/// Runs `sql` in one scan task: its rows, the rows its scan read and its
/// stage plan.
async fn run(root: &std::path::Path, sql: &str) -> (Vec<Vec<String>>, u64, String) {
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let table = TableSpec::new("t", root.join("t").display().to_string());
    let mut request = JobRequest::new(sql, vec![table]);
    request.plan = PlanOptions {
        shuffle_partitions: 1,
        min_scan_tasks: Some(1),
        ..PlanOptions::default()
    };
    let result = engine.run(&request, None).await.unwrap();
    let scanned = result.stages.iter().map(|s| s.rows_in).sum();
    let plan = result.dag.display(&[]);
    // The rows, without the header `render` puts first.
    let rows = render(result.batches.as_deref().unwrap_or_default());
    (rows.into_iter().skip(1).collect(), scanned, plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topk_prunes_the_files_of_its_own_scan() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    // Once the first file fills the heap, every other file's keys are above
    // the fifth smallest and none of it is read (the file opened while the
    // first was read may be).
    let (rows, pruned, plan) = run(dir.path(), "SELECT k, v FROM t ORDER BY k LIMIT 5").await;
    let expected: Vec<Vec<String>> = (0..5i64)
        .map(|k| vec![k.to_string(), (k * 7 % 1013).to_string()])
        .collect();
    assert_eq!(rows, expected);
    assert!(
        plan.contains("DynamicFilter"),
        "no dynamic filter in:\n{plan}"
    );
    // By a key whose order no file's statistics bound: every row is read.
    let sql = "SELECT k, v FROM t ORDER BY k % 1000, k LIMIT 5";
    let (rows, whole, _) = run(dir.path(), sql).await;
    let firsts: Vec<String> = (0..5).map(|f| (f * 1000).to_string()).collect();
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        firsts
    );
    assert_eq!(whole, 8000);
    assert!(
        pruned <= 2000,
        "the TopK read {pruned} rows of {whole}:\n{plan}"
    );
}
