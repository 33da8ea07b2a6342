//! What one caller of a shared server may ask for: the bounds every number in
//! a submission is checked against, and the defaults of those left out.
//!
//! # What belongs here
//! [`Limits`] (server settings with defaults from the backend) and the checks
//! of a job's options against them; [`HttpLimits`], the HTTP server's
//! timeouts and connection cap. A number over its bound is refused at
//! submission (400 naming the option and the limit), never clamped silently.

use std::time::Duration;

use squall_engine::error::{SquallError, human_bytes};

/// Bounds and defaults of what callers may ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest `options.max_concurrency` (tasks of one job at once).
    pub max_concurrency: usize,
    /// Largest `options.shuffle_partitions`.
    pub max_shuffle_partitions: usize,
    /// `options.deadline_seconds` when a job gives none.
    pub default_deadline: Duration,
    /// Largest `options.deadline_seconds`.
    pub max_deadline: Duration,
    /// `options.scan_limit_bytes` when a job gives none.
    pub default_scan_limit_bytes: u64,
    /// Largest `options.scan_limit_bytes`.
    pub max_scan_limit_bytes: u64,
    /// Shortest time between two runs of a schedule.
    pub min_cron_interval: Duration,
    /// Jobs waiting to run at most; a submission beyond is answered 429.
    pub max_queued: usize,
    /// Files (objects) one table may list at most.
    pub max_table_files: usize,
    /// `options.cost_limit_usd` when a job gives none (None: no limit).
    pub default_cost_limit_usd: Option<f64>,
    /// Largest `options.cost_limit_usd`.
    pub max_cost_limit_usd: f64,
    /// Longest SQL text of a job or schedule, in bytes.
    pub max_sql_bytes: usize,
    /// Most bytes of JSON rows in one result page.
    pub max_page_bytes: usize,
    /// Most bytes of result files one job may commit (None: no limit).
    pub max_result_bytes: Option<u64>,
    /// Schedules the server keeps at most.
    pub max_schedules: usize,
    /// Catalog tables the server keeps at most.
    pub max_tables: usize,
}

/// Default most bytes of result files of one job: more than a query's
/// answer, less than a disk.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 100 << 30;

/// Default most bytes of one result page: a page a browser shows at once.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 8 << 20;

/// Default longest SQL text: generous for generated SQL, small enough that
/// every job's text can be kept and shown.
pub const DEFAULT_MAX_SQL_BYTES: usize = 256 << 10;

/// Timeouts and the connection cap of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's head must arrive within this of the connection opening or
    /// of the previous response.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// A response the client stops reading is dropped after this.
    pub idle_timeout: Duration,
    /// A request (but a file download's body) is answered within this.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
}

impl HttpLimits {
    /// Refuses a zero.
    pub fn validate(&self) -> Result<(), SquallError> {
        let zero = [
            self.header_timeout,
            self.body_timeout,
            self.idle_timeout,
            self.request_timeout,
        ]
        .iter()
        .any(Duration::is_zero);
        if zero || self.max_connections == 0 {
            return Err(SquallError::InvalidArgument(
                "HTTP limits: timeouts must be above zero and max connections at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Default largest `options.cost_limit_usd`: a typo guard, not a budget.
pub const DEFAULT_MAX_COST_LIMIT_USD: f64 = 10_000.0;

/// Labels one job may carry at most (besides [`PRINCIPAL_LABEL`]).
pub const MAX_LABELS: usize = 16;

/// The label every job carries: its principal's name (set by the server).
pub const PRINCIPAL_LABEL: &str = "principal";
/// Longest label key, in characters.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;

/// Default shortest time between two runs of a schedule.
pub const DEFAULT_MIN_CRON_INTERVAL: Duration = Duration::from_secs(60);

impl Limits {
    /// The defaults for a backend that runs `backend_concurrency` tasks at once.
    pub fn for_backend(backend_concurrency: usize) -> Self {
        Self {
            max_concurrency: backend_concurrency.max(1),
            max_shuffle_partitions: backend_concurrency.saturating_mul(4).clamp(256, 10_000),
            default_deadline: Duration::from_secs(3600),
            max_deadline: Duration::from_secs(24 * 3600),
            default_scan_limit_bytes: 1_000_000_000_000,
            max_scan_limit_bytes: 100_000_000_000_000,
            min_cron_interval: DEFAULT_MIN_CRON_INTERVAL,
            max_queued: 100,
            max_table_files: 100_000,
            default_cost_limit_usd: None,
            max_cost_limit_usd: DEFAULT_MAX_COST_LIMIT_USD,
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            max_result_bytes: Some(DEFAULT_MAX_RESULT_BYTES),
            max_schedules: 1_000,
            max_tables: 10_000,
        }
    }

    /// Refuses limits that contradict themselves (a default over its maximum, a zero).
    pub fn validate(&self) -> Result<(), SquallError> {
        let invalid = |what: String| Err(SquallError::InvalidArgument(what));
        if self.max_concurrency == 0
            || self.max_shuffle_partitions == 0
            || self.max_queued == 0
            || self.max_table_files == 0
            || self.max_sql_bytes == 0
            || self.max_page_bytes == 0
            || self.max_result_bytes == Some(0)
            || self.max_schedules == 0
            || self.max_tables == 0
        {
            return invalid(
                "limits: max concurrency, shuffle partitions, queued jobs, table files, \
                 SQL, page and result bytes, schedules and tables must be at least 1"
                    .into(),
            );
        }
        if self.default_deadline.is_zero() || self.default_deadline > self.max_deadline {
            return invalid(format!(
                "limits: the default deadline ({} s) must be between 1 s and the maximum ({} s)",
                self.default_deadline.as_secs(),
                self.max_deadline.as_secs()
            ));
        }
        if self.default_scan_limit_bytes == 0
            || self.default_scan_limit_bytes > self.max_scan_limit_bytes
        {
            return invalid(format!(
                "limits: the default scan limit ({}) must be between 1 byte and the maximum ({})",
                human_bytes(self.default_scan_limit_bytes),
                human_bytes(self.max_scan_limit_bytes)
            ));
        }
        if !(self.max_cost_limit_usd > 0.0 && self.max_cost_limit_usd.is_finite()) {
            return invalid(format!(
                "limits: the maximum cost limit ({}) must be a positive number of dollars",
                self.max_cost_limit_usd
            ));
        }
        if let Some(default) = self.default_cost_limit_usd
            && !(default > 0.0 && default <= self.max_cost_limit_usd)
        {
            return invalid(format!(
                "limits: the default cost limit (${default}) must be above $0 and at most the maximum (${})",
                self.max_cost_limit_usd
            ));
        }
        Ok(())
    }

    /// A job's cost limit: its own (above $0, up to the maximum) or the default.
    pub fn cost_limit(&self, usd: Option<f64>) -> Result<Option<f64>, SquallError> {
        let Some(usd) = usd else {
            return Ok(self.default_cost_limit_usd);
        };
        if !(usd > 0.0 && usd.is_finite()) {
            return Err(SquallError::InvalidArgument(format!(
                "options.cost_limit_usd is {usd}: it must be a positive number of dollars"
            )));
        }
        if usd > self.max_cost_limit_usd {
            return Err(SquallError::OverLimit {
                option: "options.cost_limit_usd".into(),
                value: usd.to_string(),
                limit: format!("${} on this server", self.max_cost_limit_usd),
                hint: String::new(),
            });
        }
        Ok(Some(usd))
    }

    /// Refuses SQL text over `max_sql_bytes`, before anything reads it.
    pub fn check_sql(&self, sql: &str) -> Result<(), SquallError> {
        if sql.len() > self.max_sql_bytes {
            return Err(SquallError::OverLimit {
                option: "sql".into(),
                value: format!("of {} bytes", sql.len()),
                limit: format!("{} bytes on this server", self.max_sql_bytes),
                hint: String::new(),
            });
        }
        Ok(())
    }

    /// Refuses labels beyond the bounds, naming the first bad one.
    pub fn check_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), SquallError> {
        let own = labels.keys().filter(|k| *k != PRINCIPAL_LABEL).count();
        if own > MAX_LABELS {
            return Err(SquallError::OverLimit {
                option: "labels".into(),
                value: format!("{own} labels"),
                limit: format!("{MAX_LABELS} labels"),
                hint: String::new(),
            });
        }
        for (key, value) in labels {
            check_label_key(key)?;
            if value.chars().count() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
                return Err(SquallError::InvalidArgument(format!(
                    "label '{key}': its value must be at most {MAX_LABEL_VALUE} characters, none of them control characters"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses a label key that is empty, too long, or has a character other
/// than `a-z 0-9 _ . -`.
pub fn check_label_key(key: &str) -> Result<(), SquallError> {
    let fine = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if fine {
        return Ok(());
    }
    let shown: String = key.chars().take(MAX_LABEL_KEY + 1).collect();
    Err(SquallError::InvalidArgument(format!(
        "label key '{}' must be 1 to {MAX_LABEL_KEY} characters of a-z, 0-9, '_', '.', '-'",
        shown.escape_default()
    )))
}

impl Limits {
    /// `value` of option `name`, refused outside `1..=max`.
    pub fn count(&self, name: &str, value: usize, max: usize) -> Result<usize, SquallError> {
        if value == 0 {
            return Err(SquallError::InvalidArgument(format!(
                "{name} must be at least 1"
            )));
        }
        if value > max {
            return Err(SquallError::OverLimit {
                option: name.into(),
                value: value.to_string(),
                limit: format!("{max} on this server"),
                hint: String::new(),
            });
        }
        Ok(value)
    }

    /// A job's deadline: its own (1 s to the maximum) or the default.
    pub fn deadline(&self, seconds: Option<u64>) -> Result<Duration, SquallError> {
        let Some(seconds) = seconds else {
            return Ok(self.default_deadline);
        };
        if seconds == 0 {
            return Err(SquallError::InvalidArgument(
                "options.deadline_seconds must be at least 1".into(),
            ));
        }
        if seconds > self.max_deadline.as_secs() {
            return Err(SquallError::OverLimit {
                option: "options.deadline_seconds".into(),
                value: seconds.to_string(),
                limit: format!("{} seconds on this server", self.max_deadline.as_secs()),
                hint: String::new(),
            });
        }
        Ok(Duration::from_secs(seconds))
    }

    /// A job's scan limit: its own (up to the maximum) or the default.
    pub fn scan_limit(&self, bytes: Option<u64>) -> Result<u64, SquallError> {
        match bytes {
            None => Ok(self.default_scan_limit_bytes),
            Some(0) => Err(SquallError::InvalidArgument(
                "options.scan_limit_bytes must be at least 1".into(),
            )),
            Some(bytes) if bytes > self.max_scan_limit_bytes => Err(SquallError::OverLimit {
                option: "options.scan_limit_bytes".into(),
                value: bytes.to_string(),
                limit: format!(
                    "{} bytes ({}) on this server",
                    self.max_scan_limit_bytes,
                    human_bytes(self.max_scan_limit_bytes)
                ),
                hint: String::new(),
            }),
            Some(bytes) => Ok(bytes),
        }
    }

    /// Refuses a cron whose runs can come closer together than the minimum.
    pub fn check_interval(&self, cron: &str, shortest: Duration) -> Result<(), SquallError> {
        if shortest < self.min_cron_interval {
            return Err(SquallError::OverLimit {
                option: format!("cron '{cron}'"),
                value: format!("runs {} s apart", shortest.as_secs_f64()),
                limit: format!(
                    "one run per {} s on this server",
                    self.min_cron_interval.as_secs()
                ),
                hint: String::new(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_has_a_bound_and_a_named_refusal() {
        let limits = Limits::for_backend(8);
        limits.validate().unwrap();
        assert_eq!(limits.max_shuffle_partitions, 256);
        assert_eq!(Limits::for_backend(1000).max_shuffle_partitions, 4000);
        let huge = 1usize << 61;
        let err = limits
            .count("options.max_concurrency", huge, limits.max_concurrency)
            .unwrap_err();
        assert!(matches!(err, SquallError::OverLimit { .. }));
        assert_eq!(
            err.to_string(),
            format!("options.max_concurrency {huge} is over the limit of 8 on this server")
        );
        assert!(limits.count("options.shuffle_partitions", 0, 9).is_err());
        assert_eq!(limits.deadline(None).unwrap(), Duration::from_secs(3600));
        let err = limits.deadline(Some(86_401)).unwrap_err().to_string();
        assert!(err.contains("options.deadline_seconds 86401"), "{err}");
        assert!(limits.deadline(Some(0)).is_err());
        assert_eq!(limits.scan_limit(None).unwrap(), 1_000_000_000_000);
        let err = limits.scan_limit(Some(u64::MAX)).unwrap_err().to_string();
        assert!(err.contains("100.0 TB"), "{err}");
        let err = limits
            .check_interval("* * * * * *", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs 1 s apart"), "{err}");
        limits
            .check_interval("* * * * *", Duration::from_secs(60))
            .unwrap();
        let contradictory = Limits {
            default_deadline: Duration::from_secs(10),
            max_deadline: Duration::from_secs(5),
            ..limits
        };
        assert!(contradictory.validate().is_err());
        let limits = Limits::for_backend(8);
        assert_eq!(limits.cost_limit(None).unwrap(), None);
        assert_eq!(limits.cost_limit(Some(2.5)).unwrap(), Some(2.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = limits.cost_limit(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("options.cost_limit_usd"), "{err}");
        }
        let err = limits.cost_limit(Some(1e9)).unwrap_err().to_string();
        assert!(err.contains("$10000 on this server"), "{err}");
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        limits
            .check_labels(&labels(&[("team", "data"), ("cost-center.id", "42")]))
            .unwrap();
        let err = limits
            .check_labels(&labels(&[("Team", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("label key 'Team'"), "{err}");
        assert!(limits.check_labels(&labels(&[("", "x")])).is_err());
        assert!(limits.check_labels(&labels(&[("k", "a b/é")])).is_ok());
        assert!(limits.check_labels(&labels(&[("k", "a\u{7}")])).is_err());
        let many: Vec<(String, String)> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        let err = limits
            .check_labels(&many.into_iter().collect())
            .unwrap_err()
            .to_string();
        assert!(err.contains("17 labels"), "{err}");
        // The principal's label is the server's, beside the caller's 16.
        let mut sixteen: std::collections::BTreeMap<String, String> =
            (0..16).map(|i| (format!("k{i}"), "v".into())).collect();
        sixteen.insert(PRINCIPAL_LABEL.into(), "alice".into());
        limits.check_labels(&sixteen).unwrap();
    }
}
