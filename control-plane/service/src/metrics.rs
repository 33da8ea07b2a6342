//! Prometheus metrics of the service (`GET /metrics`): jobs by state (read from
//! the store at most once per [`JOB_COUNTS_TTL`], however often it is scraped),
//! and counters fed by the scheduler's events — tasks,
//! retries, backups, bytes scanned and written, task durations — and what
//! ended jobs cost (dollars, GB-seconds, invocations, requests).

use std::time::Duration;

use prometheus::{
    Counter, CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::api::JobState;
use crate::errors::ServiceError;
use crate::store::JobStore;
use squall_engine::backend::FlowStats;
use squall_engine::cost::JobCost;
use squall_engine::scheduler::{JobEvent, StageKind};

/// How long the jobs-by-state gauges are kept before the store is asked again.
pub const JOB_COUNTS_TTL: Duration = Duration::from_secs(5);

/// The service's metrics, registered in a registry of their own.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    jobs: IntGaugeVec,
    /// When `jobs` was last read from the store.
    jobs_read: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    tasks: IntCounter,
    retries: IntCounter,
    failures: IntCounter,
    backups: IntCounter,
    backup_wins: IntCounter,
    bytes_scanned: IntCounter,
    bytes_written: IntCounter,
    bytes_shuffled: IntCounter,
    attempts: IntCounter,
    task_seconds: HistogramVec,
    /// Jobs that ended, by outcome (succeeded, failed, cancelled).
    jobs_ended: IntCounterVec,
    job_seconds: HistogramVec,
    queue_seconds: HistogramVec,
    /// The backend's in-flight limit and throttles (read at each scrape).
    flow_limit: IntGauge,
    flow_max: IntGauge,
    throttles: IntCounter,
    throttle_decreases: IntCounter,
    /// What jobs cost, added when each job ends (see `cost`).
    cost_usd: CounterVec,
    lambda_gb_seconds: Counter,
    lambda_invocations: IntCounter,
    cold_starts: IntCounter,
    cpu_seconds: Counter,
    requests: IntCounterVec,
    hedged: IntCounterVec,
    /// Executor time of ended jobs' attempts, and stages placed, by place.
    executor_seconds: CounterVec,
    stages_placed: IntCounterVec,
    /// Submissions by how they were answered, and the newest job event.
    admission: Admission,
}

/// What the admission and observability-lag SLIs (M10, M12) read.
#[derive(Debug, Clone)]
struct Admission {
    /// Job submissions (HTTP and Flight SQL) by outcome: accepted, throttled
    /// (429: a queue is full), refused (any other 4xx), error (5xx).
    submissions: IntCounterVec,
    /// When this server last saw a job event (Unix seconds).
    last_event: prometheus::Gauge,
}

impl Admission {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let submissions = IntCounterVec::new(
            Opts::new(
                "squall_job_submissions_total",
                "Job submissions by answer: accepted, throttled (429, a queue full), refused (other 4xx), error (5xx)",
            ),
            &["outcome"],
        )?;
        let last_event = prometheus::Gauge::new(
            "squall_last_job_event_timestamp_seconds",
            "When the newest job event (a task started or ended, a stage planned) reached the metrics, in Unix seconds",
        )?;
        for outcome in ["accepted", "throttled", "refused", "error"] {
            submissions.with_label_values(&[outcome]);
        }
        registry.register(Box::new(submissions.clone()))?;
        registry.register(Box::new(last_event.clone()))?;
        Ok(Self {
            submissions,
            last_event,
        })
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let jobs = IntGaugeVec::new(Opts::new("squall_jobs", "Jobs by state"), &["state"])?;
        let tasks = IntCounter::new(
            "squall_tasks_succeeded_total",
            "Task attempts that succeeded",
        )?;
        let retries = IntCounter::new(
            "squall_task_retries_total",
            "Task attempts that failed and were retried",
        )?;
        let failures = IntCounter::new(
            "squall_task_failures_total",
            "Tasks whose last attempt failed (each fails its job)",
        )?;
        let backups = IntCounter::new(
            "squall_task_backups_total",
            "Backup copies started for straggling tasks",
        )?;
        let backup_wins = IntCounter::new(
            "squall_task_backup_wins_total",
            "Tasks whose backup copy finished before the straggler",
        )?;
        let bytes_scanned = IntCounter::new(
            "squall_bytes_scanned_total",
            "Bytes read from tables by succeeded tasks",
        )?;
        let bytes_written = IntCounter::new(
            "squall_bytes_written_total",
            "Bytes of shuffle and result files written by succeeded tasks",
        )?;
        let task_seconds = HistogramVec::new(
            HistogramOpts::new(
                "squall_task_duration_seconds",
                "Executor time of succeeded task attempts, by stage kind (scan, reduce, final)",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0,
            ]),
            &["stage_kind"],
        )?;
        let bytes_shuffled = IntCounter::new(
            "squall_bytes_shuffled_total",
            "Bytes of shuffle files written by succeeded tasks (results not counted)",
        )?;
        let attempts = IntCounter::new(
            "squall_task_attempts_total",
            "Task attempts handed to the backend (first tries, retries and backups)",
        )?;
        let jobs_ended = IntCounterVec::new(
            Opts::new(
                "squall_jobs_ended_total",
                "Jobs that ended, by outcome (succeeded, failed, cancelled) and principal",
            ),
            &["outcome", "principal"],
        )?;
        let job_buckets = vec![
            0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
        ];
        let job_seconds = HistogramVec::new(
            HistogramOpts::new(
                "squall_job_duration_seconds",
                "From a job's start to its end (queueing not counted), by outcome",
            )
            .buckets(job_buckets.clone()),
            &["outcome"],
        )?;
        let queue_seconds = HistogramVec::new(
            HistogramOpts::new(
                "squall_job_queue_seconds",
                "From a job's submission to its start (or to its cancellation, if it never started), by outcome",
            )
            .buckets(
                [0.01, 0.1]
                    .into_iter()
                    .chain(job_buckets)
                    .collect::<Vec<f64>>(),
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(bytes_shuffled.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(jobs_ended.clone()))?;
        registry.register(Box::new(job_seconds.clone()))?;
        registry.register(Box::new(queue_seconds.clone()))?;
        let flow_limit = IntGauge::new(
            "squall_backend_inflight_limit",
            "Invocations the backend lets run at once now (halved on throttling)",
        )?;
        let flow_max = IntGauge::new(
            "squall_backend_inflight_max",
            "Invocations the backend lets run at once at most",
        )?;
        let throttles = IntCounter::new(
            "squall_backend_throttles_total",
            "Invocations the backend's service throttled (Lambda 429s)",
        )?;
        let throttle_decreases = IntCounter::new(
            "squall_backend_throttle_decreases_total",
            "Times throttling halved the in-flight limit",
        )?;
        let cost_usd = CounterVec::new(
            Opts::new(
                "squall_cost_usd_total",
                "Estimated cost of ended jobs in US dollars, by part (lambda_compute, lambda_requests, s3_requests)",
            ),
            &["part"],
        )?;
        let lambda_gb_seconds = Counter::new(
            "squall_lambda_gb_seconds_total",
            "Billed Lambda duration × memory of ended jobs' attempts",
        )?;
        let lambda_invocations = IntCounter::new(
            "squall_lambda_invocations_total",
            "Lambda invocations billed to ended jobs",
        )?;
        let cold_starts = IntCounter::new(
            "squall_lambda_cold_starts_total",
            "Invocations of ended jobs that started a fresh function process",
        )?;
        let cpu_seconds = Counter::new(
            "squall_task_cpu_seconds_total",
            "Compute time DataFusion measured in ended jobs' attempts",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "squall_object_store_requests_total",
                "Object-store requests of ended jobs, by store (s3, file, memory) and kind (get, head, put, list, delete)",
            ),
            &["store", "kind"],
        )?;
        let hedged = IntCounterVec::new(
            Opts::new(
                "squall_hedged_reads_total",
                "Reads of ended jobs sent a second time because the first was slow, by store (each second copy is also a get above)",
            ),
            &["store"],
        )?;
        let executor_seconds = CounterVec::new(
            Opts::new(
                "squall_executor_seconds_total",
                "Executor time of ended jobs' task attempts, by place (local: in-process, lambda)",
            ),
            &["place"],
        )?;
        let stages_placed = IntCounterVec::new(
            Opts::new(
                "squall_stages_placed_total",
                "Stages started, by where their tasks were placed (local, lambda, split)",
            ),
            &["place"],
        )?;
        registry.register(Box::new(executor_seconds.clone()))?;
        registry.register(Box::new(stages_placed.clone()))?;
        registry.register(Box::new(cost_usd.clone()))?;
        registry.register(Box::new(lambda_gb_seconds.clone()))?;
        registry.register(Box::new(lambda_invocations.clone()))?;
        registry.register(Box::new(cold_starts.clone()))?;
        registry.register(Box::new(cpu_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(hedged.clone()))?;
        registry.register(Box::new(flow_limit.clone()))?;
        registry.register(Box::new(flow_max.clone()))?;
        registry.register(Box::new(throttles.clone()))?;
        registry.register(Box::new(throttle_decreases.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(backups.clone()))?;
        registry.register(Box::new(backup_wins.clone()))?;
        registry.register(Box::new(bytes_scanned.clone()))?;
        registry.register(Box::new(bytes_written.clone()))?;
        registry.register(Box::new(task_seconds.clone()))?;
        Ok(Self {
            admission: Admission::new(&registry)?,
            registry,
            jobs,
            jobs_read: Default::default(),
            tasks,
            retries,
            failures,
            backups,
            backup_wins,
            bytes_scanned,
            bytes_written,
            bytes_shuffled,
            attempts,
            task_seconds,
            jobs_ended,
            job_seconds,
            queue_seconds,
            flow_limit,
            flow_max,
            throttles,
            throttle_decreases,
            cost_usd,
            lambda_gb_seconds,
            lambda_invocations,
            cold_starts,
            cpu_seconds,
            requests,
            hedged,
            executor_seconds,
            stages_placed,
        })
    }

    /// Counts a job that ended as `outcome`: it waited `queued` and then ran
    /// for `ran` (None: it never started).
    pub fn job_ended(
        &self,
        outcome: JobState,
        principal: &str,
        queued: Duration,
        ran: Option<Duration>,
    ) {
        let outcome = outcome.as_str();
        self.jobs_ended
            .with_label_values(&[outcome, principal])
            .inc();
        self.queue_seconds
            .with_label_values(&[outcome])
            .observe(queued.as_secs_f64());
        if let Some(ran) = ran {
            self.job_seconds
                .with_label_values(&[outcome])
                .observe(ran.as_secs_f64());
        }
    }

    /// Adds what an ended job (or run of a job) used.
    pub fn add_cost(&self, cost: &JobCost) {
        let total = &cost.total;
        for (part, usd) in [
            ("lambda_compute", total.lambda_compute_usd),
            ("lambda_requests", total.lambda_request_usd),
            ("s3_requests", total.s3_request_usd),
        ] {
            self.cost_usd
                .with_label_values(&[part])
                .inc_by(usd.max(0.0));
        }
        self.lambda_gb_seconds
            .inc_by(total.lambda_gb_seconds.max(0.0));
        self.lambda_invocations.inc_by(total.lambda_invocations);
        self.cold_starts.inc_by(total.cold_starts);
        self.cpu_seconds.inc_by(total.cpu_seconds.max(0.0));
        let local = total.local_task_seconds.max(0.0);
        for (place, seconds) in [
            ("local", local),
            ("lambda", (total.task_seconds - local).max(0.0)),
        ] {
            self.executor_seconds
                .with_label_values(&[place])
                .inc_by(seconds);
        }
        for (store, r) in &total.requests_by_store {
            for (kind, n) in [
                ("get", r.get),
                ("head", r.head),
                ("put", r.put),
                ("list", r.list),
                ("delete", r.delete),
            ] {
                self.requests
                    .with_label_values(&[store.as_str(), kind])
                    .inc_by(n);
            }
            self.hedged
                .with_label_values(&[store.as_str()])
                .inc_by(r.hedged);
        }
    }

    /// Counts a job submission the API answered with HTTP `status` (a Flight
    /// SQL submission counts with the status its error maps to).
    pub fn submission(&self, status: u16) {
        let outcome = match status {
            200..=299 => "accepted",
            429 => "throttled",
            400..=499 => "refused",
            _ => "error",
        };
        self.admission
            .submissions
            .with_label_values(&[outcome])
            .inc();
    }

    /// Counts what a job's scheduler reports.
    pub fn observe(&self, event: &JobEvent) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.admission.last_event.set(now.as_secs_f64());
        match event {
            JobEvent::TaskSucceeded {
                metrics,
                backup,
                kind,
                ..
            } => {
                self.tasks.inc();
                if *backup {
                    self.backup_wins.inc();
                }
                self.bytes_scanned.inc_by(metrics.bytes_scanned);
                self.bytes_written.inc_by(metrics.bytes_out);
                if *kind != StageKind::Final {
                    self.bytes_shuffled.inc_by(metrics.bytes_out);
                }
                self.task_seconds
                    .with_label_values(&[kind.as_str()])
                    .observe(metrics.elapsed_ms as f64 / 1000.0);
            }
            JobEvent::TaskStarted { .. } => self.attempts.inc(),
            JobEvent::StagePlaced { placement, .. } => self
                .stages_placed
                .with_label_values(&[placement.label()])
                .inc(),
            JobEvent::TaskRetrying { .. } => self.retries.inc(),
            JobEvent::TaskFailed { .. } => self.failures.inc(),
            JobEvent::BackupStarted { .. } => self.backups.inc(),
            _ => {}
        }
    }

    /// The text exposition format, with job counts read from `store` and the
    /// backend's `flow` (if it throttles) now.
    pub fn render(
        &self,
        store: &JobStore,
        flow: Option<FlowStats>,
    ) -> Result<String, ServiceError> {
        if let Some(flow) = flow {
            self.flow_limit.set(flow.limit as i64);
            self.flow_max.set(flow.max as i64);
            // The backend keeps the running totals; the counters mirror them.
            self.throttles.reset();
            self.throttles.inc_by(flow.throttles);
            self.throttle_decreases.reset();
            self.throttle_decreases.inc_by(flow.decreases);
        }
        let stale = {
            let mut read = self.jobs_read.lock().unwrap_or_else(|e| e.into_inner());
            let stale = read.is_none_or(|at| at.elapsed() >= JOB_COUNTS_TTL);
            if stale {
                *read = Some(std::time::Instant::now());
            }
            stale
        };
        if stale {
            for state in JobState::ALL {
                let count = store.count_jobs(state)?;
                self.jobs
                    .with_label_values(&[state.as_str()])
                    .set(count as i64);
            }
        }
        // The text encoder writes UTF-8 only.
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(ServiceError::from)
    }
}
