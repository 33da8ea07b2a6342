//! One stage's run: its tasks' shared state, a primary copy of every task,
//! backups for stragglers, and how each copy's end is taken in (the first
//! success wins; a failure fails the stage unless the other copy may still
//! make it). Reduce stages are sized to their shuffle first ([`super::coalesce`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use squall_executor::{OutputFile, ReadMode, StageInput, TaskAction, encode_plan};
use tokio::sync::{Semaphore, oneshot};

use super::attempt::{Ended, Won};
use super::coalesce::Share;
use super::context::{JobGate, Scheduler};
use super::events::{JobEvent, StageKind, StageStats};
use super::tasks::{BACKUP, PRIMARY, StageTasks, TaskLedger};
use crate::backend::{Place, Placed, Placement, StageOutlook};
use crate::commit::{attempt_output_url, delete_all};
use crate::error::{Result, SquallError};
use crate::planner::{Stage, StageOutput};

/// How a stage ended: its id, its committed outputs and counters (or its
/// error), and every object its attempts may have written that is still there.
pub(super) type StageEnd = (u32, Result<(Vec<OutputFile>, StageStats)>, Vec<String>);

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

impl Scheduler<'_> {
    /// Runs all tasks of a stage. Returns the stage id, the committed outputs (or the
    /// error) and every object URL its attempts may have written that is still there.
    #[tracing::instrument(
        name = "stage",
        skip_all,
        fields(job = %self.job_id, stage = stage.id, action = ?action)
    )]
    pub(super) async fn run_stage(
        &self,
        stage: &Stage,
        of: usize,
        inputs: Vec<StageInput>,
        gate: Arc<JobGate>,
        action: TaskAction,
        groups: Option<Vec<Share>>,
    ) -> StageEnd {
        let started = Instant::now();
        let shared = match self.stage_tasks(stage, of, inputs, &gate, action, groups) {
            Ok(shared) => Arc::new(shared),
            Err(e) => return (stage.id, Err(e), vec![]),
        };
        let tasks = shared.ledgers.len();
        let mut run = StageRun {
            outputs: vec![None; tasks],
            stats: StageStats {
                stage: stage.id,
                tasks,
                partitions: stage.tasks,
                split_tasks: shared.split_tasks(),
                placement: Some(shared.placed.placement.clone()),
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
        let speculate = policy.enabled && action != TaskAction::Ping;
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
        self.stage_ended(stage, started, run)
    }

    /// What the tasks of `stage` share, what each task reads given by `groups`
    /// or its reduce tasks sized to the shuffle `inputs` committed; tells
    /// watchers the stage started.
    fn stage_tasks(
        &self,
        stage: &Stage,
        of: usize,
        inputs: Vec<StageInput>,
        gate: &JobGate,
        action: TaskAction,
        groups: Option<Vec<Share>>,
    ) -> Result<StageTasks> {
        let plan = if stage.sliced_scans {
            None
        } else if let Some(encoded) = &stage.encoded {
            Some(encoded.as_ref().clone())
        } else {
            Some(
                encode_plan(stage.plan.clone())
                    .map_err(|source| SquallError::Internal { source })?,
            )
        };
        let groups = groups.or_else(|| self.reduce_groups(stage, &inputs, gate, action));
        let tasks = groups.as_ref().map_or(stage.tasks, Vec::len);
        let placement = match self.options.place {
            Some(place) => match &self.options.place_reason {
                Some(reason) => Placement {
                    reason: reason.clone(),
                    ..Placement::only(place, tasks)
                },
                None => Placement::asked(place, tasks),
            },
            None => self.backend.place(&self.outlook(stage, &inputs, tasks)),
        };
        let shared = StageTasks {
            placed: Placed::new(placement),
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
            reads: Default::default(),
        };
        if shared.groups.is_some() {
            tracing::info!(
                job = self.job_id,
                stage = stage.id,
                partitions = stage.tasks,
                tasks,
                split_tasks = shared.split_tasks(),
                "reduce tasks sized to the shuffle"
            );
        }
        self.emit(JobEvent::StageStarted {
            stage: stage.id,
            of,
            tasks,
            partitions: stage.tasks,
        });
        let placement = &shared.placed.placement;
        if placement.local.is_some() {
            tracing::info!(
                job = self.job_id,
                stage = stage.id,
                placed = placement.label(),
                burst_tasks = placement.burst_tasks,
                "{}",
                placement.reason
            );
        }
        self.emit(JobEvent::StagePlaced {
            stage: stage.id,
            placement: placement.clone(),
        });
        tracing::debug!(
            job = self.job_id,
            stage = stage.id,
            inputs = shared.inputs.len(),
            sliced = shared.sliceable.len(),
            "stage inputs"
        );
        Ok(shared)
    }

    /// What is known of `stage` as it is ready to run `tasks` tasks over
    /// `inputs`: the bytes it will read, the job's cost so far.
    fn outlook(&self, stage: &Stage, inputs: &[StageInput], tasks: usize) -> StageOutlook {
        let shuffle_bytes = inputs
            .iter()
            .map(|input| {
                let bytes: u64 = input.producers.iter().map(|p| p.size).sum();
                // An input read whole is read by every task.
                if stage.sliced_inputs.contains_key(&input.stage_id) {
                    bytes
                } else {
                    bytes.saturating_mul(tasks as u64)
                }
            })
            .fold(0u64, u64::saturating_add);
        StageOutlook {
            tasks,
            scan_bytes: stage.read_bytes,
            shuffle_bytes,
            spent_usd: self.meter.report().total.usd,
            limit_usd: self.meter.limit_usd(),
            prices: self.meter.prices().clone(),
        }
    }

    /// The end of a stage whose copies have all ended: its error, or its
    /// outputs and counters.
    fn stage_ended(&self, stage: &Stage, started: Instant, run: StageRun) -> StageEnd {
        if let Some(e) = run.error {
            return (stage.id, Err(e), run.written);
        }
        let mut stats = run.stats;
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            job = self.job_id,
            stage = stage.id,
            tasks = stats.tasks,
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
    pub(super) fn reduce_groups(
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
        // Ranged reads each task makes of an object store (a local file's
        // read costs no request).
        let mut reads = 0usize;
        for input in inputs {
            if !stage.sliced_inputs.contains_key(&input.stage_id) {
                continue;
            }
            reads += input
                .producers
                .iter()
                .filter(|p| !p.url.starts_with("file:"))
                .count();
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
        let parallelism = coalescing.parallelism_for(sizes.iter().sum(), parallelism, reads);
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
                self.won(stage, gate, run, task, copy, won);
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

    /// Takes in the first success of `task` (by copy `copy`): its counters and
    /// output, and stops its other copy; past the job's result cap, fails the
    /// job.
    fn won(
        &self,
        stage: &Stage,
        gate: &JobGate,
        run: &mut StageRun,
        task: u32,
        copy: usize,
        won: Won,
    ) {
        let other = 1 - copy;
        let metrics = &won.metrics;
        self.meter.scanned(stage.id, metrics.bytes_scanned);
        run.stats.rows_in += metrics.rows_in;
        run.stats.bytes_in += metrics.bytes_in;
        run.stats.bytes_scanned += metrics.bytes_scanned;
        run.stats.key_filter_rows_removed += metrics.key_filter_rows_removed;
        run.stats.rows_out += metrics.rows_out;
        run.stats.bytes_out += metrics.bytes_out;
        run.stats.raw_bytes_out += metrics.raw_bytes_out;
        run.stats.peak_memory_bytes = run.stats.peak_memory_bytes.max(metrics.peak_memory_bytes);
        run.stats.spilled_bytes += metrics.spilled_bytes;
        for (operator, us) in &metrics.cpu_us {
            *run.stats.cpu_us.entry(operator.clone()).or_insert(0) += us;
        }
        for (operator, (rows, bytes)) in &metrics.operator_output {
            let entry = run
                .stats
                .operator_output
                .entry(operator.clone())
                .or_default();
            entry.0 += rows;
            entry.1 += bytes;
        }
        if copy == BACKUP {
            run.stats.backup_wins += 1;
        }
        match won.place {
            Place::Local => run.stats.local_tasks += 1,
            Place::Lambda => run.stats.lambda_tasks += 1,
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
            place: won.place,
            metrics: won.metrics,
        });
        if !won.output.url.is_empty() {
            run.written.push(won.output.url.clone());
        }
        run.outputs[task as usize] = Some(won.output);
        // The other copy lost: stop it (its future ends as superseded).
        run.live.remove(&(task, other));
        if let (StageOutput::Result, Some(limit)) = (&stage.output, self.options.max_result_bytes) {
            let written = run.outputs.iter().flatten().map(|o| o.size).sum();
            if written > limit && run.error.is_none() {
                gate.failed.store(true, Ordering::SeqCst);
                run.error = Some(SquallError::ResultTooLarge { limit, written });
                // Stop the rest: nothing more is written.
                run.live.clear();
            }
        }
    }
}
