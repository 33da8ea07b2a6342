//! A job's committed stages, recorded in the job store as each commits (the
//! commit protocol's [`StageJournal`]), so a restarted server resumes the job
//! from them.

use std::sync::Arc;

use squall_executor::OutputFile;

use crate::store::{JobStore, now_ms};
use squall_engine::commit::StageJournal;

/// Records one job's committed stages in the store.
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
