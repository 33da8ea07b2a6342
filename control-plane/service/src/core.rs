//! The service behind `squall serve`: its configuration, its state (engine,
//! job store, running jobs, metrics) and the views of jobs it answers with.
//! What it does is in the files named for it: `dispatch` (running jobs),
//! `submission` (checking and queueing them), `catalog`, `schedules` and
//! `timetable`, `results`, `retention`. None of them speaks HTTP: they answer
//! with [`ServiceError`]s, which the `http` layer turns into statuses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::api::{
    AttemptList, Cost, JobList, JobOutcome, JobState, JobView, Order, PlanView, StageProgress,
};
use crate::errors::ServiceError;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::principals::{Principal, Principals, Role, Secret, TOKEN_PRINCIPAL};
use crate::progress::JobProgress;
use crate::store::{JobFilter, JobRecord, JobStore};
use squall_engine::access::AccessPolicy;
use squall_engine::engine::{Engine, Stop};
use squall_engine::error::SquallError;
use squall_engine::scheduler::ExchangeMode;

/// How long finished jobs are kept unless the server says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Who may read `/metrics`.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who reaches the port (Prometheus' default).
    #[default]
    Open,
    /// A caller with an API token, of any principal.
    ApiTokens,
    /// A caller with this token (a scraper's own).
    Token(String),
}

impl std::fmt::Debug for MetricsAccess {
    /// The token is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAccess::Open => f.write_str("Open"),
            MetricsAccess::ApiTokens => f.write_str("ApiTokens"),
            MetricsAccess::Token(_) => f.write_str("Token(hidden)"),
        }
    }
}

/// How the service behaves, beyond its engine.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Who may call `/v1`, each by its tokens; at least one.
    pub principals: Vec<Principal>,
    /// Jobs running at once; the rest wait in submission order.
    pub max_running: usize,
    /// Where results go when a job names no output (`{root}/{job id}`).
    pub results_root: String,
    /// Where they go instead when such a job stays wholly on this machine
    /// (backend auto): under the engine's local work root, on this disk.
    pub local_results_root: Option<String>,
    /// Default shuffle width.
    pub shuffle_partitions: usize,
    /// Tasks of any one stage running at once (None: no cap beyond the job's).
    pub max_stage_concurrency: Option<usize>,
    /// The URLs callers may name.
    pub access: Arc<AccessPolicy>,
    /// Bounds of what callers may ask for.
    pub limits: Limits,
    /// Finished jobs older than this are deleted, with their default results
    /// (None: kept forever).
    pub retain_jobs: Option<Duration>,
    /// Timeouts and the connection cap of the HTTP server.
    pub http: crate::limits::HttpLimits,
    /// Memory pool of a task's first attempt.
    pub task_memory: u64,
    /// A task out of memory is tried again with twice the pool, up to this.
    pub task_memory_max: u64,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// How jobs' reduce stages read shuffles unless a job says.
    pub exchange: ExchangeMode,
    /// Where a job's trace is seen, `{trace_id}` in it standing for the
    /// trace (`http://jaeger:16686/trace/{trace_id}`); None: ids only.
    pub trace_url: Option<String>,
}

impl ServiceConfig {
    /// A configuration with the defaults for `engine`: `tokens` those of one
    /// admin principal, nothing readable, results written under `results_root`
    /// only, limits from the backend's concurrency.
    pub fn new(tokens: Vec<String>, results_root: String, engine: &Engine) -> Self {
        let concurrency = engine.backend.max_concurrency();
        let access = AccessPolicy::new(
            &[],
            std::slice::from_ref(&results_root),
            std::slice::from_ref(&engine.work_root),
        )
        .unwrap_or_default();
        let admin = Principal::new(
            TOKEN_PRINCIPAL,
            Role::Admin,
            tokens.into_iter().map(Secret::Token).collect(),
        );
        Self {
            principals: admin.into_iter().collect(),
            max_running: 4,
            results_root,
            local_results_root: engine
                .local_work_root
                .as_ref()
                .map(|root| format!("{}/results", root.trim_end_matches('/'))),
            shuffle_partitions: concurrency,
            max_stage_concurrency: None,
            access: Arc::new(access),
            limits: Limits::for_backend(concurrency),
            retain_jobs: Some(DEFAULT_RETENTION),
            http: crate::limits::HttpLimits::default(),
            task_memory: squall_engine::scheduler::TaskOptions::default().memory_limit_bytes,
            task_memory_max: squall_engine::scheduler::TaskOptions::default()
                .max_memory_limit_bytes,
            metrics: MetricsAccess::Open,
            exchange: ExchangeMode::Auto,
            trace_url: None,
        }
    }
}

impl ServiceConfig {
    /// Refuses a configuration that contradicts itself (a zero, a default
    /// over its maximum, two principals of one name or token); returns the
    /// principals, ready to find callers by token.
    pub fn validate(&self) -> Result<Principals, ServiceError> {
        let principals = Principals::new(self.principals.clone(), &self.limits)?;
        if self.max_running == 0 {
            return Err(
                SquallError::InvalidArgument("max running jobs must be at least 1".into()).into(),
            );
        }
        if self.max_stage_concurrency == Some(0) {
            return Err(SquallError::InvalidArgument(
                "max stage concurrency must be at least 1".into(),
            )
            .into());
        }
        self.limits.validate()?;
        self.http.validate()?;
        if self.task_memory == 0 || self.task_memory_max < self.task_memory {
            return Err(SquallError::InvalidArgument(
                "task memory must be above zero and at most the largest task memory".into(),
            )
            .into());
        }
        Ok(principals)
    }

    /// The folders a job's result may be in when it names no output: under
    /// the results root, and on this disk where the job stays here.
    pub(crate) fn default_result(&self, job_id: &str) -> (String, Option<String>) {
        let folder = |root: &String| format!("{}/{job_id}", root.trim_end_matches('/'));
        (
            folder(&self.results_root),
            self.local_results_root.as_ref().map(folder),
        )
    }
}

impl std::fmt::Debug for ServiceConfig {
    /// Tokens are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("principals", &self.principals)
            .field("max_running", &self.max_running)
            .field("results_root", &self.results_root)
            .field("local_results_root", &self.local_results_root)
            .field("shuffle_partitions", &self.shuffle_partitions)
            .field("max_stage_concurrency", &self.max_stage_concurrency)
            .field("access", &self.access)
            .field("limits", &self.limits)
            .field("retain_jobs", &self.retain_jobs)
            .field("http", &self.http)
            .field("task_memory", &self.task_memory)
            .field("task_memory_max", &self.task_memory_max)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// A job running on this server.
pub(super) struct RunningJob {
    pub(super) stop: watch::Sender<Stop>,
    /// Turns true once the job's task has ended (its slot freed).
    pub(super) ended: watch::Receiver<bool>,
}

/// The service: engine, store, and the jobs it runs.
pub struct Service {
    pub(super) engine: Engine,
    /// Who may call, found by token.
    pub(super) principals: Principals,
    pub(super) store: Arc<JobStore>,
    pub(super) config: ServiceConfig,
    pub(super) running: AtomicUsize,
    /// Set by `shutdown`: no job starts any more.
    pub(super) stopping: AtomicBool,
    /// Wakes the dispatcher: a job was queued or a slot freed.
    pub(super) wake: Notify,
    /// Wakes the timetable: a schedule was added or changed.
    pub(super) schedules_changed: Notify,
    pub(super) jobs: std::sync::Mutex<JoinSet<()>>,
    /// Running jobs, to stop them.
    pub(super) handles: std::sync::Mutex<HashMap<String, RunningJob>>,
    /// Running jobs' stage progress.
    pub(super) live: std::sync::Mutex<HashMap<String, Arc<JobProgress>>>,
    pub(super) metrics: Metrics,
    /// The principal whose job started last: the next turn is the one after.
    pub(super) last_started: std::sync::Mutex<Option<String>>,
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
    ) -> Result<Arc<Self>, ServiceError> {
        let principals = config.validate()?;
        Ok(Arc::new(Self {
            engine,
            principals,
            store,
            config,
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            schedules_changed: Notify::new(),
            jobs: std::sync::Mutex::new(JoinSet::new()),
            handles: std::sync::Mutex::new(HashMap::new()),
            live: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::new()?,
            last_started: std::sync::Mutex::new(None),
        }))
    }

    /// How this service was configured.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The principal `token` belongs to (compared in constant time).
    pub(crate) fn caller(&self, token: &str) -> Option<Arc<Principal>> {
        self.principals.find(token)
    }

    /// The principal named `name`, the owner of `what`; an error naming
    /// both if the server no longer has one of that name.
    pub(super) fn principal_named(
        &self,
        name: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Arc<Principal>, ServiceError> {
        self.principals
            .named(name)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownPrincipal {
                what: what(),
                principal: name.to_string(),
            })
    }

    /// Job `id`, if `caller` may see it; a job it may not see is not found.
    pub(super) fn owned_job(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<JobRecord, ServiceError> {
        match self.store.job(id)? {
            Some(job) if caller.owns(&job.principal) => Ok(job),
            _ => Err(ServiceError::UnknownJob { id: id.to_string() }),
        }
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

    /// A page of jobs in `order`, of one state and with one label (key,
    /// value) if given.
    /// (A user's own jobs only.)
    pub(crate) fn jobs(
        &self,
        caller: &Principal,
        state: Option<JobState>,
        label: Option<(&str, &str)>,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<JobList, ServiceError> {
        let filter = JobFilter {
            label,
            principal: (!caller.is_admin()).then_some(caller.name.as_str()),
            ..JobFilter::default()
        };
        let (jobs, next) = self
            .store
            .list_jobs_where(&filter, state, order, after, limit)?;
        self.job_list(jobs, next)
    }

    /// One job as the API shows it.
    pub(crate) fn job(&self, caller: &Principal, id: &str) -> Result<JobView, ServiceError> {
        let mut view = self.view(self.owned_job(caller, id)?)?;
        if let Some(plan) = self.store.plan(id)? {
            view.trace_url = self.trace_url(plan.trace_id.as_deref());
            view.trace_id = plan.trace_id;
        }
        Ok(view)
    }

    /// The server's `--trace-url` template with `trace_id` in it.
    fn trace_url(&self, trace_id: Option<&str>) -> Option<String> {
        let template = self.config.trace_url.as_ref()?;
        Some(template.replace("{trace_id}", trace_id?))
    }

    /// The stage DAG job `id` runs; None until it has been planned.
    pub(crate) fn plan(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<Option<PlanView>, ServiceError> {
        self.owned_job(caller, id)?;
        let mut plan = self.store.plan(id)?;
        if let Some(plan) = &mut plan {
            plan.trace_url = self.trace_url(plan.trace_id.as_deref());
        }
        Ok(plan)
    }

    /// How a job's task attempts ended (only the failed ones if `failed`),
    /// with, for a running job, the attempts still running.
    pub(crate) fn attempts(
        &self,
        caller: &Principal,
        id: &str,
        failed: bool,
    ) -> Result<AttemptList, ServiceError> {
        self.owned_job(caller, id)?;
        let mut attempts = self.store.attempts(id, failed)?;
        if !failed {
            // Attempts of a running job that have not ended, and those that
            // ended since the last flush to the store.
            let live = self
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned();
            if let Some(progress) = live {
                let stored: std::collections::HashSet<(u32, u32, u32)> = attempts
                    .iter()
                    .map(|a| (a.stage, a.task, a.attempt))
                    .collect();
                attempts.extend(
                    progress
                        .unflushed_and_running()
                        .into_iter()
                        .filter(|a| !stored.contains(&(a.stage, a.task, a.attempt))),
                );
                attempts.sort_by_key(|a| (a.stage, a.task, a.attempt));
            }
        }
        Ok(AttemptList { attempts })
    }

    /// A page of jobs as the API shows them.
    pub(super) fn job_list(
        &self,
        jobs: Vec<JobRecord>,
        next: Option<i64>,
    ) -> Result<JobList, ServiceError> {
        let jobs = jobs
            .into_iter()
            .map(|j| self.view(j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobList { jobs, next })
    }

    pub(crate) fn view(&self, job: JobRecord) -> Result<JobView, ServiceError> {
        let outcome = self
            .store
            .result(&job.id)?
            .and_then(|value| serde_json::from_value::<JobOutcome>(value).ok());
        let live = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job.id)
            .cloned();
        let mut stages = match (&outcome, &live) {
            (Some(outcome), _) => outcome.stages.clone(),
            (None, Some(progress)) => progress.snapshot(),
            (None, None) => vec![],
        };
        // Final once recorded; running totals while the job runs.
        let cost = match (&job.cost, &live) {
            (Some(cost), _) => Some(cost.clone()),
            (None, Some(progress)) => Some(progress.meter.report()),
            (None, None) => None,
        };
        if let Some(cost) = &cost {
            for stage in &mut stages {
                stage.cost = cost.stages.get(&stage.stage).cloned();
            }
        }
        Ok(job_view(
            job,
            outcome.as_ref(),
            stages,
            cost.map(|c| c.total),
        ))
    }
}

/// A job as the API shows it.
fn job_view(
    job: JobRecord,
    result: Option<&JobOutcome>,
    stages: Vec<StageProgress>,
    cost: Option<Cost>,
) -> JobView {
    let labels = job
        .request
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    JobView {
        id: job.id,
        principal: job.principal,
        state: job.state,
        sql: job.sql,
        submitted_at_ms: job.submitted_at_ms,
        started_at_ms: job.started_at_ms,
        finished_at_ms: job.finished_at_ms,
        error: job.error,
        rows: result.map(|r| r.rows),
        manifest_url: result.map(|r| r.manifest_url.clone()),
        stages,
        labels,
        cost,
        trace_id: None,
        trace_url: None,
    }
}
