//! DataFusion's own dynamic filters inside one task, through Squall's plan
//! encoding (the operator that fills a filter and the scan it prunes share
//! one filter again when the task decodes its plan): a TopK (`ORDER BY ...
//! LIMIT`) prunes the files of its scan as its heap fills; a broadcast join
//! prunes the files of its probe side's scan by its build side's keys, in
//! tasks that run their partition as a plan of one partition
//! (`squall_executor::narrow`), as planned or made broadcast at run time.

use squall_engine::planner::{KeyFilterMode, LateBroadcastLimits};
use squall_engine::{JobRequest, JobResult, PlanOptions, TableSpec};
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

/// `d`: (k, tag), keys 2000..2100 tagged 1 and every hundredth key of `t`
/// tagged 0.
fn write_dimension(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    let mut keys: Vec<Option<i64>> = (2000..2100).map(Some).collect();
    let mut tags = vec![Some(1); keys.len()];
    keys.extend((0..80).map(|i| Some(i * 100)));
    tags.extend((0..80).map(|_| Some(0)));
    write_int_parquet(
        &root.join("d/part-0.parquet"),
        &["k", "tag"],
        vec![keys, tags],
    );
}

/// `sql` over `t` (eight scan tasks) and `d`: its rows and the rows its
/// scans read.
async fn run_join(
    root: &std::path::Path,
    sql: &str,
    plan: PlanOptions,
) -> (Vec<Vec<String>>, JobResult) {
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let tables = vec![
        TableSpec::new("t", root.join("t").display().to_string()),
        TableSpec::new("d", root.join("d").display().to_string()),
    ];
    let mut request = JobRequest::new(sql, tables);
    request.plan = PlanOptions {
        shuffle_partitions: 4,
        min_scan_tasks: Some(8),
        ..plan
    };
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap_or_default());
    (rows.into_iter().skip(1).collect(), result)
}

fn rows_read(result: &JobResult) -> u64 {
    result.stages.iter().map(|s| s.rows_in).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_join_prunes_the_files_of_its_probe_scan() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    write_dimension(dir.path());
    let sql = "SELECT count(*), sum(t.v) FROM t JOIN d ON t.k = d.k WHERE d.tag = 1";
    let expected = vec![vec![
        "100".to_string(),
        (2000..2100i64)
            .map(|k| k * 7 % 1013)
            .sum::<i64>()
            .to_string(),
    ]];
    let planned = |join_filters| PlanOptions {
        join_filters,
        ..PlanOptions::default()
    };
    // Shuffled as planned, made a broadcast join when `d`'s side commits
    // (key filters off: they would prune the probe scan too).
    let late = |join_filters| PlanOptions {
        join_filters,
        broadcast_rows: 0,
        broadcast_bytes: 0,
        key_filters: KeyFilterMode::Off,
        late_broadcast: Some(LateBroadcastLimits::default()),
        ..PlanOptions::default()
    };
    for (how, on, off) in [
        ("planned", planned(true), planned(false)),
        ("late", late(true), late(false)),
    ] {
        let (rows, filtered) = run_join(dir.path(), sql, on).await;
        assert_eq!(rows, expected, "{how}");
        let (rows, whole) = run_join(dir.path(), sql, off).await;
        assert_eq!(rows, expected, "{how}, join filters off");
        let plan = filtered.dag.display(&[]);
        if how == "late" {
            assert_eq!(filtered.dag.late_broadcasts.len(), 1, "{plan}");
            assert!(
                filtered.stages.iter().any(|s| s.fused_into.is_some()),
                "{plan}"
            );
        }
        // Without the filter every row of `t` is read; with it, only the
        // file of keys 2000..2999 of its eight (the rest of both jobs alike).
        let (whole, filtered) = (rows_read(&whole), rows_read(&filtered));
        assert!(whole >= 8000, "{how}: {whole} rows read:\n{plan}");
        assert!(
            whole - filtered >= 7000,
            "{how}: {filtered} rows read with join filters, {whole} without:\n{plan}"
        );
    }
}

/// A broadcast join over a union of scans: a task runs one partition of the
/// union, which cannot be run as a plan of one partition; its join must not
/// wait for the union's other partitions (it would never end), and keeps
/// every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_task_cannot_run_its_plan_whole_fills_no_filter() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    write_dimension(dir.path());
    let sql = "SELECT count(*), sum(u.v) FROM (SELECT k, v FROM t UNION ALL SELECT k, v + 1 AS v FROM t) u \
               JOIN d ON u.k = d.k WHERE d.tag = 1";
    let sum: i64 = (2000..2100i64).map(|k| k * 7 % 1013).sum();
    let expected = vec![vec!["200".to_string(), (2 * sum + 100).to_string()]];
    let run = run_join(dir.path(), sql, PlanOptions::default());
    let (rows, result) = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the job ends");
    let plan = result.dag.display(&[]);
    assert_eq!(rows, expected, "{plan}");
    let join = result
        .dag
        .stages
        .iter()
        .map(|s| {
            datafusion::physical_plan::displayable(s.plan.as_ref())
                .indent(false)
                .to_string()
        })
        .find(|p| p.contains("mode=CollectLeft"))
        .unwrap_or_else(|| panic!("no broadcast join:\n{plan}"));
    assert!(
        join.contains("UnionExec") && join.contains("DynamicFilter"),
        "{plan}"
    );
}
