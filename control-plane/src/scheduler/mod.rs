//! Runs a stage DAG on a backend.
//!
//! A stage starts when every stage it reads has committed. Each task is tried up to
//! `max_attempts` times while its failures are retryable, following the commit
//! protocol (see `commit`): the first successful attempt of a task wins and failed
//! attempts' objects are deleted. A task that runs out of memory is tried again
//! with a pool twice as large, up to `max_memory_limit_bytes`. A task that
//! straggles gets one backup copy ([`speculation`]); whichever copy succeeds
//! first wins, and the other is stopped and its object deleted. On a failure that
//! cannot be retried, no new task starts, running ones are waited for, and
//! everything the job wrote is removed.

pub mod coalesce;
pub mod speculation;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use datafusion::physical_plan::empty::EmptyExec;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use squall_executor::{
    OutputFile, ReadMode, Slice, StageInput, StoreRegistry, TaskAction, TaskFailure, TaskId,
    TaskMetrics, TaskOutcome, TaskSpec, TaskUsage, WIRE_VERSION, encode_plan,
};
use tokio::sync::{Semaphore, oneshot};

use crate::backend::ExecutorBackend;
use crate::commit::{StageJournal, attempt_output_url, delete_all};
use crate::cost::JobMeter;
use crate::error::{Result, SquallError};
use crate::planner::{Stage, StageDag, StageOutput};

pub use coalesce::{Coalescing, Share};
pub use speculation::Speculation;

/// How a job's tasks are run.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Attempts per task, counting the first.
    pub max_attempts: u32,
    /// Memory pool limit of each task's first attempt.
    pub memory_limit_bytes: u64,
    /// A task that runs out of memory is tried again with twice the pool, up
    /// to this (no larger than `memory_limit_bytes`: no escalation).
    pub max_memory_limit_bytes: u64,
    /// Tasks of this job running at once (None: the backend's limit).
    pub max_concurrency: Option<usize>,
    /// Tasks of any one stage running at once (None: no limit beyond the job's).
    pub max_stage_concurrency: Option<usize>,
    pub session_options: Vec<(String, String)>,
    /// When stragglers get backup copies.
    pub speculation: Speculation,
    /// How reduce tasks are sized to the shuffle they read.
    pub coalescing: Coalescing,
    /// Most bytes of result files the job may commit: past it, the job fails
    /// and its running tasks are stopped (None: no limit).
    pub max_result_bytes: Option<u64>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            memory_limit_bytes: 2 << 30,
            max_memory_limit_bytes: 8 << 30,
            speculation: Speculation::default(),
            coalescing: Coalescing::default(),
            max_concurrency: None,
            max_stage_concurrency: None,
            session_options: vec![],
            max_result_bytes: None,
        }
    }
}

/// What the scheduler tells whoever watches a job.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// The job was planned (told by the engine before any stage starts).
    Planned {
        dag: Arc<StageDag>,
    },
    StageStarted {
        stage: u32,
        /// Stages in the job (stage ids run from 1 to this).
        of: usize,
        tasks: usize,
        /// The plan's partitions: more than `tasks` where reduce tasks read
        /// several shuffle partitions each (see [`coalesce`]).
        partitions: usize,
    },
    /// An attempt of a task was handed to the backend.
    TaskStarted {
        stage: u32,
        task: u32,
        attempt: u32,
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
}

/// The committed outputs of a finished DAG.
#[derive(Debug, Clone)]
pub struct DagOutcome {
    /// Result files of the final stage, in task order.
    pub result_files: Vec<OutputFile>,
    pub stages: Vec<StageStats>,
}

pub struct Scheduler<'a> {
    pub job_id: &'a str,
    /// This run of the job (see `TaskId::run_id`).
    pub run_id: &'a str,
    pub backend: Arc<dyn ExecutorBackend>,
    pub stores: Arc<StoreRegistry>,
    pub options: &'a TaskOptions,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Told of every committed stage, so an interrupted job can be resumed.
    pub journal: Option<Arc<dyn StageJournal>>,
    /// Takes in what every attempt used.
    pub meter: Arc<JobMeter>,
}

/// Bills one attempt when dropped, if it was not billed with its answer: an
/// attempt stopped while in the backend's hands (superseded, or its job
/// stopped) is billed at the time it was waited for.
struct AttemptBill<'a> {
    meter: &'a JobMeter,
    stage: u32,
    began: Instant,
    bills_invocations: bool,
    done: bool,
}

impl AttemptBill<'_> {
    fn answered(&mut self, usage: &TaskUsage) {
        self.done = true;
        self.meter.attempt(
            self.stage,
            usage,
            self.began.elapsed(),
            self.bills_invocations,
        );
    }
}

impl Drop for AttemptBill<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.meter.attempt(
                self.stage,
                &TaskUsage::default(),
                self.began.elapsed(),
                self.bills_invocations,
            );
        }
    }
}

/// Shared by every task of one stage.
struct StageTasks {
    /// The stage plan, encoded once for all tasks; None where each task gets a
    /// plan of its own (a stage scanning files partition-for-partition).
    plan: Option<Vec<u8>>,
    inputs: Vec<StageInput>,
    /// Inputs of which each task gets only its own slice.
    sliceable: HashMap<u32, ReadMode>,
    /// What each task reads, where reduce tasks were sized to the shuffle;
    /// None: task `t` reads partition `t`.
    groups: Option<Vec<Share>>,
    /// The input whose skewed partitions are split by producer.
    split_input: Option<u32>,
    /// The stage's own concurrency cap.
    permits: Semaphore,
    action: TaskAction,
    /// One per task.
    ledgers: Vec<TaskLedger>,
}

impl StageTasks {
    /// The reader partitions task `task` reads.
    fn slice(&self, task: u32) -> Slice {
        self.groups
            .as_ref()
            .and_then(|g| g.get(task as usize))
            .map_or(Slice::one(task), |share| share.slice)
    }

    /// The plan partition task `task` runs, where it is not the task's index.
    fn partition(&self, task: u32) -> Option<u32> {
        self.groups.as_ref().map(|_| self.slice(task).start)
    }

    /// What task `task` reads of the stage's inputs.
    fn task_inputs(&self, task: u32) -> Vec<StageInput> {
        let slice = self.slice(task);
        let producers = self
            .groups
            .as_ref()
            .and_then(|g| g.get(task as usize))
            .and_then(|share| share.producers.clone());
        self.inputs
            .iter()
            .map(|input| match self.sliceable.get(&input.stage_id) {
                Some(mode) => {
                    let mut sliced = input.sliced(slice, *mode == ReadMode::ByProducer);
                    // A piece of a split partition: some producers of it only.
                    if let Some(range) = &producers
                        && self.split_input == Some(input.stage_id)
                    {
                        let end = range.end.min(sliced.producers.len());
                        let start = range.start.min(end);
                        sliced.producers = sliced.producers[start..end].to_vec();
                    }
                    sliced
                }
                None => input.clone(),
            })
            .collect()
    }

    /// The failure of a task out of memory at the largest pool it may have,
    /// naming the pool and what the task reads from shuffles.
    fn out_of_memory(&self, task: u32, pool: u64, failure: TaskFailure) -> TaskFailure {
        let inputs = self.task_inputs(task);
        let slots = || {
            inputs
                .iter()
                .flat_map(|i| &i.producers)
                .flat_map(|f| &f.partitions)
        };
        let bytes: u64 = slots().map(|p| p.length).sum();
        let rows: u64 = slots().map(|p| p.rows).sum();
        let read = if inputs.is_empty() {
            "it reads tables only".to_string()
        } else {
            format!("it reads {bytes} shuffle bytes in {rows} rows")
        };
        TaskFailure {
            message: format!(
                "out of memory with a pool of {pool} bytes, the largest allowed \
                 (raise --task-memory-max); {read}: {}",
                failure.message
            ),
            ..failure
        }
    }
}

/// Which copy of a task: every task has a primary; a straggler gets a backup.
const PRIMARY: usize = 0;
const BACKUP: usize = 1;

/// One task of a running stage: the attempt numbers its copies share, and the
/// attempt each copy runs now.
#[derive(Debug, Default)]
struct TaskLedger {
    next_attempt: AtomicU32,
    /// The memory pool of the task's next attempt, once raised after running
    /// out of memory (0: the job's `memory_limit_bytes`). Shared, so that a
    /// backup starts from what the task is known to need.
    pool: AtomicU64,
    /// Per copy: the attempt in the backend's hands, and since when.
    running: Mutex<[Option<(u32, Instant)>; 2]>,
}

impl TaskLedger {
    fn next_attempt(&self) -> u32 {
        self.next_attempt.fetch_add(1, Ordering::SeqCst)
    }

    /// The number the next attempt will get.
    fn peek_attempt(&self) -> u32 {
        self.next_attempt.load(Ordering::SeqCst)
    }

    /// Attempts started so far, by both copies.
    fn attempts(&self) -> u32 {
        self.peek_attempt()
    }

    /// The pool of the next attempt, starting from `base`.
    fn pool(&self, base: u64) -> u64 {
        self.pool.load(Ordering::SeqCst).max(base)
    }

    fn raise_pool(&self, to: u64) {
        self.pool.fetch_max(to, Ordering::SeqCst);
    }

    fn running(&self, copy: usize) -> Option<(u32, Instant)> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())[copy]
    }

    fn set_running(&self, copy: usize, now: Option<(u32, Instant)>) {
        self.running.lock().unwrap_or_else(|e| e.into_inner())[copy] = now;
    }
}

/// A running stage as its loop keeps it.
struct StageRun {
    /// Each task's winning output.
    outputs: Vec<Option<OutputFile>>,
    stats: StageStats,
    /// Objects of winning attempts (removed if the job fails).
    written: Vec<String>,
    error: Option<SquallError>,
    /// How long each winning attempt took, as the scheduler saw it.
    succeeded: Vec<Duration>,
    /// Tasks that got a backup.
    backed_up: HashSet<u32>,
    /// Copies still running: dropping one's sender stops it.
    live: HashMap<(u32, usize), oneshot::Sender<()>>,
}

/// How one copy of a task ended.
struct CopyEnd {
    task: u32,
    copy: usize,
    result: std::result::Result<Won, Ended>,
}

/// A successful attempt.
struct Won {
    attempt: u32,
    /// From hand-off to the backend to its answer.
    wall: Duration,
    output: OutputFile,
    metrics: TaskMetrics,
}

/// Why a copy ended without success.
enum Ended {
    /// The task's other copy won first.
    Superseded,
    Failed(SquallError),
}

/// Shared by every task of a job: stop launching once the job has failed.
struct JobGate {
    permits: Semaphore,
    /// Tasks of the job that run at once.
    concurrency: usize,
    failed: AtomicBool,
    /// How long the job's winning attempts took, in every stage so far: what a
    /// stage of one task is compared with for backups.
    succeeded: Mutex<Vec<Duration>>,
}

impl Scheduler<'_> {
    /// Runs `tasks` ping tasks (see [`TaskAction::Ping`]) as one stage, through the
    /// same path as real tasks: measures what the scheduler and backend cost per task.
    pub async fn ping(&self, tasks: usize) -> Result<StageStats> {
        let stage = Stage {
            id: 1,
            plan: Arc::new(EmptyExec::new(Arc::new(Schema::empty()))),
            tasks,
            inputs: vec![],
            sliced_inputs: HashMap::new(),
            sliced_scans: false,
            split_input: None,
            output: StageOutput::Result,
            encoded: None,
        };
        let gate = self.gate();
        let (_, result, _) = self
            .run_stage(&stage, 1, vec![], gate, TaskAction::Ping)
            .await;
        result.map(|(_, stats)| stats)
    }

    fn gate(&self) -> Arc<JobGate> {
        let concurrency = self
            .options
            .max_concurrency
            .unwrap_or_else(|| self.backend.max_concurrency())
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(JobGate {
            permits: Semaphore::new(concurrency),
            concurrency,
            failed: AtomicBool::new(false),
            succeeded: Mutex::default(),
        })
    }

    /// Runs every stage of `dag`; on failure removes every object the job wrote.
    pub async fn run(&self, dag: &StageDag) -> Result<DagOutcome> {
        self.resume(dag, HashMap::new()).await
    }

    /// Runs the stages of `dag` not in `done` (stage id → its committed outputs,
    /// from an earlier run of the same job that was interrupted). An entry with
    /// no outputs, or more than the DAG's stage has partitions, is ignored and
    /// the stage runs again.
    pub async fn resume(
        &self,
        dag: &StageDag,
        done: HashMap<u32, Vec<OutputFile>>,
    ) -> Result<DagOutcome> {
        let gate = self.gate();
        let mut written: Vec<String> = Vec::new();
        let done = done
            .into_iter()
            .filter(|(id, outputs)| {
                // A reduce stage may have run fewer tasks than partitions.
                let fits = dag
                    .stages
                    .iter()
                    .any(|s| s.id == *id && !outputs.is_empty() && outputs.len() <= s.tasks);
                if !fits {
                    tracing::warn!(
                        job = self.job_id,
                        stage = id,
                        "committed outputs do not fit the plan; running the stage again"
                    );
                }
                fits
            })
            .collect();
        let outcome = self.run_stages(dag, &gate, &mut written, done).await;
        if outcome.is_err() {
            delete_all(&self.stores, &written).await;
        }
        outcome
    }

    async fn run_stages(
        &self,
        dag: &StageDag,
        gate: &Arc<JobGate>,
        written: &mut Vec<String>,
        done: HashMap<u32, Vec<OutputFile>>,
    ) -> Result<DagOutcome> {
        let mut stats: Vec<StageStats> = done
            .iter()
            .map(|(id, outputs)| StageStats {
                stage: *id,
                tasks: outputs.len(),
                ..StageStats::default()
            })
            .collect();
        let mut committed = done;
        let mut pending: Vec<&Stage> = dag
            .stages
            .iter()
            .filter(|s| !committed.contains_key(&s.id))
            .collect();
        let mut running = FuturesUnordered::new();
        let mut first_error = None;
        loop {
            if first_error.is_none() {
                let (ready, waiting): (Vec<&Stage>, Vec<&Stage>) = pending
                    .into_iter()
                    .partition(|s| s.inputs.iter().all(|i| committed.contains_key(i)));
                pending = waiting;
                for stage in ready {
                    let inputs = stage
                        .inputs
                        .iter()
                        .map(|id| StageInput {
                            slice: None,
                            stage_id: *id,
                            producers: committed[id].clone(),
                        })
                        .collect();
                    running.push(self.run_stage(
                        stage,
                        dag.stages.len(),
                        inputs,
                        gate.clone(),
                        TaskAction::Run,
                    ));
                }
            }
            let Some((stage, result, stage_written)) = running.next().await else {
                break;
            };
            written.extend(stage_written);
            match result {
                Ok((outputs, stage_stats)) => {
                    if let Some(journal) = &self.journal
                        && let Err(e) = journal.committed(stage, &outputs)
                    {
                        // The job can still finish; only a resume would redo the stage.
                        tracing::warn!(
                            job = self.job_id,
                            stage,
                            "could not record the commit: {e}"
                        );
                    }
                    committed.insert(stage, outputs);
                    stats.push(stage_stats);
                }
                Err(e) => {
                    gate.failed.store(true, Ordering::SeqCst);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let final_id = dag.final_stage().id;
        let result_files = committed.remove(&final_id).unwrap_or_default();
        // Shuffle files are not needed once the result is written.
        let shuffle: Vec<String> = committed
            .values()
            .flatten()
            .map(|f| f.url.clone())
            .collect();
        delete_all(&self.stores, &shuffle).await;
        stats.sort_by_key(|s| s.stage);
        Ok(DagOutcome {
            result_files,
            stages: stats,
        })
    }

    /// Runs all tasks of a stage. Returns the stage id, the committed outputs (or the
    /// error) and every object URL its attempts may have written that is still there.
    async fn run_stage(
        &self,
        stage: &Stage,
        of: usize,
        inputs: Vec<StageInput>,
        gate: Arc<JobGate>,
        action: TaskAction,
    ) -> (u32, Result<(Vec<OutputFile>, StageStats)>, Vec<String>) {
        let started = Instant::now();
        let plan = if stage.sliced_scans {
            None
        } else if let Some(encoded) = &stage.encoded {
            Some(encoded.as_ref().clone())
        } else {
            match encode_plan(stage.plan.clone()) {
                Ok(plan) => Some(plan),
                Err(source) => return (stage.id, Err(SquallError::Internal { source }), vec![]),
            }
        };
        let groups = self.reduce_groups(stage, &inputs, &gate, action);
        let tasks = groups.as_ref().map_or(stage.tasks, Vec::len);
        let split_tasks = groups
            .iter()
            .flatten()
            .filter(|s| s.producers.is_some())
            .count();
        if groups.is_some() {
            tracing::info!(
                job = self.job_id,
                stage = stage.id,
                partitions = stage.tasks,
                tasks,
                split_tasks,
                "reduce tasks sized to the shuffle"
            );
        }
        self.emit(JobEvent::StageStarted {
            stage: stage.id,
            of,
            tasks,
            partitions: stage.tasks,
        });
        let shared = Arc::new(StageTasks {
            plan,
            sliceable: stage.sliced_inputs.clone(),
            inputs,
            groups,
            split_input: stage.split_input,
            permits: Semaphore::new(
                self.options
                    .max_stage_concurrency
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .clamp(1, Semaphore::MAX_PERMITS),
            ),
            action,
            ledgers: (0..tasks).map(|_| TaskLedger::default()).collect(),
        });
        tracing::debug!(
            job = self.job_id,
            stage = stage.id,
            inputs = shared.inputs.len(),
            sliced = shared.sliceable.len(),
            "stage inputs"
        );
        let mut run = StageRun {
            outputs: vec![None; tasks],
            stats: StageStats {
                stage: stage.id,
                tasks,
                partitions: stage.tasks,
                split_tasks: split_tasks as u32,
                ..Default::default()
            },
            written: Vec::new(),
            error: None,
            succeeded: Vec::new(),
            backed_up: HashSet::new(),
            live: HashMap::new(),
        };
        let mut copies = FuturesUnordered::new();
        for task in 0..tasks as u32 {
            copies.push(self.start_copy(stage, task, PRIMARY, &shared, &gate, &mut run));
        }
        let policy = &self.options.speculation;
        let speculate = policy.enabled && action == TaskAction::Run;
        let mut ticker = tokio::time::interval(policy.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                end = copies.next() => {
                    let Some(end) = end else { break };
                    self.copy_ended(stage, &shared, &gate, &mut run, end).await;
                }
                _ = ticker.tick(), if speculate && run.error.is_none() => {
                    for task in self.stragglers(&shared, &gate, &run) {
                        let attempt = shared.ledgers[task as usize].peek_attempt();
                        self.emit(JobEvent::BackupStarted { stage: stage.id, task, attempt });
                        tracing::info!(job = self.job_id, stage = stage.id, task, attempt, "backup started");
                        run.backed_up.insert(task);
                        run.stats.backups += 1;
                        copies.push(self.start_copy(stage, task, BACKUP, &shared, &gate, &mut run));
                    }
                }
            }
        }
        run.stats.attempts = shared.ledgers.iter().map(TaskLedger::attempts).sum();
        if let Some(e) = run.error {
            return (stage.id, Err(e), run.written);
        }
        let mut stats = run.stats;
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            job = self.job_id,
            stage = stage.id,
            tasks,
            elapsed_ms = stats.elapsed_ms,
            rows_in = stats.rows_in,
            bytes_in = stats.bytes_in,
            rows_out = stats.rows_out,
            bytes_out = stats.bytes_out,
            backups = stats.backups,
            backup_wins = stats.backup_wins,
            "stage finished"
        );
        self.emit(JobEvent::StageFinished { stage: stage.id });
        let outputs = run.outputs.into_iter().flatten().collect();
        (stage.id, Ok((outputs, stats)), run.written)
    }

    /// A copy of `task`, which ends early (superseded) when its stop sender in
    /// `run.live` is dropped.
    fn start_copy<'s>(
        &'s self,
        stage: &'s Stage,
        task: u32,
        copy: usize,
        shared: &Arc<StageTasks>,
        gate: &Arc<JobGate>,
        run: &mut StageRun,
    ) -> impl std::future::Future<Output = CopyEnd> + 's {
        let (stop, stopped) = oneshot::channel::<()>();
        run.live.insert((task, copy), stop);
        let attempts = self.run_copy(stage, task, copy, shared.clone(), gate.clone());
        async move {
            tokio::select! {
                result = attempts => CopyEnd { task, copy, result },
                // Dropping `attempts` drops its invocation: the backend stops it.
                _ = stopped => CopyEnd { task, copy, result: Err(Ended::Superseded) },
            }
        }
    }

    /// What each task of a reduce stage reads, sized to the bytes of the
    /// shuffle partitions its inputs committed (see [`coalesce`]); None where
    /// the stage runs one task per partition: it scans files, or reads an
    /// input other than partition-for-partition, or coalescing is off, or
    /// there is nothing to change.
    fn reduce_groups(
        &self,
        stage: &Stage,
        inputs: &[StageInput],
        gate: &JobGate,
        action: TaskAction,
    ) -> Option<Vec<Share>> {
        let coalescing = &self.options.coalescing;
        let eligible = coalescing.enabled
            && action == TaskAction::Run
            && !stage.sliced_scans
            && !stage.sliced_inputs.is_empty()
            && stage
                .sliced_inputs
                .values()
                .all(|m| *m == ReadMode::Partitioned);
        if !eligible {
            return None;
        }
        let mut sizes = vec![0u64; stage.tasks];
        let mut split: Option<Vec<Vec<u64>>> = None;
        for input in inputs {
            if !stage.sliced_inputs.contains_key(&input.stage_id) {
                continue;
            }
            let splits = stage.split_input == Some(input.stage_id);
            for producer in &input.producers {
                if producer.partitions.len() != stage.tasks {
                    return None;
                }
                for (size, slot) in sizes.iter_mut().zip(&producer.partitions) {
                    *size += slot.length;
                }
                if splits {
                    split
                        .get_or_insert_with(Vec::new)
                        .push(producer.partitions.iter().map(|s| s.length).collect());
                }
            }
        }
        let parallelism = self
            .options
            .max_stage_concurrency
            .unwrap_or(gate.concurrency)
            .min(gate.concurrency);
        let shares = coalescing.shares(&sizes, split.as_deref(), parallelism);
        let changed = shares.len() != stage.tasks || shares.iter().any(|s| s.producers.is_some());
        changed.then_some(shares)
    }

    /// Tasks that straggle now and get a backup.
    fn stragglers(&self, shared: &StageTasks, gate: &JobGate, run: &StageRun) -> Vec<u32> {
        let tasks = shared.ledgers.len();
        let running: Vec<(u32, Duration)> = (0..tasks as u32)
            .filter(|t| run.outputs[*t as usize].is_none() && !run.backed_up.contains(t))
            .filter_map(|t| {
                shared.ledgers[t as usize]
                    .running(PRIMARY)
                    .map(|(_, since)| (t, since.elapsed()))
            })
            .collect();
        if running.is_empty() {
            return vec![];
        }
        // A backend that throttles has its limit lowered: a backup would only
        // add to the load (and a throttled task looks slow for that reason).
        if self.backend.flow().is_some_and(|f| f.limit < f.max) {
            return vec![];
        }
        let job_wide;
        let succeeded = if tasks == 1 {
            job_wide = gate
                .succeeded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            &job_wide
        } else {
            &run.succeeded
        };
        self.options
            .speculation
            .pick(tasks, succeeded, &running, run.backed_up.len())
    }

    /// Takes in how one copy of a task ended: the first success wins and stops
    /// the other copy; a failure fails the task unless its other copy still runs.
    async fn copy_ended(
        &self,
        stage: &Stage,
        shared: &StageTasks,
        gate: &JobGate,
        run: &mut StageRun,
        end: CopyEnd,
    ) {
        let CopyEnd { task, copy, result } = end;
        run.live.remove(&(task, copy));
        let other = 1 - copy;
        let ledger = &shared.ledgers[task as usize];
        match result {
            Ok(won) if run.outputs[task as usize].is_none() => {
                let metrics = &won.metrics;
                self.meter.scanned(stage.id, metrics.bytes_scanned);
                run.stats.rows_in += metrics.rows_in;
                run.stats.bytes_in += metrics.bytes_in;
                run.stats.bytes_scanned += metrics.bytes_scanned;
                run.stats.rows_out += metrics.rows_out;
                run.stats.bytes_out += metrics.bytes_out;
                run.stats.raw_bytes_out += metrics.raw_bytes_out;
                run.stats.peak_memory_bytes =
                    run.stats.peak_memory_bytes.max(metrics.peak_memory_bytes);
                run.stats.spilled_bytes += metrics.spilled_bytes;
                if copy == BACKUP {
                    run.stats.backup_wins += 1;
                }
                run.succeeded.push(won.wall);
                gate.succeeded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(won.wall);
                self.emit(JobEvent::TaskSucceeded {
                    stage: stage.id,
                    kind: StageKind::of(stage),
                    task,
                    attempt: won.attempt,
                    backup: copy == BACKUP,
                    metrics: won.metrics,
                });
                if !won.output.url.is_empty() {
                    run.written.push(won.output.url.clone());
                }
                run.outputs[task as usize] = Some(won.output);
                // The other copy lost: stop it (its future ends as superseded).
                run.live.remove(&(task, other));
                if let (StageOutput::Result, Some(limit)) =
                    (&stage.output, self.options.max_result_bytes)
                {
                    let written = run.outputs.iter().flatten().map(|o| o.size).sum();
                    if written > limit && run.error.is_none() {
                        gate.failed.store(true, Ordering::SeqCst);
                        run.error = Some(SquallError::ResultTooLarge { limit, written });
                        // Stop the rest: nothing more is written.
                        run.live.clear();
                    }
                }
            }
            // Both copies succeeded before the loser could be stopped.
            Ok(late) => {
                self.emit(JobEvent::TaskSuperseded {
                    stage: stage.id,
                    task,
                    attempt: late.attempt,
                });
                delete_all(&self.stores, &[late.output.url]).await;
            }
            Err(Ended::Superseded) => {
                if let Some((attempt, _)) = ledger.running(copy) {
                    self.emit(JobEvent::TaskSuperseded {
                        stage: stage.id,
                        task,
                        attempt,
                    });
                    if let Some(url) =
                        attempt_output_url(&stage.plan, &self.task_id(stage, task, attempt))
                    {
                        delete_all(&self.stores, &[url]).await;
                    }
                }
            }
            Err(Ended::Failed(e)) => {
                if run.outputs[task as usize].is_some() || run.live.contains_key(&(task, other)) {
                    // The task is done, or its other copy may still make it.
                    tracing::info!(
                        job = self.job_id,
                        stage = stage.id,
                        task,
                        "a copy failed: {e}"
                    );
                } else {
                    gate.failed.store(true, Ordering::SeqCst);
                    run.error.get_or_insert(e);
                }
            }
        }
    }

    fn task_id(&self, stage: &Stage, task: u32, attempt: u32) -> TaskId {
        TaskId {
            job_id: self.job_id.to_string(),
            run_id: self.run_id.to_string(),
            stage_id: stage.id,
            task,
            attempt,
        }
    }

    /// Runs one copy of a task until an attempt succeeds, fails for good, or
    /// attempts run out. An attempt that runs out of memory is tried again with
    /// twice the pool while that stays within `max_memory_limit_bytes`, without
    /// counting against `max_attempts`.
    async fn run_copy(
        &self,
        stage: &Stage,
        task: u32,
        copy: usize,
        shared: Arc<StageTasks>,
        gate: Arc<JobGate>,
    ) -> std::result::Result<Won, Ended> {
        let ledger = &shared.ledgers[task as usize];
        let mut failures = 0;
        loop {
            let memory = ledger.pool(self.options.memory_limit_bytes);
            // The stage's permit first, so that a capped stage does not hold job
            // permits other stages could use.
            let (Ok(_stage_permit), Ok(_permit)) =
                (shared.permits.acquire().await, gate.permits.acquire().await)
            else {
                return Err(Ended::Failed(SquallError::Closed {
                    what: "the scheduler",
                }));
            };
            if gate.failed.load(Ordering::SeqCst) {
                return Err(Ended::Failed(SquallError::Abandoned));
            }
            let attempt = ledger.next_attempt();
            let id = self.task_id(stage, task, attempt);
            // A stage that scans files partition-for-partition sends each task
            // its own files only; others share one encoding.
            let plan = match &shared.plan {
                Some(plan) => plan.clone(),
                None => match stage.task_plan(task).and_then(encode_plan) {
                    Ok(plan) => plan,
                    Err(source) => {
                        return Err(Ended::Failed(SquallError::Internal { source }));
                    }
                },
            };
            let spec = TaskSpec {
                wire_version: WIRE_VERSION,
                id: id.clone(),
                action: shared.action,
                plan,
                partition: shared.partition(task),
                inputs: shared.task_inputs(task),
                memory_limit_bytes: memory,
                session_options: self.options.session_options.clone(),
            };
            self.emit(JobEvent::TaskStarted {
                stage: stage.id,
                task,
                attempt,
            });
            let began = Instant::now();
            ledger.set_running(copy, Some((attempt, began)));
            let mut bill = AttemptBill {
                meter: &self.meter,
                stage: stage.id,
                began,
                bills_invocations: self.backend.bills_invocations(),
                done: false,
            };
            let answer = self.backend.invoke(spec).await;
            ledger.set_running(copy, None);
            match &answer {
                Ok(result) => bill.answered(&result.usage),
                Err(_) => bill.answered(&TaskUsage::default()),
            }
            let failure = match answer {
                Ok(result) if result.wire_version != WIRE_VERSION => TaskFailure {
                    kind: squall_executor::FailureKind::WireVersion,
                    message: format!(
                        "executor answered with wire version {}, expected {WIRE_VERSION}",
                        result.wire_version
                    ),
                    retryable: false,
                },
                Ok(result) => match result.outcome {
                    TaskOutcome::Succeeded { output, metrics } => {
                        tracing::debug!(
                            job = self.job_id,
                            stage = stage.id,
                            task,
                            attempt,
                            executor_ms = metrics.elapsed_ms,
                            rows_in = metrics.rows_in,
                            rows_out = metrics.rows_out,
                            bytes_out = metrics.bytes_out,
                            "task finished"
                        );
                        return Ok(Won {
                            attempt,
                            wall: began.elapsed(),
                            output,
                            metrics,
                        });
                    }
                    TaskOutcome::Failed(failure) => failure,
                },
                // Could not reach the executor: another attempt may.
                Err(e) => TaskFailure {
                    kind: squall_executor::FailureKind::Internal,
                    message: e.to_string(),
                    retryable: true,
                },
            };
            // The failed attempt's object, if it got written, is not part of the job.
            if let Some(url) = attempt_output_url(&stage.plan, &id) {
                delete_all(&self.stores, &[url]).await;
            }
            let out_of_memory = failure.kind == squall_executor::FailureKind::ResourcesExhausted;
            let larger = memory
                .saturating_mul(2)
                .min(self.options.max_memory_limit_bytes);
            if out_of_memory && larger > memory {
                tracing::info!(
                    job = self.job_id,
                    stage = stage.id,
                    task,
                    attempt,
                    from = memory,
                    to = larger,
                    "out of memory; trying again with a larger pool"
                );
                ledger.raise_pool(larger);
                self.emit(JobEvent::TaskRetrying {
                    stage: stage.id,
                    task,
                    attempt,
                    failure,
                });
                continue;
            }
            failures += 1;
            if !failure.retryable || failures >= self.options.max_attempts {
                let failure = if out_of_memory {
                    shared.out_of_memory(task, memory, failure)
                } else {
                    failure
                };
                self.emit(JobEvent::TaskFailed {
                    stage: stage.id,
                    task,
                    attempt,
                    failure: failure.clone(),
                });
                return Err(Ended::Failed(SquallError::TaskFailed {
                    stage: stage.id,
                    task,
                    attempts: ledger.attempts(),
                    failure,
                }));
            }
            self.emit(JobEvent::TaskRetrying {
                stage: stage.id,
                task,
                attempt,
                failure,
            });
        }
    }

    fn emit(&self, event: JobEvent) {
        if let Some(sink) = &self.progress {
            sink.on_event(&event);
        }
    }
}
