//! The durable job store: one SQLite file in the server's data dir.
//!
//! # What belongs here
//! The schema and its migrations, and typed reads and writes of jobs, their
//! committed stages (the outputs a restarted server resumes from), the table
//! catalog and schedules. No HTTP, no scheduling: the service calls these.
//!
//! Migrations are numbered by SQLite's `user_version`; a file written by a newer
//! Squall is refused rather than guessed at. State changes are compare-and-set
//! (`transition`), so two writers (a cancel and a finishing job) cannot both win.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

mod attempts;
mod catalog;
mod migrations;
mod schedules;

pub use catalog::CatalogTable;
pub use schedules::{Firing, ScheduleRecord};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use squall_executor::OutputFile;

use crate::api::{JobState, Order, PlanView};
use squall_engine::cost::JobCost;

/// Milliseconds since the Unix epoch, as the store keeps times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store {context}: {source}")]
    Sqlite {
        context: String,
        source: rusqlite::Error,
    },
    #[error(
        "job store {path} has schema version {found}; this Squall knows up to {supported} (upgrade Squall)"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("job store holds an unreadable {what}: {message}")]
    Corrupt { what: String, message: String },
}

pub(super) type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(super) fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Sqlite { context, source }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub sql: String,
    /// The submitted request (tables, output, options), as the API received it.
    pub request: serde_json::Value,
    pub schedule_id: Option<String>,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    /// Submission order; the cursor of job listings.
    pub seq: i64,
    /// What the job cost, recorded when it ended (or was interrupted).
    pub cost: Option<JobCost>,
    /// Who submitted it (or owns the schedule that did).
    pub principal: String,
}

/// A job to insert (queued).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub sql: String,
    pub request: serde_json::Value,
    pub schedule_id: Option<String>,
    pub principal: String,
    /// The submitter's idempotency token: one job per principal and token.
    pub client_token: Option<String>,
}

/// Why [`JobStore::insert_queued`] did not queue a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The server's queue is full.
    Server,
    /// The job's principal has as many jobs queued as it may.
    Principal,
    /// The principal's job of the same client token is stored already.
    Duplicate,
}

/// The job store. One connection behind a mutex: every call is a few SQLite
/// statements, far below the cost of the jobs they describe.
#[derive(Debug)]
pub struct JobStore {
    conn: Mutex<Connection>,
}

impl JobStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(sqlite(format!("open {}", path.display())))?;
        // WAL: readers (API listings) do not block the writer (the scheduler).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite("set WAL mode"))?;
        // With WAL, NORMAL cannot corrupt the file; a power cut may lose the
        // last commits, which a restarted server redoes (stages re-run).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite("set synchronous mode"))?;
        Self::init(conn, &path.display().to_string())
    }

    /// A store that lives as long as the value (tests, `squall run`).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(sqlite("open in memory"))?;
        Self::init(conn, ":memory:")
    }

    fn init(mut conn: Connection, path: &str) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite("enable foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite("set busy timeout"))?;
        migrations::migrate(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite("read schema version"))
    }

    /// Inserts a queued job (and its labels, from its request's `labels`).
    pub fn insert_job(&self, job: &NewJob, now_ms: i64) -> Result<JobRecord> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(sqlite(format!("insert job {}", job.id)))?;
        tx.execute(
            "INSERT INTO jobs (id, state, sql, request, schedule_id, submitted_at_ms, principal)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                job.id,
                JobState::Queued.as_str(),
                job.sql,
                job.request.to_string(),
                job.schedule_id,
                now_ms,
                job.principal
            ],
        )
        .map_err(sqlite(format!("insert job {}", job.id)))?;
        insert_labels(&tx, job)?;
        tx.commit()
            .map_err(sqlite(format!("insert job {}", job.id)))?;
        drop(conn);
        self.job(&job.id)?.ok_or_else(|| StoreError::Corrupt {
            what: format!("job {}", job.id),
            message: "missing right after its insert".into(),
        })
    }

    /// Inserts a queued job unless `max_queued` jobs are queued already, or
    /// `principal_max` of its principal's, in one step: two submissions
    /// cannot both take the last place.
    pub fn insert_queued(
        &self,
        job: &NewJob,
        now_ms: i64,
        max_queued: usize,
        principal_max: Option<usize>,
    ) -> Result<std::result::Result<JobRecord, QueueRefusal>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(sqlite(format!("insert job {}", job.id)))?;
        let inserted = tx
            .execute(
                "INSERT INTO jobs (id, state, sql, request, schedule_id, submitted_at_ms, principal,
                                   client_token)
                 SELECT ?1, 'queued', ?2, ?3, ?4, ?5, ?7, ?9
                 WHERE (SELECT count(*) FROM jobs WHERE state = 'queued') < ?6
                   AND (?8 IS NULL OR (SELECT count(*) FROM jobs
                        WHERE state = 'queued' AND principal = ?7) < ?8)
                   AND (?9 IS NULL OR NOT EXISTS (SELECT 1 FROM jobs
                        WHERE principal = ?7 AND client_token = ?9))",
                params![
                    job.id,
                    job.sql,
                    job.request.to_string(),
                    job.schedule_id,
                    now_ms,
                    max_queued as i64,
                    job.principal,
                    principal_max.map(|n| n as i64),
                    job.client_token,
                ],
            )
            .map_err(sqlite(format!("insert job {}", job.id)))?;
        if inserted == 1 {
            insert_labels(&tx, job)?;
        }
        tx.commit()
            .map_err(sqlite(format!("insert job {}", job.id)))?;
        drop(conn);
        if inserted == 0 {
            if let Some(token) = &job.client_token
                && self.job_by_token(&job.principal, token)?.is_some()
            {
                return Ok(Err(QueueRefusal::Duplicate));
            }
            let queued = self.count_jobs(JobState::Queued)?;
            return Ok(Err(if queued >= max_queued as u64 {
                QueueRefusal::Server
            } else {
                QueueRefusal::Principal
            }));
        }
        match self.job(&job.id)? {
            Some(record) => Ok(Ok(record)),
            None => Err(StoreError::Corrupt {
                what: format!("job {}", job.id),
                message: "missing right after its insert".into(),
            }),
        }
    }

    /// The job `principal` submitted with client token `token`, if any.
    pub fn job_by_token(&self, principal: &str, token: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE principal = ?1 AND client_token = ?2"
                ),
                params![principal, token],
                raw_job,
            )
            .optional()
            .map_err(sqlite("read a job by its client token"))?;
        row.map(RawJob::into_record).transpose()
    }

    /// Finished jobs that ended before `before_ms`, oldest first, at most `limit`.
    pub fn expired_jobs(&self, before_ms: i64, limit: usize) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1
                   AND state IN ('succeeded', 'failed', 'cancelled')
                 ORDER BY finished_at_ms LIMIT ?2"
            ))
            .map_err(sqlite("list expired jobs"))?;
        let rows = stmt
            .query_map(params![before_ms, limit as i64], raw_job)
            .map_err(sqlite("list expired jobs"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("list expired jobs"))?;
        rows.into_iter().map(RawJob::into_record).collect()
    }

    /// Deletes a finished job with its stages and attempts; false if there is
    /// no such finished job.
    pub fn delete_finished_job(&self, id: &str) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM jobs WHERE id = ?1 AND state IN ('succeeded', 'failed', 'cancelled')",
                params![id],
            )
            .map_err(sqlite(format!("delete job {id}")))?;
        Ok(changed == 1)
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                raw_job,
            )
            .optional()
            .map_err(sqlite(format!("read job {id}")))?;
        row.map(RawJob::into_record).transpose()
    }

    /// Jobs in `order` of submission, optionally of one state, past cursor
    /// `after` (a `seq`: later ones oldest first, earlier ones newest first);
    /// returns at most `limit` and the cursor of the next page.
    pub fn list_jobs(
        &self,
        state: Option<JobState>,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        self.list_jobs_where(&JobFilter::default(), state, order, after, limit)
    }

    /// [`list_jobs`](Self::list_jobs), of one schedule's jobs only.
    pub fn list_schedule_jobs(
        &self,
        schedule_id: &str,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        let filter = JobFilter {
            schedule_id: Some(schedule_id),
            ..JobFilter::default()
        };
        self.list_jobs_where(&filter, None, order, after, limit)
    }

    /// [`list_jobs`](Self::list_jobs), of the jobs `filter` lets through.
    pub fn list_jobs_where(
        &self,
        filter: &JobFilter<'_>,
        state: Option<JobState>,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        let (past, sort, start) = match order {
            Order::Oldest => (">", "ASC", 0),
            Order::Newest => ("<", "DESC", i64::MAX),
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR schedule_id = ?2)
                   AND seq {past} ?3
                   AND (?5 IS NULL OR EXISTS (SELECT 1 FROM job_labels l
                        WHERE l.job_id = jobs.id AND l.key = ?5 AND l.value = ?6))
                   AND (?7 IS NULL OR principal = ?7)
                 ORDER BY seq {sort} LIMIT ?4"
            ))
            .map_err(sqlite("list jobs"))?;
        let fetch = limit.saturating_add(1) as i64;
        let label = filter.label;
        let rows = stmt
            .query_map(
                params![
                    state.map(JobState::as_str),
                    filter.schedule_id,
                    after.unwrap_or(start),
                    fetch,
                    label.map(|l| l.0),
                    label.map(|l| l.1),
                    filter.principal,
                ],
                raw_job,
            )
            .map_err(sqlite("list jobs"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("list jobs"))?;
        let jobs = rows
            .into_iter()
            .map(RawJob::into_record)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(jobs, limit, |j| j.seq))
    }

    /// The oldest queued job of each principal with jobs queued, oldest first.
    pub fn queued_heads(&self) -> Result<Vec<JobRecord>> {
        self.select_jobs(
            "seq IN (SELECT min(seq) FROM jobs WHERE state = 'queued' GROUP BY principal)
             ORDER BY seq",
            [],
            "list queued jobs",
        )
    }

    /// The jobs `condition` (SQL after `WHERE`, this file's literals only)
    /// selects with `params`; `what` names the query in errors.
    fn select_jobs<P: rusqlite::Params>(
        &self,
        condition: &str,
        params: P,
        what: &str,
    ) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {condition}"))
            .map_err(sqlite(what))?;
        let rows = stmt
            .query_map(params, raw_job)
            .map_err(sqlite(what))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite(what))?;
        rows.into_iter().map(RawJob::into_record).collect()
    }

    /// How many jobs of each principal are in `state`.
    pub fn count_by_principal(&self, state: JobState) -> Result<HashMap<String, u64>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT principal, count(*) FROM jobs WHERE state = ?1 GROUP BY principal")
            .map_err(sqlite("count jobs"))?;
        let rows = stmt
            .query_map(params![state.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(sqlite("count jobs"))?
            .collect::<std::result::Result<HashMap<_, _>, _>>()
            .map_err(sqlite("count jobs"))?;
        Ok(rows)
    }

    /// How many jobs are in `state`.
    pub fn count_jobs(&self, state: JobState) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM jobs WHERE state = ?1",
                params![state.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(sqlite("count jobs"))
    }

    /// Moves job `id` to `to` if it is in one of `from`; false if it was not
    /// (or does not exist). Sets the start time on `Running` and the finish time
    /// (and `error`) on a final state.
    pub fn transition(
        &self,
        id: &str,
        from: &[JobState],
        to: JobState,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        let conn = self.conn();
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        // ?1 new state, ?2 now, ?3 error, ?4 final, ?5 id, ?6.. the states it may leave.
        let placeholders = (0..from.len())
            .map(|i| format!("?{}", i + 6))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE jobs SET state = ?1,
                 started_at_ms = CASE WHEN ?1 = 'running' THEN ?2 ELSE started_at_ms END,
                 finished_at_ms = CASE WHEN ?4 THEN ?2 ELSE finished_at_ms END,
                 error = COALESCE(?3, error)
             WHERE id = ?5 AND state IN ({placeholders})"
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            to.as_str().to_string().into(),
            now_ms.into(),
            error.map(str::to_string).into(),
            i64::from(to.is_final()).into(),
            id.to_string().into(),
        ];
        values.extend(from.iter().map(|s| s.to_string().into()));
        let changed = conn
            .execute(&sql, rusqlite::params_from_iter(values))
            .map_err(sqlite(format!("update job {id}")))?;
        Ok(changed == 1)
    }

    /// Records what a job produced (JSON chosen by the service).
    pub fn set_result(&self, id: &str, result: &serde_json::Value) -> Result<()> {
        self.set_json(id, "result", "result", result)
    }

    /// What `set_result` recorded for job `id`.
    pub fn result(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.json(id, "result", "result")
    }

    /// Records what job `id` cost.
    pub fn set_cost(&self, id: &str, cost: &JobCost) -> Result<()> {
        self.set_json(id, "cost", "cost", cost)
    }

    /// Records the stage DAG job `id` runs.
    pub fn set_plan(&self, id: &str, plan: &PlanView) -> Result<()> {
        self.set_json(id, "plan", "plan", plan)
    }

    /// What `set_plan` recorded for job `id` (None: not planned yet).
    pub fn plan(&self, id: &str) -> Result<Option<PlanView>> {
        self.json(id, "plan", "plan")
    }

    /// Stores `value` as JSON in `column` of job `id`'s row; `column` is
    /// one of this file's literals, never input; `what` names it in errors.
    fn set_json<T: Serialize>(
        &self,
        id: &str,
        column: &'static str,
        what: &str,
        value: &T,
    ) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
            what: format!("{what} of job {id}"),
            message: e.to_string(),
        })?;
        self.conn()
            .execute(
                &format!("UPDATE jobs SET {column} = ?1 WHERE id = ?2"),
                params![text, id],
            )
            .map_err(sqlite(format!("store the {what} of job {id}")))?;
        Ok(())
    }

    /// What [`set_json`](Self::set_json) stored in `column` of job `id`.
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        column: &'static str,
        what: &str,
    ) -> Result<Option<T>> {
        let text: Option<Option<String>> = self
            .conn()
            .query_row(
                &format!("SELECT {column} FROM jobs WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(format!("read the {what} of job {id}")))?;
        text.flatten()
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                    what: format!("{what} of job {id}"),
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// Jobs a restarted server must take up again: queued or running, oldest first.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.select_jobs(
            "state IN ('queued', 'running') ORDER BY seq",
            [],
            "list unfinished jobs",
        )
    }

    /// Records that stage `stage_id` of `job_id` committed `outputs`.
    pub fn commit_stage(
        &self,
        job_id: &str,
        stage_id: u32,
        tasks: usize,
        outputs: &[OutputFile],
        now_ms: i64,
    ) -> Result<()> {
        let outputs = serde_json::to_string(outputs).map_err(|e| StoreError::Corrupt {
            what: format!("outputs of job {job_id} stage {stage_id}"),
            message: e.to_string(),
        })?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO stages (job_id, stage_id, tasks, outputs, committed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job_id, stage_id, tasks as i64, outputs, now_ms],
            )
            .map_err(sqlite(format!("commit job {job_id} stage {stage_id}")))?;
        Ok(())
    }

    /// The committed outputs of a job's stages, by stage id.
    pub fn committed_stages(&self, job_id: &str) -> Result<HashMap<u32, Vec<OutputFile>>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT stage_id, outputs FROM stages WHERE job_id = ?1")
            .map_err(sqlite("read committed stages"))?;
        let rows = stmt
            .query_map(params![job_id], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sqlite("read committed stages"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("read committed stages"))?;
        rows.into_iter()
            .map(|(stage, text)| {
                serde_json::from_str(&text)
                    .map(|outputs| (stage, outputs))
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("outputs of job {job_id} stage {stage}"),
                        message: e.to_string(),
                    })
            })
            .collect()
    }
}

const JOB_COLUMNS: &str = "seq, id, state, sql, request, schedule_id, submitted_at_ms, \
                           started_at_ms, finished_at_ms, error, cost, principal";

/// A page of at most `limit` of `items` (fetched one over the limit), and the
/// cursor of the next page (the last item's) if there is one.
pub(super) fn page<T, C>(
    mut items: Vec<T>,
    limit: usize,
    cursor: impl Fn(&T) -> C,
) -> (Vec<T>, Option<C>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(cursor);
    (items, next)
}

/// Which jobs a listing returns (each None: any).
#[derive(Debug, Default, Clone, Copy)]
pub struct JobFilter<'a> {
    pub schedule_id: Option<&'a str>,
    /// Labelled `key` = `value`.
    pub label: Option<(&'a str, &'a str)>,
    pub principal: Option<&'a str>,
}

/// Inserts the labels of `job`'s request (`labels`, an object of strings).
pub(super) fn insert_labels(tx: &rusqlite::Transaction<'_>, job: &NewJob) -> Result<()> {
    let Some(labels) = job.request.get("labels").and_then(|l| l.as_object()) else {
        return Ok(());
    };
    for (key, value) in labels {
        let Some(value) = value.as_str() else {
            continue;
        };
        tx.execute(
            "INSERT INTO job_labels (job_id, key, value) VALUES (?1, ?2, ?3)",
            params![job.id, key, value],
        )
        .map_err(sqlite(format!("label job {}", job.id)))?;
    }
    Ok(())
}

/// A jobs row before its text columns are parsed.
pub(super) struct RawJob {
    seq: i64,
    id: String,
    state: String,
    sql: String,
    request: String,
    schedule_id: Option<String>,
    submitted_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    error: Option<String>,
    cost: Option<String>,
    principal: String,
}

pub(super) fn raw_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        seq: row.get(0)?,
        id: row.get(1)?,
        state: row.get(2)?,
        sql: row.get(3)?,
        request: row.get(4)?,
        schedule_id: row.get(5)?,
        submitted_at_ms: row.get(6)?,
        started_at_ms: row.get(7)?,
        finished_at_ms: row.get(8)?,
        error: row.get(9)?,
        cost: row.get(10)?,
        principal: row.get(11)?,
    })
}

impl RawJob {
    pub(super) fn into_record(self) -> Result<JobRecord> {
        let corrupt = |message: String| StoreError::Corrupt {
            what: format!("job {}", self.id),
            message,
        };
        let state = JobState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state '{}'", self.state)))?;
        let request = serde_json::from_str(&self.request)
            .map_err(|e| corrupt(format!("request is not JSON: {e}")))?;
        let cost = self
            .cost
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("cost is not a job cost: {e}")))?;
        Ok(JobRecord {
            id: self.id,
            state,
            sql: self.sql,
            request,
            schedule_id: self.schedule_id,
            submitted_at_ms: self.submitted_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            error: self.error,
            seq: self.seq,
            cost,
            principal: self.principal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::migrations::MIGRATIONS;
    use super::*;
    use squall_executor::PartitionSlot;

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            sql: "SELECT 1".into(),
            request: serde_json::json!({"tables": []}),
            schedule_id: None,
            principal: "admin".into(),
            client_token: None,
        }
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squall.db");
        {
            let store = JobStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
            store.insert_job(&job("a"), 10).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        assert_eq!(store.job("a").unwrap().unwrap().state, JobState::Queued);
        store
            .set_result("a", &serde_json::json!({"rows": 3}))
            .unwrap();
        assert_eq!(
            store.result("a").unwrap(),
            Some(serde_json::json!({"rows": 3}))
        );
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = JobStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn an_older_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squall.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, state, sql, request, submitted_at_ms)
                 VALUES ('old', 'succeeded', 'SELECT 1', '{}', 1)",
                [],
            )
            .unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(
            store.job("old").unwrap().unwrap().state,
            JobState::Succeeded
        );
        assert_eq!(store.result("old").unwrap(), None);
    }

    #[test]
    fn transitions_are_compare_and_set() {
        let store = JobStore::open_in_memory().unwrap();
        store.insert_job(&job("a"), 1).unwrap();
        assert!(
            store
                .transition("a", &[JobState::Queued], JobState::Running, None, 5)
                .unwrap()
        );
        // A second start, or finishing from the wrong state, does not apply.
        assert!(
            !store
                .transition("a", &[JobState::Queued], JobState::Running, None, 6)
                .unwrap()
        );
        assert!(
            store
                .transition(
                    "a",
                    &[JobState::Queued, JobState::Running],
                    JobState::Failed,
                    Some("boom"),
                    9
                )
                .unwrap()
        );
        assert!(
            !store
                .transition("a", &[JobState::Running], JobState::Cancelled, None, 10)
                .unwrap()
        );
        let a = store.job("a").unwrap().unwrap();
        assert_eq!(a.state, JobState::Failed);
        assert_eq!(
            (a.started_at_ms, a.finished_at_ms, a.error.as_deref()),
            (Some(5), Some(9), Some("boom"))
        );
        assert!(
            !store
                .transition("missing", &[JobState::Queued], JobState::Running, None, 1)
                .unwrap()
        );
    }

    #[test]
    fn listings_filter_and_page_either_way() {
        let store = JobStore::open_in_memory().unwrap();
        for i in 0..5 {
            store.insert_job(&job(&format!("j{i}")), i).unwrap();
        }
        store
            .transition("j1", &[JobState::Queued], JobState::Running, None, 9)
            .unwrap();
        let ids = |page: &[JobRecord]| page.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        let (page, next) = store.list_jobs(None, Order::Oldest, None, 2).unwrap();
        assert_eq!(ids(&page), ["j0", "j1"]);
        let (page, next) = store.list_jobs(None, Order::Oldest, next, 2).unwrap();
        assert_eq!(ids(&page), ["j2", "j3"]);
        let (page, next) = store.list_jobs(None, Order::Oldest, next, 2).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(next, None);
        // Newest first, the default: a job submitted between pages shows on
        // the first page, not at the end of the last.
        let (page, next) = store.list_jobs(None, Order::Newest, None, 2).unwrap();
        assert_eq!(ids(&page), ["j4", "j3"]);
        store.insert_job(&job("j5"), 5).unwrap();
        let (page, next) = store.list_jobs(None, Order::Newest, next, 2).unwrap();
        assert_eq!(ids(&page), ["j2", "j1"]);
        let (page, next) = store.list_jobs(None, Order::Newest, next, 2).unwrap();
        assert_eq!(ids(&page), ["j0"]);
        assert_eq!(next, None);
        let (first, _) = store.list_jobs(None, Order::default(), None, 1).unwrap();
        assert_eq!(ids(&first), ["j5"]);
        let (queued, _) = store
            .list_jobs(Some(JobState::Queued), Order::Oldest, None, 10)
            .unwrap();
        assert_eq!(queued.len(), 5);
        let unfinished = store.unfinished_jobs().unwrap();
        assert_eq!(unfinished.len(), 6);
        assert_eq!(unfinished[0].id, "j0");
    }

    #[test]
    fn committed_stages_come_back_for_a_resume() {
        let store = JobStore::open_in_memory().unwrap();
        store.insert_job(&job("a"), 1).unwrap();
        let outputs = vec![OutputFile {
            url: "s3://b/work/a/stage-1/task-0-attempt-0.sqsh".into(),
            keys: vec![],
            size: 42,
            partitions: vec![PartitionSlot {
                offset: 0,
                length: 42,
                rows: 7,
            }],
        }];
        store.commit_stage("a", 1, 1, &outputs, 5).unwrap();
        let committed = store.committed_stages("a").unwrap();
        assert_eq!(committed.get(&1), Some(&outputs));
        assert!(store.committed_stages("other").unwrap().is_empty());
        // Stages belong to a job that exists.
        assert!(store.commit_stage("ghost", 1, 1, &outputs, 5).is_err());
    }

    #[test]
    fn catalog_tables_round_trip() {
        let store = JobStore::open_in_memory().unwrap();
        let table = CatalogTable {
            name: "lineitem".into(),
            url: "s3://b/tpch/lineitem/".into(),
            format: Some("parquet".into()),
            options: serde_json::json!({}),
            created_at_ms: 3,
            columns: Some(serde_json::json!([{"name": "l_orderkey"}])),
            owner: "alice".into(),
        };
        assert!(store.put_table(&table, 2).unwrap());
        assert_eq!(store.table("lineitem").unwrap(), Some(table.clone()));
        assert_eq!(store.tables(None, 10).unwrap(), (vec![table.clone()], None));
        // At the cap: a new name is refused, replacing one is not.
        let orders = CatalogTable {
            name: "orders".into(),
            ..table.clone()
        };
        assert!(store.put_table(&orders, 2).unwrap());
        let parts = CatalogTable {
            name: "part".into(),
            ..table.clone()
        };
        assert!(!store.put_table(&parts, 2).unwrap());
        assert!(store.put_table(&table, 2).unwrap());
        // Paged by name.
        let (page, next) = store.tables(None, 1).unwrap();
        assert_eq!(
            (page[0].name.as_str(), next.as_deref()),
            ("lineitem", Some("lineitem"))
        );
        let (page, next) = store.tables(next.as_deref(), 1).unwrap();
        assert_eq!((page[0].name.as_str(), next), ("orders", None));
        assert!(store.delete_table("lineitem").unwrap());
        assert!(!store.delete_table("lineitem").unwrap());
        assert_eq!(store.table("lineitem").unwrap(), None);
    }
}
