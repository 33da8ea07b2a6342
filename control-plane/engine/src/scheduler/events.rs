//! What the scheduler tells whoever watches a job ([`JobEvent`] through a
//! [`ProgressSink`]), and the counters it keeps per stage.

use std::sync::Arc;

use squall_executor::{TaskFailure, TaskMetrics};

use super::exchange::ExchangeChoice;
use crate::backend::{Place, Placement};
use crate::planner::{Stage, StageDag, StageOutput};

/// What the scheduler tells whoever watches a job.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// The job was planned (told by the engine before any stage starts).
    Planned {
        dag: Arc<StageDag>,
        /// The job's trace (32 hex digits) when spans are exported.
        trace_id: Option<String>,
    },
    StageStarted {
        stage: u32,
        /// Stages in the job (stage ids run from 1 to this).
        of: usize,
        tasks: usize,
        /// The plan's partitions: more than `tasks` where reduce tasks read
        /// several shuffle partitions each (see [`super::coalesce`]).
        partitions: usize,
    },
    /// Where a stage's tasks run, and why (told right after `StageStarted`).
    StagePlaced {
        stage: u32,
        placement: Placement,
    },
    /// An attempt of a task was handed to the backend.
    TaskStarted {
        stage: u32,
        task: u32,
        attempt: u32,
        place: Place,
    },
    /// A straggling task got a backup copy; its first attempt is `attempt`.
    BackupStarted {
        stage: u32,
        task: u32,
        attempt: u32,
    },
    /// A task's winning attempt: its output is the task's.
    TaskSucceeded {
        stage: u32,
        /// What the stage does (for metrics by stage kind).
        kind: StageKind,
        task: u32,
        /// The attempt that succeeded (0 for the first).
        attempt: u32,
        /// Whether it was the backup copy's.
        backup: bool,
        /// Where it ran.
        place: Place,
        metrics: TaskMetrics,
    },
    /// An attempt stopped (or ignored) because the task's other copy won.
    TaskSuperseded {
        stage: u32,
        task: u32,
        attempt: u32,
    },
    /// Attempt `attempt` failed and the task will be tried again.
    TaskRetrying {
        stage: u32,
        task: u32,
        attempt: u32,
        failure: TaskFailure,
    },
    /// The last attempt of a task failed: the job fails.
    TaskFailed {
        stage: u32,
        task: u32,
        attempt: u32,
        failure: TaskFailure,
    },
    StageFinished {
        stage: u32,
    },
    /// Stage `stage` will not run tasks of its own: the tasks of stage
    /// `into` run its plan (see `planner::fuse`: a small stage in the one
    /// task reading it; `planner::broadcast`: a probe side's scan in the
    /// tasks of a join made a broadcast join).
    StageFused {
        stage: u32,
        into: u32,
    },
    /// Stage `stage` (not started yet) will filter its rows with the keys of
    /// a join's other side, which just committed.
    KeyFilterApplied {
        stage: u32,
        filter: KeyFilterApplied,
    },
    /// How reduce stage `stage` reads one of its shuffle inputs (told before
    /// it starts; for two-level, the combine step runs as stage
    /// `combine_stage` first).
    ExchangeChosen {
        stage: u32,
        choice: ExchangeChoice,
        combine_stage: Option<u32>,
    },
}

/// What a stage does, as metrics group stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Reads tables only and writes a shuffle.
    Scan,
    /// Reads shuffles and writes a shuffle.
    Reduce,
    /// Writes the job's result (whatever it reads).
    Final,
}

impl StageKind {
    pub fn of(stage: &Stage) -> Self {
        match (&stage.output, stage.inputs.is_empty()) {
            (StageOutput::Result, _) => StageKind::Final,
            (_, true) => StageKind::Scan,
            (_, false) => StageKind::Reduce,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Scan => "scan",
            StageKind::Reduce => "reduce",
            StageKind::Final => "final",
        }
    }
}

pub trait ProgressSink: Send + Sync {
    fn on_event(&self, event: &JobEvent);
}

/// Counters of one stage.
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    pub stage: u32,
    /// Tasks run: the plan's partitions, or fewer where reduce tasks read
    /// several shuffle partitions each.
    pub tasks: usize,
    pub partitions: usize,
    /// Tasks that each read a piece of a skewed partition.
    pub split_tasks: u32,
    pub attempts: u32,
    pub rows_in: u64,
    pub bytes_in: u64,
    /// The part of `bytes_in` read from tables.
    pub bytes_scanned: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    /// Arrow bytes of the output before compression (shuffle stages).
    pub raw_bytes_out: u64,
    /// The most memory any one task of the stage held.
    pub peak_memory_bytes: u64,
    /// Bytes the stage's tasks spilled to local disk.
    pub spilled_bytes: u64,
    /// Backup copies started for stragglers, and how many of them won.
    pub backups: u32,
    pub backup_wins: u32,
    pub elapsed_ms: u64,
    /// How the stage read each shuffle input that could be combined.
    pub exchanges: Vec<ExchangeChoice>,
    /// Where its tasks were to run, and why.
    pub placement: Option<Placement>,
    /// Tasks whose winning attempt ran in-process, and on Lambda.
    pub local_tasks: u32,
    pub lambda_tasks: u32,
    /// The combine steps run before the stage (a job's outcome lists them
    /// as stages of their own).
    pub combine_steps: Vec<StageStats>,
    /// CPU microseconds of the winning attempts by operator (and the tasks'
    /// steps outside operators): see `TaskMetrics::cpu_us`.
    pub cpu_us: std::collections::BTreeMap<String, u64>,
    /// Rows and bytes of the winning attempts by operator (`TaskMetrics::operator_output`).
    pub operator_output: std::collections::BTreeMap<String, (u64, u64)>,
    /// The filters built from other stages' join keys that its writers'
    /// rows went through.
    pub key_filters: Vec<KeyFilterApplied>,
    /// Rows those filters removed.
    pub key_filter_rows_removed: u64,
    /// The stage whose tasks ran this one's plan, where it ran no tasks of
    /// its own (see [`JobEvent::StageFused`]).
    pub fused_into: Option<u32>,
}

/// A filter from a join's build side applied to its probe stage.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFilterApplied {
    /// The stage whose keys built it.
    pub source_stage: u32,
    /// The stage holding the join.
    pub join_stage: u32,
    /// What it holds (bounds, Bloom filter size and keys).
    pub description: String,
    /// Whether the stage waited for the source to get it.
    pub waited: bool,
}
