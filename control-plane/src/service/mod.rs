//! `squall serve`: the control plane as a long-running service.
//!
//! # What belongs here
//! What only the service needs: the durable job store (`store`), the HTTP API's
//! bodies (`api`), the server and its job dispatcher (`server`), what callers
//! may ask for (`limits`), result pages (`results`), deleting old jobs
//! (`retention`), schedules and their timetable (`schedules`, `cron`), the
//! routes and OpenAPI document (`routes`), problem+json errors (`problem`),
//! metrics, and a typed client (`client`). Planning and running a job stay
//! in `engine`, shared with `squall run`.

pub mod api;
pub mod client;
pub mod cron;
pub mod limits;
pub mod metrics;
mod problem;
mod progress;
mod results;
mod retention;
mod routes;
mod schedules;
pub mod server;
pub mod store;

use std::sync::Arc;

use squall_executor::OutputFile;

use crate::commit::StageJournal;
pub use limits::Limits;
pub use retention::DEFAULT_RETENTION;
pub use routes::{ApiDoc, MAX_BODY_BYTES, router};
pub use server::{Service, ServiceConfig};
pub use store::{
    AttemptRecord, CatalogTable, JobRecord, JobState, JobStore, MissedRunPolicy, NewJob,
    OverlapPolicy, ScheduleRecord, StoreError,
};

/// Milliseconds since the Unix epoch, as the store keeps times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Records a job's committed stages in the store, so that a restarted server can
/// resume the job from them.
#[derive(Debug, Clone)]
pub struct StoreJournal {
    pub store: Arc<JobStore>,
    pub job_id: String,
}

impl StageJournal for StoreJournal {
    fn committed(
        &self,
        stage: u32,
        outputs: &[OutputFile],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.store
            .commit_stage(&self.job_id, stage, outputs.len(), outputs, now_ms())
            .map_err(Into::into)
    }
}
