//! Retention: finished jobs older than the server's `--retain-jobs` are
//! deleted, with their committed stages, task attempts and default result
//! folders (`{results root}/{job id}`). Outputs a job named are the caller's
//! and stay.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Service;
use crate::store::{StoreError, now_ms};

/// Jobs deleted per store call.
const BATCH: usize = 100;

impl Service {
    /// Deletes expired jobs now and then, until the task is aborted.
    pub(crate) async fn retention(self: Arc<Self>) {
        let Some(retain) = self.config.retain_jobs else {
            return;
        };
        // Often enough that a job outlives its retention by a quarter of it at
        // most (an hour at most), rarely enough to cost nothing.
        let every = (retain / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            let before = now_ms().saturating_sub(retain.as_millis() as i64);
            match self.expire_jobs(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "deleted jobs past their retention"),
                Err(e) => tracing::error!("cannot delete expired jobs: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Deletes the jobs that finished before `before_ms`: first their default
    /// result folder, then their rows. Returns how many were deleted.
    pub async fn expire_jobs(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut deleted = 0;
        loop {
            let jobs = self.store.expired_jobs(before_ms, BATCH)?;
            if jobs.is_empty() {
                return Ok(deleted);
            }
            for job in &jobs {
                self.remove_default_result(&job.id).await;
                if self.store.delete_finished_job(&job.id)? {
                    deleted += 1;
                }
            }
            if jobs.len() < BATCH {
                return Ok(deleted);
            }
        }
    }
}
