//! A reduce stage's combine steps: before the stage starts, each shuffle input
//! the exchange policy ([`super::exchange`]) says to read two-level is
//! combined by a step of its own — tasks that each read a range of
//! partitions of a group of the producers' files and write one file of the
//! same partitions ([`TaskAction::Combine`]) — and the stage then reads the combined files in
//! place of the producers'. The steps run through the same attempts, retries
//! and backups as any stage, under ids past the DAG's; their files are
//! removed with the job's shuffle files.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use squall_executor::{
    ReadMode, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec, Slice, StageInput, TaskAction,
};

use super::coalesce::Share;
use super::context::{JobGate, Scheduler};
use super::events::JobEvent;
use super::exchange::{Combiner, Exchange, ExchangeChoice, ExchangeMode, Slices};
use super::stage::StageEnd;
use crate::planner::{Stage, StageDag, StageOutput};

/// A combine or merge step to run: the index of the input it reads, the
/// step as a stage, and its tasks' groups of producers.
struct Step<'d> {
    input: usize,
    stage: Stage,
    groups: Vec<Share>,
    /// `Combine` for a combine step, `Run` for a merge step.
    action: TaskAction,
    /// Its level: another over its files is decided and built from it.
    deeper: Deeper<'d>,
}

/// A level of steps on one input: what it does, its number (1 over the
/// input's own files) and the DAG's last stage id.
struct Deeper<'d> {
    next: Next<'d>,
    level: u32,
    last_id: u32,
}

/// The kind of a level.
#[derive(Clone)]
enum Next<'d> {
    /// Combiners: the producers' writer, and how the reduce tasks read the
    /// input.
    Combine {
        writer: &'d ShuffleWriterExec,
        read: Slices,
    },
    /// Merges of sorted runs in groups: the stage's merge, and how many of
    /// its tasks merge what the levels leave.
    Merge { merge: Merge, readers: usize },
}

/// Steps stacked on one input at most: three levels of combining (or of
/// merging sorted runs in groups) cut a reader's files from M to M/g³, for M
/// up to about 100,000 at g = 48 (each reader then reads a handful).
const MAX_LEVELS: u32 = 3;

impl Scheduler<'_> {
    /// Runs `stage` of `dag` over `inputs`, combining first the inputs the
    /// exchange policy picks.
    pub(super) async fn run_reading(
        &self,
        stage: &Stage,
        dag: &StageDag,
        mut inputs: Vec<StageInput>,
        gate: Arc<JobGate>,
    ) -> StageEnd {
        let of = dag.stages.len();
        let (mut exchanges, mut steps, slices) = self.plan_exchanges(stage, dag, &inputs, &gate);
        let mut written = Vec::new();
        let mut combine_steps = Vec::new();
        // Level by level: the steps of one level side by side, then, where
        // a combine step's files are still too many to read, another.
        while !steps.is_empty() {
            let runs = steps.iter().map(|step| {
                let input = vec![inputs[step.input].clone()];
                let groups = Some(step.groups.clone());
                self.run_stage(&step.stage, of, input, gate.clone(), step.action, groups)
            });
            let ends = futures::future::join_all(runs).await;
            let mut failed = None;
            for (step, (_, result, step_written)) in steps.iter().zip(ends) {
                written.extend(step_written);
                match result {
                    Ok((combined, stats)) => {
                        inputs[step.input].producers = combined;
                        combine_steps.push(stats);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return (stage.id, Err(e), written);
            }
            // (The files read are counted only where a level may follow.)
            if steps.iter().all(|s| s.deeper.level >= MAX_LEVELS) {
                break;
            }
            // A reader's files of all its inputs are what another level cuts.
            let fan_ins = fan_ins(stage, &inputs, &slices);
            let total: usize = fan_ins.iter().sum();
            let mut next = Vec::new();
            for step in &steps {
                let input = &inputs[step.input];
                let others = total - fan_ins[step.input];
                if let Some((choice, deeper)) = self.deeper_step(stage, step, input, others) {
                    exchanges.push(choice);
                    next.push(deeper);
                }
            }
            steps = next;
        }
        let (id, result, stage_written) = self
            .run_stage(stage, of, inputs, gate, TaskAction::Run, None)
            .await;
        written.extend(stage_written);
        let result = result.map(|(outputs, mut stats)| {
            stats.exchanges = exchanges;
            stats.combine_steps = combine_steps;
            (outputs, stats)
        });
        (id, result, written)
    }

    /// The exchange chosen for each input of `stage` that could be combined
    /// (told to watchers), the combine steps to run, and the partitions each
    /// of the stage's tasks reads. The fan-in rule counts the files a reader
    /// reads of all its inputs.
    fn plan_exchanges<'d>(
        &self,
        stage: &Stage,
        dag: &'d StageDag,
        inputs: &[StageInput],
        gate: &JobGate,
    ) -> (Vec<ExchangeChoice>, Vec<Step<'d>>, Vec<Slice>) {
        let policy = &self.options.exchange;
        if policy.mode == ExchangeMode::Direct {
            return (vec![], vec![], vec![]);
        }
        let combinable = combinable_inputs(stage, dag);
        let mergeable = mergeable_inputs(stage, dag);
        let known = |i: &StageInput| {
            combinable.contains_key(&i.stage_id) || mergeable.contains_key(&i.stage_id)
        };
        if !inputs.iter().any(known) {
            return (vec![], vec![], vec![]);
        }
        let slices: Vec<Slice> = self
            .reduce_groups(stage, inputs, gate, TaskAction::Run)
            .map(|shares| shares.into_iter().map(|s| s.slice).collect())
            .unwrap_or_else(|| (0..stage.tasks as u32).map(Slice::one).collect());
        let last_id = dag.stages.iter().map(|s| s.id).max().unwrap_or(0);
        let fan_ins = fan_ins(stage, inputs, &slices);
        let total: usize = fan_ins.iter().sum();
        let mut choices = Vec::new();
        let mut steps = Vec::new();
        for (index, input) in inputs.iter().enumerate() {
            let next = if let Some(merge) = mergeable.get(&input.stage_id) {
                Next::Merge {
                    merge: merge.clone(),
                    readers: slices.len(),
                }
            } else if let Some(writer) = combinable.get(&input.stage_id) {
                let read = if stage.sliced_inputs.contains_key(&input.stage_id) {
                    Slices::Each(slices.clone())
                } else {
                    Slices::All(slices.len())
                };
                Next::Combine { writer, read }
            } else {
                continue;
            };
            let policy = &policy.beside(total - fan_ins[index]);
            let level = Deeper {
                next,
                level: 1,
                last_id,
            };
            let (choice, step) = self.level(policy, index, input, input.stage_id, level);
            self.chosen(stage, &choice, step.as_ref());
            choices.push(choice);
            steps.extend(step);
        }
        (choices, steps, slices)
    }

    /// After step `step` wrote `input`'s files (level L): where the policy
    /// combines (or merges) them again, and that cuts the files a reader
    /// reads, the choice for level L + 1 over them and its step (at most
    /// [`MAX_LEVELS`]). Another level only while a reader would read more
    /// files, these and the `others` it reads of its other inputs, than a
    /// step's task does, or where it pays for a broadcast (see
    /// [`Exchange::stacks`]).
    fn deeper_step<'d>(
        &self,
        stage: &Stage,
        step: &Step<'d>,
        input: &StageInput,
        others: usize,
    ) -> Option<(ExchangeChoice, Step<'d>)> {
        let Deeper {
            next,
            level,
            last_id,
        } = &step.deeper;
        let level = level + 1;
        if level > MAX_LEVELS {
            return None;
        }
        let broadcast = matches!(
            next,
            Next::Combine {
                read: Slices::All(_),
                ..
            }
        );
        let policy = &self.options.exchange.deeper().beside(others);
        let level = Deeper {
            next: next.clone(),
            level,
            last_id: *last_id,
        };
        let (choice, next) = self.level(policy, step.input, input, step.stage.id, level);
        if !self.options.exchange.stacks(&choice, others, broadcast) {
            return None;
        }
        let next = next.filter(|n| n.groups.len() < input.producers.len())?;
        self.chosen(stage, &choice, Some(&next));
        Some((choice, next))
    }

    /// The choice at `level` for the input at `index` of the stage's
    /// inputs (the files of stage `source`: the input's own, or the level
    /// below's), by `policy`, and where it is taken the step: combiners, or
    /// merges of groups of sorted runs with the stage's own merge; its id
    /// `last_id × level + input` (past the DAG's, and every level's apart),
    /// its files in a folder of the input stage's for the level.
    fn level<'d>(
        &self,
        policy: &Exchange,
        index: usize,
        input: &StageInput,
        source: u32,
        level: Deeper<'d>,
    ) -> (ExchangeChoice, Option<Step<'d>>) {
        let Deeper {
            next,
            level: depth,
            last_id,
        } = &level;
        let id = last_id * depth + input.stage_id;
        let (choice, built) = match next {
            Next::Combine { writer, read } => {
                let (choice, combiners) =
                    policy.decide(source, &input.producers, read, self.pricing());
                let built = combiners.map(|combiners| {
                    let stage = combine_stage(id, input.stage_id, writer, combiners.len(), *depth);
                    let groups = combiners.into_iter().map(share).collect();
                    (stage, groups, TaskAction::Combine)
                });
                (choice, built)
            }
            Next::Merge { merge, readers } => {
                let files = input.producers.len();
                let prices = self.meter.prices();
                let (choice, groups) = policy.merge(source, files, *readers, prices);
                let built = groups.map(|groups| {
                    let stage = merge_stage(id, input.stage_id, merge, groups.len(), *depth);
                    (stage, merge_shares(groups), TaskAction::Run)
                });
                (choice, built)
            }
        };
        let step = built.map(|(stage, groups, action)| Step {
            input: index,
            stage,
            groups,
            action,
            deeper: level,
        });
        (choice, step)
    }

    /// Tells the log and watchers how `stage` reads an input.
    fn chosen(&self, stage: &Stage, choice: &ExchangeChoice, step: Option<&Step<'_>>) {
        tracing::info!(
            job = self.job_id,
            stage = stage.id,
            input = choice.input,
            two_level = choice.two_level,
            combiners = choice.combiners,
            requests_direct = choice.requests_direct,
            requests_two_level = choice.requests_two_level,
            reason = %choice.reason,
            "exchange chosen"
        );
        self.emit(JobEvent::ExchangeChosen {
            stage: stage.id,
            choice: choice.clone(),
            combine_stage: step.map(|s| s.stage.id),
        });
    }
}

/// The most files one task of `stage` reads of each of `inputs`, its tasks
/// reading the partitions of `slices`.
fn fan_ins(stage: &Stage, inputs: &[StageInput], slices: &[Slice]) -> Vec<usize> {
    inputs
        .iter()
        .map(|input| match stage.sliced_inputs.get(&input.stage_id) {
            Some(ReadMode::Partitioned) => {
                Exchange::fan_in(&input.producers, &Slices::Each(slices.to_vec()))
            }
            // Reader partition j is producer j: a task reads its slice's.
            Some(ReadMode::ByProducer) => input.producers.len().div_ceil(slices.len().max(1)),
            None => Exchange::fan_in(&input.producers, &Slices::All(1)),
        })
        .collect()
}

/// A merge step's shares: each task all of a group of the producers' runs.
fn merge_shares(groups: Vec<Range<usize>>) -> Vec<Share> {
    groups
        .into_iter()
        .map(|producers| Share {
            slice: Slice::one(0),
            producers: Some(producers),
        })
        .collect()
}

/// A stage's merge of an input's sorted runs: the merge and its reader, and
/// the folder of the input's files.
#[derive(Clone)]
struct Merge {
    merge: SortPreservingMergeExec,
    reader: Arc<dyn ExecutionPlan>,
    dir: String,
}

/// The inputs of `stage` whose sorted runs it merges (every reader of the
/// input in the stage is the child of a sort-preserving merge), that no other
/// stage reads, ending in a shuffle writer.
fn mergeable_inputs(stage: &Stage, dag: &StageDag) -> HashMap<u32, Merge> {
    let mut found: HashMap<u32, Option<Merge>> = HashMap::new();
    let mut nodes: Vec<(&Arc<dyn ExecutionPlan>, Option<&SortPreservingMergeExec>)> =
        vec![(&stage.plan, None)];
    while let Some((node, parent)) = nodes.pop() {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let merge = parent.filter(|_| reader.mode() == ReadMode::ByProducer);
            let entry = found.entry(reader.stage_id());
            match (entry, merge) {
                (std::collections::hash_map::Entry::Vacant(v), Some(merge)) => {
                    let Some(writer) = dag
                        .stage(reader.stage_id())
                        .and_then(|s| s.plan.downcast_ref::<ShuffleWriterExec>())
                    else {
                        v.insert(None);
                        continue;
                    };
                    v.insert(Some(Merge {
                        merge: merge.clone(),
                        reader: node.clone(),
                        dir: writer.dir().trim_end_matches('/').to_string(),
                    }));
                }
                (entry, _) => {
                    entry.insert_entry(None);
                }
            }
        }
        let spm = node.downcast_ref::<SortPreservingMergeExec>();
        nodes.extend(node.children().into_iter().map(|child| (child, spm)));
    }
    found
        .into_iter()
        .filter(|(id, _)| dag.stages.iter().filter(|s| s.inputs.contains(id)).count() == 1)
        .filter_map(|(id, merge)| Some((id, merge?)))
        .collect()
}

/// The merge step `id` of input stage `input` at `level` (1 over the
/// producers' runs, 2 over the first level's...): the stage's own merge over
/// its own reader, each task given a group of the runs, writing one sorted
/// run into a folder of the input stage's for the level.
fn merge_stage(id: u32, input: u32, merge: &Merge, groups: usize, level: u32) -> Stage {
    let merged: Arc<dyn ExecutionPlan> = Arc::new(
        SortPreservingMergeExec::new(merge.merge.expr().clone(), merge.reader.clone())
            .with_fetch(merge.merge.fetch()),
    );
    let dir = match level {
        1 => format!("{}/merged", merge.dir),
        n => format!("{}/merged-{n}", merge.dir),
    };
    let plan = Arc::new(ShuffleWriterExec::new(merged, ShuffleOutput::Single, dir));
    Stage {
        id,
        plan,
        tasks: groups,
        inputs: vec![input],
        sliced_inputs: HashMap::new(),
        sliced_scans: false,
        split_input: Some(input),
        output: StageOutput::Single,
        encoded: None,
        read_bytes: 0,
    }
}

/// The inputs of `stage` of `dag` that a combine step may stand in for (see
/// [`combinable_inputs`]), in order.
pub fn combinable(stage: &Stage, dag: &StageDag) -> Vec<u32> {
    let mut inputs: Vec<u32> = combinable_inputs(stage, dag).into_keys().collect();
    inputs.sort_unstable();
    inputs
}

/// The inputs of `stage` of `dag` whose sorted runs it merges and that a
/// merge step may merge in groups first (see [`mergeable_inputs`]), in order.
pub fn mergeable(stage: &Stage, dag: &StageDag) -> Vec<u32> {
    let mut inputs: Vec<u32> = mergeable_inputs(stage, dag).into_keys().collect();
    inputs.sort_unstable();
    inputs
}

/// The inputs of `stage` that a combine step may stand in for, with their
/// producers' writers: every reader of the input in the stage reads it
/// partition by partition (a merge keeps producers' runs apart, and a
/// combined file would join them), no other stage reads it, and it ends in a
/// shuffle writer.
fn combinable_inputs<'d>(stage: &Stage, dag: &'d StageDag) -> HashMap<u32, &'d ShuffleWriterExec> {
    let mut modes: HashMap<u32, bool> = HashMap::new();
    let mut nodes: Vec<&Arc<dyn ExecutionPlan>> = vec![&stage.plan];
    while let Some(node) = nodes.pop() {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let partitioned = reader.mode() == ReadMode::Partitioned;
            *modes.entry(reader.stage_id()).or_insert(true) &= partitioned;
        }
        nodes.extend(node.children());
    }
    modes
        .into_iter()
        .filter(|(_, partitioned)| *partitioned)
        .filter(|(id, _)| dag.stages.iter().filter(|s| s.inputs.contains(id)).count() == 1)
        .filter_map(|(id, _)| {
            let writer = dag.stage(id)?.plan.downcast_ref::<ShuffleWriterExec>()?;
            Some((id, writer))
        })
        .collect()
}

/// The combine step `id` of input stage `input` at `level` (1 over the
/// producers' files, 2 over the first level's...): a shuffle writer over
/// nothing, of the producers' partitioning, writing in a folder of the input
/// stage's own for the level; one task per combiner, each given its files
/// cut to its partitions (as a piece of a split partition is).
fn combine_stage(
    id: u32,
    input: u32,
    writer: &ShuffleWriterExec,
    combiners: usize,
    level: u32,
) -> Stage {
    let source = writer.input();
    let empty = Arc::new(EmptyExec::new(source.schema()).with_partitions(combiners.max(1)));
    let folder = match level {
        1 => "combined".to_string(),
        n => format!("combined-{n}"),
    };
    let dir = format!("{}/{folder}", writer.dir().trim_end_matches('/'));
    let plan = Arc::new(ShuffleWriterExec::new(empty, writer.output().clone(), dir));
    let output = match writer.output().partition_count() {
        1 => StageOutput::Single,
        n => StageOutput::Hash(n),
    };
    Stage {
        id,
        plan,
        tasks: combiners,
        inputs: vec![input],
        sliced_inputs: HashMap::from([(input, ReadMode::Partitioned)]),
        sliced_scans: false,
        split_input: Some(input),
        output,
        encoded: None,
        read_bytes: 0,
    }
}

/// A combiner's share: its partitions, of the producers of its group.
fn share(combiner: Combiner) -> Share {
    Share {
        slice: combiner.slice,
        producers: Some(combiner.producers),
    }
}
