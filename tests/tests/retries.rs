//! Task failures: a retryable failure is retried and the job's answer is still
//! exact (no rows from the failed attempt), a failure that cannot be retried ends
//! the job with an error naming the task, and either way nothing is left behind
//! but the committed result.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use squall_engine::backend::ExecutorBackend;
use squall_engine::{Engine, JobRequest, MANIFEST_NAME, Manifest, PlanOptions, SquallError};
use squall_executor::{
    ExecutorContext, FailureKind, StoreRegistry, TaskFailure, TaskOutcome, TaskResult, TaskSpec,
};
use squall_tests::stores::{Fault, Op, RecordingStore};
use squall_tests::{
    compare, expected_answer, files_under, is_ordered, render, tpch_data, tpch_tables,
};

/// When a chosen task's attempt fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The attempt runs to the end (its output is written), then reports a failure,
    /// as when an executor dies after its upload.
    AfterRunning { retryable: bool },
    /// The executor cannot be reached at all.
    Unreachable,
}

/// Wraps the in-process backend; fails the first `fail_attempts` attempts of tasks
/// `(stage, task)` in `targets`.
#[derive(Debug)]
struct FlakyBackend {
    inner: squall_engine::InProcessBackend,
    targets: Vec<(u32, u32)>,
    fail_attempts: u32,
    failure: Failure,
    /// Every attempt invoked: (stage, task, attempt).
    invoked: Mutex<Vec<(u32, u32, u32)>>,
}

impl FlakyBackend {
    /// Attempts invoked of task `task` of stage `stage`.
    fn attempts_of(&self, stage: u32, task: u32) -> usize {
        let invoked = self.invoked.lock().unwrap();
        invoked
            .iter()
            .filter(|(s, t, _)| (*s, *t) == (stage, task))
            .count()
    }
}

#[async_trait]
impl ExecutorBackend for FlakyBackend {
    fn name(&self) -> &str {
        "flaky"
    }

    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        let id = spec.id.clone();
        self.invoked
            .lock()
            .unwrap()
            .push((id.stage_id, id.task, id.attempt));
        let chosen =
            self.targets.contains(&(id.stage_id, id.task)) && id.attempt < self.fail_attempts;
        if !chosen {
            return self.inner.invoke(spec).await;
        }
        match self.failure {
            Failure::Unreachable => Err(SquallError::Executor {
                message: "connection reset".into(),
            }),
            Failure::AfterRunning { retryable } => {
                let result = self.inner.invoke(spec).await?;
                assert!(
                    matches!(result.outcome, TaskOutcome::Succeeded { .. }),
                    "the real attempt should succeed: {result:?}"
                );
                Ok(TaskResult {
                    wire_version: result.wire_version,
                    id,
                    outcome: TaskOutcome::Failed(TaskFailure {
                        kind: FailureKind::Storage,
                        message: "injected failure".into(),
                        retryable,
                    }),
                    usage: result.usage,
                })
            }
        }
    }
}

fn flaky_engine(
    work: &std::path::Path,
    targets: Vec<(u32, u32)>,
    fail_attempts: u32,
    failure: Failure,
) -> (Engine, Arc<FlakyBackend>) {
    let stores = Arc::new(StoreRegistry::new());
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let backend = Arc::new(FlakyBackend {
        inner: squall_engine::InProcessBackend::new(ctx, 3).unwrap(),
        targets,
        fail_attempts,
        failure,
        invoked: Mutex::new(Vec::new()),
    });
    let engine = Engine::with_backend(
        stores,
        backend.clone(),
        &format!("file://{}", work.display()),
    );
    (engine, backend)
}

/// Q3 at width 4: stage 1 is a scan, the last stage writes the result.
async fn q3_request(output: Option<String>) -> JobRequest {
    let data = tpch_data("0.01").await;
    let mut request = JobRequest::new(squall_tools::tpch::query(3).unwrap(), tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 4,
        ..PlanOptions::default()
    };
    // The tasks chosen to fail exist: one reduce task per partition.
    request.tasks.coalescing = squall_engine::scheduler::Coalescing::disabled();
    request.output = output;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_after_output_still_give_exact_answer() {
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = format!("file://{}/q3", out.path().display());
    let mut request = q3_request(Some(output.clone())).await;
    // The reduce stage chosen below runs its own tasks (not fused into the
    // final stage's).
    request.tasks.fuse_max_bytes = 0;
    // Plan once to learn the stage ids: fail a scan task, a reduce task and the
    // result task, each after it wrote its output.
    let (probe, _) = flaky_engine(work.path(), vec![], 0, Failure::Unreachable);
    let planned = squall_engine::plan_job(
        &request.sql,
        &request.tables,
        &request.plan,
        probe.stores.clone(),
        "memory:///w",
        "memory:///w/r",
    )
    .await
    .unwrap();
    let stages = &planned.dag.stages;
    assert!(stages.len() >= 3);
    let targets = vec![
        (stages[0].id, 0),
        (stages[stages.len() - 2].id, 1),
        (planned.dag.final_stage().id, 0),
    ];
    let (engine, backend) = flaky_engine(
        work.path(),
        targets.clone(),
        2,
        Failure::AfterRunning { retryable: true },
    );
    let result = engine.run(&request, None).await.unwrap();

    // Each chosen task ran three times; the others once.
    for &(stage, task) in &targets {
        assert_eq!(
            backend.attempts_of(stage, task),
            3,
            "stage {stage} task {task}"
        );
    }
    let invoked = backend.invoked.lock().unwrap().clone();
    let unique: HashSet<_> = invoked.iter().collect();
    assert_eq!(unique.len(), invoked.len(), "no attempt ran twice");
    let retried: u32 = result
        .stages
        .iter()
        .map(|s| s.attempts - s.tasks as u32)
        .sum();
    assert_eq!(retried, 6, "two extra attempts for each of three tasks");

    // The manifest names exactly the files in the output folder, and their rows
    // are the answer: nothing from the failed attempts.
    let manifest_path = out.path().join("q3").join(MANIFEST_NAME);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.url.clone()).collect();
    listed.sort();
    let mut present: Vec<String> = files_under(&out.path().join("q3"))
        .into_iter()
        .filter(|p| !p.ends_with(MANIFEST_NAME))
        .map(|p| format!("file://{}", p.display()))
        .collect();
    present.sort();
    assert_eq!(listed, present, "output holds exactly the committed files");
    let batches = squall_engine::read_result(&engine.stores, &result.files)
        .await
        .unwrap();
    compare(
        &expected_answer("0.01", 3),
        &render(&batches),
        is_ordered(3),
    )
    .unwrap();
    assert_eq!(manifest.rows, 10);
    assert!(files_under(work.path()).is_empty(), "shuffle files removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_executor_is_retried() {
    let work = tempfile::tempdir().unwrap();
    let (engine, backend) =
        flaky_engine(work.path(), vec![(1, 0), (1, 2)], 1, Failure::Unreachable);
    let request = q3_request(None).await;
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap());
    compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).unwrap();
    assert_eq!(backend.attempts_of(1, 0), 2);
    assert!(files_under(work.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_failure_ends_job_and_cleans_up() {
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = format!("file://{}/q3", out.path().display());
    let (engine, backend) = flaky_engine(
        work.path(),
        vec![(2, 1)],
        u32::MAX,
        Failure::AfterRunning { retryable: false },
    );
    let request = q3_request(Some(output)).await;
    let err = engine.run(&request, None).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("stage 2 task 1 failed after 1 attempt"),
        "{message}"
    );
    assert!(message.contains("injected failure"), "{message}");
    assert_eq!(
        err.exit_code(),
        1,
        "a storage failure is not the user's fault"
    );
    assert_eq!(backend.attempts_of(2, 1), 1);
    assert!(
        files_under(work.path()).is_empty(),
        "{:?}",
        files_under(work.path())
    );
    assert!(
        files_under(out.path()).is_empty(),
        "{:?}",
        files_under(out.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts() {
    let work = tempfile::tempdir().unwrap();
    let (engine, backend) = flaky_engine(
        work.path(),
        vec![(1, 3)],
        u32::MAX,
        Failure::AfterRunning { retryable: true },
    );
    let request = q3_request(None).await;
    let err = engine.run(&request, None).await.unwrap_err();
    assert!(err.to_string().contains("failed after 3 attempt"), "{err}");
    assert_eq!(backend.attempts_of(1, 3), 3);
    assert!(
        files_under(work.path()).is_empty(),
        "{:?}",
        files_under(work.path())
    );
}

/// A real storage error inside the executor (the first upload of a shuffle file
/// fails) is classified retryable by the executor itself, and the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_error_in_executor_is_retried() {
    let recording = RecordingStore::new(Arc::new(object_store::memory::InMemory::new()));
    recording.inject(Fault {
        op: Op::Put,
        path_contains: "attempt-0.sqsh".into(),
        remaining: 2,
    });
    let stores = Arc::new(StoreRegistry::new());
    stores.register("memory:///", recording.clone()).unwrap();
    let engine = Engine::embedded_with(stores, Some(2), "memory:///work").unwrap();
    let request = q3_request(None).await;
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap());
    compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).unwrap();
    let retried: usize = result
        .stages
        .iter()
        .map(|s| s.attempts as usize - s.tasks)
        .sum();
    assert_eq!(retried, 2, "the two failed uploads were retried");
    let attempts_1: Vec<_> = recording
        .requests()
        .into_iter()
        .filter(|r| r.op == Op::Put && r.path.ends_with("attempt-1.sqsh"))
        .collect();
    assert_eq!(attempts_1.len(), 2, "{attempts_1:?}");
}
