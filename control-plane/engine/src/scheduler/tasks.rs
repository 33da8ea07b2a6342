//! What the tasks of one running stage share: the encoded plan, the inputs
//! and what each task reads of them, the stage's concurrency cap, and one
//! ledger per task (attempt numbers, memory pool, the copies running).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use squall_executor::{Hedging, ReadMode, Slice, StageInput, TaskAction, TaskFailure};
use tokio::sync::Semaphore;

use super::coalesce::Share;
use crate::backend::Placed;

/// Shared by every task of one stage.
pub(super) struct StageTasks {
    /// The stage plan, encoded once for all tasks; None where each task gets a
    /// plan of its own (a stage scanning files partition-for-partition).
    pub(super) plan: Option<Vec<u8>>,
    pub(super) inputs: Vec<StageInput>,
    /// Inputs of which each task gets only its own slice.
    pub(super) sliceable: HashMap<u32, ReadMode>,
    /// What each task reads, where reduce tasks were sized to the shuffle;
    /// None: task `t` reads partition `t`.
    pub(super) groups: Option<Vec<Share>>,
    /// The input whose skewed partitions are split by producer.
    pub(super) split_input: Option<u32>,
    /// The stage's own concurrency cap.
    pub(super) permits: Semaphore,
    /// Where its tasks run.
    pub(super) placed: Placed,
    pub(super) action: TaskAction,
    /// One per task.
    pub(super) ledgers: Vec<TaskLedger>,
    /// The 95th percentiles of ranged reads the stage's attempts reported
    /// (milliseconds): where later attempts start hedging.
    pub(super) reads: Mutex<Vec<u64>>,
}

impl StageTasks {
    /// `base`, starting to hedge at the stage's recent 95th percentile of
    /// reads (the median of what its last attempts reported) once some
    /// attempt reported one: a task's first reads then need not wait the
    /// policy's first guess.
    pub(super) fn hedging(&self, base: &Hedging) -> Hedging {
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let recent = &reads[reads.len().saturating_sub(RECENT_READS)..];
        if recent.is_empty() {
            return base.clone();
        }
        let mut sorted = recent.to_vec();
        sorted.sort_unstable();
        Hedging {
            first_ms: sorted[sorted.len() / 2],
            ..base.clone()
        }
    }

    /// Takes in an attempt's reported 95th percentile of reads.
    pub(super) fn noted_reads(&self, p95_ms: u64) {
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p95_ms);
    }

    /// The reader partitions task `task` reads.
    pub(super) fn slice(&self, task: u32) -> Slice {
        self.groups
            .as_ref()
            .and_then(|g| g.get(task as usize))
            .map_or(Slice::one(task), |share| share.slice)
    }

    /// Tasks that each read a piece of a skewed partition (a combine or
    /// merge step's tasks read groups of producers, not pieces).
    pub(super) fn split_tasks(&self) -> u32 {
        if self.action != TaskAction::Run || self.sliceable.is_empty() {
            return 0;
        }
        self.groups
            .iter()
            .flatten()
            .filter(|s| s.producers.is_some())
            .count() as u32
    }

    /// The plan partition task `task` runs, where it is not the task's index.
    pub(super) fn partition(&self, task: u32) -> Option<u32> {
        self.groups.as_ref().map(|_| self.slice(task).start)
    }

    /// What task `task` reads of the stage's inputs.
    pub(super) fn task_inputs(&self, task: u32) -> Vec<StageInput> {
        let slice = self.slice(task);
        let producers = self
            .groups
            .as_ref()
            .and_then(|g| g.get(task as usize))
            .and_then(|share| share.producers.clone());
        self.inputs
            .iter()
            .map(|input| {
                // Sliced where the stage reads it in slices; else whole.
                let mut read = match self.sliceable.get(&input.stage_id) {
                    Some(mode) => input.sliced(slice, *mode == ReadMode::ByProducer),
                    None => input.clone(),
                };
                // A piece of a split partition, or a merge step's group:
                // some producers of it only.
                if let Some(range) = &producers
                    && self.split_input == Some(input.stage_id)
                {
                    let end = range.end.min(read.producers.len());
                    let start = range.start.min(end);
                    read.producers = read.producers[start..end].to_vec();
                }
                read
            })
            .collect()
    }

    /// The failure of a task out of memory at the largest pool it may have,
    /// naming the pool and what the task reads from shuffles.
    pub(super) fn out_of_memory(&self, task: u32, pool: u64, failure: TaskFailure) -> TaskFailure {
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

/// Attempts whose reported reads set the stage's hedging delay.
const RECENT_READS: usize = 32;

/// Which copy of a task: every task has a primary; a straggler gets a backup.
pub(super) const PRIMARY: usize = 0;
pub(super) const BACKUP: usize = 1;

/// One task of a running stage: the attempt numbers its copies share, and the
/// attempt each copy runs now.
#[derive(Debug, Default)]
pub(super) struct TaskLedger {
    next_attempt: AtomicU32,
    /// The memory pool of the task's next attempt, once raised after running
    /// out of memory (0: the job's `memory_limit_bytes`). Shared, so that a
    /// backup starts from what the task is known to need.
    pool: AtomicU64,
    /// Per copy: the attempt in the backend's hands, and since when.
    running: Mutex<[Option<(u32, Instant)>; 2]>,
}

impl TaskLedger {
    pub(super) fn next_attempt(&self) -> u32 {
        self.next_attempt.fetch_add(1, Ordering::SeqCst)
    }

    /// The number the next attempt will get.
    pub(super) fn peek_attempt(&self) -> u32 {
        self.next_attempt.load(Ordering::SeqCst)
    }

    /// Attempts started so far, by both copies.
    pub(super) fn attempts(&self) -> u32 {
        self.peek_attempt()
    }

    /// The pool of the next attempt, starting from `base`.
    pub(super) fn pool(&self, base: u64) -> u64 {
        self.pool.load(Ordering::SeqCst).max(base)
    }

    pub(super) fn raise_pool(&self, to: u64) {
        self.pool.fetch_max(to, Ordering::SeqCst);
    }

    pub(super) fn running(&self, copy: usize) -> Option<(u32, Instant)> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())[copy]
    }

    pub(super) fn set_running(&self, copy: usize, now: Option<(u32, Instant)>) {
        self.running.lock().unwrap_or_else(|e| e.into_inner())[copy] = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Place, Placement};

    fn stage_tasks() -> StageTasks {
        StageTasks {
            placed: Placed::new(Placement::only(Place::Local, 0)),
            plan: None,
            inputs: vec![],
            sliceable: HashMap::new(),
            groups: None,
            split_input: None,
            permits: Semaphore::new(1),
            action: TaskAction::Run,
            ledgers: vec![],
            reads: Mutex::default(),
        }
    }

    #[test]
    fn attempts_start_hedging_at_the_stages_recent_reads() {
        let shared = stage_tasks();
        let base = Hedging::on();
        assert_eq!(shared.hedging(&base), base, "nothing reported yet");
        for ms in [300, 100, 200] {
            shared.noted_reads(ms);
        }
        assert_eq!(shared.hedging(&base).first_ms, 200);
        assert_eq!(shared.hedging(&base).floor_ms, base.floor_ms);
        // Only the last 32 attempts count.
        for _ in 0..32 {
            shared.noted_reads(40);
        }
        assert_eq!(shared.hedging(&base).first_ms, 40);
    }
}
