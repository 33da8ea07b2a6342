//! The service behind `squall serve`: its job store, the dispatcher that runs
//! queued jobs under admission control, cancelling, and reading results.
//!
//! Jobs live in the [`JobStore`]; the dispatcher starts queued jobs in
//! submission order while fewer than `max_running` run, and records every
//! committed stage, so a server started on the same data dir takes up the jobs
//! it finds running (from their committed stages) and queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::RecordBatch;
use axum::http::StatusCode;
use squall_executor::OutputFile;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

use super::api::{
    Accepted, ColumnView, JobList, JobOutcome, JobView, ResultPage, SubmitJob, TableView,
};
use super::metrics::Metrics;
use super::problem::ApiError;
use super::progress::JobProgress;
use super::store::{CatalogTable, JobRecord, JobState, JobStore, NewJob};
use super::{StoreJournal, now_ms};
use crate::engine::{Engine, JobRequest, JobRun, check_scan_limit, new_job_id, read_result};
use crate::error::SquallError;
use crate::planner::{PlanOptions, plan_job};
use crate::scheduler::TaskOptions;
use crate::tables::TableSpec;

/// How the service behaves, beyond its engine.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Bearer tokens accepted on `/v1`; at least one.
    pub tokens: Vec<String>,
    /// Jobs running at once; the rest wait in submission order.
    pub max_running: usize,
    /// Where results go when a job names no output (`{root}/{job id}`).
    pub results_root: String,
    /// Default shuffle width.
    pub shuffle_partitions: usize,
}

/// The service: engine, store, and the jobs it runs.
pub struct Service {
    pub(super) engine: Engine,
    pub(super) store: Arc<JobStore>,
    pub(super) config: ServiceConfig,
    running: AtomicUsize,
    /// Wakes the dispatcher: a job was queued or a slot freed.
    pub(super) wake: Notify,
    /// Wakes the timetable: a schedule was added or changed.
    pub(super) schedules_changed: Notify,
    jobs: std::sync::Mutex<JoinSet<()>>,
    /// Running jobs' tasks, to cancel them.
    handles: std::sync::Mutex<HashMap<String, AbortHandle>>,
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
        Ok(Arc::new(Self {
            engine,
            store,
            config,
            running: AtomicUsize::new(0),
            wake: Notify::new(),
            schedules_changed: Notify::new(),
            jobs: std::sync::Mutex::new(JoinSet::new()),
            handles: std::sync::Mutex::new(HashMap::new()),
            live: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::new()
                .map_err(|e| SquallError::Backend(format!("cannot set up metrics: {e}")))?,
        }))
    }

    /// Whether `token` is one of the API tokens.
    pub(super) fn accepts_token(&self, token: &str) -> bool {
        self.config
            .tokens
            .iter()
            .any(|known| !known.is_empty() && known == token)
    }

    /// Takes up the jobs a previous server left running, then starts queued jobs
    /// as room frees up and queues the jobs of schedules as they fall due, until
    /// the returned task is aborted.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            tokio::join!(service.clone().dispatch(), service.timetable());
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
            while self.running.load(Ordering::SeqCst) < self.config.max_running {
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
        // Held while spawning, so a job that ends at once removes its handle
        // only after it was added.
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the tasks that ended (a JoinSet keeps them until joined).
        while jobs.try_join_next().is_some() {}
        let handle = jobs.spawn(async move {
            // Frees the job's slot however the task ends, cancelled included.
            let _slot = Slot {
                service: service.clone(),
                job_id: job.id.clone(),
            };
            service.run(job).await;
        });
        handles.insert(id, handle);
    }

    /// Cancels a job: a queued one never starts; a running one is stopped and its
    /// temporary objects (and default result folder) removed. A finished job
    /// cannot be cancelled.
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
        let handle = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(handle) = handle {
            handle.abort();
        }
        self.engine
            .sweep(&format!("{}/{id}", self.engine.work_root))
            .await;
        self.engine
            .sweep(&format!("{}/{id}", self.config.results_root))
            .await;
        self.store
            .job(id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::unknown_job(id))
    }

    /// A page of a succeeded job's rows.
    pub(super) async fn result_page(
        &self,
        id: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ResultPage, ApiError> {
        let internal = |e: String| ApiError::internal(e);
        let job = self
            .store
            .job(id)
            .map_err(|e| internal(e.to_string()))?
            .ok_or_else(|| ApiError::unknown_job(id))?;
        if job.state != JobState::Succeeded {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no result",
                format!(
                    "job {id} is {}; a result exists once it succeeded",
                    job.state.as_str()
                ),
            ));
        }
        let outcome: JobOutcome = self
            .store
            .result(id)
            .map_err(|e| internal(e.to_string()))?
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                internal(format!("job {id} succeeded but its result is not recorded"))
            })?;
        // Only the files that hold rows offset..offset + limit are read.
        let (first_row, urls) = page_files(&outcome, offset, limit as u64);
        let files: Vec<OutputFile> = urls
            .iter()
            .map(|url| OutputFile {
                url: url.clone(),
                size: 0,
                partitions: vec![],
            })
            .collect();
        let batches = read_result(&self.engine.stores, &files)
            .await
            .map_err(|e| internal(e.to_string()))?;
        let rows = json_rows(&batches, (offset - first_row) as usize, limit).map_err(internal)?;
        let end = offset + rows.len() as u64;
        Ok(ResultPage {
            columns: outcome.columns,
            next_offset: (end < outcome.rows).then_some(end),
            rows,
            offset,
            total: outcome.rows,
            manifest_url: outcome.manifest_url,
            files: outcome.files,
        })
    }

    async fn run(&self, job: JobRecord) {
        let outcome = self.run_job(&job).await;
        let (state, error) = match &outcome {
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
        // A cancelled job is no longer running: this changes nothing then.
        if let Err(e) = self.store.transition(
            &job.id,
            &[JobState::Running],
            state,
            error.as_deref(),
            now_ms(),
        ) {
            tracing::error!(job = job.id, "cannot record the job's end: {e}");
        }
    }

    async fn run_job(&self, job: &JobRecord) -> Result<JobOutcome, SquallError> {
        let submitted: SubmitJob = serde_json::from_value(job.request.clone()).map_err(|e| {
            SquallError::InvalidArgument(format!(
                "stored request of job {} is unreadable: {e}",
                job.id
            ))
        })?;
        let mut request = self.request(&submitted)?;
        request.output = Some(
            submitted
                .output
                .clone()
                .unwrap_or_else(|| format!("{}/{}", self.config.results_root, job.id)),
        );
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

    /// The engine's request for a submission (tables and options checked).
    fn request(&self, submitted: &SubmitJob) -> Result<JobRequest, SquallError> {
        let tables = submitted
            .tables
            .iter()
            .map(|t| match &t.url {
                Some(url) => table_spec(&t.name, url, t.format.as_deref()),
                None => {
                    let found = self
                        .store
                        .table(&t.name)
                        .map_err(|source| SquallError::Store { source })?
                        .ok_or_else(|| SquallError::Table {
                            table: t.name.clone(),
                            message: "no URL given and no catalog table of that name".into(),
                        })?;
                    table_spec(&found.name, &found.url, found.format.as_deref())
                }
            })
            .collect::<Result<Vec<_>, SquallError>>()?;
        let mut request = JobRequest::new(submitted.sql.clone(), tables);
        request.plan = PlanOptions {
            shuffle_partitions: submitted
                .options
                .shuffle_partitions
                .unwrap_or(self.config.shuffle_partitions),
            ..PlanOptions::default()
        };
        request.tasks = TaskOptions {
            max_concurrency: submitted.options.max_concurrency,
            ..TaskOptions::default()
        };
        request.scan_limit_bytes = submitted.options.scan_limit_bytes;
        request.deadline = match submitted.options.deadline_seconds {
            Some(0) => {
                return Err(SquallError::InvalidArgument(
                    "options.deadline_seconds must be at least 1".into(),
                ));
            }
            seconds => seconds.map(std::time::Duration::from_secs),
        };
        Ok(request)
    }

    /// Checks a submission by planning it (SQL, tables), then queues it.
    pub(super) async fn submit(&self, submitted: SubmitJob) -> Result<Accepted, ApiError> {
        self.check_job(&submitted).await?;
        let body =
            serde_json::to_value(&submitted).map_err(|e| ApiError::internal(e.to_string()))?;
        let job = self
            .store
            .insert_job(
                &NewJob {
                    id: new_job_id(),
                    sql: submitted.sql,
                    request: body,
                    schedule_id: None,
                },
                now_ms(),
            )
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.wake.notify_one();
        Ok(Accepted {
            id: job.id,
            state: job.state,
        })
    }

    /// Refuses a job that would fail at once: bad SQL, unknown tables, tables
    /// the backend's executors cannot reach, a scan over its limit.
    pub(super) async fn check_job(&self, submitted: &SubmitJob) -> Result<(), ApiError> {
        let request = self.request(submitted).map_err(ApiError::from)?;
        // Tables the backend's executors cannot reach are refused now, not at run time.
        self.engine
            .check_reachable(&request)
            .map_err(ApiError::from)?;
        let planned = plan_job(
            &request.sql,
            &request.tables,
            &request.plan,
            self.engine.stores.clone(),
            "memory:///squall-validate",
            "memory:///squall-validate/result",
        )
        .await
        .map_err(ApiError::from)?;
        check_scan_limit(&planned, request.scan_limit_bytes).map_err(ApiError::from)
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
        let spec = table_spec(&table.name, &table.url, table.format.as_deref())?;
        let planned = plan_job(
            &format!("SELECT * FROM {}", table.name),
            &[spec],
            &PlanOptions::default(),
            self.engine.stores.clone(),
            "memory:///squall-validate",
            "memory:///squall-validate/result",
        )
        .await?;
        let columns = ColumnView::of(&planned.dag.schema);
        Ok(TableView {
            name: table.name,
            url: table.url,
            format: table.format,
            columns,
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

/// Rows `offset..offset + limit` of `batches` as JSON objects.
fn json_rows(
    batches: &[RecordBatch],
    offset: usize,
    limit: usize,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
    let mut page = Vec::new();
    let mut skip = offset;
    let mut left = limit;
    for batch in batches {
        if left == 0 {
            break;
        }
        if skip >= batch.num_rows() {
            skip -= batch.num_rows();
            continue;
        }
        let take = (batch.num_rows() - skip).min(left);
        page.push(batch.slice(skip, take));
        skip = 0;
        left -= take;
    }
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for batch in &page {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Frees a running job's slot and wakes the dispatcher when dropped.
struct Slot {
    service: Arc<Service>,
    job_id: String,
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
        self.service.wake.notify_one();
    }
}

/// The result files holding rows `offset..offset + limit`, and the index of
/// the first row of the first of them. Without per-file row counts (results
/// stored by an older Squall), every file from the start.
fn page_files(outcome: &JobOutcome, offset: u64, limit: u64) -> (u64, Vec<String>) {
    if outcome.file_rows.len() != outcome.files.len() {
        return (0, outcome.files.clone());
    }
    let end = offset.saturating_add(limit);
    let mut start = 0;
    let mut first_row = None;
    let mut files = Vec::new();
    for (url, rows) in outcome.files.iter().zip(&outcome.file_rows) {
        let next = start + rows;
        if *rows > 0 && next > offset && start < end {
            first_row.get_or_insert(start);
            files.push(url.clone());
        }
        start = next;
    }
    (first_row.unwrap_or(offset), files)
}

/// A table spec from its parts, with the CLI's checks of name, format and URL.
fn table_spec(name: &str, url: &str, format: Option<&str>) -> Result<TableSpec, SquallError> {
    match format {
        Some(format) => format!("{name}:{format}={url}").parse(),
        None => format!("{name}={url}").parse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_only_the_files_that_hold_it() {
        let outcome = JobOutcome {
            rows: 25,
            manifest_url: "m".into(),
            files: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            file_rows: vec![10, 0, 10, 5],
            columns: vec![],
            stages: vec![],
        };
        let page = |offset, limit| page_files(&outcome, offset, limit);
        assert_eq!(page(0, 5), (0, vec!["a".to_string()]));
        assert_eq!(page(5, 10), (0, vec!["a".to_string(), "c".to_string()]));
        assert_eq!(page(10, 10), (10, vec!["c".to_string()]));
        assert_eq!(page(22, 100), (20, vec!["d".to_string()]));
        assert_eq!(page(25, 10), (25, vec![]));
        let old = JobOutcome {
            file_rows: vec![],
            ..outcome.clone()
        };
        assert_eq!(page_files(&old, 12, 1), (0, old.files.clone()));
    }
}
