//! Where tasks run. One trait, [`ExecutorBackend`]; the scheduler knows nothing else.
//!
//! The in-process backend is the embedded default: it runs `run_task` on tokio
//! tasks, and still sends every spec and result through their JSON encoding, so
//! tasks share nothing with the control plane but the object store — exactly as a
//! remote backend would. The Lambda backend ([`lambda`]) invokes the same
//! `run_task` inside the `squall-lambda` function.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use squall_executor::{
    ExecutorContext, FailureKind, StopFlag, TaskFailure, TaskOutcome, TaskResult, TaskSpec,
    run_task_stoppable,
};
use tokio::sync::{Notify, Semaphore};

use crate::error::{Result, SquallError};

pub mod aimd;
pub mod auto;
pub mod fanout;
pub mod faults;
pub mod lambda;
pub mod placement;

pub use aimd::FlowStats;
pub use auto::AutoBackend;
pub use faults::FaultyBackend;
pub use lambda::{Backoff, LambdaBackend, LambdaConfig};
pub use placement::{BurstPolicy, Place, Placed, Placement, Prefer, StageOutlook};

/// Runs task attempts somewhere. `Ok` carries the task's own result (success or a
/// typed failure); `Err` means the executor could not be reached or crashed.
#[async_trait]
pub trait ExecutorBackend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// How many tasks this backend runs at once.
    fn max_concurrency(&self) -> usize;

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult>;

    /// Whether a whole job whose scans read `job`'s bytes (as one stage of
    /// its widest stage's tasks) stays on this machine, its files on local
    /// disk: the reason if so. Only a backend of two places says so.
    fn keeps_here(&self, job: &StageOutlook) -> Option<String> {
        let _ = job;
        None
    }

    /// Where this backend can run tasks: one place, or (auto) both.
    fn places(&self) -> Vec<Place> {
        vec![if self.bills_invocations() {
            Place::Lambda
        } else {
            Place::Local
        }]
    }

    /// Where a stage's tasks run, from what the scheduler knows of the stage
    /// when it is ready. A backend with one place always says that place.
    fn place(&self, outlook: &StageOutlook) -> Placement {
        let place = self.places().first().copied().unwrap_or(Place::Local);
        Placement::only(place, outlook.tasks)
    }

    /// Where the next attempt of a stage placed as `placed` runs.
    fn route(&self, placed: &Placed) -> Place {
        placed.placement.place
    }

    /// Runs one attempt where [`route`](Self::route) said.
    async fn invoke_at(&self, place: Place, spec: TaskSpec) -> Result<TaskResult> {
        let _ = place;
        self.invoke(spec).await
    }

    /// Whether this backend's executors can read and write objects at `url`
    /// (remote executors cannot see the control plane's disk or memory).
    fn can_reach(&self, url: &url::Url) -> bool {
        let _ = url;
        true
    }

    /// Whether each invocation is billed by its duration and memory (Lambda):
    /// an attempt whose executor never answered is then billed at the time
    /// it was waited for (see `cost`).
    fn bills_invocations(&self) -> bool {
        false
    }

    /// Execution environments started and idle now, likely warm for the
    /// next invocations (Lambda); 0 for others.
    fn idle_environments(&self) -> usize {
        0
    }

    /// The in-flight limit and throttles of a backend whose service throttles
    /// (Lambda); None for others.
    fn flow(&self) -> Option<FlowStats> {
        None
    }

    /// Returns once no task of job `job_id` runs any more on this backend's
    /// executors, as far as the backend can stop them: called after a job's
    /// future was dropped (cancelled, past its deadline), before its objects
    /// are swept. Remote executors that cannot be stopped are not waited for.
    async fn wait_idle(&self, job_id: &str) {
        let _ = job_id;
    }

    /// Invocations of job `job_id` still running that could not be stopped
    /// (a losing backup on Lambda runs on and may write its file).
    fn strays(&self, job_id: &str) -> usize {
        let _ = job_id;
        0
    }

    /// Returns once those have ended: the engine sweeps the job's work
    /// folder again then. Bounded by the backend's invocation timeout.
    async fn wait_strays(&self, job_id: &str) {
        let _ = job_id;
    }
}

/// Runs tasks on this process's tokio runtime, at most `concurrency` at once
/// across all jobs. A task whose invocation is dropped (its job cancelled or
/// past its deadline) is aborted.
#[derive(Debug, Clone)]
pub struct InProcessBackend {
    ctx: ExecutorContext,
    concurrency: usize,
    permits: Arc<Semaphore>,
    live: Arc<LiveTasks>,
    /// MiB of memory pools the running tasks may hold together (None: no
    /// budget beyond each task's own pool): a task waits until its pool fits.
    memory: Option<Arc<MemoryBudget>>,
}

/// Memory the in-process executors share, in MiB.
#[derive(Debug)]
struct MemoryBudget {
    mib: u32,
    free: Semaphore,
}

/// Tasks running on the runtime (or invocations in flight), by job.
#[derive(Debug, Default)]
pub(crate) struct LiveTasks {
    by_job: std::sync::Mutex<HashMap<String, usize>>,
    ended: Notify,
}

impl LiveTasks {
    pub(crate) fn count(&self, job_id: &str) -> usize {
        let by_job = self.by_job.lock().unwrap_or_else(|e| e.into_inner());
        by_job.get(job_id).copied().unwrap_or(0)
    }

    /// Returns once no task of job `job_id` is live.
    pub(crate) async fn none_of(&self, job_id: &str) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.count(job_id) == 0 {
                return;
            }
            ended.await;
        }
    }

    pub(crate) fn started(self: &Arc<Self>, job_id: &str) -> LiveTask {
        let mut by_job = self.by_job.lock().unwrap_or_else(|e| e.into_inner());
        *by_job.entry(job_id.to_string()).or_default() += 1;
        LiveTask {
            live: self.clone(),
            job_id: job_id.to_string(),
        }
    }
}

/// Counts one task of a job while the task's future exists: it is dropped when
/// the task ends, however it ends (an aborted task's future is dropped too).
pub(crate) struct LiveTask {
    live: Arc<LiveTasks>,
    job_id: String,
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        let mut by_job = self.live.by_job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_job.get_mut(&self.job_id) {
            *count -= 1;
            if *count == 0 {
                by_job.remove(&self.job_id);
            }
        }
        drop(by_job);
        self.live.ended.notify_waiters();
    }
}

/// Stops a spawned task when its invocation is dropped: raises its stop flag
/// (the task ends within a batch of each operator, even one that never awaits)
/// and aborts it (it ends at its next await).
struct StopOnDrop<T> {
    handle: tokio::task::JoinHandle<T>,
    flag: StopFlag,
}

impl<T> Drop for StopOnDrop<T> {
    fn drop(&mut self) {
        self.flag.raise();
        self.handle.abort();
    }
}

impl InProcessBackend {
    /// Executors not running a task now.
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// Tasks running on the runtime now, of all jobs.
    pub fn running(&self) -> usize {
        let by_job = self.live.by_job.lock().unwrap_or_else(|e| e.into_inner());
        by_job.values().sum()
    }

    pub fn new(ctx: ExecutorContext, concurrency: usize) -> Result<Self> {
        if concurrency == 0 {
            return Err(SquallError::InvalidArgument(
                "executors must be at least 1".into(),
            ));
        }
        if concurrency > Semaphore::MAX_PERMITS {
            return Err(SquallError::InvalidArgument(format!(
                "executors must be at most {}",
                Semaphore::MAX_PERMITS
            )));
        }
        Ok(Self {
            ctx,
            concurrency,
            permits: Arc::new(Semaphore::new(concurrency)),
            live: Arc::default(),
            memory: None,
        })
    }

    /// These executors, their tasks' memory pools together at most `bytes`:
    /// a task starts once its pool fits beside those of the running ones.
    pub fn with_memory_budget(self, bytes: u64) -> Result<Self> {
        let mib = u32::try_from(bytes >> 20).unwrap_or(u32::MAX);
        if mib == 0 || mib as usize > Semaphore::MAX_PERMITS {
            return Err(SquallError::InvalidArgument(format!(
                "the executors' memory budget must be 1 MiB to {} MiB",
                Semaphore::MAX_PERMITS
            )));
        }
        Ok(Self {
            memory: Some(Arc::new(MemoryBudget {
                mib,
                free: Semaphore::new(mib as usize),
            })),
            ..self
        })
    }

    /// A failure of `spec` whose pool is over the whole budget.
    fn over_budget(spec: &TaskSpec, budget: &MemoryBudget) -> TaskResult {
        TaskResult {
            wire_version: spec.wire_version,
            id: spec.id.clone(),
            outcome: TaskOutcome::Failed(TaskFailure {
                kind: FailureKind::Execution,
                message: format!(
                    "the task's memory pool of {} MiB is over the {} MiB the in-process \
                     executors share (squall serve --server-memory)",
                    spec.memory_limit_bytes >> 20,
                    budget.mib
                ),
                retryable: false,
            }),
            usage: Default::default(),
        }
    }
}

#[async_trait]
impl ExecutorBackend for InProcessBackend {
    fn name(&self) -> &str {
        "in-process"
    }

    fn max_concurrency(&self) -> usize {
        self.concurrency
    }

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult> {
        let _permit =
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SquallError::Closed {
                    what: "the in-process executors",
                })?;
        // Held while the task runs: its pool, out of the executors' budget.
        let _memory = match &self.memory {
            None => None,
            Some(budget) => {
                let mib = u32::try_from(spec.memory_limit_bytes.div_ceil(1 << 20))
                    .unwrap_or(u32::MAX)
                    .max(1);
                if mib > budget.mib {
                    return Ok(Self::over_budget(&spec, budget));
                }
                Some(
                    budget
                        .free
                        .acquire_many(mib)
                        .await
                        .map_err(|_| SquallError::Closed {
                            what: "the in-process executors",
                        })?,
                )
            }
        };
        let payload = serde_json::to_vec(&spec).map_err(|source| SquallError::Encode {
            what: "a task spec".into(),
            source,
        })?;
        let ctx = self.ctx.clone();
        let live = self.live.started(&spec.id.job_id);
        let flag = StopFlag::default();
        let stop = flag.clone();
        let mut task = StopOnDrop {
            handle: tokio::spawn(async move {
                let _live = live;
                let spec: TaskSpec = serde_json::from_slice(&payload)
                    .map_err(|e| format!("executor cannot decode task spec: {e}"))?;
                let result = run_task_stoppable(&ctx, spec, stop).await;
                serde_json::to_vec(&result).map_err(|e| format!("cannot encode task result: {e}"))
            }),
            flag,
        };
        let bytes = (&mut task.handle)
            .await
            .map_err(|source| SquallError::Crashed {
                what: "an executor task",
                source,
            })?
            .map_err(|message| SquallError::Executor { message })?;
        serde_json::from_slice(&bytes).map_err(|source| SquallError::Decode {
            what: "a task result".into(),
            source,
        })
    }

    async fn wait_idle(&self, job_id: &str) {
        self.live.none_of(job_id).await
    }
}

/// Shares one backend between jobs.
pub type SharedBackend = Arc<dyn ExecutorBackend>;

#[cfg(test)]
mod tests {
    use super::*;
    use squall_executor::{StoreRegistry, TaskId};

    fn spec(job: &str) -> TaskSpec {
        TaskSpec::ping(TaskId {
            job_id: job.into(),
            run_id: "r".into(),
            stage_id: 1,
            task: 0,
            attempt: 0,
        })
    }

    #[tokio::test]
    async fn a_dropped_invocation_stops_its_task() {
        let ctx = ExecutorContext::new(Arc::new(StoreRegistry::new()), std::env::temp_dir());
        let backend = InProcessBackend::new(ctx, 1).unwrap();
        // Holds the only permit: the next invocation waits and is then dropped.
        let answered = backend.invoke(spec("a")).await.unwrap();
        assert_eq!(answered.id.job_id, "a");
        assert_eq!(backend.live.count("a"), 0);
        let held = backend.permits.clone().acquire_owned().await.unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            backend.invoke(spec("b")),
        )
        .await;
        assert!(waiting.is_err(), "no executor was free");
        drop(held);
        backend.wait_idle("b").await;
        assert!(
            InProcessBackend::new(
                ExecutorContext::new(Arc::new(StoreRegistry::new()), std::env::temp_dir()),
                usize::MAX
            )
            .is_err()
        );
    }
}
