//! Snapshot tests of the stage DAG of every TPC-H query (SF 0.01, four files per
//! table, shuffle width 4). The approved DAGs live in `tests/snapshots/dag/`;
//! after a deliberate planner change, regenerate them with
//! `SQUALL_UPDATE_SNAPSHOTS=1 cargo test -p squall-tests --test stage_dags`
//! and review the diff.

use std::sync::Arc;

use squall_engine::{PlanOptions, plan_job};
use squall_executor::StoreRegistry;
use squall_tests::{tests_dir, tpch_data, tpch_tables};
use squall_tools::tpch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_stage_dags_match_snapshots() {
    let data = tpch_data("0.01").await;
    let data_path = data.display().to_string();
    let shown_path = data_path.trim_start_matches('/').to_string();
    let update = std::env::var_os("SQUALL_UPDATE_SNAPSHOTS").is_some();
    let dir = tests_dir().join("snapshots/dag");
    let options = PlanOptions {
        shuffle_partitions: 4,
        ..PlanOptions::default()
    };
    let mut mismatches = Vec::new();
    for q in 1..=22 {
        let planned = plan_job(
            tpch::query(q).unwrap(),
            &tpch_tables(&data),
            &options,
            Arc::new(StoreRegistry::new()),
            "memory:///work",
            "memory:///work/result",
        )
        .await
        .unwrap_or_else(|e| panic!("Q{q} does not plan: {e}"));
        let text = planned.dag.display(&[(shown_path.as_str(), "$DATA")]);
        let path = dir.join(format!("q{q:02}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let approved = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no approved DAG at {} ({e}); run with SQUALL_UPDATE_SNAPSHOTS=1",
                path.display()
            )
        });
        if approved != text {
            mismatches.push(format!(
                "Q{q} differs from {}:\n--- approved\n{approved}\n--- planned\n{text}",
                path.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} stage DAGs changed (regenerate with SQUALL_UPDATE_SNAPSHOTS=1 if intended):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
