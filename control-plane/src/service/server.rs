//! The HTTP server of `squall serve`: the router, its handlers, and the
//! dispatcher that runs queued jobs under admission control.
//!
//! Jobs live in the [`JobStore`]; the dispatcher starts queued jobs in
//! submission order while fewer than `max_running` run, and records every
//! committed stage, so a server started on the same data dir takes up the jobs
//! it finds running (from their committed stages) and queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::api::{Accepted, JobList, JobOutcome, JobView, Problem, SubmitJob};
use super::store::{JobRecord, JobState, JobStore, NewJob};
use super::{StoreJournal, now_ms};
use crate::engine::{Engine, JobRequest, JobRun, new_job_id};
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
    engine: Engine,
    store: Arc<JobStore>,
    config: ServiceConfig,
    running: AtomicUsize,
    wake: Notify,
    jobs: std::sync::Mutex<JoinSet<()>>,
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
            jobs: std::sync::Mutex::new(JoinSet::new()),
        }))
    }

    /// Takes up the jobs a previous server left running, then starts queued jobs
    /// as room frees up, until the returned task is aborted.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move { service.dispatch().await })
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
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(async move {
                service.run(job).await;
                service.running.fetch_sub(1, Ordering::SeqCst);
                service.wake.notify_one();
            });
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
            progress: None,
        };
        let result = self.engine.run_as(&request, run).await?;
        Ok(JobOutcome {
            rows: result.rows,
            manifest_url: result.manifest_url.unwrap_or_default(),
            files: result.files.into_iter().map(|f| f.url).collect(),
        })
    }

    /// The engine's request for a submission (tables and options checked).
    fn request(&self, submitted: &SubmitJob) -> Result<JobRequest, SquallError> {
        let tables = submitted
            .tables
            .iter()
            .map(|t| {
                Ok(TableSpec {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    format: t.format.as_deref().map(str::parse).transpose()?,
                })
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
        Ok(request)
    }

    /// Checks a submission by planning it (SQL, tables), then queues it.
    async fn submit(&self, submitted: SubmitJob) -> Result<Accepted, ApiError> {
        let request = self.request(&submitted).map_err(ApiError::from)?;
        plan_job(
            &request.sql,
            &request.tables,
            &request.plan,
            self.engine.stores.clone(),
            "memory:///squall-validate",
            "memory:///squall-validate/result",
        )
        .await
        .map_err(ApiError::from)?;
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

    fn view(&self, job: JobRecord) -> Result<JobView, ApiError> {
        let outcome = match self.store.result(&job.id) {
            Ok(Some(value)) => serde_json::from_value::<JobOutcome>(value).ok(),
            Ok(None) => None,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        Ok(JobView::new(job, outcome.as_ref()))
    }
}

/// The router: `/healthz` open, everything under `/v1` behind a bearer token.
pub fn router(service: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(list_jobs).post(submit_job))
        .route("/jobs/{id}", get(get_job))
        .route_layer(middleware::from_fn_with_state(service.clone(), authorize));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not found", "no such route".into())
        })
        .with_state(service)
}

async fn authorize(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = token.is_some_and(|t| {
        service
            .config
            .tokens
            .iter()
            .any(|known| !known.is_empty() && known == t)
    });
    if !known {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API token as `Authorization: Bearer TOKEN`".into(),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

async fn submit_job(
    State(service): State<Arc<Service>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let submitted: SubmitJob = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid job",
            format!("the body is not a job: {e}"),
        )
    })?;
    let accepted = service.submit(submitted).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

async fn list_jobs(
    State(service): State<Arc<Service>>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(JobState::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid state",
                format!(
                    "unknown job state '{text}' (queued, running, succeeded, failed, cancelled)"
                ),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let (jobs, next) = service
        .store
        .list_jobs(state, query.after, limit)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let jobs = jobs
        .into_iter()
        .map(|j| service.view(j))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(JobList { jobs, next }))
}

async fn get_job(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = service
        .store
        .job(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown job",
                format!("no job '{id}'"),
            )
        })?;
    Ok(axum::Json(service.view(job)?))
}

/// An error answer: `application/problem+json` naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, title: &'static str, detail: String) -> Self {
        Self {
            status,
            title,
            detail,
        }
    }

    fn internal(detail: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
    }
}

impl From<SquallError> for ApiError {
    fn from(error: SquallError) -> Self {
        let (status, title) = match &error {
            SquallError::Sql { .. } => (StatusCode::BAD_REQUEST, "bad SQL"),
            SquallError::Rejected { .. } => (StatusCode::BAD_REQUEST, "rejected statement"),
            SquallError::Table { .. } => (StatusCode::BAD_REQUEST, "bad table"),
            e if e.is_user_error() => (StatusCode::BAD_REQUEST, "invalid job"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        Self::new(status, title, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
