//! All 22 TPC-H queries against the reference answers, at SF 0.01 and 0.1, with
//! four files per table, at shuffle widths 1, 4 and 7. Each job must also leave
//! nothing behind in its work folder.

use squall_control_plane::{JobRequest, PlanOptions};
use squall_tests::{
    compare, expected_answer, files_under, is_ordered, local_engine, run_rendered, tpch_data,
    tpch_tables,
};

async fn check_all(scale: &str, width: usize) {
    let data = tpch_data(scale).await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(4, work.path());
    let mut failures = Vec::new();
    for q in 1..=22 {
        let sql = squall_control_plane::tpch::query(q).unwrap();
        let mut request = JobRequest::new(sql, tpch_tables(&data));
        request.plan = PlanOptions {
            shuffle_partitions: width,
            ..PlanOptions::default()
        };
        match run_rendered(&engine, &request).await {
            Ok(rows) => {
                if let Err(e) = compare(&expected_answer(scale, q), &rows, is_ordered(q)) {
                    failures.push(format!("Q{q}: {e}"));
                }
            }
            Err(e) => failures.push(format!("Q{q} failed: {e}")),
        }
        let left = files_under(work.path());
        if !left.is_empty() {
            failures.push(format!(
                "Q{q} left {} files, e.g. {:?}",
                left.len(),
                left[0]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "SF {scale}, shuffle width {width}: {} of 22 queries wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width1() {
    check_all("0.01", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width4() {
    check_all("0.01", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width7() {
    check_all("0.01", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width1() {
    check_all("0.1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width4() {
    check_all("0.1", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width7() {
    check_all("0.1", 7).await;
}
