//! The engine's error type: planning, scheduling, backends, storage. Each variant
//! says whose fault it is: the input's (`is_user_error`) or Squall's. It knows
//! nothing of the service or the CLI; their error types wrap it (the service's
//! `ServiceError`, mapped to HTTP statuses; the CLI's `CliError`, to exit codes).

use datafusion::common::DataFusionError;
use squall_executor::TaskFailure;

#[derive(Debug, thiserror::Error)]
pub enum SquallError {
    #[error("SQL error: {source}")]
    Sql { source: DataFusionError },

    #[error("{source}")]
    Plan { source: DataFusionError },

    #[error("statement rejected: {reason} (Squall runs read-only queries)")]
    Rejected { reason: String },

    #[error("table '{table}': {message}")]
    Table { table: String, message: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error(
        "the job would scan about {} ({estimate} bytes: all files of the tables it reads), over its scan limit of {} ({limit} bytes)",
        human_bytes(*estimate),
        human_bytes(*limit)
    )]
    ScanLimit { estimate: u64, limit: u64 },

    #[error("the job ran past its deadline of {}s and was stopped", deadline.as_secs_f64())]
    DeadlineExceeded { deadline: std::time::Duration },

    #[error(
        "the job's estimated cost ${spent_usd:.6} passed its cost limit of ${limit_usd:.6} and it was stopped"
    )]
    CostLimitExceeded { limit_usd: f64, spent_usd: f64 },

    #[error("output {url} already holds a Squall result (remove it or choose another --output)")]
    OutputExists { url: String },

    #[error(
        "output {url} holds {object}, which this job did not write: an output folder must be \
         empty or new (choose another output)"
    )]
    OutputNotEmpty { url: String, object: String },

    #[error(
        "output {url} is in use by job {job_id} (choose another output; if that job is gone, \
         for instance killed, remove {url}/_squall_claim.json)"
    )]
    OutputClaimed { url: String, job_id: String },

    #[error("{what} at {url} is not allowed: {reason}")]
    Forbidden {
        what: String,
        url: String,
        reason: String,
    },

    #[error("{option} {value} is over the limit of {limit}{hint}")]
    OverLimit {
        option: String,
        value: String,
        limit: String,
        /// What to do instead, starting with "; " (or empty).
        hint: String,
    },

    #[error(
        "planning the job took longer than {} s, this server's limit (name fewer files or simplify the query)",
        limit.as_secs_f64()
    )]
    PlanningTimedOut { limit: std::time::Duration },

    #[error("{waiting} jobs are waiting to be planned ({planning} at a time): try again shortly")]
    PlanningBusy { waiting: usize, planning: usize },

    #[error(
        "stage {stage}'s plan cannot be sent to the executors: {message} (simplify the query: fewer nested expressions)"
    )]
    PlanUndecodable { stage: u32, message: String },

    #[error(
        "the job's result passed this server's limit of {} ({limit} bytes) for one job's \
         result files after {} and was stopped (aggregate or filter more, or LIMIT the rows)",
        human_bytes(*limit),
        human_bytes(*written)
    )]
    ResultTooLarge { limit: u64, written: u64 },

    #[error("the job was cancelled")]
    Cancelled,

    #[error(
        "the job was interrupted: the server stopped while it ran (it resumes when a server starts on the same data dir)"
    )]
    Interrupted,

    #[error("internal error: the job's scheduler panicked: {message}")]
    Panicked { message: String },

    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },

    #[error("stage {stage} task {task} failed after {attempts} attempt(s): {}", failure.message)]
    TaskFailed {
        stage: u32,
        task: u32,
        attempts: u32,
        failure: TaskFailure,
    },

    #[error("cannot decode {what}: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },

    #[error("cannot read result {url}: {source}")]
    ReadResult {
        url: String,
        source: parquet::errors::ParquetError,
    },

    /// A task of this process (an in-process executor's, a generator's)
    /// panicked or was cancelled.
    #[error("{what} crashed: {source}")]
    Crashed {
        what: &'static str,
        source: tokio::task::JoinError,
    },

    /// The executor answered with an error of its own (it crosses a process
    /// boundary as text, like a Lambda function's error).
    #[error("executor: {message}")]
    Executor { message: String },

    #[error("Lambda function {function}: gave up after {tries} tries: {last}")]
    LambdaUnavailable {
        function: String,
        tries: u32,
        last: String,
    },

    #[error("{what} closed")]
    Closed { what: &'static str },

    /// A task that did not start because another task of its job failed first.
    #[error("not started: another task of the job failed")]
    Abandoned,

    #[error("TPC-H generator, table {table}: {source}")]
    TpchGenerate {
        table: String,
        source: arrow::error::ArrowError,
    },

    #[error("cannot encode TPC-H table {table} part {part}: {source}")]
    TpchEncode {
        table: String,
        part: usize,
        source: parquet::errors::ParquetError,
    },

    #[error("skewed data generator, {what}: {source}")]
    SkewGenerate {
        what: String,
        source: arrow::error::ArrowError,
    },

    #[error("cannot encode skewed data {what}: {source}")]
    SkewEncode {
        what: String,
        source: parquet::errors::ParquetError,
    },

    #[error("{what}")]
    Inconsistent { what: String },

    #[error("storage: {source}")]
    Storage { source: object_store::Error },

    #[error("internal error: {source}")]
    Internal { source: DataFusionError },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = SquallError> = std::result::Result<T, E>;

impl SquallError {
    /// True when the input (SQL, tables, arguments) is at fault, not Squall.
    pub fn is_user_error(&self) -> bool {
        use squall_executor::FailureKind;
        match self {
            SquallError::Sql { .. }
            | SquallError::Plan { .. }
            | SquallError::Rejected { .. }
            | SquallError::Table { .. }
            | SquallError::InvalidArgument(_)
            | SquallError::OutputExists { .. }
            | SquallError::OutputClaimed { .. }
            | SquallError::OutputNotEmpty { .. }
            | SquallError::Forbidden { .. }
            | SquallError::OverLimit { .. }
            | SquallError::PlanningTimedOut { .. }
            | SquallError::PlanUndecodable { .. }
            | SquallError::ResultTooLarge { .. }
            | SquallError::Cancelled
            | SquallError::ScanLimit { .. }
            | SquallError::DeadlineExceeded { .. }
            | SquallError::CostLimitExceeded { .. } => true,
            SquallError::TaskFailed { failure, .. } => {
                matches!(failure.kind, FailureKind::Execution | FailureKind::NotFound)
            }
            SquallError::Storage { source } => matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            SquallError::Io { .. } => true,
            SquallError::Internal { .. }
            | SquallError::Interrupted
            | SquallError::Panicked { .. }
            | SquallError::Encode { .. }
            | SquallError::Decode { .. }
            | SquallError::ReadResult { .. }
            | SquallError::Crashed { .. }
            | SquallError::Executor { .. }
            | SquallError::LambdaUnavailable { .. }
            | SquallError::Closed { .. }
            | SquallError::PlanningBusy { .. }
            | SquallError::Abandoned
            | SquallError::TpchGenerate { .. }
            | SquallError::TpchEncode { .. }
            | SquallError::SkewGenerate { .. }
            | SquallError::SkewEncode { .. }
            | SquallError::Inconsistent { .. } => false,
        }
    }

    /// Process exit code for the CLI: 2 for bad input, 1 for internal failures.
    pub fn exit_code(&self) -> u8 {
        if self.is_user_error() { 2 } else { 1 }
    }

    /// Classifies an error DataFusion raised while planning a query.
    pub fn from_planning(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::SQL(..) => SquallError::Sql { source: error },
            DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => SquallError::Plan { source: error },
            DataFusionError::ObjectStore(e)
                if matches!(**e, object_store::Error::NotFound { .. }) =>
            {
                SquallError::Plan { source: error }
            }
            _ => SquallError::Internal { source: error },
        }
    }
}

pub use squall_executor::human_bytes;

impl From<object_store::Error> for SquallError {
    fn from(source: object_store::Error) -> Self {
        SquallError::Storage { source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_errors_are_users_fault() {
        let e = SquallError::from_planning(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(e.exit_code(), 2);
        let e = SquallError::from_planning(DataFusionError::Internal("bug".into()));
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(5_000_000_000_000), "5.0 TB");
        let e = SquallError::ScanLimit {
            estimate: 2_500_000,
            limit: 1_000_000,
        };
        assert!(e.to_string().contains("about 2.5 MB"), "{e}");
        assert!(e.to_string().contains("limit of 1.0 MB"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
