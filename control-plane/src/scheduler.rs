//! Runs a stage DAG on a backend.
//!
//! A stage starts when every stage it reads has committed. Each task is tried up to
//! `max_attempts` times while its failures are retryable, following the commit
//! protocol (see `commit`): the first successful attempt of a task wins and failed
//! attempts' objects are deleted. On a failure that cannot be retried, no new task
//! starts, running ones are waited for, and everything the job wrote is removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::datatypes::Schema;
use datafusion::physical_plan::empty::EmptyExec;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use squall_executor::{
    OutputFile, ReadMode, StageInput, StoreRegistry, TaskAction, TaskFailure, TaskId, TaskMetrics,
    TaskOutcome, TaskSpec, WIRE_VERSION, encode_plan,
};
use tokio::sync::Semaphore;

use crate::backend::ExecutorBackend;
use crate::commit::{StageJournal, attempt_output_url, delete_all};
use crate::error::{Result, SquallError};
use crate::planner::{Stage, StageDag, StageOutput};

/// How a job's tasks are run.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Attempts per task, counting the first.
    pub max_attempts: u32,
    /// Memory pool limit of each task.
    pub memory_limit_bytes: u64,
    /// Tasks of this job running at once (None: the backend's limit).
    pub max_concurrency: Option<usize>,
    /// Tasks of any one stage running at once (None: no limit beyond the job's).
    pub max_stage_concurrency: Option<usize>,
    pub session_options: Vec<(String, String)>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            memory_limit_bytes: 2 << 30,
            max_concurrency: None,
            max_stage_concurrency: None,
            session_options: vec![],
        }
    }
}

/// What the scheduler tells whoever watches a job.
#[derive(Debug, Clone)]
pub enum JobEvent {
    StageStarted {
        stage: u32,
        /// Stages in the job (stage ids run from 1 to this).
        of: usize,
        tasks: usize,
    },
    /// An attempt of a task was handed to the backend.
    TaskStarted {
        stage: u32,
        task: u32,
        attempt: u32,
    },
    TaskSucceeded {
        stage: u32,
        task: u32,
        /// The attempt that succeeded (0 for the first).
        attempt: u32,
        metrics: TaskMetrics,
    },
    /// An attempt failed and another will run; `attempt` is the next one's number.
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

pub trait ProgressSink: Send + Sync {
    fn on_event(&self, event: &JobEvent);
}

/// Counters of one stage.
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    pub stage: u32,
    pub tasks: usize,
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
}

/// Shared by every task of one stage.
struct StageTasks {
    /// The stage plan, encoded once for all tasks; None where each task gets a
    /// plan of its own (a stage scanning files partition-for-partition).
    plan: Option<Vec<u8>>,
    inputs: Vec<StageInput>,
    /// Inputs of which each task gets only its own slice.
    sliceable: HashMap<u32, ReadMode>,
    /// The stage's own concurrency cap.
    permits: Semaphore,
    action: TaskAction,
}

impl StageTasks {
    /// What task `task` reads of the stage's inputs.
    fn task_inputs(&self, task: u32) -> Vec<StageInput> {
        self.inputs
            .iter()
            .map(|input| match self.sliceable.get(&input.stage_id) {
                Some(mode) => input.sliced(task, *mode == ReadMode::ByProducer),
                None => input.clone(),
            })
            .collect()
    }
}

/// Shared by every task of a job: stop launching once the job has failed.
struct JobGate {
    permits: Semaphore,
    failed: AtomicBool,
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
            output: StageOutput::Result,
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
            failed: AtomicBool::new(false),
        })
    }

    /// Runs every stage of `dag`; on failure removes every object the job wrote.
    pub async fn run(&self, dag: &StageDag) -> Result<DagOutcome> {
        self.resume(dag, HashMap::new()).await
    }

    /// Runs the stages of `dag` not in `done` (stage id → its committed outputs,
    /// from an earlier run of the same job that was interrupted). An entry whose
    /// task count does not match the DAG's stage is ignored and the stage runs again.
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
                let fits = dag
                    .stages
                    .iter()
                    .any(|s| s.id == *id && s.tasks == outputs.len());
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
        } else {
            match encode_plan(stage.plan.clone()) {
                Ok(plan) => Some(plan),
                Err(source) => return (stage.id, Err(SquallError::Internal { source }), vec![]),
            }
        };
        self.emit(JobEvent::StageStarted {
            stage: stage.id,
            of,
            tasks: stage.tasks,
        });
        let shared = Arc::new(StageTasks {
            plan,
            sliceable: stage.sliced_inputs.clone(),
            inputs,
            permits: Semaphore::new(
                self.options
                    .max_stage_concurrency
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .clamp(1, Semaphore::MAX_PERMITS),
            ),
            action,
        });
        tracing::debug!(
            job = self.job_id,
            stage = stage.id,
            inputs = shared.inputs.len(),
            sliced = shared.sliceable.len(),
            "stage inputs"
        );
        let mut tasks: FuturesUnordered<_> = (0..stage.tasks as u32)
            .map(|task| self.run_task(stage, task, shared.clone(), gate.clone()))
            .collect();
        let mut outputs: Vec<Option<OutputFile>> = vec![None; stage.tasks];
        let mut stats = StageStats {
            stage: stage.id,
            tasks: stage.tasks,
            ..Default::default()
        };
        let mut written = Vec::new();
        let mut error = None;
        while let Some((task, attempts, result)) = tasks.next().await {
            stats.attempts += attempts;
            match result {
                Ok((output, metrics)) => {
                    stats.rows_in += metrics.rows_in;
                    stats.bytes_in += metrics.bytes_in;
                    stats.bytes_scanned += metrics.bytes_scanned;
                    stats.rows_out += metrics.rows_out;
                    stats.bytes_out += metrics.bytes_out;
                    stats.raw_bytes_out += metrics.raw_bytes_out;
                    stats.peak_memory_bytes =
                        stats.peak_memory_bytes.max(metrics.peak_memory_bytes);
                    stats.spilled_bytes += metrics.spilled_bytes;
                    if !output.url.is_empty() {
                        written.push(output.url.clone());
                    }
                    let slot = &mut outputs[task as usize];
                    if slot.is_none() {
                        *slot = Some(output);
                    }
                }
                Err(e) => {
                    gate.failed.store(true, Ordering::SeqCst);
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = error {
            return (stage.id, Err(e), written);
        }
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            job = self.job_id,
            stage = stage.id,
            tasks = stage.tasks,
            elapsed_ms = stats.elapsed_ms,
            rows_in = stats.rows_in,
            bytes_in = stats.bytes_in,
            rows_out = stats.rows_out,
            bytes_out = stats.bytes_out,
            "stage finished"
        );
        self.emit(JobEvent::StageFinished { stage: stage.id });
        let outputs = outputs.into_iter().flatten().collect();
        (stage.id, Ok((outputs, stats)), written)
    }

    /// Runs one task until an attempt succeeds, fails for good, or attempts run out.
    async fn run_task(
        &self,
        stage: &Stage,
        task: u32,
        shared: Arc<StageTasks>,
        gate: Arc<JobGate>,
    ) -> (u32, u32, Result<(OutputFile, TaskMetrics)>) {
        let mut attempt = 0;
        loop {
            // The stage's permit first, so that a capped stage does not hold job
            // permits other stages could use.
            let (Ok(_stage_permit), Ok(_permit)) =
                (shared.permits.acquire().await, gate.permits.acquire().await)
            else {
                return (
                    task,
                    attempt,
                    Err(SquallError::Closed {
                        what: "the scheduler",
                    }),
                );
            };
            if gate.failed.load(Ordering::SeqCst) {
                return (task, attempt, Err(SquallError::Abandoned));
            }
            let id = TaskId {
                job_id: self.job_id.to_string(),
                run_id: self.run_id.to_string(),
                stage_id: stage.id,
                task,
                attempt,
            };
            // A stage that scans files partition-for-partition sends each task
            // its own files only; others share one encoding.
            let plan = match &shared.plan {
                Some(plan) => plan.clone(),
                None => match stage.task_plan(task).and_then(encode_plan) {
                    Ok(plan) => plan,
                    Err(source) => {
                        return (task, attempt, Err(SquallError::Internal { source }));
                    }
                },
            };
            let spec = TaskSpec {
                wire_version: WIRE_VERSION,
                id: id.clone(),
                action: shared.action,
                plan,
                inputs: shared.task_inputs(task),
                memory_limit_bytes: self.options.memory_limit_bytes,
                session_options: self.options.session_options.clone(),
            };
            self.emit(JobEvent::TaskStarted {
                stage: stage.id,
                task,
                attempt,
            });
            let failure = match self.backend.invoke(spec).await {
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
                        self.emit(JobEvent::TaskSucceeded {
                            stage: stage.id,
                            task,
                            attempt,
                            metrics: metrics.clone(),
                        });
                        return (task, attempt + 1, Ok((output, metrics)));
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
            attempt += 1;
            if !failure.retryable || attempt >= self.options.max_attempts {
                self.emit(JobEvent::TaskFailed {
                    stage: stage.id,
                    task,
                    attempt: attempt - 1,
                    failure: failure.clone(),
                });
                return (
                    task,
                    attempt,
                    Err(SquallError::TaskFailed {
                        stage: stage.id,
                        task,
                        attempts: attempt,
                        failure,
                    }),
                );
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
