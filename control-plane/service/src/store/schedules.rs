//! Schedules in the job store: their rows, and firing one — deciding, in one
//! transaction, whether a due run starts a job, is skipped because the last one
//! still runs, or is dropped as missed — so a run is never started twice.

use rusqlite::{OptionalExtension, params};

use super::{
    JOB_COLUMNS, JobRecord, JobStore, NewJob, Result, StoreError, insert_labels, page, raw_job,
    sqlite,
};
use crate::api::{MissedRunPolicy, OverlapPolicy};

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub id: String,
    pub name: Option<String>,
    pub cron: String,
    pub time_zone: String,
    /// The job to submit at each run (the API's `SubmitJob`, as JSON).
    pub template: serde_json::Value,
    pub enabled: bool,
    pub overlap: OverlapPolicy,
    pub missed: MissedRunPolicy,
    /// When the next run falls due; None while disabled.
    pub next_fire_at_ms: Option<i64>,
    pub last_fired_at_ms: Option<i64>,
    pub skipped_runs: u64,
    pub last_skipped_at_ms: Option<i64>,
    pub created_at_ms: i64,
    /// Bumped by every change, a user's or a firing's: an edit applies only to
    /// the revision it was made from.
    pub revision: i64,
    /// The principal that owns it (and its runs).
    pub principal: String,
}

/// What became of a due run.
#[derive(Debug, Clone, PartialEq)]
pub enum Firing {
    /// A job was queued.
    Started(Box<JobRecord>),
    /// The schedule's previous job is still queued or running.
    SkippedOverlap,
    /// The server's queue of jobs is full.
    SkippedQueueFull,
    /// Missed while no server ran, and the schedule drops missed runs.
    DroppedMissed,
    /// Nothing: the schedule changed, was disabled or deleted, or another
    /// firing already took this run.
    Stale,
}

const SCHEDULE_COLUMNS: &str = "id, name, cron, time_zone, template, enabled, overlap, catch_up, \
     next_fire_at_ms, last_fired_at_ms, skipped_runs, last_skipped_at_ms, created_at_ms, revision, \
     principal";

impl JobStore {
    /// Stores a new schedule unless `max_all` schedules exist already, or
    /// `max_own` of its principal's (false then), in one step.
    pub fn insert_schedule(
        &self,
        schedule: &ScheduleRecord,
        max_all: usize,
        max_own: Option<usize>,
    ) -> Result<bool> {
        let inserted = self
            .conn()
            .execute(
                &format!(
                    "INSERT INTO schedules ({SCHEDULE_COLUMNS})
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
                     WHERE (SELECT count(*) FROM schedules) < ?16
                       AND (?17 IS NULL
                            OR (SELECT count(*) FROM schedules WHERE principal = ?15) < ?17)"
                ),
                params![
                    schedule.id,
                    schedule.name,
                    schedule.cron,
                    schedule.time_zone,
                    schedule.template.to_string(),
                    schedule.enabled,
                    schedule.overlap.as_str(),
                    schedule.missed.as_str(),
                    schedule.next_fire_at_ms,
                    schedule.last_fired_at_ms,
                    schedule.skipped_runs as i64,
                    schedule.last_skipped_at_ms,
                    schedule.created_at_ms,
                    schedule.revision,
                    schedule.principal,
                    max_all as i64,
                    max_own.map(|n| n as i64),
                ],
            )
            .map_err(sqlite(format!("insert schedule {}", schedule.id)))?;
        Ok(inserted == 1)
    }

    /// Replaces what a user may change (name, cron, zone, template, enabled,
    /// policies) and the next fire time, if the schedule is still at
    /// `schedule.revision`; false if it is not (changed or fired since it was
    /// read) or does not exist.
    pub fn update_schedule(&self, schedule: &ScheduleRecord) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "UPDATE schedules SET name = ?2, cron = ?3, time_zone = ?4, template = ?5,
                    enabled = ?6, overlap = ?7, catch_up = ?8, next_fire_at_ms = ?9,
                    revision = revision + 1
                 WHERE id = ?1 AND revision = ?10",
                params![
                    schedule.id,
                    schedule.name,
                    schedule.cron,
                    schedule.time_zone,
                    schedule.template.to_string(),
                    schedule.enabled,
                    schedule.overlap.as_str(),
                    schedule.missed.as_str(),
                    schedule.next_fire_at_ms,
                    schedule.revision,
                ],
            )
            .map_err(sqlite(format!("update schedule {}", schedule.id)))?;
        Ok(changed == 1)
    }

    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"),
                params![id],
                RawSchedule::read,
            )
            .optional()
            .map_err(sqlite(format!("read schedule {id}")))?;
        row.map(RawSchedule::into_record).transpose()
    }

    /// Schedules oldest first, of `principal` only if given, after the
    /// schedule `after` (an id), at most `limit`; and the id to continue after
    /// if there are more.
    pub fn schedules(
        &self,
        principal: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<String>)> {
        let schedules = self.schedules_where(
            "(?1 IS NULL OR principal = ?1)
               AND (?2 IS NULL OR (created_at_ms, id) >
                    (SELECT created_at_ms, id FROM schedules WHERE id = ?2))
             ORDER BY created_at_ms, id LIMIT ?3",
            params![principal, after, limit.saturating_add(1) as i64],
        )?;
        Ok(page(schedules, limit, |s| s.id.clone()))
    }

    /// Enabled schedules whose next run is due at `now_ms`, earliest first.
    pub fn due_schedules(&self, now_ms: i64) -> Result<Vec<ScheduleRecord>> {
        self.schedules_where(
            "enabled AND next_fire_at_ms <= ?1 ORDER BY next_fire_at_ms",
            [now_ms],
        )
    }

    /// When the earliest enabled schedule falls due next.
    pub fn next_fire_time(&self) -> Result<Option<i64>> {
        self.conn()
            .query_row(
                "SELECT MIN(next_fire_at_ms) FROM schedules WHERE enabled",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite("read next fire time"))
    }

    fn schedules_where<P: rusqlite::Params>(
        &self,
        condition: &str,
        params: P,
    ) -> Result<Vec<ScheduleRecord>> {
        let conn = self.conn();
        let ordered = if condition.contains("ORDER BY") {
            condition.to_string()
        } else {
            format!("{condition} ORDER BY created_at_ms, id")
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE {ordered}"
            ))
            .map_err(sqlite("list schedules"))?;
        let rows = stmt
            .query_map(params, RawSchedule::read)
            .map_err(sqlite("list schedules"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("list schedules"))?;
        rows.into_iter().map(RawSchedule::into_record).collect()
    }

    /// Removes a schedule (its jobs stay, still naming it); false if there was none.
    pub fn delete_schedule(&self, id: &str) -> Result<bool> {
        let changed = self
            .conn()
            .execute("DELETE FROM schedules WHERE id = ?1", params![id])
            .map_err(sqlite(format!("delete schedule {id}")))?;
        Ok(changed == 1)
    }

    /// Takes the run of schedule `id` that fell due at `due_ms`, in one
    /// transaction: unless the schedule moved on (→ `Stale`), its next run
    /// becomes `next_ms`, and `job` is queued — or not, when `run` is false
    /// (missed, dropped), the overlap policy skips it, or `max_queued` jobs
    /// are queued already.
    #[allow(clippy::too_many_arguments)]
    pub fn fire_schedule(
        &self,
        id: &str,
        due_ms: i64,
        next_ms: Option<i64>,
        run: bool,
        job: &NewJob,
        now_ms: i64,
        max_queued: usize,
    ) -> Result<Firing> {
        let mut conn = self.conn();
        let context = format!("fire schedule {id}");
        let tx = conn.transaction().map_err(sqlite(context.clone()))?;
        let current: Option<(bool, Option<i64>, String)> = tx
            .query_row(
                "SELECT enabled, next_fire_at_ms, overlap FROM schedules WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sqlite(context.clone()))?;
        let Some((true, Some(due), overlap)) = current else {
            return Ok(Firing::Stale);
        };
        if due != due_ms {
            return Ok(Firing::Stale);
        }
        tx.execute(
            "UPDATE schedules SET next_fire_at_ms = ?2, revision = revision + 1 WHERE id = ?1",
            params![id, next_ms],
        )
        .map_err(sqlite(context.clone()))?;
        let firing = if !run {
            Firing::DroppedMissed
        } else {
            let busy: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM jobs
                     WHERE schedule_id = ?1 AND state IN ('queued', 'running'))",
                    params![id],
                    |r| r.get(0),
                )
                .map_err(sqlite(context.clone()))?;
            let queued: i64 = tx
                .query_row(
                    "SELECT count(*) FROM jobs WHERE state = 'queued'",
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite(context.clone()))?;
            let skipped = if busy && OverlapPolicy::parse(&overlap) != Some(OverlapPolicy::Allow) {
                Some(Firing::SkippedOverlap)
            } else if queued >= max_queued as i64 {
                Some(Firing::SkippedQueueFull)
            } else {
                None
            };
            if let Some(skipped) = skipped {
                tx.execute(
                    "UPDATE schedules SET skipped_runs = skipped_runs + 1,
                        last_skipped_at_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )
                .map_err(sqlite(context.clone()))?;
                skipped
            } else {
                tx.execute(
                    "INSERT INTO jobs (id, state, sql, request, schedule_id, submitted_at_ms,
                        principal)
                     VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
                    params![
                        job.id,
                        job.sql,
                        job.request.to_string(),
                        id,
                        now_ms,
                        job.principal
                    ],
                )
                .map_err(sqlite(context.clone()))?;
                insert_labels(&tx, job)?;
                tx.execute(
                    "UPDATE schedules SET last_fired_at_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )
                .map_err(sqlite(context.clone()))?;
                let record = tx
                    .query_row(
                        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                        params![job.id],
                        raw_job,
                    )
                    .map_err(sqlite(context.clone()))?
                    .into_record()?;
                Firing::Started(Box::new(record))
            }
        };
        tx.commit().map_err(sqlite(context))?;
        Ok(firing)
    }
}

/// A schedules row before its text columns are parsed.
struct RawSchedule {
    id: String,
    name: Option<String>,
    cron: String,
    time_zone: String,
    template: String,
    enabled: bool,
    overlap: String,
    missed: String,
    next_fire_at_ms: Option<i64>,
    last_fired_at_ms: Option<i64>,
    skipped_runs: i64,
    last_skipped_at_ms: Option<i64>,
    created_at_ms: i64,
    revision: i64,
    principal: String,
}

impl RawSchedule {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            cron: row.get(2)?,
            time_zone: row.get(3)?,
            template: row.get(4)?,
            enabled: row.get(5)?,
            overlap: row.get(6)?,
            missed: row.get(7)?,
            next_fire_at_ms: row.get(8)?,
            last_fired_at_ms: row.get(9)?,
            skipped_runs: row.get(10)?,
            last_skipped_at_ms: row.get(11)?,
            created_at_ms: row.get(12)?,
            revision: row.get(13)?,
            principal: row.get(14)?,
        })
    }

    fn into_record(self) -> Result<ScheduleRecord> {
        let corrupt = |message: String| StoreError::Corrupt {
            what: format!("schedule {}", self.id),
            message,
        };
        let template = serde_json::from_str(&self.template)
            .map_err(|e| corrupt(format!("template is not JSON: {e}")))?;
        let overlap = OverlapPolicy::parse(&self.overlap)
            .ok_or_else(|| corrupt(format!("unknown overlap policy '{}'", self.overlap)))?;
        let missed = MissedRunPolicy::parse(&self.missed)
            .ok_or_else(|| corrupt(format!("unknown missed-run policy '{}'", self.missed)))?;
        Ok(ScheduleRecord {
            id: self.id,
            name: self.name,
            cron: self.cron,
            time_zone: self.time_zone,
            template,
            enabled: self.enabled,
            overlap,
            missed,
            next_fire_at_ms: self.next_fire_at_ms,
            last_fired_at_ms: self.last_fired_at_ms,
            skipped_runs: self.skipped_runs.max(0) as u64,
            last_skipped_at_ms: self.last_skipped_at_ms,
            created_at_ms: self.created_at_ms,
            revision: self.revision,
            principal: self.principal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobState;
    use crate::api::Order;

    fn schedule(id: &str, next: i64) -> ScheduleRecord {
        ScheduleRecord {
            id: id.into(),
            name: Some("nightly".into()),
            cron: "0 2 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            template: serde_json::json!({"sql": "SELECT 1"}),
            enabled: true,
            overlap: OverlapPolicy::Skip,
            missed: MissedRunPolicy::RunOnce,
            next_fire_at_ms: Some(next),
            last_fired_at_ms: None,
            skipped_runs: 0,
            last_skipped_at_ms: None,
            created_at_ms: 1,
            revision: 0,
            principal: "alice".into(),
        }
    }

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            sql: "SELECT 1".into(),
            request: serde_json::json!({"sql": "SELECT 1"}),
            schedule_id: None,
            principal: "alice".into(),
            client_token: None,
        }
    }

    #[test]
    fn schedules_round_trip_and_list_by_due_time() {
        let store = JobStore::open_in_memory().unwrap();
        assert!(
            store
                .insert_schedule(&schedule("a", 100), 10, None)
                .unwrap()
        );
        assert!(store.insert_schedule(&schedule("b", 50), 10, None).unwrap());
        let mut off = schedule("c", 10);
        off.enabled = false;
        off.principal = "bob".into();
        assert!(store.insert_schedule(&off, 10, None).unwrap());
        assert_eq!(store.schedule("a").unwrap(), Some(schedule("a", 100)));
        assert_eq!(store.schedules(None, None, 10).unwrap().0.len(), 3);
        // Paged, and by principal.
        let (page, next) = store.schedules(None, None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let (rest, last) = store.schedules(None, next.as_deref(), 2).unwrap();
        assert_eq!((rest.len(), last), (1, None));
        assert_eq!(
            store.schedules(Some("bob"), None, 10).unwrap().0,
            vec![off.clone()]
        );
        // Caps: the server's, and the principal's.
        assert!(!store.insert_schedule(&schedule("d", 1), 3, None).unwrap());
        assert!(
            !store
                .insert_schedule(&schedule("d", 1), 10, Some(2))
                .unwrap()
        );
        assert!(
            store
                .insert_schedule(&schedule("d", 1), 10, Some(3))
                .unwrap()
        );
        assert!(store.delete_schedule("d").unwrap());
        let due: Vec<_> = store
            .due_schedules(100)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(due, ["b", "a"], "enabled ones, earliest first");
        assert_eq!(store.next_fire_time().unwrap(), Some(50));
        let mut changed = schedule("a", 200);
        changed.cron = "*/5 * * * *".into();
        changed.overlap = OverlapPolicy::Allow;
        assert!(store.update_schedule(&changed).unwrap());
        // An edit made from the old revision no longer applies.
        assert!(!store.update_schedule(&changed).unwrap());
        changed.revision = 1;
        assert_eq!(store.schedule("a").unwrap(), Some(changed));
        assert!(store.delete_schedule("a").unwrap());
        assert!(!store.delete_schedule("a").unwrap());
        assert!(!store.update_schedule(&schedule("a", 1)).unwrap());
    }

    #[test]
    fn a_run_fires_once_and_overlaps_are_skipped() {
        let store = JobStore::open_in_memory().unwrap();
        store
            .insert_schedule(&schedule("s", 100), 10, None)
            .unwrap();
        let fired = store
            .fire_schedule("s", 100, Some(200), true, &job("j1"), 101, 100)
            .unwrap();
        let Firing::Started(record) = fired else {
            panic!("{fired:?}")
        };
        assert_eq!(record.schedule_id.as_deref(), Some("s"));
        assert_eq!(record.state, JobState::Queued);
        // The same run again: taken already.
        let again = store
            .fire_schedule("s", 100, Some(200), true, &job("j2"), 102, 100)
            .unwrap();
        assert_eq!(again, Firing::Stale);
        // The next run while j1 is still queued: skipped and counted.
        let next = store
            .fire_schedule("s", 200, Some(300), true, &job("j3"), 201, 100)
            .unwrap();
        assert_eq!(next, Firing::SkippedOverlap);
        let s = store.schedule("s").unwrap().unwrap();
        assert_eq!(
            (s.skipped_runs, s.last_skipped_at_ms, s.last_fired_at_ms),
            (1, Some(201), Some(101))
        );
        assert_eq!(s.next_fire_at_ms, Some(300));
        // Once j1 finished, the next run starts a job.
        store
            .transition("j1", &[JobState::Queued], JobState::Running, None, 250)
            .unwrap();
        store
            .transition("j1", &[JobState::Running], JobState::Failed, Some("x"), 260)
            .unwrap();
        let later = store
            .fire_schedule("s", 300, Some(400), true, &job("j4"), 301, 100)
            .unwrap();
        assert!(matches!(later, Firing::Started(_)), "{later:?}");
        let (runs, _) = store
            .list_schedule_jobs("s", Order::Oldest, None, 10)
            .unwrap();
        let ids: Vec<_> = runs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["j1", "j4"]);
        // A missed run dropped: no job, next time moves on.
        store
            .transition("j4", &[JobState::Queued], JobState::Cancelled, None, 302)
            .unwrap();
        let dropped = store
            .fire_schedule("s", 400, Some(500), false, &job("j5"), 501, 100)
            .unwrap();
        assert_eq!(dropped, Firing::DroppedMissed);
        assert_eq!(
            store
                .list_schedule_jobs("s", Order::Oldest, None, 10)
                .unwrap()
                .0
                .len(),
            2
        );
        // Allowing overlap: a second job while one is queued.
        let mut allow = store.schedule("s").unwrap().unwrap();
        allow.overlap = OverlapPolicy::Allow;
        store.update_schedule(&allow).unwrap();
        for (due, id) in [(500, "j6"), (600, "j7")] {
            let f = store
                .fire_schedule("s", due, Some(due + 100), true, &job(id), due, 100)
                .unwrap();
            assert!(matches!(f, Firing::Started(_)), "{f:?}");
        }
        // An edit read before those firings is stale: it would write back an
        // old next run time.
        allow.enabled = false;
        assert!(!store.update_schedule(&allow).unwrap());
        // A full queue skips the run (and counts it).
        let full = store
            .fire_schedule("s", 700, Some(800), true, &job("j8"), 700, 2)
            .unwrap();
        assert_eq!(full, Firing::SkippedQueueFull);
        assert_eq!(store.schedule("s").unwrap().unwrap().skipped_runs, 2);
        // A disabled schedule never fires.
        let mut off = store.schedule("s").unwrap().unwrap();
        off.enabled = false;
        off.next_fire_at_ms = Some(800);
        assert!(store.update_schedule(&off).unwrap());
        let off = store
            .fire_schedule("s", 800, Some(900), true, &job("j9"), 800, 100)
            .unwrap();
        assert_eq!(off, Firing::Stale);
    }
}
