//! The service behind `squall serve`: its job store, the dispatcher that runs
//! queued jobs under admission control, cancelling, and checking what callers
//! send against the server's access policy and limits.
//!
//! Jobs live in the [`JobStore`]; the dispatcher starts queued jobs in
//! submission order while fewer than `max_running` run, and records every
//! committed stage, so a server started on the same data dir takes up the jobs
//! it finds running (from their committed stages) and queued. A running job is
//! stopped through its [`Stop`] channel, and its slot is held until its tasks
//! have stopped and its objects are swept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use futures::FutureExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::api::{Accepted, ColumnView, JobList, JobOutcome, JobView, SubmitJob, TableView};
use super::limits::Limits;
use super::metrics::Metrics;
use super::problem::ApiError;
use super::progress::JobProgress;
use super::store::{CatalogTable, JobRecord, JobState, JobStore, NewJob};
use super::{StoreJournal, now_ms};
use crate::access::{Access, AccessPolicy};
use crate::engine::{Engine, JobRequest, JobRun, Stop, new_job_id};
use crate::error::SquallError;
use crate::planner::PlanOptions;
use crate::scheduler::TaskOptions;
use crate::tables::{TableGuard, TableSpec};

/// How long a cancel waits for the job's tasks to stop before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(20);

/// How the service behaves, beyond its engine.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Bearer tokens accepted on `/v1`; at least one.
    pub tokens: Vec<String>,
    /// Jobs running at once; the rest wait in submission order.
    pub max_running: usize,
    /// Where results go when a job names no output (`{root}/{job id}`).
    pub results_root: String,
    /// Default shuffle width.
    pub shuffle_partitions: usize,
    /// The URLs callers may name.
    pub access: Arc<AccessPolicy>,
    /// Bounds of what callers may ask for.
    pub limits: Limits,
    /// Finished jobs older than this are deleted, with their default results
    /// (None: kept forever).
    pub retain_jobs: Option<Duration>,
}

impl ServiceConfig {
    /// A configuration with the defaults for `engine`: nothing readable, results
    /// written under `results_root` only, limits from the backend's concurrency.
    pub fn new(tokens: Vec<String>, results_root: String, engine: &Engine) -> Self {
        let concurrency = engine.backend.max_concurrency();
        let access = AccessPolicy::new(
            &[],
            std::slice::from_ref(&results_root),
            std::slice::from_ref(&engine.work_root),
        )
        .unwrap_or_default();
        Self {
            tokens,
            max_running: 4,
            results_root,
            shuffle_partitions: concurrency,
            access: Arc::new(access),
            limits: Limits::for_backend(concurrency),
            retain_jobs: Some(super::retention::DEFAULT_RETENTION),
        }
    }
}

impl std::fmt::Debug for ServiceConfig {
    /// Tokens are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("tokens", &format_args!("{} (hidden)", self.tokens.len()))
            .field("max_running", &self.max_running)
            .field("results_root", &self.results_root)
            .field("shuffle_partitions", &self.shuffle_partitions)
            .field("access", &self.access)
            .field("limits", &self.limits)
            .field("retain_jobs", &self.retain_jobs)
            .finish()
    }
}

/// A job running on this server.
struct RunningJob {
    stop: watch::Sender<Stop>,
    /// Turns true once the job's task has ended (its slot freed).
    ended: watch::Receiver<bool>,
}

/// The service: engine, store, and the jobs it runs.
pub struct Service {
    pub(super) engine: Engine,
    pub(super) store: Arc<JobStore>,
    pub(super) config: ServiceConfig,
    running: AtomicUsize,
    /// Set by `shutdown`: no job starts any more.
    stopping: AtomicBool,
    /// Wakes the dispatcher: a job was queued or a slot freed.
    pub(super) wake: Notify,
    /// Wakes the timetable: a schedule was added or changed.
    pub(super) schedules_changed: Notify,
    jobs: std::sync::Mutex<JoinSet<()>>,
    /// Running jobs, to stop them.
    handles: std::sync::Mutex<HashMap<String, RunningJob>>,
    /// Running jobs' stage progress.
    live: std::sync::Mutex<HashMap<String, Arc<JobProgress>>>,
    pub(super) metrics: Metrics,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(
        engine: Engine,
        store: Arc<JobStore>,
        config: ServiceConfig,
    ) -> Result<Arc<Self>, SquallError> {
        if config.tokens.iter().all(|t| t.trim().is_empty()) {
            return Err(SquallError::InvalidArgument(
                "the service needs at least one API token (--token or SQUALL_TOKENS)".into(),
            ));
        }
        if config.max_running == 0 {
            return Err(SquallError::InvalidArgument(
                "max running jobs must be at least 1".into(),
            ));
        }
        config.limits.validate()?;
        Ok(Arc::new(Self {
            engine,
            store,
            config,
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            schedules_changed: Notify::new(),
            jobs: std::sync::Mutex::new(JoinSet::new()),
            handles: std::sync::Mutex::new(HashMap::new()),
            live: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::new().map_err(|source| SquallError::Metrics { source })?,
        }))
    }

    /// Whether `token` is one of the API tokens, compared in constant time.
    pub(super) fn accepts_token(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        // Every token is compared, so the time taken does not say which matched.
        self.config.tokens.iter().fold(false, |found, known| {
            let same = !known.is_empty() && bool::from(known.as_bytes().ct_eq(token.as_bytes()));
            found | same
        })
    }

    /// Takes up the jobs a previous server left running, then starts queued jobs
    /// as room frees up, queues the jobs of schedules as they fall due, and
    /// deletes finished jobs past their retention, until the returned task is
    /// aborted.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            tokio::join!(
                service.clone().dispatch(),
                service.clone().timetable(),
                service.retention()
            );
        })
    }

    /// Stops every job at once, without cleanup, as a killed process would
    /// (tests of restarts).
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

    async fn dispatch(self: Arc<Self>) {
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

    /// The oldest queued job, moved to running (compare-and-set).
    fn next_queued(&self) -> Result<Option<JobRecord>, super::StoreError> {
        loop {
            let (queued, _) = self.store.list_jobs(Some(JobState::Queued), None, 1)?;
            let Some(job) = queued.into_iter().next() else {
                return Ok(None);
            };
            if self.store.transition(
                &job.id,
                &[JobState::Queued],
                JobState::Running,
                None,
                now_ms(),
            )? {
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
    pub(super) async fn cancel(&self, id: &str) -> Result<JobRecord, ApiError> {
        let internal = |e: super::StoreError| ApiError::internal(e.to_string());
        let job = self
            .store
            .job(id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::unknown_job(id))?;
        let moved = self
            .store
            .transition(
                id,
                &[JobState::Queued, JobState::Running],
                JobState::Cancelled,
                Some("cancelled"),
                now_ms(),
            )
            .map_err(internal)?;
        if !moved {
            let state = self
                .store
                .job(id)
                .map_err(internal)?
                .map_or(job.state, |j| j.state);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "job already finished",
                format!(
                    "job {id} is {}; only queued and running jobs can be cancelled",
                    state.as_str()
                ),
            ));
        }
        let ended = {
            let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            handles.get(id).map(|job| {
                job.stop.send_replace(Stop::Cancel);
                job.ended.clone()
            })
        };
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
        self.store
            .job(id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::unknown_job(id))
    }

    /// Removes what a job that will not succeed left in its outputs: its
    /// default result folder, and its files and claim in a named output.
    async fn discard_outputs(&self, job: &JobRecord) {
        self.engine
            .remove_folder(&format!("{}/{}", self.config.results_root, job.id))
            .await;
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
        let outcome = self.run_job(&job, stop).await;
        let (state, error) = match &outcome {
            // Left running in the store: the next server resumes it.
            Err(SquallError::Interrupted) => return,
            Ok(result) => {
                let stored = serde_json::to_value(result)
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        self.store
                            .set_result(&job.id, &v)
                            .map_err(|e| e.to_string())
                    });
                match stored {
                    Ok(()) => (JobState::Succeeded, None),
                    Err(e) => (
                        JobState::Failed,
                        Some(format!("cannot record the result: {e}")),
                    ),
                }
            }
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        if state != JobState::Succeeded {
            self.discard_outputs(&job).await;
        }
        self.finish(&job.id, state, error.as_deref());
    }

    /// Records a running job's end. A cancelled job is no longer running: this
    /// changes nothing then.
    fn finish(&self, id: &str, state: JobState, error: Option<&str>) {
        if let Err(e) = self
            .store
            .transition(id, &[JobState::Running], state, error, now_ms())
        {
            tracing::error!(job = id, "cannot record the job's end: {e}");
        }
    }

    async fn run_job(
        &self,
        job: &JobRecord,
        stop: watch::Receiver<Stop>,
    ) -> Result<JobOutcome, SquallError> {
        let submitted: SubmitJob = serde_json::from_value(job.request.clone()).map_err(|e| {
            SquallError::InvalidArgument(format!(
                "stored request of job {} is unreadable: {e}",
                job.id
            ))
        })?;
        // Checked again: the allowed prefixes and limits may have changed since.
        let request = self.request(&submitted, &job.id)?;
        let progress = Arc::new(JobProgress::new(
            self.metrics.clone(),
            self.store.clone(),
            job.id.clone(),
        ));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id.clone(), progress.clone());
        let run = JobRun {
            job_id: Some(job.id.clone()),
            done: self
                .store
                .committed_stages(&job.id)
                .map_err(|source| SquallError::Store { source })?,
            journal: Some(Arc::new(StoreJournal {
                store: self.store.clone(),
                job_id: job.id.clone(),
            })),
            progress: Some(progress.clone()),
            stop: Some(stop),
        };
        let result = self.engine.run_as(&request, run).await;
        // Attempts of a stage that never finished (the job failed in it).
        progress.flush_attempts();
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

    /// The engine's request for a submission that runs as job `job_id`: its
    /// URLs normalised and checked against the access policy, its options
    /// against the limits, catalog tables looked up.
    pub(super) fn request(
        &self,
        submitted: &SubmitJob,
        job_id: &str,
    ) -> Result<JobRequest, SquallError> {
        let access = &self.config.access;
        let limits = &self.config.limits;
        let tables = submitted
            .tables
            .iter()
            .map(|t| {
                let (url, format) = match &t.url {
                    Some(url) => (url.clone(), t.format.clone()),
                    None => {
                        let found = self
                            .store
                            .table(&t.name)
                            .map_err(|source| SquallError::Store { source })?
                            .ok_or_else(|| SquallError::Table {
                                table: t.name.clone(),
                                message: "no URL given and no catalog table of that name".into(),
                            })?;
                        (found.url, found.format)
                    }
                };
                let url = access.check(&format!("table '{}'", t.name), &url, Access::Read)?;
                table_spec(&t.name, url.as_str(), format.as_deref())
            })
            .collect::<Result<Vec<_>, SquallError>>()?;
        let output = match &submitted.output {
            Some(output) => access.check("the output", output, Access::Write)?,
            None => crate::urls::to_url(&format!("{}/{job_id}", self.config.results_root))?,
        };
        let mut request = JobRequest::new(submitted.sql.clone(), tables);
        request.output = Some(output.to_string());
        let options = &submitted.options;
        request.plan = PlanOptions {
            shuffle_partitions: match options.shuffle_partitions {
                Some(n) => limits.count(
                    "options.shuffle_partitions",
                    n,
                    limits.max_shuffle_partitions,
                )?,
                None => self
                    .config
                    .shuffle_partitions
                    .min(limits.max_shuffle_partitions),
            },
            guard: TableGuard {
                max_files: Some(limits.max_table_files),
                access: Some(access.clone()),
            },
            ..PlanOptions::default()
        };
        request.tasks = TaskOptions {
            max_concurrency: match options.max_concurrency {
                Some(n) => {
                    Some(limits.count("options.max_concurrency", n, limits.max_concurrency)?)
                }
                None => Some(limits.max_concurrency),
            },
            ..TaskOptions::default()
        };
        request.scan_limit_bytes = Some(limits.scan_limit(options.scan_limit_bytes)?);
        request.deadline = Some(limits.deadline(options.deadline_seconds)?);
        Ok(request)
    }

    /// Checks a submission by planning it (URLs, SQL, tables, limits), claims
    /// the output it names, then queues it.
    pub(super) async fn submit(&self, submitted: SubmitJob) -> Result<Accepted, ApiError> {
        let id = new_job_id();
        self.check_room()?;
        let request = self.check_job(&submitted, &id).await?;
        // What runs is what was checked: the URLs as normalised.
        let mut stored = submitted.clone();
        normalise_urls(&mut stored, &request);
        if let Some(output) = &stored.output {
            self.engine
                .claim_output(output, &id)
                .await
                .map_err(ApiError::from)?;
        }
        let body = serde_json::to_value(&stored).map_err(|e| ApiError::internal(e.to_string()))?;
        let new = NewJob {
            id: id.clone(),
            sql: stored.sql,
            request: body,
            schedule_id: None,
        };
        let inserted = self
            .store
            .insert_queued(&new, now_ms(), self.config.limits.max_queued);
        let job = match inserted {
            Ok(Some(job)) => job,
            refused => {
                if let Some(output) = &stored.output {
                    self.engine.release_output(output, &id).await;
                }
                return Err(match refused {
                    Err(e) => ApiError::internal(e.to_string()),
                    _ => self.queue_full(),
                });
            }
        };
        self.wake.notify_one();
        Ok(Accepted {
            id: job.id,
            state: job.state,
        })
    }

    /// 429 while the queue is full.
    fn check_room(&self) -> Result<(), ApiError> {
        let queued = self
            .store
            .count_jobs(JobState::Queued)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if queued >= self.config.limits.max_queued as u64 {
            return Err(self.queue_full());
        }
        Ok(())
    }

    fn queue_full(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue full",
            format!(
                "{} jobs are waiting to run, the most this server queues; submit again later",
                self.config.limits.max_queued
            ),
        )
        .retry_after(Duration::from_secs(30))
    }

    /// Refuses a job that would fail at once: a URL outside the allowed
    /// prefixes, an option over its limit, bad SQL, unknown tables, tables the
    /// backend's executors cannot reach, a scan over its limit. Returns the
    /// request as it would run.
    pub(super) async fn check_job(
        &self,
        submitted: &SubmitJob,
        job_id: &str,
    ) -> Result<JobRequest, ApiError> {
        let request = self.request(submitted, job_id).map_err(ApiError::from)?;
        self.engine.check(&request).await.map_err(ApiError::from)?;
        Ok(request)
    }

    /// A catalog table with its schema: as stored when it was put, else read
    /// from its files now.
    pub(super) async fn table_view(&self, table: CatalogTable) -> Result<TableView, ApiError> {
        if let Some(columns) = table
            .columns
            .clone()
            .and_then(|c| serde_json::from_value::<Vec<ColumnView>>(c).ok())
        {
            return Ok(TableView {
                name: table.name,
                url: table.url,
                format: table.format,
                columns,
                created_at_ms: table.created_at_ms,
            });
        }
        let submitted = SubmitJob {
            sql: format!("SELECT * FROM {}", table.name),
            tables: vec![super::api::TableRef {
                name: table.name.clone(),
                url: Some(table.url.clone()),
                format: table.format.clone(),
            }],
            output: None,
            options: Default::default(),
        };
        let mut request = self
            .request(&submitted, &new_job_id())
            .map_err(ApiError::from)?;
        // Reading a schema is not a scan: no scan limit.
        request.scan_limit_bytes = None;
        let planned = self.engine.check(&request).await.map_err(ApiError::from)?;
        Ok(TableView {
            name: table.name,
            url: request.tables[0].url.clone(),
            format: table.format,
            columns: ColumnView::of(&planned.dag.schema),
            created_at_ms: table.created_at_ms,
        })
    }

    /// A page of jobs as the API shows them.
    pub(super) fn job_list(
        &self,
        jobs: Vec<JobRecord>,
        next: Option<i64>,
    ) -> Result<JobList, ApiError> {
        let jobs = jobs
            .into_iter()
            .map(|j| self.view(j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobList { jobs, next })
    }

    pub(super) fn view(&self, job: JobRecord) -> Result<JobView, ApiError> {
        let outcome = match self.store.result(&job.id) {
            Ok(Some(value)) => serde_json::from_value::<JobOutcome>(value).ok(),
            Ok(None) => None,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        let stages = match &outcome {
            Some(outcome) => outcome.stages.clone(),
            None => self
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&job.id)
                .map(|p| p.snapshot())
                .unwrap_or_default(),
        };
        Ok(JobView::new(job, outcome.as_ref(), stages))
    }
}

/// Puts the URLs `request` runs with (normalised) into the submission kept in
/// the store.
fn normalise_urls(submitted: &mut SubmitJob, request: &JobRequest) {
    for (table, spec) in submitted.tables.iter_mut().zip(&request.tables) {
        if table.url.is_some() {
            table.url = Some(spec.url.clone());
        }
    }
    if submitted.output.is_some() {
        submitted.output = request.output.clone();
    }
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

/// A table spec from its parts, with the CLI's checks of name, format and URL.
pub(super) fn table_spec(
    name: &str,
    url: &str,
    format: Option<&str>,
) -> Result<TableSpec, SquallError> {
    match format {
        Some(format) => format!("{name}:{format}={url}").parse(),
        None => format!("{name}={url}").parse(),
    }
}
