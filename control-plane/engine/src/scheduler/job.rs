//! A job's run: its stages in dependency order (a stage starts when every
//! stage it reads has committed), committed stages journalled, and on failure
//! everything the job wrote removed. Resuming skips the stages an interrupted
//! run committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::datatypes::Schema;
use datafusion::physical_plan::empty::EmptyExec;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use squall_executor::{KeyFilter, KeySummary, OutputFile, StageInput, TaskAction};

use super::context::{JobGate, Scheduler};
use super::events::{JobEvent, KeyFilterApplied, StageStats};
use super::fusion::fusion_target;
use crate::commit::delete_all;
use crate::error::Result;
use crate::planner::broadcast::broadcast_stage;
use crate::planner::fuse::fused_stage;
use crate::planner::key_filters::filtered_stage;
use crate::planner::{Stage, StageDag, StageOutput};

/// Whether `stage` can start: every stage it reads has committed, and every
/// stage whose keys it waits for.
fn is_ready(dag: &StageDag, committed: &HashMap<u32, Vec<OutputFile>>, stage: &Stage) -> bool {
    stage.inputs.iter().all(|i| committed.contains_key(i))
        && dag
            .key_filters
            .iter()
            .filter(|f| f.target == stage.id && f.wait)
            .all(|f| committed.contains_key(&f.source))
        && dag
            .late_broadcasts
            .iter()
            .filter(|b| b.probe == stage.id && b.wait)
            .all(|b| committed.contains_key(&b.build))
}

/// Whether every stage reading `stage` committed in an earlier run (one
/// that ran it fused, see [`fusion_target`]): then it need not run.
fn readers_done(dag: &StageDag, committed: &HashMap<u32, Vec<OutputFile>>, stage: &Stage) -> bool {
    let mut readers = dag.stages.iter().filter(|s| s.inputs.contains(&stage.id));
    let first = readers.next();
    first.is_some_and(|r| committed.contains_key(&r.id))
        && readers.all(|r| committed.contains_key(&r.id))
}

/// Shuffle files (and the combine steps' files, written but never committed
/// as a stage's): not needed once the result is written.
fn shuffle_files(
    committed: &HashMap<u32, Vec<OutputFile>>,
    written: &[String],
    result_files: &[OutputFile],
) -> Vec<String> {
    let results: HashSet<&str> = result_files.iter().map(|f| f.url.as_str()).collect();
    let shuffle: HashSet<String> = committed
        .values()
        .flatten()
        .map(|f| f.url.clone())
        .chain(
            written
                .iter()
                .filter(|u| !results.contains(u.as_str()))
                .cloned(),
        )
        .collect();
    shuffle.into_iter().collect()
}

/// Set `set` of every task's key summaries, merged: an error where a task
/// has none (a filter of some tasks' keys would drop rows that match).
fn merge_set(
    summaries: &[Vec<KeySummary>],
    set: usize,
    columns: usize,
) -> datafusion::common::Result<Arc<KeyFilter>> {
    let each = summaries
        .iter()
        .map(|task| task.get(set))
        .collect::<Option<Vec<&KeySummary>>>()
        .filter(|each| !each.is_empty())
        .ok_or_else(|| {
            datafusion::common::DataFusionError::Internal(format!(
                "a task summarised no set {set} of keys"
            ))
        })?;
    Ok(Arc::new(KeyFilter::merge(&each, columns)?))
}

/// The committed outputs of a finished DAG.
#[derive(Debug, Clone)]
pub struct DagOutcome {
    /// Result files of the final stage, in task order.
    pub result_files: Vec<OutputFile>,
    pub stages: Vec<StageStats>,
}

impl Scheduler<'_> {
    /// Records that `stage` committed `outputs`; the job can still finish if
    /// that fails, only a resume would redo the stage.
    fn journal_commit(&self, stage: u32, outputs: &[OutputFile]) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.committed(stage, outputs)
        {
            tracing::warn!(job = self.job_id, stage, "could not record the commit: {e}");
        }
    }

    /// Gives each stage that a join filters by the keys of `source`, which
    /// just committed, the filter, where it has not started. `summaries`
    /// holds each task's summary of each set of keys; a filter is built
    /// only from a summary of every task. One that cannot be built leaves
    /// the stage as it was: a filter only saves work.
    fn filter_targets(
        &self,
        dag: &StageDag,
        source: u32,
        summaries: &[Vec<KeySummary>],
        pending: &mut [Arc<Stage>],
        applied: &mut HashMap<u32, Vec<KeyFilterApplied>>,
    ) {
        let mut merged: HashMap<usize, Arc<KeyFilter>> = HashMap::new();
        for site in dag.key_filters.iter().filter(|f| f.source == source) {
            let Some(target) = pending.iter_mut().find(|s| s.id == site.target) else {
                continue;
            };
            let filter = match merged.get(&site.source_set) {
                Some(filter) => Ok(filter.clone()),
                None => merge_set(summaries, site.source_set, site.source_keys.len()).inspect(
                    |filter| {
                        merged.insert(site.source_set, filter.clone());
                    },
                ),
            };
            let filtered = filter.and_then(|filter| {
                let description = filter.describe();
                Ok((filtered_stage(target, site, filter)?, description))
            });
            match filtered {
                Ok((stage, description)) => {
                    let filter = KeyFilterApplied {
                        source_stage: source,
                        join_stage: site.join,
                        description,
                        waited: site.wait,
                    };
                    tracing::debug!(job = self.job_id, stage = stage.id, source, filter = %filter.description, "key filter applied");
                    self.emit(JobEvent::KeyFilterApplied {
                        stage: stage.id,
                        filter: filter.clone(),
                    });
                    applied.entry(stage.id).or_default().push(filter);
                    *target = Arc::new(stage);
                }
                Err(e) => tracing::warn!(
                    job = self.job_id,
                    stage = site.target,
                    source,
                    "no key filter for the stage: {e}"
                ),
            }
        }
    }

    /// Makes each shuffled join whose build side `build` just committed
    /// within the broadcast limits (`outputs`, counted in `counted`) a
    /// broadcast join, where its probe stage has not started: the join's
    /// stage scans the probe side itself and the probe stage never runs (a
    /// line of `stats` says so). See `planner::broadcast`.
    fn broadcast_late(
        &self,
        dag: &StageDag,
        build: u32,
        outputs: &[OutputFile],
        counted: &StageStats,
        pending: &mut Vec<Arc<Stage>>,
        stats: &mut Vec<StageStats>,
    ) {
        for site in dag.late_broadcasts.iter().filter(|b| b.build == build) {
            let (Some(probe_at), Some(join_at)) = (
                pending.iter().position(|s| s.id == site.probe),
                pending.iter().position(|s| s.id == site.join),
            ) else {
                continue;
            };
            if counted.rows_out > site.max_rows || counted.raw_bytes_out > site.max_bytes {
                tracing::debug!(
                    job = self.job_id,
                    stage = site.join,
                    build,
                    rows = counted.rows_out,
                    bytes = counted.raw_bytes_out,
                    "build side too large to broadcast"
                );
                continue;
            }
            match broadcast_stage(&pending[join_at], &pending[probe_at], build, outputs.len()) {
                Ok(joined) => {
                    tracing::debug!(
                        job = self.job_id,
                        stage = site.join,
                        build,
                        probe = site.probe,
                        rows = counted.rows_out,
                        "shuffled join broadcast: its stage scans the probe side"
                    );
                    self.emit(JobEvent::StageFused {
                        stage: site.probe,
                        into: site.join,
                    });
                    stats.push(StageStats {
                        stage: site.probe,
                        fused_into: Some(site.join),
                        ..StageStats::default()
                    });
                    pending[join_at] = Arc::new(joined);
                    pending.remove(probe_at);
                }
                Err(e) => tracing::warn!(
                    job = self.job_id,
                    stage = site.join,
                    "the join stays shuffled: {e}"
                ),
            }
        }
    }

    /// The stages of `pending` that can start, taken out of it, after each
    /// ready one that can run inside the one task of the stage reading it
    /// was given to that stage (see [`fusion_target`]; a line of `stats`
    /// says so), which may make that stage ready too.
    fn ready_stages(
        &self,
        dag: &StageDag,
        committed: &HashMap<u32, Vec<OutputFile>>,
        pending: &mut Vec<Arc<Stage>>,
        stats: &mut Vec<StageStats>,
    ) -> Vec<Arc<Stage>> {
        let mut start = Vec::new();
        loop {
            let (ready, waiting): (Vec<Arc<Stage>>, Vec<Arc<Stage>>) = std::mem::take(pending)
                .into_iter()
                .partition(|s| is_ready(dag, committed, s));
            *pending = waiting;
            let mut fused = false;
            for stage in ready {
                let max_bytes = self.options.fuse_max_bytes;
                let Some(at) = fusion_target(dag, committed, &stage, pending, max_bytes) else {
                    start.push(stage);
                    continue;
                };
                let files: HashMap<u32, usize> = stage
                    .inputs
                    .iter()
                    .filter_map(|i| committed.get(i).map(|outputs| (*i, outputs.len())))
                    .collect();
                match fused_stage(&pending[at], &stage, &files) {
                    Ok(reader) => {
                        let into = reader.id;
                        tracing::debug!(
                            job = self.job_id,
                            stage = stage.id,
                            into,
                            "stage fused into its reader"
                        );
                        self.emit(JobEvent::StageFused {
                            stage: stage.id,
                            into,
                        });
                        stats.push(StageStats {
                            stage: stage.id,
                            fused_into: Some(into),
                            ..StageStats::default()
                        });
                        pending[at] = Arc::new(reader);
                        fused = true;
                    }
                    Err(e) => {
                        tracing::warn!(
                            job = self.job_id,
                            stage = stage.id,
                            "stage runs its own tasks: {e}"
                        );
                        start.push(stage);
                    }
                }
            }
            if !fused {
                return start;
            }
        }
    }

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
            read_bytes: 0,
        };
        let gate = self.gate();
        let (_, result, _) = self
            .run_stage(&stage, 1, vec![], gate, TaskAction::Ping, None)
            .await;
        result.map(|(_, stats)| stats)
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
        let mut pending: Vec<Arc<Stage>> = dag
            .stages
            .iter()
            .filter(|s| !committed.contains_key(&s.id) && !readers_done(dag, &committed, s))
            .map(|s| Arc::new(s.clone()))
            .collect();
        let mut filters: HashMap<u32, Vec<KeyFilterApplied>> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let mut first_error = None;
        loop {
            if first_error.is_none() {
                for stage in self.ready_stages(dag, &committed, &mut pending, &mut stats) {
                    let inputs = stage
                        .inputs
                        .iter()
                        .map(|id| StageInput {
                            slice: None,
                            stage_id: *id,
                            producers: committed[id].clone(),
                        })
                        .collect();
                    let gate = gate.clone();
                    running.push(async move { self.run_reading(&stage, dag, inputs, gate).await });
                }
            }
            let Some((stage, result, stage_written)) = running.next().await else {
                break;
            };
            written.extend(stage_written);
            match result {
                Ok((mut outputs, stage_stats)) => {
                    let summaries: Vec<Vec<KeySummary>> = outputs
                        .iter_mut()
                        .map(|o| std::mem::take(&mut o.keys))
                        .collect();
                    self.journal_commit(stage, &outputs);
                    self.filter_targets(dag, stage, &summaries, &mut pending, &mut filters);
                    self.broadcast_late(
                        dag,
                        stage,
                        &outputs,
                        &stage_stats,
                        &mut pending,
                        &mut stats,
                    );
                    committed.insert(stage, outputs);
                    let mut stage_stats = stage_stats;
                    stage_stats.key_filters = filters.remove(&stage).unwrap_or_default();
                    stats.append(&mut stage_stats.combine_steps);
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
        delete_all(
            &self.stores,
            &shuffle_files(&committed, written, &result_files),
        )
        .await;
        stats.sort_by_key(|s| s.stage);
        Ok(DagOutcome {
            result_files,
            stages: stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::fuse::tests::pair;
    use squall_executor::ReadMode;

    #[test]
    fn a_stage_whose_readers_all_committed_need_not_run_again() {
        let (producer, consumer) = pair(ReadMode::ByProducer);
        let dag = StageDag {
            schema: crate::planner::fuse::tests::schema(),
            stages: vec![producer.clone(), consumer.clone()],
            key_filters: vec![],
            late_broadcasts: vec![],
        };
        let mut committed = HashMap::new();
        assert!(!readers_done(&dag, &committed, &producer));
        committed.insert(consumer.id, vec![]);
        assert!(readers_done(&dag, &committed, &producer));
        // The final stage has no readers: it always runs.
        assert!(!readers_done(&dag, &committed, &consumer));
    }
}
