//! What every part of a job's run shares: the [`Scheduler`] (the job, its
//! backend, stores, options and watchers) and the job's gate (its concurrency
//! and whether it has failed).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_executor::{StoreRegistry, TaskId};
use tokio::sync::Semaphore;

use super::events::{JobEvent, ProgressSink};
use super::exchange::Pricing;
use super::options::TaskOptions;
use crate::backend::ExecutorBackend;
use crate::commit::StageJournal;
use crate::cost::JobMeter;
use crate::planner::Stage;

/// Runs a job's stage DAG on a backend (see the module's documentation).
pub struct Scheduler<'a> {
    pub job_id: &'a str,
    /// This run of the job (see `TaskId::run_id`).
    pub run_id: &'a str,
    pub backend: Arc<dyn ExecutorBackend>,
    pub stores: Arc<StoreRegistry>,
    pub options: &'a TaskOptions,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Told of every committed stage, so an interrupted job can be resumed.
    pub journal: Option<Arc<dyn StageJournal>>,
    /// Takes in what every attempt used.
    pub meter: Arc<JobMeter>,
}

/// Shared by every task of a job: stop launching once the job has failed.
pub(super) struct JobGate {
    pub(super) permits: Semaphore,
    /// Tasks of the job that run at once.
    pub(super) concurrency: usize,
    pub(super) failed: AtomicBool,
    /// How long the job's winning attempts took, in every stage so far: what a
    /// stage of one task is compared with for backups.
    pub(super) succeeded: Mutex<Vec<Duration>>,
}

impl Scheduler<'_> {
    /// Tasks of the job that run at once.
    pub(super) fn concurrency(&self) -> usize {
        self.options
            .max_concurrency
            .unwrap_or_else(|| self.backend.max_concurrency())
            .clamp(1, Semaphore::MAX_PERMITS)
    }

    /// What the job's exchange choices are priced with.
    pub(super) fn pricing(&self) -> Pricing<'_> {
        Pricing {
            prices: self.meter.prices(),
            memory_bytes: self.options.memory_limit_bytes,
            workers: self.concurrency(),
        }
    }

    pub(super) fn gate(&self) -> Arc<JobGate> {
        let concurrency = self.concurrency();
        Arc::new(JobGate {
            permits: Semaphore::new(concurrency),
            concurrency,
            failed: AtomicBool::new(false),
            succeeded: Mutex::default(),
        })
    }

    pub(super) fn task_id(&self, stage: &Stage, task: u32, attempt: u32) -> TaskId {
        TaskId {
            job_id: self.job_id.to_string(),
            run_id: self.run_id.to_string(),
            stage_id: stage.id,
            task,
            attempt,
        }
    }

    pub(super) fn emit(&self, event: JobEvent) {
        if let Some(sink) = &self.progress {
            sink.on_event(&event);
        }
    }
}
