//! The schedule routes' bodies: a new schedule, a change, how one is shown
//! and listed, and its overlap and missed-run policies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::SubmitJob;

/// `POST /v1/schedules`: run `job` at the times `cron` names in `time_zone`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin",
    "job": {"sql": "SELECT 1 AS one"}, "overlap": "skip", "missed": "run_once"
}))]
pub struct NewSchedule {
    #[serde(default)]
    pub name: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week), or six with
    /// seconds first; aliases such as `@daily`.
    pub cron: String,
    /// IANA time zone the cron is read in; default UTC.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The job each run submits.
    pub job: SubmitJob,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// While the previous run's job is queued or running: `skip` (default) or `allow`.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// Runs that fell due while no server ran: `skip` (default) or `run_once` at start.
    #[serde(default)]
    pub missed: MissedRunPolicy,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/schedules/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChange {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub job: Option<SubmitJob>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub overlap: Option<OverlapPolicy>,
    #[serde(default)]
    pub missed: Option<MissedRunPolicy>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    /// The principal that owns it; its runs are that principal's jobs.
    #[serde(default)]
    pub principal: String,
    pub name: Option<String>,
    pub cron: String,
    pub time_zone: String,
    /// The cron in words.
    pub description: String,
    pub job: SubmitJob,
    pub enabled: bool,
    pub overlap: OverlapPolicy,
    pub missed: MissedRunPolicy,
    /// When the next run falls due; absent while disabled.
    pub next_run_at_ms: Option<i64>,
    /// When a run last started a job.
    pub last_run_at_ms: Option<i64>,
    /// Runs skipped because the previous job was still queued or running.
    pub skipped_runs: u64,
    pub last_skipped_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `after` for the next page (absent on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// What a due run does while the schedule's previous job is queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Skip the run (counted in `skipped_runs`).
    #[default]
    Skip,
    /// Start another job anyway.
    Allow,
}

/// What a server does, when it starts, with runs that fell due while it was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedRunPolicy {
    /// Drop them; the next run is the next time the cron names.
    #[default]
    Skip,
    /// Start one job for all of them, at once.
    RunOnce,
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [OverlapPolicy::Skip, OverlapPolicy::Allow]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

impl MissedRunPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedRunPolicy::Skip => "skip",
            MissedRunPolicy::RunOnce => "run_once",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [MissedRunPolicy::Skip, MissedRunPolicy::RunOnce]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}
