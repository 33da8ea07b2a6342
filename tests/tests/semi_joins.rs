//! Semi and anti joins whose small side is broadcast: the planner shuffles only the
//! probe side's matched keys (see `planner::joins`). NULL keys, duplicate keys on
//! both sides, keys on several columns and keys spread over every probe file must
//! give exactly what single-node DataFusion gives on the same files.

use std::path::Path;

use squall_engine::{JobRequest, PlanOptions, TableSpec, plan_job};
use squall_executor::StoreRegistry;
use squall_tests::{local_engine, render, run_rendered, single_node, write_int_parquet};

/// `small` (a, b, v): 40 rows, keys 0..20 twice, some NULLs. `big` (a, b): four
/// files of 5,000 rows, keys 0..15 in every file, some NULLs.
fn write_tables(root: &Path) {
    let small = root.join("small");
    let big = root.join("big");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&big).unwrap();
    let key = |i: i64| if i % 7 == 3 { None } else { Some(i % 20) };
    write_int_parquet(
        &small.join("s.parquet"),
        &["a", "b", "v"],
        vec![
            (0..40).map(key).collect(),
            (0..40).map(|i| Some(i % 2)).collect(),
            (0..40).map(Some).collect(),
        ],
    );
    for f in 0..4i64 {
        write_int_parquet(
            &big.join(format!("part-{f}.parquet")),
            &["a", "b"],
            vec![
                (0..5000)
                    .map(|i| {
                        if i % 101 == 0 {
                            None
                        } else {
                            Some((i + f) % 15)
                        }
                    })
                    .collect(),
                (0..5000).map(|i| Some((i / 3) % 2)).collect(),
            ],
        );
    }
}

const QUERIES: [&str; 5] = [
    "SELECT v FROM small WHERE EXISTS (SELECT 1 FROM big WHERE big.a = small.a) ORDER BY v",
    "SELECT v FROM small WHERE NOT EXISTS (SELECT 1 FROM big WHERE big.a = small.a) ORDER BY v",
    "SELECT v FROM small WHERE EXISTS \
     (SELECT 1 FROM big WHERE big.a = small.a AND big.b = small.b) ORDER BY v",
    "SELECT v FROM small WHERE NOT EXISTS \
     (SELECT 1 FROM big WHERE big.a = small.a AND big.b = small.b) ORDER BY v",
    "SELECT v FROM small WHERE a IN (SELECT a + 10 FROM big) ORDER BY v",
];

#[tokio::test]
async fn broadcast_semi_and_anti_joins_match_single_node() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    write_tables(data.path());
    let tables = vec![
        TableSpec::new("small", format!("{}/small/", data.path().display())),
        TableSpec::new("big", format!("{}/big/", data.path().display())),
    ];
    let single = single_node(&tables).await;
    let engine = local_engine(3, work.path());
    let options = PlanOptions {
        shuffle_partitions: 3,
        ..PlanOptions::default()
    };
    for sql in QUERIES {
        // The rewrite is what is under test: the probe side must run a right semi
        // join against the broadcast small side.
        let planned = plan_job(
            sql,
            &tables,
            &options,
            std::sync::Arc::new(StoreRegistry::new()),
            "file:///unused/work",
            "file:///unused/result",
        )
        .await
        .unwrap();
        let text = planned.dag.display(&[]);
        assert!(text.contains("join_type=RightSemi"), "{sql}\n{text}");

        let mut request = JobRequest::new(sql, tables.clone());
        request.plan = options.clone();
        let ours = run_rendered(&engine, &request).await.unwrap();
        let theirs = render(&single.sql(sql).await.unwrap().collect().await.unwrap());
        assert_eq!(ours[1..], theirs[1..], "{sql}");
        assert!(
            ours.len() > 1,
            "{sql}: no rows, the test data is too sparse"
        );
    }
}
