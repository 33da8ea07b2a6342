//! One copy of a task, attempt after attempt: each attempt's spec, its hand-off
//! to the backend and its bill, what its answer means, and (through
//! [`after_failure`]) what follows a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::Instrument;

use squall_executor::{
    FailureKind, OutputFile, TaskFailure, TaskId, TaskMetrics, TaskOutcome, TaskResult, TaskSpec,
    TaskUsage, WIRE_VERSION, encode_plan,
};

use super::context::{JobGate, Scheduler};
use super::events::JobEvent;
use super::retry::{Retry, after_failure};
use super::tasks::{StageTasks, TaskLedger};
use crate::backend::Place;
use crate::commit::{attempt_output_url, delete_all};
use crate::cost::JobMeter;
use crate::error::{Result, SquallError};
use crate::planner::Stage;

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

/// A successful attempt.
pub(super) struct Won {
    pub(super) attempt: u32,
    /// From hand-off to the backend to its answer.
    pub(super) wall: Duration,
    /// Where it ran.
    pub(super) place: Place,
    pub(super) output: OutputFile,
    pub(super) metrics: TaskMetrics,
}

/// Why a copy ended without success.
pub(super) enum Ended {
    /// The task's other copy won first.
    Superseded,
    Failed(SquallError),
}

impl Scheduler<'_> {
    /// Runs one copy of a task until an attempt succeeds, fails for good, or
    /// attempts run out. An attempt that runs out of memory is tried again with
    /// twice the pool while that stays within `max_memory_limit_bytes`, without
    /// counting against `max_attempts`.
    pub(super) async fn run_copy(
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
            let queued = tracing::info_span!("queued", stage = stage.id, task);
            let permits = async { (shared.permits.acquire().await, gate.permits.acquire().await) };
            let (Ok(_stage_permit), Ok(_permit)) = permits.instrument(queued).await else {
                return Err(Ended::Failed(SquallError::Closed {
                    what: "the scheduler",
                }));
            };
            if gate.failed.load(Ordering::SeqCst) {
                return Err(Ended::Failed(SquallError::Abandoned));
            }
            let attempt = ledger.next_attempt();
            let id = self.task_id(stage, task, attempt);
            let spec = self
                .attempt_spec(stage, &shared, id.clone(), memory)
                .map_err(Ended::Failed)?;
            let failure = match self.attempt(stage, copy, &shared, ledger, spec).await {
                Ok(won) => return Ok(won),
                Err(failure) => failure,
            };
            // The failed attempt's object, if it got written, is not part of the job.
            if let Some(url) = attempt_output_url(&stage.plan, &id) {
                delete_all(&self.stores, &[url]).await;
            }
            match after_failure(&failure, memory, failures, self.options) {
                Retry::LargerPool(larger) => {
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
                }
                Retry::Again => failures += 1,
                Retry::GiveUp { out_of_memory } => {
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
            }
            self.emit(JobEvent::TaskRetrying {
                stage: stage.id,
                task,
                attempt,
                failure,
            });
        }
    }

    /// The spec of attempt `id` with a memory pool of `memory` bytes. A stage
    /// that scans files partition-for-partition sends each task its own files
    /// only; others share one encoding.
    fn attempt_spec(
        &self,
        stage: &Stage,
        shared: &StageTasks,
        id: TaskId,
        memory: u64,
    ) -> Result<TaskSpec> {
        let task = id.task;
        let plan = match &shared.plan {
            Some(plan) => plan.clone(),
            None => stage
                .task_plan(task)
                .and_then(encode_plan)
                .map_err(|source| SquallError::Internal { source })?,
        };
        Ok(TaskSpec {
            wire_version: WIRE_VERSION,
            id,
            action: shared.action,
            plan,
            partition: shared.partition(task),
            inputs: shared.task_inputs(task),
            memory_limit_bytes: memory,
            session_options: self.options.session_options.clone(),
            hedging: shared.hedging(&self.options.hedging),
            shuffle_codec: self.options.shuffle_codec.unwrap_or_default(),
            trace_context: None,
        })
    }

    /// Hands one attempt to the backend as copy `copy` of its task and bills
    /// it: what it wrote, or why it failed.
    async fn attempt(
        &self,
        stage: &Stage,
        copy: usize,
        shared: &StageTasks,
        ledger: &TaskLedger,
        spec: TaskSpec,
    ) -> std::result::Result<Won, TaskFailure> {
        let place = self.backend.route(&shared.placed);
        let span = tracing::info_span!(
            "attempt",
            job = %self.job_id,
            stage = stage.id,
            task = spec.id.task,
            attempt = spec.id.attempt,
            place = ?place,
            backup = copy != 0,
        );
        self.attempt_at(stage, copy, shared, ledger, spec, place)
            .instrument(span)
            .await
    }

    async fn attempt_at(
        &self,
        stage: &Stage,
        copy: usize,
        shared: &StageTasks,
        ledger: &TaskLedger,
        mut spec: TaskSpec,
        place: Place,
    ) -> std::result::Result<Won, TaskFailure> {
        let (task, attempt) = (spec.id.task, spec.id.attempt);
        // The executor's spans join this attempt's, wherever it runs.
        spec.trace_context = squall_executor::telemetry::trace_context();
        self.emit(JobEvent::TaskStarted {
            stage: stage.id,
            task,
            attempt,
            place,
        });
        let began = Instant::now();
        ledger.set_running(copy, Some((attempt, began)));
        let mut bill = AttemptBill {
            meter: &self.meter,
            stage: stage.id,
            began,
            bills_invocations: place == Place::Lambda,
            done: false,
        };
        let answer = self.backend.invoke_at(place, spec).await;
        ledger.set_running(copy, None);
        match &answer {
            Ok(result) => {
                bill.answered(&result.usage);
                if let Some(p95) = result.usage.read_p95_ms {
                    shared.noted_reads(p95);
                }
            }
            Err(_) => bill.answered(&TaskUsage::default()),
        }
        let (output, metrics) = answer_of(answer).inspect_err(|failure| {
            tracing::info!(
                kind = ?failure.kind,
                retryable = failure.retryable,
                error = %failure.message,
                "attempt failed"
            );
        })?;
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
        Ok(Won {
            attempt,
            wall: began.elapsed(),
            place,
            output,
            metrics,
        })
    }
}

/// What an attempt's answer from the backend means: its output and metrics,
/// or its failure. An executor that cannot be reached may be reached by
/// another attempt; one that speaks another wire version will not change.
fn answer_of(
    answer: Result<TaskResult>,
) -> std::result::Result<(OutputFile, TaskMetrics), TaskFailure> {
    match answer {
        Ok(result) if result.wire_version != WIRE_VERSION => Err(TaskFailure {
            kind: FailureKind::WireVersion,
            message: format!(
                "executor answered with wire version {}, expected {WIRE_VERSION}",
                result.wire_version
            ),
            retryable: false,
        }),
        Ok(result) => match result.outcome {
            TaskOutcome::Succeeded { output, metrics } => Ok((output, metrics)),
            TaskOutcome::Failed(failure) => Err(failure),
        },
        Err(e) => Err(TaskFailure {
            kind: FailureKind::Internal,
            message: e.to_string(),
            retryable: true,
        }),
    }
}
