//! One job from SQL to committed result: check, plan, run, commit, clean up.
//!
//! # What belongs here
//! `Engine` (stores + backend + where temporary objects go) and its entry
//! points — `check` (a job as far as it can be checked without running it),
//! `run`/`run_as` (run it, stoppable), `claim_output`/`release_output` and
//! `remove_folder` (for outputs a caller keeps) — `JobRequest` and `JobResult`,
//! and reading result files back. `squall run` and the service call these;
//! neither plans, schedules or deletes on its own. Where a job keeps its
//! files, the Lambda environments it pre-warms, and what is cleaned up and
//! handed over when it ends: `engine/placed.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::FutureExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use squall_executor::hedge::Hedger;
use squall_executor::{ExecutorContext, OutputFile, ShuffleCodec, StoreRegistry};

use crate::access::Access;
use crate::backend::{ExecutorBackend, InProcessBackend, Place};
use crate::commit::StageJournal;
use crate::cost::{JobCost, JobMeter, Prices};
use crate::error::{Result, SquallError};
use crate::planner::pool::{PlanningLimits, PlanningPool};
use crate::planner::{
    MIN_SCAN_TASK_BYTES, PlanCaches, PlanOptions, PlannedJob, StageDag, default_parallelism,
    plan_job_within,
};
use crate::scheduler::{JobEvent, ProgressSink, Scheduler, StageStats, TaskOptions};
use crate::tables::TableSpec;
use crate::urls::to_url;

mod placed;

use placed::{Dirs, Outputs, PlannedIn};

/// Everything that stays the same between jobs.
#[derive(Debug, Clone)]
pub struct Engine {
    pub stores: Arc<StoreRegistry>,
    pub backend: Arc<dyn ExecutorBackend>,
    /// URL prefix under which each job keeps its shuffle (and unrequested result) files.
    pub work_root: String,
    /// Where a job of a backend with two places (auto) keeps its files when
    /// the whole job stays on this machine (None: always `work_root`).
    pub local_work_root: Option<String>,
    /// Footers and file statistics read while planning earlier jobs.
    pub plan_caches: PlanCaches,
    /// What jobs' usage is priced at.
    pub prices: Prices,
    /// Where jobs are planned (threads with large stacks), how many at once
    /// and for how long.
    pub planning: Arc<PlanningPool>,
}

impl Engine {
    /// In-process executors, temporary files under the OS temp directory.
    pub fn embedded(executors: Option<usize>) -> Result<Self> {
        Self::embedded_in(executors, None)
    }

    /// [`embedded`](Self::embedded): `executors` in-process executors whose
    /// tasks' memory pools add up to at most `memory_budget` bytes.
    pub fn embedded_within(executors: usize, memory_budget: u64) -> Result<Self> {
        Self::embedded_in(Some(executors), Some(memory_budget))
    }

    /// In-process executors within `memory_budget` (if any), temporary files
    /// under the OS temp directory.
    fn embedded_in(executors: Option<usize>, memory_budget: Option<u64>) -> Result<Self> {
        let work_root = to_url(&std::env::temp_dir().join("squall-work").to_string_lossy())?;
        let stores = Arc::new(StoreRegistry::new());
        let backend = in_process(&stores, executors)?;
        let backend = match memory_budget {
            Some(bytes) => backend.with_memory_budget(bytes)?,
            None => backend,
        };
        Ok(Self::with_backend(
            stores,
            Arc::new(backend),
            work_root.as_str(),
        ))
    }

    /// In-process executors sharing `stores` with the control plane.
    pub fn embedded_with(
        stores: Arc<StoreRegistry>,
        executors: Option<usize>,
        work_root: &str,
    ) -> Result<Self> {
        let backend = in_process(&stores, executors)?;
        Ok(Self::with_backend(stores, Arc::new(backend), work_root))
    }

    /// Runs jobs on `backend`, temporary files under `work_root`.
    pub fn with_backend(
        stores: Arc<StoreRegistry>,
        backend: Arc<dyn ExecutorBackend>,
        work_root: &str,
    ) -> Self {
        Self {
            stores,
            backend,
            work_root: work_root.trim_end_matches('/').to_string(),
            local_work_root: None,
            plan_caches: PlanCaches::default(),
            prices: Prices::default(),
            planning: default_planning(),
        }
    }

    /// This engine planning within `limits` (threads of its own).
    pub fn with_planning(self, limits: PlanningLimits) -> Result<Self> {
        Ok(Self {
            planning: Arc::new(PlanningPool::new(limits)?),
            ..self
        })
    }

    /// A meter for a run of `request`: this engine's prices, the request's
    /// cost limit. Pass it in [`JobRun::meter`] to watch the job's cost.
    pub fn meter(&self, request: &JobRequest) -> Arc<JobMeter> {
        JobMeter::new(self.prices.clone(), request.cost_limit_usd)
    }

    /// Refuses, before anything runs, a job whose tables, output or work
    /// files the backend's executors could not reach, or that asks for a
    /// place (every task there, environments pre-warmed) the backend has not.
    fn check_reachable(&self, request: &JobRequest) -> Result<()> {
        let prewarm = request.tasks.prewarm;
        if prewarm > 0 && !self.backend.places().contains(&Place::Lambda) {
            return Err(SquallError::InvalidArgument(format!(
                "pre-warming {prewarm} environments needs a backend that runs tasks on Lambda, \
                 not {}",
                self.backend.name()
            )));
        }
        if prewarm > self.backend.max_concurrency() {
            return Err(SquallError::InvalidArgument(format!(
                "pre-warming {prewarm} environments is more than the {} invocations the backend \
                 runs at once",
                self.backend.max_concurrency()
            )));
        }
        if let Some(place) = request.tasks.place
            && !self.backend.places().contains(&place)
        {
            return Err(SquallError::InvalidArgument(format!(
                "the job asks for every task to run {} but the {} backend cannot run tasks there \
                 (only a server with backend auto chooses)",
                place.as_str(),
                self.backend.name()
            )));
        }
        let unreachable = |what: String, url: &url::Url| {
            SquallError::InvalidArgument(format!(
                "{what} is at {url}, which {} executors cannot reach: use an object store they share (s3://...)",
                self.backend.name()
            ))
        };
        for table in &request.tables {
            let url = to_url(&table.url)?;
            if !self.backend.can_reach(&url) {
                return Err(unreachable(format!("table '{}'", table.name), &url));
            }
        }
        if let Some(output) = &request.output {
            let url = to_url(output)?;
            if !self.backend.can_reach(&url) {
                return Err(unreachable("the output".into(), &url));
            }
        }
        let work = to_url(&self.work_root)?;
        if !self.backend.can_reach(&work) {
            return Err(unreachable("the work directory".into(), &work));
        }
        Ok(())
    }

    /// Checks a job as far as can be done without running it, and returns its
    /// plan: the URLs it names against the request's access policy, that the
    /// backend's executors reach them, the SQL and tables (planned), the scan
    /// limit. (Whether its output is free is settled by claiming it.)
    pub async fn check(&self, request: &JobRequest) -> Result<PlannedJob> {
        check_access(request)?;
        self.check_reachable(request)?;
        self.plan(
            &self.stores,
            request,
            "memory:///squall-validate",
            "memory:///squall-validate/result",
        )
        .await
    }

    /// Plans `request` with shuffle files under `work_dir` and results under
    /// `result_dir` on the planning threads, and refuses it if it would scan
    /// over its limit.
    async fn plan(
        &self,
        stores: &Arc<StoreRegistry>,
        request: &JobRequest,
        work_dir: &str,
        result_dir: &str,
    ) -> Result<PlannedJob> {
        let (sql, tables, mut options) = (
            request.sql.clone(),
            request.tables.clone(),
            request.plan.clone(),
        );
        // A backend whose tasks have a fixed cost gets scan tasks worth it.
        options
            .min_scan_task_bytes
            .get_or_insert(if self.backend.bills_invocations() {
                MIN_SCAN_TASK_BYTES
            } else {
                0
            });
        let (stores, caches) = (stores.clone(), self.plan_caches.clone());
        let (work_dir, result_dir) = (work_dir.to_string(), result_dir.to_string());
        let planned = self
            .planning
            .run(move |budget| async move {
                plan_job_within(
                    &sql,
                    &tables,
                    &options,
                    stores,
                    &caches,
                    &work_dir,
                    &result_dir,
                    budget,
                )
                .await
            })
            .await?;
        check_scan_limit(&planned, request.scan_limit_bytes)?;
        Ok(planned)
    }

    /// Makes the output folder `output` (a URL) job `job_id`'s before the job is
    /// queued; see [`crate::commit`]. The job's run keeps the claim.
    pub async fn claim_output(&self, output: &str, job_id: &str) -> Result<()> {
        let url = to_url(output)?;
        crate::commit::claim(&self.stores, url.as_str(), job_id).await
    }

    /// Gives up the output of a job that will not run (cancelled while queued):
    /// its result files, if any, and its claim.
    pub async fn release_output(&self, output: &str, job_id: &str) {
        if let Ok(url) = to_url(output) {
            crate::commit::discard(&self.stores, url.as_str(), job_id).await;
        }
    }

    /// Plans and runs one job.
    pub async fn run(
        &self,
        request: &JobRequest,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<JobResult> {
        self.run_as(
            request,
            JobRun {
                progress,
                ..JobRun::default()
            },
        )
        .await
    }

    /// Plans and runs one job as `run` says: under a given id, resuming from
    /// committed stages, recording commits, until told to stop.
    ///
    /// However the job ends — done, failed, past its deadline, stopped, its
    /// scheduler panicking — its tasks have stopped when this returns (as far as
    /// the backend can stop them) and nothing of it is left under its work
    /// folder; a job that did not succeed leaves nothing in its output either.
    /// Only a job interrupted by [`Stop::Shutdown`] keeps its work folder and its
    /// output claim, for the server that resumes it.
    pub async fn run_as(&self, request: &JobRequest, run: JobRun) -> Result<JobResult> {
        check_access(request)?;
        self.check_reachable(request)?;
        let job_id = match &run.job_id {
            Some(id) => check_job_id(id)?,
            None => new_job_id(),
        };
        let run_id = new_run_id();
        let dirs = Dirs {
            work: format!("{}/{job_id}", self.work_root),
            // A job that may stay wholly on this machine may keep its files here.
            local: self
                .local_work_root
                .as_ref()
                .filter(|_| request.tasks.place != Some(Place::Lambda))
                .map(|root| format!("{}/{job_id}", root.trim_end_matches('/'))),
            kept_here: std::sync::OnceLock::new(),
            output: std::sync::OnceLock::new(),
        };
        let mut stop = run.stop.clone();
        let meter = run.meter.clone().unwrap_or_else(|| self.meter(request));
        // Everything this job asks of the object stores is counted in its cost.
        let stores = Arc::new(self.stores.counted(meter.control_requests()));
        // The job's span: its stages', attempts' and (through the task specs)
        // executors' spans are its children; its trace is the job's.
        let span = tracing::info_span!("job", job = %job_id, run = %run_id);
        let job = std::panic::AssertUnwindSafe(
            self.plan_and_run(&stores, request, run, &meter, &job_id, &run_id, &dirs)
                .instrument(span.clone()),
        )
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                tracing::error!(job = job_id, "the job's scheduler panicked: {message}");
                Err(SquallError::Panicked { message })
            })
        });
        let stopped = async {
            let told = async {
                match stop.as_mut() {
                    Some(stop) => match stop.wait_for(|s| *s != Stop::Run).await {
                        Ok(s) if *s == Stop::Shutdown => SquallError::Interrupted,
                        _ => SquallError::Cancelled,
                    },
                    None => std::future::pending().await,
                }
            };
            let told = async {
                match request.deadline {
                    Some(deadline) => tokio::time::timeout(deadline, told)
                        .await
                        .unwrap_or(SquallError::DeadlineExceeded { deadline }),
                    None => told.await,
                }
            };
            tokio::select! {
                reason = told => reason,
                spent = meter.exceeded() => SquallError::CostLimitExceeded {
                    limit_usd: meter.limit_usd().unwrap_or_default(),
                    spent_usd: spent,
                },
            }
        };
        // A stop drops the job's future: no task starts any more, in-process
        // tasks are aborted, Lambda invocations no longer awaited.
        let result = tokio::select! {
            result = job => result,
            reason = stopped => Err(reason),
        };
        self.backend.wait_idle(&job_id).await;
        if matches!(result, Err(SquallError::Interrupted)) {
            return result;
        }
        self.clean_up(&stores, request, &result, &job_id, &dirs)
            .instrument(tracing::info_span!(parent: &span, "clean up"))
            .await;
        result.map(|mut done| {
            done.cost = meter.report();
            done
        })
    }

    /// Removes every object under the folder `dir` (a URL): for a caller's own
    /// folders, such as the service's default result folders. Failures are logged.
    pub async fn remove_folder(&self, dir: &str) {
        crate::commit::sweep(&self.stores, dir).await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_and_run(
        &self,
        stores: &Arc<StoreRegistry>,
        request: &JobRequest,
        run: JobRun,
        meter: &Arc<JobMeter>,
        job_id: &str,
        run_id: &str,
        dirs: &Dirs,
    ) -> Result<JobResult> {
        let outputs = Outputs::of(request)?;
        let planning = std::time::Instant::now();
        // The footers planning reads are hedged as a task's reads are, the
        // copies counted in the job's cost.
        let hedger = Hedger::new(request.tasks.hedging.clone(), meter.control_requests());
        let planning_stores = Arc::new(stores.hedged(hedger));
        // Lambda environments started while the job is planned, if asked.
        let (placed, ()) = tokio::join!(
            self.plan_placed(&planning_stores, request, dirs, &outputs)
                .instrument(tracing::info_span!("plan")),
            self.prewarm(request.tasks.prewarm, job_id, run_id, meter)
        );
        let PlannedIn {
            planned,
            work_dir,
            result_dir,
            kept_here,
        } = placed?;
        // The output is claimed once it is known where the result goes, before
        // any task runs.
        if outputs.named.is_some() {
            let replace = request.overwrite_output;
            crate::commit::claim_replacing(stores, &result_dir, job_id, replace).await?;
            let _ = dirs.output.set(result_dir.clone());
        }
        let work_dir = work_dir.as_str();
        if let Some(progress) = &run.progress {
            progress.on_event(&JobEvent::Planned {
                dag: Arc::new(planned.dag.clone()),
                trace_id: squall_executor::telemetry::trace_id(&tracing::Span::current()),
            });
        }
        tracing::info!(
            job = job_id,
            run = run_id,
            stages = planned.dag.stages.len(),
            tasks = planned.dag.task_count(),
            elapsed_ms = planning.elapsed().as_millis() as u64,
            "planned"
        );
        // Shuffle files that cross a network are compressed harder, small
        // ones on this machine not at all.
        let read_bytes = planned.dag.stages.iter().map(|s| s.read_bytes).sum();
        let options = TaskOptions {
            shuffle_codec: Some(
                request
                    .tasks
                    .shuffle_codec
                    .unwrap_or_else(|| ShuffleCodec::for_job(work_dir, read_bytes)),
            ),
            place: request
                .tasks
                .place
                .or(kept_here.as_ref().map(|_| Place::Local)),
            place_reason: kept_here.or_else(|| request.tasks.place_reason.clone()),
            ..request.tasks.clone()
        };
        let scheduler = Scheduler {
            job_id,
            run_id,
            backend: self.backend.clone(),
            stores: stores.clone(),
            options: &options,
            progress: run.progress,
            journal: run.journal,
            meter: meter.clone(),
        };
        let outcome = scheduler.resume(&planned.dag, run.done).await?;
        let result = JobResult {
            job_id: job_id.to_string(),
            schema: planned.dag.schema.clone(),
            rows: outcome.result_files.iter().map(output_rows).sum(),
            files: outcome.result_files,
            manifest_url: None,
            stages: outcome.stages,
            dag: planned.dag,
            batches: None,
            cost: JobCost::default(),
        };
        self.hand_over(stores, request, &result_dir, result).await
    }
}

/// `executors` (default: the cores) in-process executors over `stores`.
fn in_process(stores: &Arc<StoreRegistry>, executors: Option<usize>) -> Result<InProcessBackend> {
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    InProcessBackend::new(ctx, executors.unwrap_or_else(default_parallelism))
}

/// A planning pool shared by the engines of this process that do not ask for
/// one of their own (its threads start once): the default limits, but ten
/// minutes a job — `squall run` over a lake of many files lists them all
/// while planning; `squall serve` sets its own (`--max-planning-time`).
fn default_planning() -> Arc<PlanningPool> {
    static SHARED: std::sync::OnceLock<Arc<PlanningPool>> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let limits = PlanningLimits {
                time: std::time::Duration::from_secs(600),
                ..PlanningLimits::default()
            };
            Arc::new(PlanningPool::new(limits).expect("the default planning limits are valid"))
        })
        .clone()
}

/// Refuses a job that names a URL its access policy does not allow.
fn check_access(request: &JobRequest) -> Result<()> {
    let Some(access) = &request.plan.guard.access else {
        return Ok(());
    };
    for table in &request.tables {
        access.check(&format!("table '{}'", table.name), &table.url, Access::Read)?;
    }
    if let Some(output) = &request.output {
        access.check("the output", output, Access::Write)?;
    }
    Ok(())
}

/// Refuses a planned job whose tables' files add up to more than `limit` bytes.
fn check_scan_limit(planned: &PlannedJob, limit: Option<u64>) -> Result<()> {
    match limit {
        Some(limit) if planned.input_bytes() > limit => Err(SquallError::ScanLimit {
            estimate: planned.input_bytes(),
            limit,
        }),
        _ => Ok(()),
    }
}

fn output_rows(file: &OutputFile) -> u64 {
    file.partitions.iter().map(|p| p.rows).sum()
}

/// A job id given from outside (a resumed job): it names a folder, so only
/// what `new_job_id` makes is accepted.
fn check_job_id(id: &str) -> Result<String> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_string())
    } else {
        Err(SquallError::InvalidArgument(format!(
            "job id '{id}' is not 16 hexadecimal digits"
        )))
    }
}

/// A new job id: 16 hexadecimal digits.
pub fn new_job_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_string()
}

/// A new run id: 8 hexadecimal digits, in the name of every object the run writes.
fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..8].to_string()
}

/// What a running job is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    /// Go on.
    #[default]
    Run,
    /// Stop, and remove everything the job wrote: it will not run again.
    Cancel,
    /// Stop, keeping what a resume needs (the server is shutting down).
    Shutdown,
}

/// How one job is run beyond what it asks for.
#[derive(Clone, Default)]
pub struct JobRun {
    /// The job's id; None: a new one. A resumed job keeps its id, which names its
    /// work folder, where the committed stages' shuffle files still are.
    pub job_id: Option<String>,
    /// Stages an earlier, interrupted run of this job committed.
    pub done: HashMap<u32, Vec<OutputFile>>,
    /// Told of each stage this run commits.
    pub journal: Option<Arc<dyn StageJournal>>,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Tells the job to stop (see [`Stop`]); None: it runs to its end.
    pub stop: Option<tokio::sync::watch::Receiver<Stop>>,
    /// Takes in the job's usage (see [`Engine::meter`]); None: a meter of
    /// the engine's own, whose report is in the result.
    pub meter: Option<Arc<JobMeter>>,
}

/// One job as submitted.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub sql: String,
    pub tables: Vec<TableSpec>,
    /// Where to keep the result files and manifest; None: return rows and keep nothing.
    pub output: Option<String>,
    /// Where the result goes instead of `output` when the whole job stays on
    /// this machine (see [`Engine::local_work_root`]): a server's default
    /// result folder on its own disk, which only the server reads. Ignored
    /// without `output`, or where the job may run anywhere else.
    pub local_output: Option<String>,
    pub plan: PlanOptions,
    pub tasks: TaskOptions,
    /// Refuse the job, before any task runs, when the files of the tables it
    /// reads add up to more bytes than this.
    pub scan_limit_bytes: Option<u64>,
    /// Stop the job (tasks abandoned, temporary objects removed) when it has run
    /// this long, planning included.
    pub deadline: Option<std::time::Duration>,
    /// Stop the job, like a deadline, once its estimated cost passes this
    /// many dollars (see [`crate::cost`]).
    pub cost_limit_usd: Option<f64>,
    /// Replace the result another job committed in `output` (its files are
    /// removed once this job's manifest is in place; until then, and if this
    /// job fails, readers see the old result).
    pub overwrite_output: bool,
}

impl JobRequest {
    pub fn new(sql: impl Into<String>, tables: Vec<TableSpec>) -> Self {
        Self {
            sql: sql.into(),
            tables,
            output: None,
            local_output: None,
            plan: PlanOptions::default(),
            tasks: TaskOptions::default(),
            scan_limit_bytes: None,
            deadline: None,
            cost_limit_usd: None,
            overwrite_output: false,
        }
    }
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: String,
    pub schema: SchemaRef,
    /// Committed result files, in order (the order of rows for ordered queries).
    pub files: Vec<OutputFile>,
    pub rows: u64,
    pub manifest_url: Option<String>,
    pub stages: Vec<StageStats>,
    pub dag: StageDag,
    /// The rows, when no output location was requested.
    pub batches: Option<Vec<RecordBatch>>,
    /// What the job used, priced.
    pub cost: JobCost,
}

/// Reads result files back, in order.
pub async fn read_result(stores: &StoreRegistry, files: &[OutputFile]) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for file in files {
        let (store, path) = stores
            .resolve(&file.url)
            .map_err(|source| SquallError::Internal { source })?;
        let bytes = store.get(&path).await?.bytes().await?;
        let unreadable = |source| SquallError::ReadResult {
            url: file.url.clone(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(unreadable)?
            .build()
            .map_err(unreadable)?;
        let mut part = reader
            .collect::<std::result::Result<Vec<RecordBatch>, _>>()
            .map_err(|e| unreadable(e.into()))?;
        batches.append(&mut part);
    }
    Ok(batches)
}

#[cfg(test)]
mod send_check {
    use super::*;

    /// The service runs each job on its own tokio task: the job future must be `Send`.
    #[test]
    fn a_job_can_run_on_a_spawned_task() {
        fn spawnable<F: Future + Send + 'static>(_: F) {}
        let engine = Engine::embedded(Some(1)).expect("engine");
        let request = JobRequest::new("SELECT 1", vec![]);
        spawnable(async move { engine.run(&request, None).await });
    }
}
