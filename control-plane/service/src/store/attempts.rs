//! Task attempts in the job store: one row per attempt that ended, written a
//! stage at a time (the service buffers them), read back for a job's view.

use rusqlite::params;

use super::{JobStore, Result, sqlite};
use crate::api::AttemptRecord;

impl JobStore {
    /// Records attempts of `job_id` in one transaction (a repeated attempt
    /// replaces the row, as a resumed job may run a stage again).
    pub fn record_attempts(&self, job_id: &str, attempts: &[AttemptRecord]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let context = format!("record attempts of job {job_id}");
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sqlite(context.clone()))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR REPLACE INTO task_attempts
                     (job_id, stage_id, task, attempt, outcome, message, elapsed_ms,
                      started_at_ms, ended_at_ms, backup, place)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(sqlite(context.clone()))?;
            for a in attempts {
                insert
                    .execute(params![
                        job_id,
                        a.stage,
                        a.task,
                        a.attempt,
                        a.outcome,
                        a.message,
                        a.elapsed_ms as i64,
                        a.started_at_ms,
                        a.ended_at_ms,
                        a.backup,
                        a.place
                    ])
                    .map_err(sqlite(context.clone()))?;
            }
        }
        tx.commit().map_err(sqlite(context))
    }

    /// A job's attempts by stage, task and attempt; only failed ones when `failed_only`.
    pub fn attempts(&self, job_id: &str, failed_only: bool) -> Result<Vec<AttemptRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT stage_id, task, attempt, outcome, message, elapsed_ms,
                        started_at_ms, ended_at_ms, backup, place FROM task_attempts
                 WHERE job_id = ?1 AND (?2 = 0 OR outcome = 'failed')
                 ORDER BY stage_id, task, attempt",
            )
            .map_err(sqlite("read attempts"))?;
        let rows = stmt
            .query_map(params![job_id, failed_only], |r| {
                Ok(AttemptRecord {
                    stage: r.get(0)?,
                    task: r.get(1)?,
                    attempt: r.get(2)?,
                    outcome: r.get(3)?,
                    message: r.get(4)?,
                    elapsed_ms: r.get::<_, i64>(5)?.max(0) as u64,
                    started_at_ms: r.get(6)?,
                    ended_at_ms: r.get(7)?,
                    backup: r.get(8)?,
                    place: r.get(9)?,
                })
            })
            .map_err(sqlite("read attempts"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("read attempts"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewJob;

    #[test]
    fn attempts_round_trip_and_filter_failures() {
        let store = JobStore::open_in_memory().unwrap();
        store
            .insert_job(
                &NewJob {
                    id: "j".into(),
                    sql: "SELECT 1".into(),
                    request: serde_json::json!({}),
                    schedule_id: None,
                    principal: "admin".into(),
                    client_token: None,
                },
                1,
            )
            .unwrap();
        let attempt = |task, attempt, outcome: &str| AttemptRecord {
            stage: 1,
            task,
            attempt,
            outcome: outcome.into(),
            message: (outcome == "failed").then(|| "boom".into()),
            elapsed_ms: 7,
            started_at_ms: Some(1000),
            ended_at_ms: Some(1007),
            backup: task == 1,
            place: Some(if task == 1 { "lambda" } else { "local" }.into()),
        };
        store
            .record_attempts(
                "j",
                &[
                    attempt(1, 0, "succeeded"),
                    attempt(0, 1, "succeeded"),
                    attempt(0, 0, "failed"),
                ],
            )
            .unwrap();
        let all = store.attempts("j", false).unwrap();
        let order: Vec<_> = all.iter().map(|a| (a.task, a.attempt)).collect();
        assert_eq!(order, [(0, 0), (0, 1), (1, 0)]);
        assert_eq!(all[2].place.as_deref(), Some("lambda"));
        assert_eq!(
            store.attempts("j", true).unwrap(),
            [attempt(0, 0, "failed")]
        );
        assert!(store.attempts("other", false).unwrap().is_empty());
    }
}
