//! Backup tasks: a straggling attempt gets a backup copy, the first copy to
//! succeed wins, the other is stopped and its object deleted, and the answer is
//! exact; with backups off, the stage waits for the straggler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use squall_engine::backend::ExecutorBackend;
use squall_engine::scheduler::{Coalescing, Speculation};
use squall_engine::{Engine, JobRequest, MANIFEST_NAME, Manifest, PlanOptions};
use squall_executor::{StoreRegistry, TaskResult, TaskSpec};
use squall_tests::{compare, files_under, local_engine, render, tpch_data, tpch_tables};

/// Wraps the in-process backend: the first attempt of task `target` runs (and
/// writes its object), then holds its answer back for `hold`.
#[derive(Debug)]
struct Straggler {
    inner: Arc<dyn ExecutorBackend>,
    target: Mutex<Option<(u32, u32)>>,
    hold: Duration,
    /// Set when the straggler's invocation was dropped before it answered.
    dropped: Arc<AtomicBool>,
    invoked: Mutex<Vec<(u32, u32, u32)>>,
}

/// Raises its flag when dropped, unless disarmed.
struct DropFlag(Arc<AtomicBool>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl ExecutorBackend for Straggler {
    fn name(&self) -> &str {
        "straggler"
    }

    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    async fn wait_idle(&self, job_id: &str) {
        self.inner.wait_idle(job_id).await
    }

    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        let id = spec.id.clone();
        self.invoked
            .lock()
            .unwrap()
            .push((id.stage_id, id.task, id.attempt));
        let straggles =
            *self.target.lock().unwrap() == Some((id.stage_id, id.task)) && id.attempt == 0;
        let answer = self.inner.invoke(spec).await;
        if straggles {
            let mut flag = DropFlag(self.dropped.clone(), true);
            tokio::time::sleep(self.hold).await;
            flag.1 = false;
        }
        answer
    }
}

/// Groups orders by priority over 4 shuffle partitions: the last stage has 4
/// tasks, each writing a result file.
const SQL: &str = "SELECT o_orderpriority, count(*) AS n, sum(o_totalprice) AS total \
                   FROM orders GROUP BY o_orderpriority";

async fn setup(
    hold: Duration,
    speculation: Speculation,
    output: Option<String>,
) -> (Engine, Arc<Straggler>, JobRequest, tempfile::TempDir) {
    let data = tpch_data("0.01").await;
    let work = tempfile::tempdir().unwrap();
    let local = local_engine(3, work.path());
    let straggler = Arc::new(Straggler {
        inner: local.backend.clone(),
        target: Mutex::new(None),
        hold,
        dropped: Arc::default(),
        invoked: Mutex::default(),
    });
    let engine = Engine {
        backend: straggler.clone(),
        ..local
    };
    let mut request = JobRequest::new(SQL, tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 4,
        ..PlanOptions::default()
    };
    request.tasks.speculation = speculation;
    // Four reduce tasks, not sized to the (tiny) shuffle.
    request.tasks.coalescing = Coalescing::disabled();
    request.output = output;
    // The last stage's task 1 straggles.
    let planned = squall_engine::plan_job(
        &request.sql,
        &request.tables,
        &request.plan,
        Arc::new(StoreRegistry::new()),
        "memory:///w",
        "memory:///w/r",
    )
    .await
    .unwrap();
    let last = planned.dag.final_stage();
    assert_eq!(last.tasks, 4, "{:?}", planned.dag.stages.len());
    *straggler.target.lock().unwrap() = Some((last.id, 1));
    (engine, straggler, request, work)
}

async fn reference() -> Vec<Vec<String>> {
    let data = tpch_data("0.01").await;
    let ctx = squall_tools::tpch::single_node_context(&data.display().to_string(), 2)
        .await
        .unwrap();
    render(&ctx.sql(SQL).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_wins_and_the_stragglers_output_is_gone() {
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("by-priority");
    let speculation = Speculation {
        min_runtime: Duration::from_millis(100),
        interval: Duration::from_millis(20),
        ..Speculation::default()
    };
    let (engine, straggler, request, work) = setup(
        Duration::from_secs(600),
        speculation,
        Some(format!("file://{}", folder.display())),
    )
    .await;
    // Without a backup the job would wait ten minutes: fail well before.
    let result = tokio::time::timeout(Duration::from_secs(120), engine.run(&request, None))
        .await
        .expect("the backup should finish the job long before the straggler")
        .unwrap();

    let (stage, task) = straggler.target.lock().unwrap().unwrap();
    let stats = result.stages.iter().find(|s| s.stage == stage).unwrap();
    assert_eq!((stats.backups, stats.backup_wins), (1, 1), "{stats:?}");
    assert_eq!(stats.attempts, 5, "four tasks and one backup: {stats:?}");
    let others: u32 = result
        .stages
        .iter()
        .filter(|s| s.stage != stage)
        .map(|s| s.backups)
        .sum();
    assert_eq!(others, 0, "only the straggler's stage backs up");
    let invoked = straggler.invoked.lock().unwrap().clone();
    assert!(invoked.contains(&(stage, task, 1)), "{invoked:?}");
    assert!(
        straggler.dropped.load(Ordering::SeqCst),
        "the losing attempt was stopped, not waited for"
    );

    // The output folder holds exactly the manifest's files: the straggler's
    // result file (attempt 0 of the task) was written and then deleted.
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(folder.join(MANIFEST_NAME)).unwrap()).unwrap();
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.url.clone()).collect();
    listed.sort();
    let mut present: Vec<String> = files_under(&folder)
        .into_iter()
        .filter(|p| !p.ends_with(MANIFEST_NAME))
        .map(|p| format!("file://{}", p.display()))
        .collect();
    present.sort();
    assert_eq!(listed, present, "output holds exactly the committed files");
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .any(|u| u.contains(&format!("part-{task:05}-")) && u.ends_with("-1.parquet")),
        "the backup's (attempt 1) file is the task's: {listed:?}"
    );
    let batches = squall_engine::read_result(&engine.stores, &result.files)
        .await
        .unwrap();
    compare(&reference().await, &render(&batches), false).unwrap();
    assert!(files_under(work.path()).is_empty(), "work folder swept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_backups_off_the_stage_waits_for_the_straggler() {
    let (engine, straggler, request, work) =
        setup(Duration::from_secs(2), Speculation::disabled(), None).await;
    let result = engine.run(&request, None).await.unwrap();
    let (stage, task) = straggler.target.lock().unwrap().unwrap();
    let stats = result.stages.iter().find(|s| s.stage == stage).unwrap();
    assert_eq!((stats.backups, stats.backup_wins), (0, 0), "{stats:?}");
    assert_eq!(stats.attempts, 4);
    assert!(!straggler.dropped.load(Ordering::SeqCst));
    let invoked = straggler.invoked.lock().unwrap().clone();
    assert!(!invoked.contains(&(stage, task, 1)), "{invoked:?}");
    compare(
        &reference().await,
        &render(result.batches.as_deref().unwrap()),
        false,
    )
    .unwrap();
    assert!(files_under(work.path()).is_empty());
}
