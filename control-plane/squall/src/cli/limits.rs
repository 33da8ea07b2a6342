//! `squall serve`'s bounds on what callers may ask for and on task memory:
//! the flags (also `[limits]` in the config file), merged flags over file,
//! checked and turned into the service's limits.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use squall_engine::planner::pool::PlanningLimits;
use squall_service::{HttpLimits, Limits};

use super::error::{CliError, Result};
use super::units;

/// Bounds of what callers may ask for (also `[limits]` in the config file).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitArgs {
    /// Largest options.max_concurrency of a job [default: the backend's concurrency].
    #[arg(long, value_name = "N")]
    max_job_concurrency: Option<usize>,
    /// Largest options.shuffle_partitions [default: 4 × the backend's concurrency, 256 to 10000].
    #[arg(long, value_name = "N")]
    max_shuffle_partitions: Option<usize>,
    /// Deadline of a job that gives none [default: 1h].
    #[arg(long, value_name = "DURATION")]
    default_deadline: Option<String>,
    /// Largest options.deadline_seconds [default: 24h].
    #[arg(long, value_name = "DURATION")]
    max_deadline: Option<String>,
    /// Scan limit of a job that gives none [default: 1TB].
    #[arg(long, value_name = "SIZE")]
    default_scan_limit: Option<String>,
    /// Largest options.scan_limit_bytes [default: 100TB].
    #[arg(long, value_name = "SIZE")]
    max_scan_limit: Option<String>,
    /// Shortest time between two runs of a schedule [default: 60s].
    #[arg(long, value_name = "DURATION")]
    min_cron_interval: Option<String>,
    /// Jobs waiting to run at most; more submissions get 429 [default: 100].
    #[arg(long, value_name = "N")]
    max_queued: Option<usize>,
    /// Files one table may list at most [default: 100000].
    #[arg(long, value_name = "N")]
    max_table_files: Option<usize>,
    /// Cost limit (US dollars) of a job that gives none [default: none].
    #[arg(long, value_name = "USD", value_parser = units::parse_usd)]
    default_cost_limit: Option<f64>,
    /// Largest options.cost_limit_usd [default: 10000].
    #[arg(long, value_name = "USD", value_parser = units::parse_usd)]
    max_cost_limit: Option<f64>,
    /// Longest SQL text a job or schedule may carry [default: 256KiB].
    #[arg(long, value_name = "SIZE")]
    max_sql_bytes: Option<String>,
    /// Longest one job's planning may take, listing its tables included [default: 60s].
    #[arg(long, value_name = "DURATION")]
    max_planning_time: Option<String>,
    /// Jobs planned at once, each on a thread of its own [default: the number of cores, at most 8].
    #[arg(long, value_name = "N")]
    planning_threads: Option<usize>,
    /// HTTP connections open at once; more wait until one closes [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// A request's head must arrive within this of the connection opening or
    /// the previous response (idle connections close then too) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    header_timeout: Option<String>,
    /// A request's body must arrive within this [default: 30s].
    #[arg(long, value_name = "DURATION")]
    body_timeout: Option<String>,
    /// A response the client stops reading is dropped after this [default: 60s].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// A request is answered within this (a download's body streams on) [default: 120s].
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// Schedules the server keeps [default: 1000].
    #[arg(long, value_name = "N")]
    max_schedules: Option<usize>,
    /// Catalog tables the server keeps [default: 10000].
    #[arg(long, value_name = "N")]
    max_tables: Option<usize>,
    /// Most bytes of JSON rows in one result page [default: 8MiB].
    #[arg(long, value_name = "SIZE")]
    max_page_bytes: Option<String>,
    /// Most bytes of result files one job may write; past it the job fails
    /// and leaves nothing (`none`: no limit) [default: 100GiB].
    #[arg(long, value_name = "SIZE")]
    max_result_bytes: Option<String>,
    /// Memory pool of a task's first attempt [default: 2GiB].
    #[arg(long, value_name = "SIZE")]
    task_memory: Option<String>,
    /// A task out of memory is tried again with twice the pool, up to this
    /// [default: 8GiB, at most --server-memory].
    #[arg(long, value_name = "SIZE")]
    task_memory_max: Option<String>,
    /// Memory the in-process executors' tasks share (--backend local): a task
    /// starts once its pool fits [default: the executors × --task-memory].
    #[arg(long, value_name = "SIZE")]
    server_memory: Option<String>,
}

/// How serve's tasks use memory.
pub(super) struct TaskMemory {
    pub(super) first: u64,
    pub(super) max: u64,
    /// The in-process executors' budget (None with Lambda).
    pub(super) server: Option<u64>,
}

/// Everything [`LimitArgs`] sets but task memory.
pub(super) struct Bounds {
    pub(super) limits: Limits,
    pub(super) http: HttpLimits,
    pub(super) planning: PlanningLimits,
}

/// A size flag or file value, `none` for no limit.
fn optional_size(flag: &str, text: Option<&str>, default: Option<u64>) -> Result<Option<u64>> {
    match text.map(str::trim) {
        None => Ok(default),
        Some("none") => Ok(None),
        Some(text) => units::parse_size(text)
            .map(Some)
            .map_err(|e| CliError::InvalidArgument(format!("{flag}: {e} (or 'none')"))),
    }
}

/// A flag or file value read by `parse` (naming `flag` if it cannot be), or
/// `default` where none was given.
fn parsed<T>(
    flag: &str,
    text: Option<&str>,
    parse: fn(&str) -> std::result::Result<T, String>,
    default: T,
) -> Result<T> {
    match text {
        Some(text) => parse(text).map_err(|e| CliError::InvalidArgument(format!("{flag}: {e}"))),
        None => Ok(default),
    }
}

/// A duration flag or file value.
fn duration(flag: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
    parsed(flag, text, units::parse_duration, default)
}

/// A size flag or file value.
fn size_of(flag: &str, text: Option<&str>, default: u64) -> Result<u64> {
    parsed(flag, text, units::parse_size, default)
}

impl LimitArgs {
    /// The flags' values over the config file's (`file`).
    pub(super) fn over(self, file: LimitArgs) -> LimitArgs {
        LimitArgs {
            max_job_concurrency: self.max_job_concurrency.or(file.max_job_concurrency),
            max_shuffle_partitions: self.max_shuffle_partitions.or(file.max_shuffle_partitions),
            default_deadline: self.default_deadline.or(file.default_deadline),
            max_deadline: self.max_deadline.or(file.max_deadline),
            default_scan_limit: self.default_scan_limit.or(file.default_scan_limit),
            max_scan_limit: self.max_scan_limit.or(file.max_scan_limit),
            min_cron_interval: self.min_cron_interval.or(file.min_cron_interval),
            max_queued: self.max_queued.or(file.max_queued),
            max_table_files: self.max_table_files.or(file.max_table_files),
            default_cost_limit: self.default_cost_limit.or(file.default_cost_limit),
            max_cost_limit: self.max_cost_limit.or(file.max_cost_limit),
            max_sql_bytes: self.max_sql_bytes.or(file.max_sql_bytes),
            max_planning_time: self.max_planning_time.or(file.max_planning_time),
            planning_threads: self.planning_threads.or(file.planning_threads),
            max_connections: self.max_connections.or(file.max_connections),
            header_timeout: self.header_timeout.or(file.header_timeout),
            body_timeout: self.body_timeout.or(file.body_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            request_timeout: self.request_timeout.or(file.request_timeout),
            max_schedules: self.max_schedules.or(file.max_schedules),
            max_tables: self.max_tables.or(file.max_tables),
            max_page_bytes: self.max_page_bytes.or(file.max_page_bytes),
            max_result_bytes: self.max_result_bytes.or(file.max_result_bytes),
            task_memory: self.task_memory.or(file.task_memory),
            task_memory_max: self.task_memory_max.or(file.task_memory_max),
            server_memory: self.server_memory.or(file.server_memory),
        }
    }

    /// Task memory; the server's budget only for `executors` in-process
    /// executors.
    pub(super) fn task_memory(&self, executors: Option<usize>) -> Result<TaskMemory> {
        let defaults = squall_engine::TaskOptions::default();
        let first = size_of(
            "--task-memory",
            self.task_memory.as_deref(),
            defaults.memory_limit_bytes,
        )?;
        let server = match executors {
            None => {
                if self.server_memory.is_some() {
                    return Err(CliError::InvalidArgument(
                        "--server-memory applies to --backend local".into(),
                    ));
                }
                None
            }
            Some(executors) => Some(size_of(
                "--server-memory",
                self.server_memory.as_deref(),
                first.saturating_mul(executors as u64),
            )?),
        };
        let max_default = defaults
            .max_memory_limit_bytes
            .min(server.unwrap_or(u64::MAX))
            .max(first);
        let max = size_of(
            "--task-memory-max",
            self.task_memory_max.as_deref(),
            max_default,
        )?;
        if first == 0 || max < first {
            return Err(CliError::InvalidArgument(
                "--task-memory must be above 0 and at most --task-memory-max".into(),
            ));
        }
        if let Some(server) = server
            && max > server
        {
            return Err(CliError::InvalidArgument(format!(
                "--task-memory-max ({} MiB) must fit in --server-memory ({} MiB): a task \
                 that needs more could never start",
                max >> 20,
                server >> 20
            )));
        }
        Ok(TaskMemory { first, max, server })
    }

    /// The bounds set, over `defaults`.
    pub(super) fn resolve(&self, defaults: Limits) -> Result<Bounds> {
        let limits = self.job_limits(defaults)?;
        limits.validate()?;
        let http = self.http()?;
        http.validate()?;
        let planning = self.planning(&http)?;
        Ok(Bounds {
            limits,
            http,
            planning,
        })
    }

    /// What one job may ask for, over `defaults`.
    fn job_limits(&self, defaults: Limits) -> Result<Limits> {
        Ok(Limits {
            max_concurrency: self.max_job_concurrency.unwrap_or(defaults.max_concurrency),
            max_shuffle_partitions: self
                .max_shuffle_partitions
                .unwrap_or(defaults.max_shuffle_partitions),
            default_deadline: duration(
                "--default-deadline",
                self.default_deadline.as_deref(),
                defaults.default_deadline,
            )?,
            max_deadline: duration(
                "--max-deadline",
                self.max_deadline.as_deref(),
                defaults.max_deadline,
            )?,
            default_scan_limit_bytes: size_of(
                "--default-scan-limit",
                self.default_scan_limit.as_deref(),
                defaults.default_scan_limit_bytes,
            )?,
            max_scan_limit_bytes: size_of(
                "--max-scan-limit",
                self.max_scan_limit.as_deref(),
                defaults.max_scan_limit_bytes,
            )?,
            min_cron_interval: duration(
                "--min-cron-interval",
                self.min_cron_interval.as_deref(),
                defaults.min_cron_interval,
            )?,
            max_queued: self.max_queued.unwrap_or(defaults.max_queued),
            max_table_files: self.max_table_files.unwrap_or(defaults.max_table_files),
            default_cost_limit_usd: self.default_cost_limit.or(defaults.default_cost_limit_usd),
            max_cost_limit_usd: self.max_cost_limit.unwrap_or(defaults.max_cost_limit_usd),
            max_sql_bytes: size_of(
                "--max-sql-bytes",
                self.max_sql_bytes.as_deref(),
                defaults.max_sql_bytes as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            max_page_bytes: size_of(
                "--max-page-bytes",
                self.max_page_bytes.as_deref(),
                defaults.max_page_bytes as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            max_result_bytes: optional_size(
                "--max-result-bytes",
                self.max_result_bytes.as_deref(),
                defaults.max_result_bytes,
            )?,
            max_schedules: self.max_schedules.unwrap_or(defaults.max_schedules),
            max_tables: self.max_tables.unwrap_or(defaults.max_tables),
        })
    }

    /// The HTTP server's timeouts and connection cap.
    fn http(&self) -> Result<HttpLimits> {
        let http_defaults = HttpLimits::default();
        Ok(HttpLimits {
            header_timeout: duration(
                "--header-timeout",
                self.header_timeout.as_deref(),
                http_defaults.header_timeout,
            )?,
            body_timeout: duration(
                "--body-timeout",
                self.body_timeout.as_deref(),
                http_defaults.body_timeout,
            )?,
            idle_timeout: duration(
                "--idle-timeout",
                self.idle_timeout.as_deref(),
                http_defaults.idle_timeout,
            )?,
            request_timeout: duration(
                "--request-timeout",
                self.request_timeout.as_deref(),
                http_defaults.request_timeout,
            )?,
            max_connections: self
                .max_connections
                .unwrap_or(http_defaults.max_connections),
        })
    }

    /// Planning's time and threads; planning must end before the request that
    /// asked for it times out.
    fn planning(&self, http: &HttpLimits) -> Result<PlanningLimits> {
        let planning_defaults = PlanningLimits::default();
        let planning = PlanningLimits {
            time: duration(
                "--max-planning-time",
                self.max_planning_time.as_deref(),
                planning_defaults.time,
            )?,
            concurrency: self
                .planning_threads
                .unwrap_or(planning_defaults.concurrency),
            ..planning_defaults
        };
        if planning.time >= http.request_timeout {
            return Err(CliError::InvalidArgument(format!(
                "--max-planning-time ({} s) must be shorter than --request-timeout ({} s): \
                 a submission is planned before it is answered",
                planning.time.as_secs_f64(),
                http.request_timeout.as_secs_f64()
            )));
        }
        Ok(planning)
    }
}
