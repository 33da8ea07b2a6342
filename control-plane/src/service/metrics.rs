//! Prometheus metrics of the service (`GET /metrics`): jobs by state (read from
//! the store at each scrape), and counters fed by the scheduler's events — tasks,
//! retries, bytes scanned and written, task durations.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts, Registry};

use super::api::JobState;
use super::errors::ServiceError;
use super::store::JobStore;
use crate::scheduler::JobEvent;

/// The service's metrics, registered in a registry of their own.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    jobs: IntGaugeVec,
    tasks: IntCounter,
    retries: IntCounter,
    failures: IntCounter,
    bytes_scanned: IntCounter,
    bytes_written: IntCounter,
    task_seconds: Histogram,
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
        let bytes_scanned = IntCounter::new(
            "squall_bytes_scanned_total",
            "Bytes read from tables by succeeded tasks",
        )?;
        let bytes_written = IntCounter::new(
            "squall_bytes_written_total",
            "Bytes of shuffle and result files written by succeeded tasks",
        )?;
        let task_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "squall_task_duration_seconds",
                "Executor time of succeeded task attempts",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0,
            ]),
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(bytes_scanned.clone()))?;
        registry.register(Box::new(bytes_written.clone()))?;
        registry.register(Box::new(task_seconds.clone()))?;
        Ok(Self {
            registry,
            jobs,
            tasks,
            retries,
            failures,
            bytes_scanned,
            bytes_written,
            task_seconds,
        })
    }

    /// Counts what a job's scheduler reports.
    pub fn observe(&self, event: &JobEvent) {
        match event {
            JobEvent::TaskSucceeded { metrics, .. } => {
                self.tasks.inc();
                self.bytes_scanned.inc_by(metrics.bytes_scanned);
                self.bytes_written.inc_by(metrics.bytes_out);
                self.task_seconds
                    .observe(metrics.elapsed_ms as f64 / 1000.0);
            }
            JobEvent::TaskRetrying { .. } => self.retries.inc(),
            JobEvent::TaskFailed { .. } => self.failures.inc(),
            _ => {}
        }
    }

    /// The text exposition format, with job counts read from `store` now.
    pub fn render(&self, store: &JobStore) -> Result<String, ServiceError> {
        for state in JobState::ALL {
            let count = store.count_jobs(state)?;
            self.jobs
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        // The text encoder writes UTF-8 only.
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(ServiceError::from)
    }
}
