//! The timetable: queues a schedule's job each time its cron falls due.
//!
//! A schedule stores its next run time. The timetable sleeps until the earliest
//! one (or until a schedule changes), then fires every due schedule through
//! [`JobStore::fire_schedule`](crate::store::JobStore::fire_schedule), which
//! decides in one transaction whether the run starts a job or is skipped (the
//! previous one still queued or running, under the `skip` overlap policy; the
//! queue full). Runs that fell due while no server was running are found when
//! the server starts and, per schedule, dropped or run once.

use std::sync::Arc;

use crate::api::MissedRunPolicy;
use crate::core::Service;
use crate::cron::CronSchedule;
use crate::store::{Firing, NewJob, StoreError, now_ms};
use squall_engine::engine::new_job_id;

/// Longest the timetable sleeps without looking at the store again.
const MAX_SLEEP_MS: i64 = 60_000;

/// Pause after the store failed to fire schedules.
const RETRY_AFTER_ERROR_MS: i64 = 1_000;

impl Service {
    /// Fires schedules as they fall due, until the task is aborted.
    pub(crate) async fn timetable(self: Arc<Self>) {
        let mut starting = true;
        loop {
            let now = now_ms();
            // After a store error, wait a while rather than retry at once: a
            // run that stays due would otherwise spin this loop.
            let mut least = 0;
            if let Err(e) = self.fire_due(now, starting) {
                tracing::error!("cannot fire schedules: {e}");
                least = RETRY_AFTER_ERROR_MS;
            }
            starting = false;
            let next = match self.store.next_fire_time() {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("cannot read schedules: {e}");
                    None
                }
            };
            let wait = next
                .map_or(MAX_SLEEP_MS, |at| (at - now_ms()).clamp(0, MAX_SLEEP_MS))
                .max(least);
            let changed = self.schedules_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
                _ = changed => {}
            }
        }
    }

    /// Fires every schedule due at `now`. When the server is `starting`, due
    /// runs were missed while it was down: each schedule's `missed` policy says
    /// whether one job runs for them.
    pub(super) fn fire_due(&self, now: i64, starting: bool) -> Result<(), StoreError> {
        for schedule in self.store.due_schedules(now)? {
            let Some(due) = schedule.next_fire_at_ms else {
                continue;
            };
            let next = match CronSchedule::parse(&schedule.cron, &schedule.time_zone) {
                Ok(cron) => cron.next_after(now),
                Err(e) => {
                    tracing::error!(schedule = schedule.id, "stored schedule unusable: {e}");
                    None
                }
            };
            let run = !starting || schedule.missed == MissedRunPolicy::RunOnce;
            let sql = schedule.template["sql"].as_str().unwrap_or_default();
            let id = new_job_id();
            let job = NewJob {
                sql: sql.to_string(),
                request: run_request(&schedule.template, due, &id),
                id,
                schedule_id: Some(schedule.id.clone()),
                principal: schedule.principal.clone(),
                client_token: None,
            };
            let max_queued = self.config.limits.max_queued;
            match self
                .store
                .fire_schedule(&schedule.id, due, next, run, &job, now, max_queued)?
            {
                Firing::Started(job) => {
                    tracing::info!(schedule = schedule.id, job = job.id, "schedule fired");
                    self.wake.notify_one();
                }
                Firing::SkippedOverlap => tracing::info!(
                    schedule = schedule.id,
                    "run skipped: the schedule's previous job is still queued or running"
                ),
                Firing::SkippedQueueFull => tracing::warn!(
                    schedule = schedule.id,
                    "run skipped: {max_queued} jobs are queued, the most the server queues"
                ),
                Firing::DroppedMissed => tracing::info!(
                    schedule = schedule.id,
                    missed_at_ms = due,
                    "run missed while no server ran; dropped (missed: skip)"
                ),
                Firing::Stale => {}
            }
        }
        Ok(())
    }
}

/// The request a run of a schedule submits: its template, with an output
/// folder (if any) made the run's own subfolder, named by the time the run fell
/// due (UTC) and the job: `{output}/20261203T020000Z-{job id}/`.
fn run_request(template: &serde_json::Value, due_ms: i64, job_id: &str) -> serde_json::Value {
    let mut request = template.clone();
    if let Some(output) = template.get("output").and_then(|o| o.as_str()) {
        let due = chrono::DateTime::from_timestamp_millis(due_ms)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| due_ms.to_string());
        request["output"] =
            serde_json::Value::String(format!("{}/{due}-{job_id}/", output.trim_end_matches('/')));
    }
    request
}
