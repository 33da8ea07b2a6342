//! Small stages run inside the one task that reads them
//! (`TaskOptions::fuse_max_bytes`, `planner::fuse`): the sort or final
//! aggregate under most queries' last merge runs no tasks of its own, the
//! answers stay the reference answers, and nothing is fused when fusing is
//! off or the inputs are larger than allowed.

use squall_engine::{JobRequest, JobResult, PlanOptions};
use squall_tests::{local_engine, tpch_data, tpch_run_failures, tpch_tables};
use squall_tools::tpch;

fn request(q: usize, data: &std::path::Path, fuse_max_bytes: u64) -> JobRequest {
    let mut request = JobRequest::new(tpch::query(q).unwrap(), tpch_tables(data));
    request.plan = PlanOptions {
        shuffle_partitions: 4,
        ..PlanOptions::default()
    };
    request.tasks.fuse_max_bytes = fuse_max_bytes;
    request
}

/// (stage, the stage whose task ran it) of each fused stage.
fn fused(result: &JobResult) -> Vec<(u32, u32)> {
    result
        .stages
        .iter()
        .filter_map(|s| s.fused_into.map(|into| (s.stage, into)))
        .collect()
}

fn tasks(result: &JobResult) -> usize {
    result.stages.iter().map(|s| s.tasks).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_stages_run_inside_the_final_task_with_the_same_answers() {
    let data = tpch_data("0.1").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let default = squall_engine::TaskOptions::default().fuse_max_bytes;
    let mut failures = Vec::new();
    let mut fused_queries = 0;
    for q in 1..=22 {
        let result = engine
            .run(&request(q, &data, default), None)
            .await
            .map_err(|e| e.to_string());
        failures.extend(tpch_run_failures("0.1", q, &result, work.path()));
        let Ok(result) = result else { continue };
        let last = result.dag.final_stage();
        for (stage, into) in fused(&result) {
            assert_eq!(into, last.id, "Q{q}: stage {stage} fused into {into}");
            let planned = result.dag.stage(stage).unwrap();
            assert!(
                !planned.inputs.is_empty() && planned.read_bytes == 0,
                "Q{q}"
            );
            // It ran no task, and the final stage read its inputs instead.
            let ran = result.stages.iter().find(|s| s.stage == stage).unwrap();
            assert_eq!((ran.tasks, ran.attempts, ran.bytes_out), (0, 0, 0), "Q{q}");
        }
        fused_queries += usize::from(!fused(&result).is_empty());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every query that ends in a sort (all but Q6, Q14, Q17, Q19 end in
    // one; the top-N ones too) has its sort run by the final task.
    assert!(fused_queries >= 16, "{fused_queries} of 22 queries fused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_fused_when_off_or_past_the_bytes() {
    let data = tpch_data("0.1").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let mut failures = Vec::new();
    for q in [1, 16, 22] {
        let on = engine.run(&request(q, &data, 16 << 20), None).await;
        let off = engine.run(&request(q, &data, 0), None).await;
        let tight = engine.run(&request(q, &data, 1), None).await;
        let (on, off, tight) = (on.unwrap(), off.unwrap(), tight.unwrap());
        assert!(!fused(&on).is_empty(), "Q{q}: nothing fused");
        assert!(fused(&off).is_empty(), "Q{q}: fused while off");
        assert!(fused(&tight).is_empty(), "Q{q}: fused past 1 byte");
        assert!(
            tasks(&on) < tasks(&off),
            "Q{q}: {} tasks fused, {} not",
            tasks(&on),
            tasks(&off)
        );
        for result in [off, tight] {
            failures.extend(tpch_run_failures("0.1", q, &Ok(result), work.path()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
