//! Tasks run under a memory limit: operators that can spill (aggregation, the
//! shuffle writer) go to local disk and the answer stays exact; a task that cannot
//! fit is tried again with twice the pool, and fails, naming the pool, only at
//! the largest one allowed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use squall_engine::backend::ExecutorBackend;
use squall_engine::{Engine, JobRequest, PlanOptions, SquallError, TaskOptions};
use squall_executor::{FailureKind, TaskResult, TaskSpec};
use squall_tests::{
    compare, files_under, local_engine, render, run_rendered, tpch_data, tpch_tables,
};
use squall_tools::tpch;

/// The same SQL on single-node DataFusion over the same files: the reference.
async fn reference(data: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let ctx = tpch::single_node_context(&data.display().to_string(), 2)
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    render(&batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_spills_under_a_small_limit_and_stays_exact() {
    let data = tpch_data("0.1").await;
    let sql = "SELECT l_orderkey, sum(l_quantity) AS qty, count(*) AS n, max(l_comment) AS c \
               FROM lineitem GROUP BY l_orderkey";
    let expected = reference(&data, sql).await;
    assert_eq!(expected.len(), 150_001, "150,000 orders and a header");

    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let mut request = JobRequest::new(sql, tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 1,
        ..PlanOptions::default()
    };
    let limit = 8 << 20;
    request.tasks = TaskOptions {
        memory_limit_bytes: limit,
        ..TaskOptions::default()
    };
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap());
    compare(&expected, &rows, false).unwrap();
    let spilled: u64 = result.stages.iter().map(|s| s.spilled_bytes).sum();
    assert!(
        spilled > 0,
        "an 8 MiB limit must make someone spill: {:?}",
        result.stages
    );
    assert!(files_under(work.path()).is_empty());

    // Without the limit nothing spills: the figure above measures the limit.
    request.tasks = TaskOptions::default();
    let unlimited = engine.run(&request, None).await.unwrap();
    let spilled: u64 = unlimited.stages.iter().map(|s| s.spilled_bytes).sum();
    assert_eq!(spilled, 0, "{:?}", unlimited.stages);
    let peak = unlimited
        .stages
        .iter()
        .map(|s| s.peak_memory_bytes)
        .max()
        .unwrap();
    assert!(
        peak > limit,
        "the query needs more than the limit it spilled under ({peak})"
    );
}

/// Records the memory pool each attempt was given: (stage, task, attempt, pool).
#[derive(Debug)]
struct PoolLog {
    inner: Arc<dyn ExecutorBackend>,
    pools: Mutex<Vec<(u32, u32, u32, u64)>>,
}

#[async_trait]
impl ExecutorBackend for PoolLog {
    fn name(&self) -> &str {
        "pool-log"
    }

    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        let id = &spec.id;
        self.pools.lock().unwrap().push((
            id.stage_id,
            id.task,
            id.attempt,
            spec.memory_limit_bytes,
        ));
        self.inner.invoke(spec).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_out_of_memory_is_retried_with_a_larger_pool() {
    let data = tpch_data("0.01").await;
    let work = tempfile::tempdir().unwrap();
    let local = local_engine(2, work.path());
    let log = Arc::new(PoolLog {
        inner: local.backend.clone(),
        pools: Mutex::default(),
    });
    let engine = Engine {
        backend: log.clone(),
        ..local
    };
    // A hash join's build side cannot spill.
    let mut request = JobRequest::new(
        "SELECT count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey",
        tpch_tables(&data),
    );
    let small = 64 << 10;
    request.tasks = TaskOptions {
        memory_limit_bytes: small,
        max_memory_limit_bytes: 1 << 30,
        ..TaskOptions::default()
    };
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["60175".to_string()]);
    let pools = log.pools.lock().unwrap().clone();
    // Some task needed more than the first pool: its attempts doubled it, one
    // after the other, until one fit.
    let escalated: Vec<_> = pools.iter().filter(|p| p.3 > small).collect();
    assert!(!escalated.is_empty(), "{pools:?}");
    for &&(stage, task, attempt, pool) in &escalated {
        let before = pools
            .iter()
            .find(|p| (p.0, p.1, p.2) == (stage, task, attempt - 1))
            .unwrap_or_else(|| panic!("no attempt before {attempt}: {pools:?}"));
        assert_eq!(pool, before.3 * 2, "{pools:?}");
    }
    assert!(files_under(work.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_out_of_memory_at_the_largest_pool_fails_naming_it() {
    let data = tpch_data("0.01").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    let mut request = JobRequest::new(
        "SELECT count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey",
        tpch_tables(&data),
    );
    request.tasks = TaskOptions {
        memory_limit_bytes: 64 << 10,
        max_memory_limit_bytes: 128 << 10,
        ..TaskOptions::default()
    };
    let err = engine.run(&request, None).await.unwrap_err();
    match &err {
        SquallError::TaskFailed {
            attempts, failure, ..
        } => {
            assert_eq!(*attempts, 2, "the first pool, then twice it: {failure:?}");
            assert_eq!(failure.kind, FailureKind::ResourcesExhausted, "{failure:?}");
        }
        other => panic!("expected a task failure, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("out of memory with a pool of 131072 bytes, the largest allowed"),
        "{message}"
    );
    assert!(message.contains("stage "), "{message}");
    assert!(files_under(work.path()).is_empty());
}
