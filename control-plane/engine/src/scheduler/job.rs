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
use squall_executor::{OutputFile, StageInput, TaskAction};

use super::context::{JobGate, Scheduler};
use super::events::StageStats;
use crate::commit::delete_all;
use crate::error::Result;
use crate::planner::{Stage, StageDag, StageOutput};

/// The committed outputs of a finished DAG.
#[derive(Debug, Clone)]
pub struct DagOutcome {
    /// Result files of the final stage, in task order.
    pub result_files: Vec<OutputFile>,
    pub stages: Vec<StageStats>,
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
                    running.push(self.run_reading(stage, dag, inputs, gate.clone()));
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
                    let mut stage_stats = stage_stats;
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
        // Shuffle files (and the combine steps' files, written but never
        // committed as a stage's) are not needed once the result is written.
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
        let shuffle: Vec<String> = shuffle.into_iter().collect();
        delete_all(&self.stores, &shuffle).await;
        stats.sort_by_key(|s| s.stage);
        Ok(DagOutcome {
            result_files,
            stages: stats,
        })
    }
}
