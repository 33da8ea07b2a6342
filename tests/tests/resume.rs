//! A job interrupted after some stages committed (the server was killed: no
//! cleanup ran) resumes from the committed stages recorded in the job store: the
//! answer is right, committed stages do not run again, and the work folder ends
//! empty.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use squall_engine::backend::ExecutorBackend;
use squall_engine::{JobRequest, JobRun, PlanOptions, plan_job};
use squall_executor::{StoreRegistry, TaskResult, TaskSpec};
use squall_service::{JobStore, NewJob, StoreJournal, now_ms};
use squall_tests::{
    compare, expected_answer, files_under, is_ordered, local_engine, render, tpch_data, tpch_tables,
};
use squall_tools::tpch;

/// The in-process backend, counting invocations per stage; tasks of `hang_stage`
/// never answer (the process is about to be killed).
#[derive(Debug)]
struct Backend {
    inner: Arc<dyn ExecutorBackend>,
    hang_stage: Option<u32>,
    invoked: Mutex<Vec<u32>>,
}

#[async_trait]
impl ExecutorBackend for Backend {
    fn name(&self) -> &str {
        "test"
    }

    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        self.invoked.lock().unwrap().push(spec.id.stage_id);
        if Some(spec.id.stage_id) == self.hang_stage {
            std::future::pending::<()>().await;
        }
        self.inner.invoke(spec).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_job_resumes_from_its_committed_stages() {
    let data = tpch_data("0.01").await;
    let work = tempfile::tempdir().unwrap();
    let q = 3;
    let mut request = JobRequest::new(tpch::query(q).unwrap(), tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 3,
        ..PlanOptions::default()
    };
    // Every stage before the final one commits (none runs in the final
    // stage's task): the first run hangs in the final stage after them.
    request.tasks.fuse_max_bytes = 0;
    let planned = plan_job(
        &request.sql,
        &request.tables,
        &request.plan,
        Arc::new(StoreRegistry::new()),
        "memory:///w",
        "memory:///w/result",
    )
    .await
    .unwrap();
    let final_stage = planned.dag.final_stage().id;
    let earlier = planned.dag.stages.len() - 1;
    assert!(earlier >= 2, "Q3 should have several stages");

    let store = Arc::new(JobStore::open_in_memory().unwrap());
    let job_id = squall_engine::engine::new_job_id();
    store
        .insert_job(
            &NewJob {
                id: job_id.clone(),
                sql: request.sql.clone(),
                request: serde_json::json!({}),
                schedule_id: None,
                principal: "admin".into(),
                client_token: None,
            },
            now_ms(),
        )
        .unwrap();
    let journal = Arc::new(StoreJournal {
        store: store.clone(),
        job_id: job_id.clone(),
    });

    // First run: everything but the final stage commits, then the "server dies".
    let base = local_engine(4, work.path());
    let first = Arc::new(Backend {
        inner: base.backend.clone(),
        hang_stage: Some(final_stage),
        invoked: Mutex::new(Vec::new()),
    });
    let engine = squall_engine::Engine {
        backend: first.clone(),
        ..base.clone()
    };
    let run = JobRun {
        job_id: Some(job_id.clone()),
        journal: Some(journal.clone()),
        ..JobRun::default()
    };
    {
        // The job runs until the stages before the final one are recorded; then
        // its future is dropped mid-flight, which is all a killed process leaves.
        let job = engine.run_as(&request, run);
        tokio::pin!(job);
        let committed = async {
            while store.committed_stages(&job_id).unwrap().len() < earlier {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            outcome = &mut job => panic!("the job ended though its final stage hangs: {:?}", outcome.map(|r| r.rows)),
            waited = tokio::time::timeout(Duration::from_secs(60), committed) => {
                waited.expect("stages never committed");
            }
        }
    }
    assert!(
        !files_under(work.path()).is_empty(),
        "the killed run's shuffle files should still be there"
    );

    // Second run, as a restarted server does it: same id, committed stages from the store.
    let second = Arc::new(Backend {
        inner: base.backend.clone(),
        hang_stage: None,
        invoked: Mutex::new(Vec::new()),
    });
    let engine = squall_engine::Engine {
        backend: second.clone(),
        ..base.clone()
    };
    let run = JobRun {
        job_id: Some(job_id.clone()),
        done: store.committed_stages(&job_id).unwrap(),
        journal: Some(journal),
        ..JobRun::default()
    };
    let result = engine.run_as(&request, run).await.expect("resumed job");
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", q), &rows, is_ordered(q)).expect("Q3 answer");
    let invoked = second.invoked.lock().unwrap().clone();
    assert!(
        invoked.iter().all(|s| *s == final_stage),
        "committed stages ran again: {invoked:?}"
    );
    assert!(!invoked.is_empty());
    assert_eq!(result.job_id, job_id);
    assert_eq!(files_under(work.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn a_resumed_job_id_must_be_one_squall_made() {
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(1, work.path());
    let request = JobRequest::new("SELECT 1", vec![]);
    let run = JobRun {
        job_id: Some("../../etc".into()),
        ..JobRun::default()
    };
    let err = engine.run_as(&request, run).await.unwrap_err().to_string();
    assert!(err.contains("not 16 hexadecimal digits"), "{err}");
}
