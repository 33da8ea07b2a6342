//! The HTTP API's request and response bodies, and the states and policies
//! they name. Plain serde types, nothing else: the server, the job store and
//! the CLI client share them, and they depend on nothing of the service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squall_engine::scheduler::ExchangeMode;
use utoipa::ToSchema;

mod schedules;
pub use schedules::{
    MissedRunPolicy, NewSchedule, OverlapPolicy, ScheduleChange, ScheduleList, ScheduleView,
};

pub use squall_engine::cost::{Cost, Requests};

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "SELECT 1 AS one", "options": {"deadline_seconds": 60}}))]
pub struct SubmitJob {
    pub sql: String,
    /// Tables by URL: `{"name": "lineitem", "url": "s3://b/tpch/lineitem/"}`.
    #[serde(default)]
    pub tables: Vec<TableRef>,
    /// Where to keep the result; default: the server's results folder.
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// Free-form labels for chargeback and listing (`{"team": "data"}`): at
    /// most 16, keys of 1 to 63 characters `a-z 0-9 _ . -`, values up to 256
    /// characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Makes a retried submission safe (as Athena's `ClientRequestToken`): a
    /// second submission by the same principal with the same token answers
    /// with the first job (200) instead of running it again; of other SQL, it
    /// is refused (409). 1 to 128 characters `A-Z a-z 0-9 . _ : -`; not in a
    /// schedule's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    /// How long to wait for the job to end before answering (`"10s"`, 0 to
    /// 50 s; default 0 s: answer at once, 202). A job that ends in time is
    /// answered with 200, its state, and its first page of rows or its
    /// error (as Databricks' `wait_timeout`). Not in a schedule's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10s")]
    pub wait_timeout: Option<String>,
}

/// A table a job reads: by URL, or by the name of a catalog table (no URL).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableRef {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    /// parquet, csv or json; default: from the files' extensions.
    #[serde(default)]
    pub format: Option<String>,
    /// Hive partition columns, outermost folder first, as
    /// `COLUMN[:TYPE],...` (`year:int,month:int`; TYPE: int, string, date,
    /// boolean, double). Default: the `key=value` folders under the URL, if
    /// any (of a catalog table: its own).
    #[serde(default)]
    #[schema(example = "year:int,month:int")]
    pub partitions: Option<String>,
    /// A CSV table's dialect as `delimiter=;,header=false,quote=',escape=\,null=NA`
    /// (any of them; default: comma, a header row, double quotes, no
    /// escape, only empty fields NULL). Default: of a catalog table, its own.
    #[serde(default)]
    #[schema(example = "delimiter=;,header=false")]
    pub csv: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Width of hash shuffles (default: the backend's parallelism).
    #[serde(default)]
    pub shuffle_partitions: Option<usize>,
    /// Tasks of this job running at once (default: the backend's limit).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Refuse the job, before it runs, when the files of the tables it reads add
    /// up to more bytes than this; the refusal gives the estimate.
    #[serde(default)]
    pub scan_limit_bytes: Option<u64>,
    /// Stop the job when it has run this many seconds (queueing not counted).
    #[serde(default)]
    pub deadline_seconds: Option<u64>,
    /// Start a backup copy of a straggling task (default: true).
    #[serde(default)]
    pub backup_tasks: Option<bool>,
    /// Stop the job, like a deadline, once its estimated cost passes this
    /// many US dollars (default and maximum: the server's).
    #[serde(default)]
    pub cost_limit_usd: Option<f64>,
    /// How reduce stages read shuffles: `auto` (through a combine step where
    /// the requests it saves pay for it), `direct` or `two-level` (default:
    /// the server's).
    #[serde(default)]
    pub exchange: Option<ExchangeMode>,
    /// Send a slow ranged read (slower than the task's 95th percentile, and
    /// 250 ms) a second time, the first answer winning (default: true).
    #[serde(default)]
    pub hedged_reads: Option<bool>,
    /// Where the job's stages run on a server whose backend is `auto`:
    /// `auto` (each where it is predicted to finish sooner; the default),
    /// `local` (in-process) or `lambda`. Other servers accept only their
    /// own place.
    #[serde(default)]
    pub placement: Option<PlacementOption>,
    /// When a stage feeding one side of a join waits for the keys of the
    /// other side and drops the rows they cannot match: `auto` (where the
    /// wait costs at most four times the stage's own scan; the default),
    /// `always` or `off`.
    #[serde(default)]
    pub key_filters: Option<KeyFiltersOption>,
    /// Whether a broadcast join's build-side keys prune the files and row
    /// groups of its probe side's scan (default: true).
    #[serde(default)]
    pub join_filters: Option<bool>,
}

/// When joins filter the stages feeding them (see [`JobOptions::key_filters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyFiltersOption {
    Off,
    Auto,
    Always,
}

impl From<KeyFiltersOption> for squall_engine::planner::KeyFilterMode {
    fn from(option: KeyFiltersOption) -> Self {
        match option {
            KeyFiltersOption::Off => Self::Off,
            KeyFiltersOption::Auto => Self::Auto,
            KeyFiltersOption::Always => Self::Always,
        }
    }
}

/// A stage filtered by the keys of a join's other side: planned (`filter`
/// absent until the source stage commits), and applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct KeyFilterView {
    /// The stage whose join keys build the filter.
    pub source_stage: u32,
    /// The stage holding the join.
    pub join_stage: u32,
    /// Whether the stage waits for the source stage to commit.
    pub waits: bool,
    /// What the filter holds (key bounds, Bloom filter), once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl KeyFilterView {
    pub fn of(filter: &squall_engine::scheduler::KeyFilterApplied) -> Self {
        Self {
            source_stage: filter.source_stage,
            join_stage: filter.join_stage,
            waits: filter.waited,
            filter: Some(filter.description.clone()),
        }
    }
}

/// Where a job's stages run (see [`JobOptions::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementOption {
    Auto,
    Local,
    Lambda,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobView {
    pub id: String,
    /// Who submitted it (or owns the schedule that did).
    #[serde(default)]
    pub principal: String,
    pub state: JobState,
    pub sql: String,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    /// Rows of the result, once succeeded.
    pub rows: Option<u64>,
    /// The result's manifest, once succeeded.
    pub manifest_url: Option<String>,
    /// Per stage: tasks and bytes, while running (this server's view) and after.
    #[serde(default)]
    pub stages: Vec<StageProgress>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the job used and its estimated cost: running totals while it
    /// runs, final once it ended (whatever its outcome).
    #[serde(default)]
    pub cost: Option<Cost>,
    /// The job's trace id when the server exports spans (the view of one
    /// job only, not listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Where to see the trace, from the server's `--trace-url` template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

/// Progress of one stage of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct StageProgress {
    pub stage: u32,
    /// Tasks the stage runs (chosen when it starts: a reduce stage's tasks
    /// may each read several shuffle partitions).
    pub tasks: usize,
    /// The shuffle partitions (or scan partitions) of the stage's plan.
    #[serde(default)]
    pub partitions: usize,
    pub done: usize,
    pub running: usize,
    /// Attempts that failed and were retried.
    pub retried: usize,
    /// Tasks whose last attempt failed (this fails the job).
    #[serde(default)]
    pub failed: usize,
    /// Backup copies started for straggling tasks.
    #[serde(default)]
    pub backups: usize,
    /// Tasks whose backup copy finished first.
    #[serde(default)]
    pub backup_wins: usize,
    pub bytes_scanned: u64,
    /// Bytes the stage wrote (shuffle files or results).
    pub bytes_written: u64,
    /// Rows its winning attempts read (tables and shuffles) and wrote.
    #[serde(default)]
    pub rows_in: u64,
    #[serde(default)]
    pub rows_out: u64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// What the stage's attempts used, priced.
    #[serde(default)]
    pub cost: Option<Cost>,
    /// How the stage reads each shuffle input that could be combined
    /// (direct, or two-level through a combine step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<ExchangeView>,
    /// For a combine step: the stage whose files it combines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combines: Option<u32>,
    /// Where its tasks were placed, and why (see `--backend auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementView>,
    /// Tasks whose winning attempt ran in-process, and on Lambda.
    #[serde(default)]
    pub local_tasks: usize,
    #[serde(default)]
    pub lambda_tasks: usize,
    /// The filters its rows went through, built from the keys of joins'
    /// other sides, and the rows they removed before the stage wrote them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_filters: Vec<KeyFilterView>,
    #[serde(default)]
    pub key_filter_rows_removed: u64,
    /// The bytes those rows would have added to its output, estimated from
    /// each task's bytes per row written (0 where a task wrote no row).
    #[serde(default)]
    pub key_filter_bytes_saved: u64,
    /// The stage whose tasks ran this stage's plan: a small stage run by
    /// the one task reading it, or a probe side's scan run by the tasks of
    /// a join that became a broadcast join. It ran no tasks of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_into: Option<u32>,
}

/// Where a stage's tasks run, decided when it is ready: `local`, `lambda`,
/// or `split` (in-process, with up to `burst_tasks` overflowing to Lambda
/// while every local executor is busy).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PlacementView {
    pub place: String,
    pub burst_tasks: usize,
    /// Predicted seconds and dollars each way (absent where the backend
    /// has one place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_usd: Option<f64>,
    pub reason: String,
}

impl PlacementView {
    pub fn of(placement: &squall_engine::backend::Placement) -> Self {
        Self {
            place: placement.label().into(),
            burst_tasks: placement.burst_tasks,
            local_seconds: placement.local.map(|p| p.seconds),
            lambda_seconds: placement.lambda.map(|p| p.seconds),
            lambda_usd: placement.lambda.map(|p| p.usd),
            reason: placement.reason.clone(),
        }
    }
}

/// How a reduce stage reads one shuffle input, decided when the input has
/// committed: `direct` (every reduce task reads every producer's file) or
/// `two-level` (a combine step first writes one file per group of producers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExchangeView {
    /// The input stage.
    pub input: u32,
    /// `direct` or `two-level`.
    pub mode: String,
    pub producers: usize,
    /// Files the combine step writes (0 for direct).
    pub combiners: usize,
    /// The combine step's stage id (two-level only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_stage: Option<u32>,
    /// What the step does: `combine` (files copied together) or `merge`
    /// (sorted runs merged in groups, a merge tree's first level).
    #[serde(default)]
    pub step: String,
    pub reduce_tasks: usize,
    /// GETs reading the input direct, and two-level (the combine step's
    /// included), as estimated from the committed files.
    pub requests_direct: u64,
    pub requests_two_level: u64,
    /// Dollars two-level saves by the price table (negative: it costs more).
    pub saving_usd: f64,
    /// Why it was chosen.
    pub reason: String,
}

impl ExchangeView {
    pub fn of(
        choice: &squall_engine::scheduler::ExchangeChoice,
        combine_stage: Option<u32>,
    ) -> Self {
        Self {
            input: choice.input,
            mode: if choice.two_level {
                "two-level"
            } else {
                "direct"
            }
            .into(),
            producers: choice.producers,
            combiners: choice.combiners,
            combine_stage,
            step: if choice.merge { "merge" } else { "combine" }.into(),
            reduce_tasks: choice.reduce_tasks,
            requests_direct: choice.requests_direct,
            requests_two_level: choice.requests_two_level,
            saving_usd: choice.saving_usd,
            reason: choice.reason.clone(),
        }
    }
}

impl ColumnView {
    /// The columns of `schema`, in order.
    pub fn of(schema: &arrow::datatypes::Schema) -> Vec<Self> {
        schema
            .fields()
            .iter()
            .map(|f| ColumnView {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect()
    }
}

/// What a succeeded job produced (kept in the store).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobOutcome {
    pub rows: u64,
    pub manifest_url: String,
    pub files: Vec<String>,
    /// Rows in each of `files` (absent in results stored before it was kept).
    #[serde(default)]
    pub file_rows: Vec<u64>,
    /// The result's columns, in order.
    #[serde(default)]
    pub columns: Vec<ColumnView>,
    /// The stages as they finished.
    #[serde(default)]
    pub stages: Vec<StageProgress>,
}

/// The order a listing of jobs comes in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Most recently submitted first (what a person looking for their job wants).
    #[default]
    Newest,
    /// In submission order.
    Oldest,
}

impl Order {
    /// `newest` or `oldest`.
    pub fn parse(text: &str) -> std::result::Result<Order, String> {
        match text {
            "newest" => Ok(Order::Newest),
            "oldest" => Ok(Order::Oldest),
            other => Err(format!("order must be newest or oldest, not {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Newest => "newest",
            Order::Oldest => "oldest",
        }
    }
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<i64>,
}

/// `202 Accepted` to a submission; `200` with the job's end when it ended
/// within `wait_timeout`, or when a token named an earlier submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    pub state: JobState,
    /// Why the job failed, if it ended failed within `wait_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first page of rows, if it succeeded within `wait_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultPage>,
}

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// `GET /v1/jobs/{id}/result`: a page of rows, and where the whole result is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultPage {
    /// The result's columns, in order (the objects in `rows` do not keep it).
    pub columns: Vec<ColumnView>,
    /// Rows as JSON objects, column name → value (SQL NULL as null); empty
    /// with `format=arrays`. Column names are made unique (a second `id` is
    /// `id_2`).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// With `format=arrays`: rows as arrays of values in column order
    /// (integers past ±(2^53 − 1) as strings, which JavaScript numbers
    /// cannot hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<Object>>>)]
    pub data: Option<Vec<serde_json::Value>>,
    /// Index of the first row of this page.
    pub offset: u64,
    /// Rows in the whole result.
    pub total: u64,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<u64>,
    pub manifest_url: String,
    /// The result's Parquet files.
    pub files: Vec<String>,
}

/// `PUT /v1/tables/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTable {
    pub url: String,
    /// parquet, csv or json; default: from the files' extensions.
    #[serde(default)]
    pub format: Option<String>,
    /// Hive partition columns as `COLUMN[:TYPE],...`; default: those its
    /// `key=value` folders show, if any.
    #[serde(default)]
    pub partitions: Option<String>,
    /// A CSV table's dialect as `delimiter=;,header=false,null=NA,...`.
    #[serde(default)]
    pub csv: Option<String>,
}

/// A catalog table with the schema read from its files.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableView {
    pub name: String,
    /// The principal that put it.
    #[serde(default)]
    pub owner: String,
    pub url: String,
    pub format: Option<String>,
    /// Its Hive partition columns as declared (`year:int,month:int`), if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<String>,
    /// Its CSV dialect as given, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
    pub columns: Vec<ColumnView>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ColumnView {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// `GET /v1/whoami`: the principal a token belongs to, and its bounds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// `admin` (sees and changes everything) or `user` (its own jobs and schedules).
    pub role: crate::principals::Role,
    /// Its jobs running at once, if bounded beyond the server's.
    pub max_running: Option<usize>,
    /// Its jobs waiting to run, if bounded beyond the server's queue.
    pub max_queued: Option<usize>,
    /// Its schedules, if bounded beyond the server's.
    pub max_schedules: Option<usize>,
    /// Deadline of a job that gives none, and the largest it may ask for.
    pub default_deadline_seconds: u64,
    pub max_deadline_seconds: u64,
    /// Scan limit of a job that gives none, and the largest it may ask for.
    pub default_scan_limit_bytes: u64,
    pub max_scan_limit_bytes: u64,
    /// The URL prefixes its tables and outputs may name.
    pub allowed: Vec<String>,
}

/// `GET /v1/tables`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableList {
    pub tables: Vec<TableView>,
    /// Pass as `after` for the next page (absent on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /v1/jobs/{id}/attempts`: how each task attempt ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptRecord>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// [`parse`](Self::parse), or an error that names the text and the states.
    pub fn parse_named(text: &str) -> std::result::Result<Self, String> {
        Self::parse(text).ok_or_else(|| {
            format!("unknown job state '{text}' (queued, running, succeeded, failed, cancelled)")
        })
    }

    /// No further change is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One attempt of one task, as it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub stage: u32,
    pub task: u32,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// `succeeded`, `failed`, `superseded` (stopped or ignored because the
    /// task's other copy, a backup or the straggler it backed up, won), or
    /// `running`.
    pub outcome: String,
    /// Why it failed.
    pub message: Option<String>,
    /// From hand-off to the backend to its answer (so far, while running).
    pub elapsed_ms: u64,
    /// When it was handed to the backend (ms since the epoch).
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// When it ended; absent while it runs.
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    /// Whether it was a backup copy of a straggling task.
    #[serde(default)]
    pub backup: bool,
    /// Where it ran: `local` (in-process) or `lambda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// `GET /v1/jobs/{id}/plan`: the stage DAG the job runs, as planned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PlanView {
    /// False until the job has started (its stages are planned then).
    pub planned: bool,
    /// The job's trace id (32 hex digits) when the server exports spans
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Where to see the trace, from the server's `--trace-url` template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub stages: Vec<StagePlan>,
    /// The DAG as `squall plan` prints it.
    pub text: String,
}

/// One stage of a planned job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StagePlan {
    pub stage: u32,
    /// `scan`, `reduce` or `final`.
    pub kind: String,
    /// The stages whose output it reads.
    pub inputs: Vec<u32>,
    /// Partitions (before reduce tasks are sized to the shuffle).
    pub partitions: usize,
    /// What it writes: `shuffle hash xN`, `shuffle single` or `result`.
    pub output: String,
    /// How it reads its shuffle inputs, once decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<ExchangeView>,
    /// Where its tasks run, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementView>,
    /// The stages whose keys filter its rows, as planned and once applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_filters: Vec<KeyFilterView>,
}
