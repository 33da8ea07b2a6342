//! The job store's schema: its migrations, numbered by SQLite's
//! `user_version`, each applied once in its own transaction. A file written
//! by a newer Squall is refused rather than guessed at.

use rusqlite::Connection;

use super::{Result, StoreError, sqlite};

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: jobs, their committed stages and task attempts, the catalog, schedules.
    "CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        sql TEXT NOT NULL,
        request TEXT NOT NULL,
        schedule_id TEXT,
        submitted_at_ms INTEGER NOT NULL,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        error TEXT
    );
    CREATE INDEX jobs_by_state ON jobs (state, seq);
    CREATE INDEX jobs_by_schedule ON jobs (schedule_id, seq);
    CREATE TABLE stages (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        stage_id INTEGER NOT NULL,
        tasks INTEGER NOT NULL,
        outputs TEXT NOT NULL,
        committed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, stage_id)
    );
    CREATE TABLE task_attempts (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        stage_id INTEGER NOT NULL,
        task INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT,
        elapsed_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, stage_id, task, attempt)
    );
    CREATE TABLE catalog (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        format TEXT,
        options TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        cron TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        template TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        catch_up TEXT NOT NULL,
        last_fired_at_ms INTEGER,
        created_at_ms INTEGER NOT NULL
    );",
    // 2: what a finished job produced (rows, manifest, files), as JSON.
    "ALTER TABLE jobs ADD COLUMN result TEXT;",
    // 3: schedules' names, overlap policy, next fire time and skipped runs
    // (`catch_up` holds the missed-run policy).
    "ALTER TABLE schedules ADD COLUMN name TEXT;
    ALTER TABLE schedules ADD COLUMN overlap TEXT NOT NULL DEFAULT 'skip';
    ALTER TABLE schedules ADD COLUMN next_fire_at_ms INTEGER;
    ALTER TABLE schedules ADD COLUMN skipped_runs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE schedules ADD COLUMN last_skipped_at_ms INTEGER;",
    // 4: a catalog table's columns as read when it was put (JSON).
    "ALTER TABLE catalog ADD COLUMN columns TEXT;",
    // 5: schedules' revisions (edits are compare-and-set); finished jobs by
    // finish time (retention).
    "ALTER TABLE schedules ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_by_finish ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;",
    // 6: what a job cost (JSON); jobs' labels, to list jobs by label.
    "ALTER TABLE jobs ADD COLUMN cost TEXT;
    CREATE TABLE job_labels (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE INDEX job_labels_by_label ON job_labels (key, value);",
    // 7: when attempts started and ended, and which were backups; a job's
    // planned stage DAG (JSON), for the console.
    "ALTER TABLE task_attempts ADD COLUMN started_at_ms INTEGER;
    ALTER TABLE task_attempts ADD COLUMN ended_at_ms INTEGER;
    ALTER TABLE task_attempts ADD COLUMN backup INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN plan TEXT;",
    // 8: who submitted each job, owns each schedule, put each catalog table
    // (earlier rows were the one token's: the admin principal).
    "ALTER TABLE jobs ADD COLUMN principal TEXT NOT NULL DEFAULT 'admin';
    CREATE INDEX jobs_by_principal ON jobs (principal, state, seq);
    ALTER TABLE schedules ADD COLUMN principal TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE catalog ADD COLUMN owner TEXT NOT NULL DEFAULT 'admin';",
    // 9: where each attempt ran (`local` or `lambda`; NULL before).
    "ALTER TABLE task_attempts ADD COLUMN place TEXT;",
    // 10: a submitter's idempotency token: one job per principal and token.
    "ALTER TABLE jobs ADD COLUMN client_token TEXT;
    CREATE UNIQUE INDEX jobs_by_client_token ON jobs (principal, client_token)
        WHERE client_token IS NOT NULL;",
];

/// Applies the migrations `conn` has not seen, each in its own transaction.
pub(super) fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite("read schema version"))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_string(),
            found: version,
            supported,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let target = index as i64 + 1;
        let tx = conn
            .transaction()
            .map_err(sqlite(format!("migrate to version {target}")))?;
        tx.execute_batch(migration)
            .map_err(sqlite(format!("migrate to version {target}")))?;
        tx.pragma_update(None, "user_version", target)
            .map_err(sqlite(format!("migrate to version {target}")))?;
        tx.commit()
            .map_err(sqlite(format!("migrate to version {target}")))?;
    }
    Ok(())
}
