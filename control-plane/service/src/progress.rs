//! A running job's progress as the service keeps it: tasks per stage for
//! `GET /v1/jobs/{id}`, the service's metrics, and the attempts of each task,
//! written to the store a stage at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::{AttemptRecord, PlacementView, PlanView, StagePlan};
use crate::api::{ExchangeView, KeyFilterView, StageProgress};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::JobStore;
use squall_engine::backend::Place;
use squall_engine::cost::JobMeter;
use squall_engine::planner::StageDag;
use squall_engine::scheduler::{JobEvent, ProgressSink, StageKind};
use squall_executor::TaskMetrics;

/// Stage, task and attempt.
type AttemptKey = (u32, u32, u32);

/// Follows one job's scheduler events.
#[derive(Debug)]
pub(super) struct JobProgress {
    stages: Mutex<BTreeMap<u32, StageProgress>>,
    metrics: Metrics,
    store: Arc<JobStore>,
    job_id: String,
    /// When each attempt in flight was handed to the backend (and the
    /// wall-clock time of that).
    started: Mutex<HashMap<AttemptKey, (Instant, i64, Place)>>,
    /// Attempts that are backup copies.
    backups: Mutex<HashSet<AttemptKey>>,
    /// Attempts that ended and are not stored yet.
    ended: Mutex<Vec<AttemptRecord>>,
    /// What the job has used so far.
    pub(super) meter: Arc<JobMeter>,
    /// The plan as stored, amended as exchanges are chosen.
    plan: Mutex<Option<PlanView>>,
}

impl JobProgress {
    pub(super) fn new(
        metrics: Metrics,
        store: Arc<JobStore>,
        job_id: String,
        meter: Arc<JobMeter>,
    ) -> Self {
        Self {
            stages: Mutex::default(),
            metrics,
            store,
            job_id,
            started: Mutex::default(),
            backups: Mutex::default(),
            ended: Mutex::default(),
            meter,
            plan: Mutex::default(),
        }
    }

    pub(super) fn snapshot(&self) -> Vec<StageProgress> {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages.values().cloned().collect()
    }

    /// Stores the attempts that ended since the last flush, in one transaction.
    pub(super) fn flush_attempts(&self) {
        let ended = std::mem::take(&mut *self.ended.lock().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = self.store.record_attempts(&self.job_id, &ended) {
            tracing::warn!(job = self.job_id, "cannot record task attempts: {e}");
        }
    }

    /// Notes that an attempt ended: `outcome` is `succeeded`, `failed` (with
    /// its message) or `superseded`.
    fn ended(&self, stage: u32, task: u32, attempt: u32, outcome: &str, message: Option<&str>) {
        let began = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(stage, task, attempt));
        let elapsed_ms = began.map_or(0, |(t, _, _)| t.elapsed().as_millis() as u64);
        let backup = self
            .backups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(stage, task, attempt));
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(AttemptRecord {
                stage,
                task,
                attempt,
                outcome: outcome.into(),
                message: message.map(str::to_string),
                elapsed_ms,
                started_at_ms: began.map(|(_, at, _)| at),
                ended_at_ms: Some(now_ms()),
                backup,
                place: began.map(|(_, _, place)| place.as_str().to_string()),
            });
    }

    /// Attempts that ended but are not stored yet, and those in the
    /// backend's hands now (as `running` records).
    pub(super) fn unflushed_and_running(&self) -> Vec<AttemptRecord> {
        let mut attempts = self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
        attempts.extend(self.running_attempts());
        attempts
    }

    fn running_attempts(&self) -> Vec<AttemptRecord> {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let backups = self.backups.lock().unwrap_or_else(|e| e.into_inner());
        started
            .iter()
            .map(
                |((stage, task, attempt), (since, at, place))| AttemptRecord {
                    stage: *stage,
                    task: *task,
                    attempt: *attempt,
                    outcome: "running".into(),
                    message: None,
                    elapsed_ms: since.elapsed().as_millis() as u64,
                    started_at_ms: Some(*at),
                    ended_at_ms: None,
                    backup: backups.contains(&(*stage, *task, *attempt)),
                    place: Some(place.as_str().to_string()),
                },
            )
            .collect()
    }

    /// Keeps the plan's stages and text in the store, for the job's console page.
    fn planned(&self, dag: &StageDag, trace_id: Option<String>) {
        let plan = PlanView {
            planned: true,
            trace_id,
            trace_url: None,
            stages: dag
                .stages
                .iter()
                .map(|stage| StagePlan {
                    stage: stage.id,
                    kind: StageKind::of(stage).as_str().into(),
                    inputs: stage.inputs.clone(),
                    partitions: stage.tasks,
                    output: stage.output.to_string(),
                    exchanges: vec![],
                    placement: None,
                    key_filters: dag
                        .key_filters
                        .iter()
                        .filter(|f| f.target == stage.id)
                        .map(|f| KeyFilterView {
                            source_stage: f.source,
                            join_stage: f.join,
                            waits: f.wait,
                            filter: None,
                        })
                        .collect(),
                })
                .collect(),
            text: dag.display(&[]),
        };
        self.store_plan(plan);
    }

    fn store_plan(&self, plan: PlanView) {
        if let Err(e) = self.store.set_plan(&self.job_id, &plan) {
            tracing::warn!(job = self.job_id, "cannot record the job's plan: {e}");
        }
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
    }

    /// Records in the plan the filter `stage` got.
    fn key_filtered(&self, stage: u32, filter: &KeyFilterView) {
        let Some(mut plan) = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Some(at) = plan.stages.iter_mut().find(|s| s.stage == stage) else {
            return;
        };
        match at
            .key_filters
            .iter_mut()
            .find(|f| f.source_stage == filter.source_stage)
        {
            Some(planned) => *planned = filter.clone(),
            None => at.key_filters.push(filter.clone()),
        }
        self.store_plan(plan);
    }

    /// Records in the plan that `stage` runs in the tasks of stage `into`:
    /// `into` reads what `stage` read instead of `stage`.
    fn fused(&self, stage: u32, into: u32) {
        let Some(mut plan) = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let read: Vec<u32> = plan
            .stages
            .iter()
            .find(|s| s.stage == stage)
            .map(|s| s.inputs.clone())
            .unwrap_or_default();
        let Some(reader) = plan.stages.iter_mut().find(|s| s.stage == into) else {
            return;
        };
        reader.inputs.retain(|i| *i != stage);
        for input in read {
            if !reader.inputs.contains(&input) {
                reader.inputs.push(input);
            }
        }
        self.store_plan(plan);
    }

    /// Records in the plan where `stage`'s tasks run.
    fn placed(&self, stage: u32, placement: &PlacementView) {
        let Some(mut plan) = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Some(at) = plan.stages.iter_mut().find(|s| s.stage == stage) else {
            return;
        };
        at.placement = Some(placement.clone());
        self.store_plan(plan);
    }

    /// Records in the plan how `stage` reads an input: the exchange on the
    /// stage, and a two-level exchange's combine step as a stage of its own
    /// (kind `combine`) that the stage then reads in place of the input.
    fn exchange_chosen(&self, stage: u32, exchange: &ExchangeView) {
        let Some(mut plan) = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Some(at) = plan.stages.iter().position(|s| s.stage == stage) else {
            return;
        };
        plan.stages[at].exchanges.push(exchange.clone());
        if let Some(step) = exchange.combine_stage {
            let output = plan
                .stages
                .iter()
                .find(|s| s.stage == exchange.input)
                .map(|s| s.output.clone())
                .unwrap_or_default();
            plan.stages[at]
                .inputs
                .iter_mut()
                .filter(|i| **i == exchange.input)
                .for_each(|i| *i = step);
            plan.stages.insert(
                at,
                StagePlan {
                    stage: step,
                    kind: exchange.step.clone(),
                    inputs: vec![exchange.input],
                    partitions: exchange.combiners,
                    output,
                    exchanges: vec![],
                    placement: None,
                    key_filters: vec![],
                },
            );
        }
        self.store_plan(plan);
    }
}

impl ProgressSink for JobProgress {
    fn on_event(&self, event: &JobEvent) {
        self.metrics.observe(event);
        match event {
            JobEvent::Planned { dag, trace_id } => self.planned(dag, trace_id.clone()),
            JobEvent::TaskStarted {
                stage,
                task,
                attempt,
                place,
            } => {
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (*stage, *task, *attempt),
                        (Instant::now(), now_ms(), *place),
                    );
            }
            JobEvent::BackupStarted {
                stage,
                task,
                attempt,
            } => {
                self.backups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((*stage, *task, *attempt));
            }
            JobEvent::TaskSucceeded {
                stage,
                task,
                attempt,
                ..
            } => self.ended(*stage, *task, *attempt, "succeeded", None),
            JobEvent::TaskSuperseded {
                stage,
                task,
                attempt,
            } => self.ended(*stage, *task, *attempt, "superseded", None),
            JobEvent::TaskRetrying {
                stage,
                task,
                attempt,
                failure,
            } => self.ended(*stage, *task, *attempt, "failed", Some(&failure.message)),
            JobEvent::TaskFailed {
                stage,
                task,
                attempt,
                failure,
            } => self.ended(*stage, *task, *attempt, "failed", Some(&failure.message)),
            JobEvent::ExchangeChosen {
                stage,
                choice,
                combine_stage,
            } => self.exchange_chosen(*stage, &ExchangeView::of(choice, *combine_stage)),
            JobEvent::StagePlaced { stage, placement } => {
                self.placed(*stage, &PlacementView::of(placement))
            }
            JobEvent::KeyFilterApplied { stage, filter } => {
                self.key_filtered(*stage, &KeyFilterView::of(filter))
            }
            JobEvent::StageFused { stage, into } => self.fused(*stage, *into),
            JobEvent::StageStarted { .. } | JobEvent::StageFinished { .. } => {}
        }
        self.count(event);
        if matches!(
            event,
            JobEvent::StageFinished { .. } | JobEvent::TaskFailed { .. }
        ) {
            self.flush_attempts();
        }
    }
}

/// A stage's progress once it starts, keeping what was known before (its
/// exchanges, the input a combine step combines, the filters it got).
fn started(s: &mut StageProgress, stage: u32, tasks: usize, partitions: usize) {
    *s = StageProgress {
        stage,
        tasks,
        partitions,
        started_at_ms: Some(now_ms()),
        exchanges: std::mem::take(&mut s.exchanges),
        combines: s.combines,
        key_filters: std::mem::take(&mut s.key_filters),
        ..StageProgress::default()
    };
}

/// A stage's progress once one of its tasks succeeded, with `metrics`.
fn succeeded(s: &mut StageProgress, metrics: &TaskMetrics, backup: bool, place: Place) {
    s.running = s.running.saturating_sub(1);
    s.done += 1;
    match place {
        Place::Local => s.local_tasks += 1,
        Place::Lambda => s.lambda_tasks += 1,
    }
    s.backup_wins += usize::from(backup);
    s.bytes_scanned += metrics.bytes_scanned;
    s.bytes_written += metrics.bytes_out;
    s.rows_in += metrics.rows_in;
    s.rows_out += metrics.rows_out;
    s.key_filter_rows_removed += metrics.key_filter_rows_removed;
    if metrics.rows_out > 0 {
        let saved = u128::from(metrics.key_filter_rows_removed) * u128::from(metrics.bytes_out)
            / u128::from(metrics.rows_out);
        s.key_filter_bytes_saved += u64::try_from(saved).unwrap_or(u64::MAX);
    }
}

impl JobProgress {
    /// Tasks done, running and retried, and bytes, per stage.
    fn count(&self, event: &JobEvent) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            JobEvent::StageStarted {
                stage,
                tasks,
                partitions,
                ..
            } => started(
                stages.entry(*stage).or_default(),
                *stage,
                *tasks,
                *partitions,
            ),
            JobEvent::ExchangeChosen {
                stage,
                choice,
                combine_stage,
            } => {
                let view = ExchangeView::of(choice, *combine_stage);
                stages.entry(*stage).or_default().exchanges.push(view);
                if let Some(step) = combine_stage {
                    let s = stages.entry(*step).or_default();
                    s.stage = *step;
                    s.combines = Some(choice.input);
                }
                let s = stages.entry(*stage).or_default();
                s.stage = *stage;
            }
            JobEvent::TaskStarted { stage, .. } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.running += 1;
                }
            }
            JobEvent::BackupStarted { stage, .. } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.backups += 1;
                }
            }
            JobEvent::TaskSuperseded { stage, .. } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.running = s.running.saturating_sub(1);
                }
            }
            JobEvent::TaskSucceeded {
                stage,
                metrics,
                backup,
                place,
                ..
            } => {
                if let Some(s) = stages.get_mut(stage) {
                    succeeded(s, metrics, *backup, *place);
                }
            }
            JobEvent::TaskRetrying { stage, .. } | JobEvent::TaskFailed { stage, .. } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.running = s.running.saturating_sub(1);
                    if matches!(event, JobEvent::TaskRetrying { .. }) {
                        s.retried += 1;
                    } else {
                        s.failed += 1;
                    }
                }
            }
            JobEvent::StagePlaced { stage, placement } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.placement = Some(PlacementView::of(placement));
                }
            }
            JobEvent::KeyFilterApplied { stage, filter } => {
                stages
                    .entry(*stage)
                    .or_default()
                    .key_filters
                    .push(KeyFilterView::of(filter));
            }
            JobEvent::StageFinished { stage } => {
                if let Some(s) = stages.get_mut(stage) {
                    s.running = 0;
                    s.finished_at_ms = Some(now_ms());
                }
            }
            JobEvent::StageFused { stage, into } => {
                let s = stages.entry(*stage).or_default();
                s.stage = *stage;
                s.fused_into = Some(*into);
            }
            JobEvent::Planned { .. } => {}
        }
    }
}
