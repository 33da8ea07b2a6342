//! Skewed keys: with reduce tasks sized to the shuffle, a hot partition of a
//! join's probe side is split among several tasks, and every answer equals
//! single-node DataFusion's on the same files, as it does with the static plan.

use squall_engine::scheduler::Coalescing;
use squall_engine::{JobRequest, PlanOptions};
use squall_executor::StoreRegistry;
use squall_tests::{compare, files_under, local_engine, render};
use squall_tools::skew::{self, SkewSpec};

async fn reference(root: &str, sql: &str) -> Vec<Vec<String>> {
    let ctx = datafusion::prelude::SessionContext::new();
    for table in skew::table_specs(root) {
        ctx.register_parquet(
            &table.name,
            &table.url,
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .unwrap();
    }
    render(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_partitions_are_split_and_answers_match_single_node() {
    let data = tempfile::tempdir().unwrap();
    let spec = SkewSpec {
        rows: 200_000,
        keys: 20_000,
        groups: 500,
        files: 4,
        ..SkewSpec::default()
    };
    let root = format!("{}", data.path().display());
    skew::generate(&StoreRegistry::new(), &spec, &root)
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    // Targets small enough that this data set's hot key stands out.
    let adaptive = Coalescing {
        enabled: true,
        target_bytes: 64 << 10,
        min_bytes: 4 << 10,
        skew_factor: 5.0,
        skew_min_bytes: 32 << 10,
        piece_bytes: None,
        min_read_bytes: 0,
    };
    let mut split_tasks = 0;
    for (name, sql) in skew::QUERIES {
        let expected = reference(&format!("{root}/"), sql).await;
        for coalescing in [Coalescing::disabled(), adaptive.clone()] {
            let mut request = JobRequest::new(sql, skew::table_specs(&root));
            // Joins shuffle both sides (this data set is small enough to
            // broadcast), so the hot key lands in one partition.
            request.plan = PlanOptions {
                shuffle_partitions: 64,
                broadcast_rows: 1000,
                broadcast_bytes: 64 << 10,
                ..PlanOptions::default()
            };
            request.tasks.coalescing = coalescing.clone();
            let result = engine.run(&request, None).await.unwrap();
            let rows = render(result.batches.as_deref().unwrap());
            compare(&expected, &rows, false)
                .unwrap_or_else(|e| panic!("{name}, {coalescing:?}: {e}"));
            let splits: u32 = result.stages.iter().map(|s| s.split_tasks).sum();
            if !coalescing.enabled {
                assert_eq!(splits, 0);
            }
            split_tasks += splits;
        }
    }
    assert!(split_tasks > 0, "no skewed partition was split");
    assert!(files_under(work.path()).is_empty());
}
