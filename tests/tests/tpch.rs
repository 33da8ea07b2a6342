//! All 22 TPC-H queries against the reference answers, at SF 0.01 and 0.1, with
//! four files per table: at shuffle widths 1, 4 and 7 with one reduce task per
//! partition (the static plan), and at widths 7 and 32 with reduce tasks sized
//! to the shuffle (coalescing, with a small target so that tasks read uneven
//! ranges of partitions). Each job must also leave nothing behind in its work
//! folder.

use squall_control_plane::scheduler::Coalescing;
use squall_control_plane::{JobRequest, PlanOptions};
use squall_tests::{
    compare, expected_answer, files_under, is_ordered, local_engine, render, tpch_data, tpch_tables,
};

async fn check_all(scale: &str, width: usize) {
    let coalesced = check_with(scale, width, Coalescing::disabled()).await;
    assert_eq!(coalesced, 0, "coalescing was off");
}

/// Coalescing with targets small enough that SF 0.01–0.1 shuffles are cut into
/// several uneven ranges.
fn small_targets() -> Coalescing {
    Coalescing {
        enabled: true,
        target_bytes: 256 << 10,
        min_bytes: 16 << 10,
    }
}

/// Checks every query; returns how many stages ran fewer tasks than partitions.
async fn check_with(scale: &str, width: usize, coalescing: Coalescing) -> usize {
    let data = tpch_data(scale).await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(4, work.path());
    let mut failures = Vec::new();
    let mut coalesced = 0;
    for q in 1..=22 {
        let sql = squall_control_plane::tpch::query(q).unwrap();
        let mut request = JobRequest::new(sql, tpch_tables(&data));
        request.plan = PlanOptions {
            shuffle_partitions: width,
            ..PlanOptions::default()
        };
        request.tasks.coalescing = coalescing.clone();
        match engine.run(&request, None).await {
            Ok(result) => {
                coalesced += result
                    .stages
                    .iter()
                    .filter(|s| s.tasks < s.partitions)
                    .count();
                let rows = render(result.batches.as_deref().unwrap_or_default());
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
        "SF {scale}, shuffle width {width}, {coalescing:?}: {} of 22 queries wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    coalesced
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width7_coalesced() {
    let coalesced = check_with("0.01", 7, small_targets()).await;
    assert!(coalesced > 0, "no stage was coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width32_coalesced() {
    let coalesced = check_with("0.1", 32, small_targets()).await;
    assert!(coalesced >= 22, "only {coalesced} stages coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width32_coalesced_by_default() {
    check_with("0.1", 32, Coalescing::default()).await;
}
