//! The `squall` binary's error: the engine's, the job store's and the API
//! client's errors, each with its source, and what only the binary meets
//! (files it reads, a watched job that failed, a data dir in use); each says
//! the process's exit code.

use squall_engine::SquallError;
use squall_service::client::ClientError;
use squall_service::{ServiceError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] SquallError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Client(#[from] ClientError),

    #[error(transparent)]
    Service(#[from] ServiceError),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("job {id} {state}: {message}")]
    Job {
        id: String,
        state: String,
        message: String,
    },

    #[error(
        "data dir {dir} is in use by another squall serve (pid {holder}); one server per data dir"
    )]
    DataDirInUse { dir: String, holder: String },

    #[error("{count} wrong answers: {}", failures.join("; "))]
    WrongAnswers { count: usize, failures: Vec<String> },
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// 2 when the input (arguments, SQL, files, a refused request) is at
    /// fault, 130 for a job cancelled by Ctrl-C, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        // Interrupted (Ctrl-C): as a shell reports SIGINT.
        if matches!(self, CliError::Engine(SquallError::Cancelled)) {
            return 130;
        }
        let user = match self {
            CliError::Engine(e) => e.is_user_error(),
            CliError::Client(e) => e.is_user_error(),
            CliError::Service(ServiceError::Engine(e)) => e.is_user_error(),
            CliError::Service(_) => false,
            CliError::InvalidArgument(_) | CliError::Io { .. } => true,
            CliError::Store(_)
            | CliError::Job { .. }
            | CliError::DataDirInUse { .. }
            | CliError::WrongAnswers { .. } => false,
        };
        if user { 2 } else { 1 }
    }

    /// `context`, then the I/O error.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| CliError::Io { context, source }
    }
}
