//! Running jobs: the dispatcher that starts queued jobs in submission order
//! while fewer than `max_running` run (and, at start, takes up the jobs a
//! previous server left running, from their committed stages), cancelling,
//! and shutting down. A running job is stopped through its [`Stop`] channel;
//! its slot is held until its tasks have stopped and its objects are swept.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::api::{ColumnView, JobOutcome, JobState, SubmitJob};
use crate::core::{RunningJob, Service};
use crate::errors::ServiceError;
use crate::journal::StoreJournal;
use crate::principals::Principal;
use crate::progress::JobProgress;
use crate::store::{JobRecord, StoreError, now_ms};
use squall_engine::engine::{JobRun, Stop};
use squall_engine::error::SquallError;

/// How long a cancel waits for the job's tasks to stop before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(20);

impl Service {
    /// Stops every job at once, without cleanup, as a killed process would
    /// (tests of restarts).
    #[cfg(any(test, feature = "test-util"))]
    pub fn abort_jobs(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }

    /// Stops starting jobs and interrupts the running ones, keeping them
    /// `running` in the store with their committed stages for the next server;
    /// returns once their tasks have stopped (or `wait` has passed).
    pub async fn shutdown(&self, wait: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let ended: Vec<watch::Receiver<bool>> = {
            let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            handles
                .values()
                .map(|job| {
                    job.stop.send_replace(Stop::Shutdown);
                    job.ended.clone()
                })
                .collect()
        };
        let all = futures::future::join_all(
            ended
                .into_iter()
                .map(|mut e| async move { e.wait_for(|done| *done).await.map(|_| ()) }),
        );
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("jobs still stopping after {} s", wait.as_secs());
        }
    }

    pub(super) async fn dispatch(self: Arc<Self>) {
        match self.store.unfinished_jobs() {
            Ok(jobs) => {
                for job in jobs.into_iter().filter(|j| j.state == JobState::Running) {
                    tracing::info!(
                        job = job.id,
                        "resuming a job the previous server was running"
                    );
                    self.running.fetch_add(1, Ordering::SeqCst);
                    self.spawn(job);
                }
            }
            Err(e) => tracing::error!("cannot read unfinished jobs: {e}"),
        }
        loop {
            while !self.stopping.load(Ordering::SeqCst)
                && self.running.load(Ordering::SeqCst) < self.config.max_running
            {
                match self.next_queued() {
                    Ok(Some(job)) => {
                        self.running.fetch_add(1, Ordering::SeqCst);
                        self.spawn(job);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("cannot start queued jobs: {e}");
                        break;
                    }
                }
            }
            self.wake.notified().await;
        }
    }

    /// The next queued job, moved to running (compare-and-set): the oldest
    /// of the first principal, in turn after the one that started a job last,
    /// that has jobs queued and room to run one.
    fn next_queued(&self) -> Result<Option<JobRecord>, StoreError> {
        loop {
            let heads = self.store.queued_heads()?;
            if heads.is_empty() {
                return Ok(None);
            }
            let running = self.store.count_by_principal(JobState::Running)?;
            let has_room = |job: &JobRecord| {
                let cap = self
                    .principals
                    .named(&job.principal)
                    .and_then(|p| p.max_running);
                cap.is_none_or(|cap| running.get(&job.principal).copied().unwrap_or(0) < cap as u64)
            };
            let last = self
                .last_started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let Some(job) = fair_next(heads, last.as_deref(), has_room) else {
                return Ok(None);
            };
            if self.store.transition(
                &job.id,
                &[JobState::Queued],
                JobState::Running,
                None,
                now_ms(),
            )? {
                *self.last_started.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(job.principal.clone());
                return self.store.job(&job.id);
            }
        }
    }

    fn spawn(self: &Arc<Self>, job: JobRecord) {
        let service = self.clone();
        let id = job.id.clone();
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let (ended_tx, ended) = watch::channel(false);
        // Held while spawning, so a job that ends at once removes its handle
        // only after it was added.
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the tasks that ended (a JoinSet keeps them until joined).
        while jobs.try_join_next().is_some() {}
        jobs.spawn(async move {
            // Frees the job's slot however the task ends, cancelled included.
            let _slot = Slot {
                service: service.clone(),
                job_id: job.id.clone(),
                ended: ended_tx,
            };
            let id = job.id.clone();
            let run = std::panic::AssertUnwindSafe(service.run(job, stop_rx)).catch_unwind();
            if run.await.is_err() {
                service.finish(
                    &id,
                    JobState::Failed,
                    Some("internal error: the job panicked"),
                );
            }
        });
        handles.insert(id, RunningJob { stop, ended });
    }

    /// Cancels a job: a queued one never starts; a running one is stopped, and
    /// the answer comes once its tasks have stopped and its temporary objects
    /// (and default result folder) are removed. A finished job cannot be cancelled.
    pub(crate) async fn cancel(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<JobRecord, ServiceError> {
        let unknown = || ServiceError::UnknownJob { id: id.to_string() };
        let job = self.owned_job(caller, id)?;
        let moved = self.store.transition(
            id,
            &[JobState::Queued, JobState::Running],
            JobState::Cancelled,
            Some("cancelled"),
            now_ms(),
        )?;
        if !moved {
            let state = self.store.job(id)?.map_or(job.state, |j| j.state);
            return Err(ServiceError::AlreadyFinished {
                id: id.to_string(),
                state,
            });
        }
        let ended = {
            let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            handles.get(id).map(|job| {
                job.stop.send_replace(Stop::Cancel);
                job.ended.clone()
            })
        };
        let never_started = ended.is_none();
        match ended {
            Some(mut ended) => {
                let stopped = tokio::time::timeout(CANCEL_WAIT, ended.wait_for(|done| *done));
                if stopped.await.is_err() {
                    tracing::warn!(job = id, "cancelled job still stopping");
                }
            }
            // Never started: nothing runs, only its output claim to give up.
            None => self.discard_outputs(&job).await,
        }
        let cancelled = self.store.job(id)?.ok_or_else(unknown)?;
        // A job that ran is counted where it ran (`run`).
        if never_started {
            self.count_ended(&cancelled);
        }
        Ok(cancelled)
    }

    /// Removes job `job_id`'s default result folders, wherever it was kept.
    pub(crate) async fn remove_default_result(&self, job_id: &str) {
        let (remote, here) = self.config.default_result(job_id);
        for folder in std::iter::once(remote).chain(here) {
            self.engine.remove_folder(&folder).await;
        }
    }

    /// Removes what a job that will not succeed left in its outputs: its
    /// default result folder, and its files and claim in a named output.
    async fn discard_outputs(&self, job: &JobRecord) {
        self.remove_default_result(&job.id).await;
        if let Some(output) = job.request.get("output").and_then(|o| o.as_str()) {
            self.engine.release_output(output, &job.id).await;
        }
    }

    async fn run(&self, job: JobRecord, stop: watch::Receiver<Stop>) {
        // Cancelled between being started and getting here: nothing to run.
        if !matches!(self.store.job(&job.id), Ok(Some(j)) if j.state == JobState::Running) {
            self.discard_outputs(&job).await;
            return;
        }
        let outcome = self
            .execute(&job, stop)
            .await
            .and_then(|result| self.record_result(&job.id, &result));
        let (state, error) = match outcome {
            // Left running in the store: the next server resumes it.
            Err(ServiceError::Engine(SquallError::Interrupted)) => return,
            Ok(()) => (JobState::Succeeded, None),
            // What the job's view shows as its error.
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        if state != JobState::Succeeded {
            self.discard_outputs(&job).await;
        }
        let ended = self.finish(&job.id, state, error.as_deref());
        if state == JobState::Succeeded && !ended {
            // Cancelled after its result was committed: it stays cancelled,
            // so what it committed goes, and no result is shown for it.
            self.discard_outputs(&job).await;
            if let Err(e) = self.store.set_result(&job.id, &serde_json::Value::Null) {
                tracing::warn!(job = job.id, "cannot clear a cancelled job's result: {e}");
            }
        }
        // As the store has it: a job cancelled while it ran is `cancelled`.
        match self.store.job(&job.id) {
            Ok(Some(ended)) => self.count_ended(&ended),
            Ok(None) => {}
            Err(e) => tracing::warn!(job = job.id, "cannot read the job's end: {e}"),
        }
    }

    /// Adds an ended job to the job metrics (outcome, queue time, run time).
    fn count_ended(&self, job: &JobRecord) {
        let Some(finished) = job.finished_at_ms.filter(|_| job.state.is_final()) else {
            return;
        };
        let ms = |from: i64, to: i64| Duration::from_millis(to.saturating_sub(from).max(0) as u64);
        let started = job.started_at_ms;
        let queued = ms(job.submitted_at_ms, started.unwrap_or(finished));
        let ran = started.map(|s| ms(s, finished));
        self.metrics
            .job_ended(job.state, &job.principal, queued, ran);
    }

    /// Records a running job's end; false if it was not running any more (a
    /// cancelled job: this changes nothing then) or cannot be recorded.
    fn finish(&self, id: &str, state: JobState, error: Option<&str>) -> bool {
        match self
            .store
            .transition(id, &[JobState::Running], state, error, now_ms())
        {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(job = id, "cannot record the job's end: {e}");
                false
            }
        }
    }

    /// Keeps what a succeeded job produced.
    fn record_result(&self, id: &str, result: &JobOutcome) -> Result<(), ServiceError> {
        let value = serde_json::to_value(result).map_err(|source| ServiceError::Encode {
            what: format!("the result of job {id}"),
            source,
        })?;
        Ok(self.store.set_result(id, &value)?)
    }

    /// Runs a started job on the engine, as its stored request says.
    async fn execute(
        &self,
        job: &JobRecord,
        stop: watch::Receiver<Stop>,
    ) -> Result<JobOutcome, ServiceError> {
        let submitted: SubmitJob =
            serde_json::from_value(job.request.clone()).map_err(|source| {
                ServiceError::Corrupt {
                    what: format!("request of job {}", job.id),
                    source,
                }
            })?;
        // Checked again, as its principal's: the allowed prefixes and limits
        // may have changed since.
        let principal = self.principal_named(&job.principal, || format!("job {}", job.id))?;
        let request = self.request(&principal, &submitted, &job.id)?;
        let meter = self.engine.meter(&request);
        // A resumed job goes on from what its earlier runs used.
        if let Some(earlier) = &job.cost {
            meter.carry(earlier);
        }
        let progress = Arc::new(JobProgress::new(
            self.metrics.clone(),
            self.store.clone(),
            job.id.clone(),
            meter.clone(),
        ));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id.clone(), progress.clone());
        let run = JobRun {
            job_id: Some(job.id.clone()),
            done: self.store.committed_stages(&job.id)?,
            journal: Some(Arc::new(StoreJournal {
                store: self.store.clone(),
                job_id: job.id.clone(),
            })),
            progress: Some(progress.clone()),
            stop: Some(stop),
            meter: Some(meter.clone()),
        };
        let result = self.engine.run_as(&request, run).await;
        // Attempts of a stage that never finished (the job failed in it).
        progress.flush_attempts();
        // What it used, whatever the outcome (an interrupted job's resumed
        // run carries it on).
        let cost = meter.report();
        if let Err(e) = self.store.set_cost(&job.id, &cost) {
            tracing::warn!(job = job.id, "cannot record the job's cost: {e}");
        }
        self.metrics.add_cost(&meter.report_since_carried());
        let result = result?;
        Ok(JobOutcome {
            rows: result.rows,
            manifest_url: result.manifest_url.unwrap_or_default(),
            file_rows: result
                .files
                .iter()
                .map(|f| f.partitions.iter().map(|p| p.rows).sum())
                .collect(),
            files: result.files.into_iter().map(|f| f.url).collect(),
            columns: ColumnView::of(&result.schema),
            stages: progress.snapshot(),
        })
    }
}

/// Of `heads` (each principal's oldest queued job, oldest first), the job of
/// the first principal by name after `last` (round robin) that `has_room`.
fn fair_next(
    mut heads: Vec<JobRecord>,
    last: Option<&str>,
    has_room: impl Fn(&JobRecord) -> bool,
) -> Option<JobRecord> {
    heads.retain(|job| has_room(job));
    heads.sort_by(|a, b| a.principal.cmp(&b.principal));
    let after = last.map_or(0, |last| {
        heads.partition_point(|job| job.principal.as_str() <= last)
    });
    let at = if after < heads.len() { after } else { 0 };
    (at < heads.len()).then(|| heads.swap_remove(at))
}

/// Frees a running job's slot and wakes the dispatcher when dropped.
struct Slot {
    service: Arc<Service>,
    job_id: String,
    ended: watch::Sender<bool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.service
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job_id);
        self.service
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job_id);
        self.service.running.fetch_sub(1, Ordering::SeqCst);
        self.ended.send_replace(true);
        self.service.wake.notify_one();
    }
}
