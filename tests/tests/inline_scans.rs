//! Small tables read where they are gathered (`planner::InlineScans`): the
//! stages that only scanned them go away, the answers stay the reference
//! answers with small tables in stages of their own too, and a small
//! table's stage that key filters use is kept.

use std::sync::Arc;

use squall_engine::planner::{InlineScans, KeyFilterMode, PlannedJob};
use squall_engine::{JobRequest, PlanOptions, StageDag, plan_job};
use squall_executor::StoreRegistry;
use squall_tests::{local_engine, tpch_data, tpch_run_failures, tpch_tables};
use squall_tools::tpch;

async fn plan(
    q: usize,
    data: &std::path::Path,
    inline: Option<InlineScans>,
    key_filters: KeyFilterMode,
) -> PlannedJob {
    let options = PlanOptions {
        shuffle_partitions: 4,
        inline_scans: inline,
        key_filters,
        ..PlanOptions::default()
    };
    plan_job(
        tpch::query(q).unwrap(),
        &tpch_tables(data),
        &options,
        Arc::new(StoreRegistry::new()),
        "memory:///work",
        "memory:///work/result",
    )
    .await
    .unwrap_or_else(|e| panic!("Q{q} does not plan: {e}"))
}

/// The stages that read nothing but one of `tables`, unfiltered.
fn plain_scan_stages(dag: &StageDag, tables: &[&str]) -> Vec<u32> {
    dag.stages
        .iter()
        .filter(|s| s.inputs.is_empty())
        .filter(|s| {
            let shown = format!(
                "{}",
                datafusion::physical_plan::displayable(s.plan.as_ref()).indent(true)
            );
            let scans: Vec<&str> = shown
                .lines()
                .filter(|l| l.contains("DataSourceExec"))
                .collect();
            scans.len() == 1
                && !shown.contains("FilterExec")
                && tables
                    .iter()
                    .any(|t| scans[0].contains(&format!("/{t}/{t}.")))
        })
        .map(|s| s.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_tables_lose_their_stages_and_large_ones_keep_them() {
    let data = tpch_data("0.1").await;
    let (mut inlined_stages, mut staged_stages) = (0, 0);
    for q in 1..=22 {
        let inlined = plan(q, &data, Some(InlineScans::default()), KeyFilterMode::Off).await;
        let staged = plan(q, &data, None, KeyFilterMode::Off).await;
        inlined_stages += inlined.dag.stages.len();
        staged_stages += staged.dag.stages.len();
        // nation and region are a few KiB, supplier 90 KiB at SF 0.1.
        let small = plain_scan_stages(&inlined.dag, &["nation", "region", "supplier"]);
        assert!(
            small.is_empty(),
            "Q{q}: stages {small:?} only scan a small table"
        );
        // customer (2.3 MiB) and part keep theirs wherever they had one.
        let large = ["customer", "part"];
        assert_eq!(
            plain_scan_stages(&inlined.dag, &large).len(),
            plain_scan_stages(&staged.dag, &large).len(),
            "Q{q}"
        );
    }
    // Q2 alone scans nation and supplier twice each.
    let q2 = plan(2, &data, Some(InlineScans::default()), KeyFilterMode::Off).await;
    let q2_staged = plan(2, &data, None, KeyFilterMode::Off).await;
    assert!(
        q2.dag.stages.len() + 4 <= q2_staged.dag.stages.len(),
        "Q2: {} stages inlined, {} in stages",
        q2.dag.stages.len(),
        q2_staged.dag.stages.len()
    );
    assert!(
        inlined_stages + 15 <= staged_stages,
        "{inlined_stages} stages inlined, {staged_stages} in stages"
    );
    // None is read when nothing may be: every small scan has its stage.
    let none = InlineScans {
        max_bytes: 0,
        max_remote_files: 0,
    };
    let q2_none = plan(2, &data, Some(none), KeyFilterMode::Off).await;
    assert_eq!(q2_none.dag.stages.len(), q2_staged.dag.stages.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_keep_the_small_stages_they_use() {
    let data = tpch_data("0.1").await;
    let mut sites = 0;
    for q in 1..=22 {
        let inlined = plan(
            q,
            &data,
            Some(InlineScans::default()),
            KeyFilterMode::Always,
        )
        .await;
        let staged = plan(q, &data, None, KeyFilterMode::Always).await;
        let kinds = |dag: &StageDag| {
            let mut kinds: Vec<_> = dag
                .key_filters
                .iter()
                .map(|s| (s.join_type, s.source_keys.clone(), s.target_keys.clone()))
                .collect();
            kinds.sort_by_key(|k| format!("{k:?}"));
            kinds
        };
        assert_eq!(
            kinds(&inlined.dag),
            kinds(&staged.dag),
            "Q{q}: inlining lost or changed key filters"
        );
        sites += inlined.dag.key_filters.len();
    }
    assert!(sites >= 10, "{sites} key filter sites");
    // Q5: region's keys filter nation, whose keys then filter the customers'
    // orders; nation keeps its stage for that, though it is small.
    let q5 = plan(
        5,
        &data,
        Some(InlineScans::default()),
        KeyFilterMode::Always,
    )
    .await;
    let nation = plain_scan_stages(&q5.dag, &["nation"]);
    assert_eq!(nation.len(), 1, "Q5:\n{}", q5.dag.display(&[]));
    assert!(
        q5.dag
            .key_filters
            .iter()
            .any(|s| s.source == nation[0] || s.target == nation[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hold_with_small_tables_in_stages_of_their_own() {
    let data = tpch_data("0.1").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let mut failures = Vec::new();
    // The queries that join nation, region or supplier (the default,
    // inlined, is what every other TPC-H test runs).
    for q in [2, 5, 7, 8, 9, 10, 11, 15, 16, 20, 21] {
        let mut request = JobRequest::new(tpch::query(q).unwrap(), tpch_tables(&data));
        request.plan = PlanOptions {
            shuffle_partitions: 4,
            inline_scans: None,
            ..PlanOptions::default()
        };
        let result = engine.run(&request, None).await.map_err(|e| e.to_string());
        failures.extend(tpch_run_failures("0.1", q, &result, work.path()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
