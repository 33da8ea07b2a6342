//! What the service's own operations can answer besides success: the engine's
//! and the job store's errors (each with its source), and what only the
//! service knows of (an unknown id, a finished job, a full queue...). Domain
//! errors: the HTTP layer (`http::problem`) says which status each is.

use std::time::Duration;

use crate::api::JobState;
use crate::store::StoreError;
use squall_engine::error::SquallError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] SquallError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("no job '{id}'")]
    UnknownJob { id: String },

    #[error("no catalog table '{name}'")]
    UnknownTable { name: String },

    #[error("no schedule '{id}'")]
    UnknownSchedule { id: String },

    #[error("job {id} is {}; only queued and running jobs can be cancelled", state.as_str())]
    AlreadyFinished { id: String, state: JobState },

    #[error("job {id} is {}; a result exists once it succeeded", state.as_str())]
    NoResult { id: String, state: JobState },

    #[error("job {id} succeeded but its result is not recorded")]
    ResultMissing { id: String },

    #[error("job {id}'s result has {files} files; there is no file {index}")]
    UnknownResultFile {
        id: String,
        index: usize,
        files: usize,
    },

    #[error(
        "row {row} of job {id}'s result is {bytes} bytes as JSON, over this server's page limit \
         of {limit} bytes: download the result's files instead (/v1/jobs/{id}/files/N)"
    )]
    RowTooLarge {
        id: String,
        row: u64,
        bytes: usize,
        limit: usize,
    },

    #[error("cannot read result {url}: {source}")]
    ResultUnreadable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{max} jobs are waiting to run, the most this server queues; submit again later")]
    QueueFull { max: usize, retry_after: Duration },

    #[error("{principal} has {max} jobs waiting to run, the most it may queue; submit again later")]
    PrincipalQueueFull {
        principal: String,
        max: usize,
        retry_after: Duration,
    },

    #[error(
        "client request token '{token}' was used for job {id}, of other SQL; a token names \
         one submission"
    )]
    TokenReused { token: String, id: String },

    #[error("{what}: at most {max} are kept; delete some first")]
    TooMany { what: String, max: usize },

    #[error("{caller} may not change {what} (it is {owner}'s)")]
    NotOwner {
        caller: String,
        what: String,
        owner: String,
    },

    #[error("{what} belongs to principal '{principal}', which this server no longer has")]
    UnknownPrincipal { what: String, principal: String },

    #[error("{detail}")]
    BadCron { detail: String },

    #[error("schedule '{id}' kept changing while this change was applied; try again")]
    ScheduleBusy { id: String },

    #[error("stored {what} is unreadable: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot set up or render metrics: {source}")]
    Metrics {
        #[from]
        source: prometheus::Error,
    },
}
