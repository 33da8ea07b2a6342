//! Cutting a DataFusion physical plan into a DAG of stages.
//!
//! A stage boundary goes wherever partitioning changes:
//! - a hash `RepartitionExec` becomes a shuffle: a `ShuffleWriterExec` ends the child
//!   stage and a partitioned `ShuffleReaderExec` starts the parent;
//! - a `CoalescePartitionsExec` becomes a gather: every producer's output is read by
//!   one reader partition (under a collect-left join that is the broadcast: every
//!   probe task reads the whole small side) — unless the gathered side only scans
//!   a small table ([`InlineScans`]): then every task of the consumer reads it
//!   itself, and it costs no stage;
//! - a `SortPreservingMergeExec` keeps its merge, over a reader that exposes each
//!   producer's sorted output as its own partition;
//! - round-robin repartitions go away: tasks are the parallelism;
//! - a hash repartition that appears twice in the plan (the same node, as in the
//!   semi/anti joins of `joins`) is one stage read twice; a gather of it reads each
//!   producer's whole file instead of adding a stage.
//!
//! Uncorrelated scalar subqueries (`ScalarSubqueryExec`) are computed once, each in
//! a stage of its own gathered to one row; every stage whose plan reads their values
//! gets its own `ScalarSubqueryExec` over readers of those stages. A subquery whose
//! last step only finalizes gathered partial aggregates (one row per producer) gets
//! no stage: each consumer task finalizes them itself.
//!
//! Every stage runs one task per output partition of its plan; task `i` executes
//! partition `i`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinType};
use datafusion::logical_expr::physical_planning_context::ScalarSubqueryResults;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::utils::split_conjunction;
use datafusion::physical_expr::{LexOrdering, Partitioning};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::{ScalarSubqueryExec, ScalarSubqueryLink};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, displayable, replace_children_if_necessary,
};
use squall_executor::{
    ReadMode, ResultWriterExec, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec,
};

use super::slices::{
    has_sliceable_scans, scan_config, slice_scans, sliceable_inputs, splittable_input,
};
use super::splits::files_scanned;

/// What a stage's tasks write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutput {
    /// Shuffle files with this many hash partitions.
    Hash(usize),
    /// Shuffle files with one partition, gathered (or merged) by the consumer.
    Single,
    /// The job's result files.
    Result,
}

impl std::fmt::Display for StageOutput {
    /// `shuffle hash xN`, `shuffle single` or `result`, as plans print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageOutput::Hash(n) => write!(f, "shuffle hash x{n}"),
            StageOutput::Single => f.write_str("shuffle single"),
            StageOutput::Result => f.write_str("result"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub id: u32,
    /// Rooted at a `ShuffleWriterExec` or `ResultWriterExec`.
    pub plan: Arc<dyn ExecutionPlan>,
    pub tasks: usize,
    /// Stages whose outputs this stage's readers consume.
    pub inputs: Vec<u32>,
    /// The inputs of which each task gets only its own slice, and how it reads
    /// them (see `slices`); the others every task reads whole.
    pub sliced_inputs: HashMap<u32, ReadMode>,
    /// Whether the plan holds file scans each task reads only its own
    /// partition of: then each task gets its own plan ([`Stage::task_plan`]).
    pub sliced_scans: bool,
    /// The sliced input whose partitions may be split among several tasks by
    /// producer when one is far larger than the others (see
    /// `slices::splittable_input`).
    pub split_input: Option<u32>,
    pub output: StageOutput,
    /// The plan as every task gets it, encoded once when the DAG was proved
    /// to decode (None until then, and for sliced scans: each task its own).
    pub encoded: Option<Arc<Vec<u8>>>,
    /// Bytes of table columns its scans read, as the planner weighed them
    /// (see `ScanSplits::read_bytes`; 0 where it scans no table).
    pub read_bytes: u64,
}

impl Stage {
    /// The plan task `task` runs: the stage's, with the files of other tasks'
    /// partitions left out where it scans files partition-for-partition, so a
    /// task's spec does not grow with the stage's task count.
    pub fn task_plan(&self, task: u32) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        if self.sliced_scans {
            slice_scans(&self.plan, task as usize)
        } else {
            Ok(self.plan.clone())
        }
    }

    /// The plan under its shuffle writer: what a stage reading it would
    /// run in its place (fused stages, late broadcasts) or filter (key
    /// filters). An error for the final stage, which writes results.
    pub fn writer_input(&self) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        self.plan
            .downcast_ref::<ShuffleWriterExec>()
            .map(|writer| writer.input().clone())
            .ok_or_else(|| {
                DataFusionError::Internal(format!("stage {} has no shuffle writer", self.id))
            })
    }
}

/// A join one side of which filters a stage feeding its other side: the
/// rows of `target` whose keys `source` does not hold cannot change the
/// join's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilterSite {
    /// The stage whose writers summarise the keys.
    pub source: u32,
    /// The key columns of the source stage's writer input, in join key order.
    pub source_keys: Vec<usize>,
    /// Which of the sets of keys the source's writer summarises they are.
    pub source_set: usize,
    /// The stage whose rows are filtered before its writer.
    pub target: u32,
    /// The columns of the target stage's writer input holding the same keys.
    pub target_keys: Vec<usize>,
    /// The stage holding the join.
    pub join: u32,
    pub join_type: JoinType,
    /// Whether the target stage waits for the source to commit.
    pub wait: bool,
}

/// A shuffled join whose probe side may be scanned by the join's own tasks
/// (see `broadcast`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateBroadcast {
    /// The stage holding the join.
    pub join: u32,
    /// The stage writing its build (left) side.
    pub build: u32,
    /// The stage that only scans (and filters) its probe (right) side.
    pub probe: u32,
    /// Whether the probe stage waits for the build side to commit.
    pub wait: bool,
    /// The build side is broadcast if it commits at most this many rows
    /// and bytes of Arrow data.
    pub max_rows: u64,
    pub max_bytes: u64,
}

/// The stages of one job, children before parents; the last one writes the result.
#[derive(Debug, Clone)]
pub struct StageDag {
    pub stages: Vec<Stage>,
    /// Schema of the result.
    pub schema: SchemaRef,
    /// Joins whose build side's keys filter their probe side (see `key_filters`).
    pub key_filters: Vec<KeyFilterSite>,
    /// Shuffled joins that become broadcast joins where their build side
    /// commits small (see `broadcast`).
    pub late_broadcasts: Vec<LateBroadcast>,
}

impl StageDag {
    pub fn stage(&self, id: u32) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub fn final_stage(&self) -> &Stage {
        self.stages
            .last()
            .expect("a DAG has at least its final stage")
    }

    pub fn task_count(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
    }

    /// Text form: one header per stage, then its plan. `replace` rewrites substrings
    /// (data locations) so the text is stable across machines.
    pub fn display(&self, replace: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for stage in &self.stages {
            let output = &stage.output;
            let inputs = if stage.inputs.is_empty() {
                "scan".to_string()
            } else {
                let ids: Vec<String> = stage.inputs.iter().map(|i| i.to_string()).collect();
                format!("reads stage {}", ids.join(", "))
            };
            let _ = writeln!(
                out,
                "Stage {} [{} task{}, {inputs} -> {output}]",
                stage.id,
                stage.tasks,
                if stage.tasks == 1 { "" } else { "s" }
            );
            for site in self.key_filters.iter().filter(|f| f.target == stage.id) {
                let _ = writeln!(
                    out,
                    "  (rows filtered by the keys of stage {} for the join in stage {}{})",
                    site.source,
                    site.join,
                    if site.wait { ", waiting for them" } else { "" }
                );
            }
            let plan = displayable(stage.plan.as_ref()).indent(false).to_string();
            for line in plan.lines() {
                let mut line = line.to_string();
                for (from, to) in replace {
                    line = line.replace(from, to);
                }
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

/// Cuts `plan` into stages. Shuffle files go under `work_dir`, results under
/// `result_dir`. Gathered small scans are read where they are gathered
/// (`inline`), but for those `keep` names.
pub fn cut_stages(
    plan: Arc<dyn ExecutionPlan>,
    work_dir: &str,
    result_dir: &str,
    inline: Option<InlineScans>,
    keep: &Keep,
) -> Result<Cut, DataFusionError> {
    let schema = plan.schema();
    let mut cutter = Cutter {
        stages: vec![],
        subqueries: vec![],
        shuffles: vec![],
        work_dir: work_dir.trim_end_matches('/').to_string(),
        inline,
        keep,
        inlinable: vec![],
    };
    // The result is a set of files: a final gather without a limit would only
    // funnel every row through one task.
    let plan = match plan.downcast_ref::<CoalescePartitionsExec>() {
        Some(c) if c.fetch().is_none() => plan.children()[0].clone(),
        _ => plan,
    };
    let root = cutter.cut(plan)?;
    let root = cutter.with_subqueries(root)?;
    let inputs = readers_of(&root);
    let tasks = root.output_partitioning().partition_count();
    let id = cutter.stages.len() as u32 + 1;
    let plan: Arc<dyn ExecutionPlan> =
        Arc::new(ResultWriterExec::new(root, result_dir.to_string()));
    cutter.stages.push(Stage {
        id,
        sliced_inputs: sliceable_inputs(&plan),
        sliced_scans: has_sliceable_scans(&plan),
        split_input: splittable_input(&plan),
        plan,
        tasks,
        inputs,
        output: StageOutput::Result,
        encoded: None,
        read_bytes: 0,
    });
    Ok(Cut {
        dag: StageDag {
            stages: cutter.stages,
            schema,
            key_filters: vec![],
            late_broadcasts: vec![],
        },
        inlinable: cutter.inlinable,
    })
}

/// A plan cut into stages.
pub struct Cut {
    pub dag: StageDag,
    /// The stages kept for gathered small scans that could have been read
    /// where they are gathered, with what names each to [`Keep`].
    pub inlinable: Vec<(u32, GatheredScan)>,
}

/// A gathered small scan, named by the plan node it was cut from (the same
/// in every cut of one plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatheredScan(usize);

/// Which gathered small scans keep a stage of their own.
pub enum Keep {
    All,
    These(HashSet<GatheredScan>),
}

/// Which gathered sides are read by every task of the stage that gathers
/// them instead of by a stage of their own: unfiltered scans of at most
/// `max_bytes` of files. A stage costs its tasks, a shuffle file each, their
/// commit and a step of the job's critical path; a task reading the files
/// itself costs their decoding, and a request or two per file where the
/// store is remote — so there at most `max_remote_files` files (a task
/// reading a broadcast makes a request per producer anyway). A filtered
/// scan keeps its stage: its keys may filter a larger stage ([`key_filters`]),
/// which needs them summarised by a stage of their own.
///
/// [`key_filters`]: super::key_filters
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineScans {
    pub max_bytes: u64,
    pub max_remote_files: usize,
}

impl Default for InlineScans {
    /// TPC-H's nation and region at any scale, its supplier up to SF 1.
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_remote_files: 2,
        }
    }
}

impl InlineScans {
    /// Whether `plan` only scans files (through projections) that are few
    /// and small enough.
    fn admits(&self, plan: &Arc<dyn ExecutionPlan>) -> bool {
        let mut stack = vec![plan.clone()];
        while let Some(node) = stack.pop() {
            // A join's dynamic filter alone does not make a scan filtered.
            let plain = scan_config(&node).is_some_and(|c| {
                c.file_source().filter().is_none_or(|f| {
                    split_conjunction(&f)
                        .iter()
                        .all(|e| e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some())
                })
            }) || node.downcast_ref::<ProjectionExec>().is_some()
                || node.downcast_ref::<CooperativeExec>().is_some();
            if !plain {
                return false;
            }
            stack.extend(node.children().into_iter().cloned());
        }
        // A scan whose expressions read a scalar subquery's value needs its stage.
        if !subquery_results_used(plan).is_ok_and(|used| used.is_empty()) {
            return false;
        }
        let (files, bytes, local) = files_scanned(plan);
        files > 0 && bytes <= self.max_bytes && (local || files <= self.max_remote_files)
    }
}

struct Cutter<'a> {
    stages: Vec<Stage>,
    /// Each scalar-subquery results container met so far, with links whose plans
    /// read the stage that computes each subquery.
    subqueries: Vec<(ScalarSubqueryResults, Vec<ScalarSubqueryLink>)>,
    /// Hash repartitions already cut, with the reader that replaced each.
    shuffles: Vec<(Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>)>,
    work_dir: String,
    inline: Option<InlineScans>,
    keep: &'a Keep,
    inlinable: Vec<(u32, GatheredScan)>,
}

impl Cutter<'_> {
    fn cut(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        // Before the children: stages cut inside the main input must know the scope.
        if let Some(subquery) = plan.downcast_ref::<ScalarSubqueryExec>() {
            self.cut_subqueries(subquery)?;
            // The node itself is a pass-through: stages that need it get their own.
            return self.cut(subquery.input().clone());
        }
        if let Some((_, reader)) = self.shuffles.iter().find(|(p, _)| Arc::ptr_eq(p, &plan)) {
            return Ok(reader.clone());
        }
        let children = plan
            .children()
            .into_iter()
            .map(|c| self.cut(c.clone()))
            .collect::<Result<Vec<_>, _>>()?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let child = children
                .into_iter()
                .next()
                .expect("repartition has a child");
            return match repartition.partitioning() {
                Partitioning::Hash(exprs, n) => {
                    let n = *n;
                    let id = self.add_stage(child, ShuffleOutput::Hash(exprs.clone(), n))?;
                    let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
                        id,
                        plan.schema(),
                        ReadMode::Partitioned,
                        n,
                    ));
                    // An order-preserving repartition promised sorted partitions.
                    let reader = match (repartition.preserve_order(), plan.output_ordering()) {
                        (true, Some(ordering)) => sort_each_partition(reader, ordering.clone()),
                        _ => reader,
                    };
                    self.shuffles.push((plan.clone(), reader.clone()));
                    Ok(reader)
                }
                _ => Ok(child),
            };
        }
        if let Some(coalesce) = plan.downcast_ref::<CoalescePartitionsExec>() {
            let child = children.into_iter().next().expect("coalesce has a child");
            return self.gather(&plan, coalesce, child);
        }
        if let Some(merge) = plan.downcast_ref::<SortPreservingMergeExec>() {
            let child = children.into_iter().next().expect("merge has a child");
            let producers = child.output_partitioning().partition_count();
            if producers <= 1 {
                return replace_children_if_necessary(plan.clone(), vec![child]);
            }
            let schema = child.schema();
            let id = self.add_stage(child, ShuffleOutput::Single)?;
            let reader = Arc::new(ShuffleReaderExec::new(
                id,
                schema,
                ReadMode::ByProducer,
                producers,
            ));
            let merged: Arc<dyn ExecutionPlan> = Arc::new(
                SortPreservingMergeExec::new(merge.expr().clone(), reader)
                    .with_fetch(merge.fetch()),
            );
            return Ok(merged);
        }
        replace_children_if_necessary(plan, children)
    }

    /// Cuts a gather (`plan`, `coalesce`) of `child` (already cut): a stage
    /// of `child` whose one output partition the gather reads, or none at
    /// all where `child` is one partition, a hash shuffle (each producer's
    /// file is read whole) or a small scan read in place.
    fn gather(
        &mut self,
        plan: &Arc<dyn ExecutionPlan>,
        coalesce: &CoalescePartitionsExec,
        child: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        if child.output_partitioning().partition_count() <= 1 {
            return replace_children_if_necessary(plan.clone(), vec![child]);
        }
        // Gathering a hash shuffle: read every producer's whole file.
        if let Some(reader) = child.downcast_ref::<ShuffleReaderExec>()
            && reader.mode() == ReadMode::Partitioned
            && let Some(producers) = self.stage(reader.stage_id()).map(|s| s.tasks)
        {
            let reader = Arc::new(ShuffleReaderExec::new(
                reader.stage_id(),
                reader.schema(),
                ReadMode::ByProducer,
                producers,
            ));
            return Ok(Arc::new(
                CoalescePartitionsExec::new(reader).with_fetch(coalesce.fetch()),
            ));
        }
        let admitted = self.inline.is_some_and(|inline| inline.admits(&child));
        // Named by the node gathered, as it was before this cut.
        let gathered = GatheredScan(Arc::as_ptr(plan.children()[0]) as *const () as usize);
        let kept = match self.keep {
            Keep::All => true,
            Keep::These(kept) => kept.contains(&gathered),
        };
        if admitted && !kept {
            return replace_children_if_necessary(plan.clone(), vec![child]);
        }
        let schema = child.schema();
        let id = self.add_stage(child, ShuffleOutput::Single)?;
        if admitted {
            self.inlinable.push((id, gathered));
        }
        let reader = Arc::new(ShuffleReaderExec::new(id, schema, ReadMode::Partitioned, 1));
        Ok(Arc::new(
            CoalescePartitionsExec::new(reader).with_fetch(coalesce.fetch()),
        ))
    }

    /// Cuts the stages that compute `subquery`'s scalar subqueries, and
    /// records the links its consumers read them through.
    fn cut_subqueries(&mut self, subquery: &ScalarSubqueryExec) -> Result<(), DataFusionError> {
        let mut links = Vec::with_capacity(subquery.subqueries().len());
        for link in subquery.subqueries() {
            let computed = self.cut(link.plan.clone())?;
            let computed = self.with_subqueries(computed)?;
            // A final aggregation over gathered partial aggregates reads a row
            // per producer: every consumer task computes it, saving a stage.
            let plan: Arc<dyn ExecutionPlan> = if is_final_of_gathered_partials(&computed) {
                computed
            } else {
                let schema = computed.schema();
                let id = self.add_stage(computed, ShuffleOutput::Single)?;
                Arc::new(ShuffleReaderExec::new(id, schema, ReadMode::Partitioned, 1))
            };
            links.push(ScalarSubqueryLink {
                plan,
                index: link.index,
            });
        }
        self.subqueries.push((subquery.results().clone(), links));
        Ok(())
    }

    fn stage(&self, id: u32) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    fn add_stage(
        &mut self,
        child: Arc<dyn ExecutionPlan>,
        output: ShuffleOutput,
    ) -> Result<u32, DataFusionError> {
        let child = self.with_subqueries(child)?;
        let id = self.stages.len() as u32 + 1;
        let stage_output = match &output {
            ShuffleOutput::Hash(_, n) => StageOutput::Hash(*n),
            ShuffleOutput::Single => StageOutput::Single,
        };
        let tasks = child.output_partitioning().partition_count();
        let inputs = readers_of(&child);
        let dir = format!("{}/stage-{id}", self.work_dir);
        let plan: Arc<dyn ExecutionPlan> = Arc::new(ShuffleWriterExec::new(child, output, dir));
        self.stages.push(Stage {
            id,
            sliced_inputs: sliceable_inputs(&plan),
            sliced_scans: has_sliceable_scans(&plan),
            split_input: splittable_input(&plan),
            plan,
            tasks,
            inputs,
            output: stage_output,
            encoded: None,
            read_bytes: 0,
        });
        Ok(id)
    }

    /// Wraps `plan` in a `ScalarSubqueryExec` for each results container its
    /// expressions read, so its tasks compute (read) the values before running.
    fn with_subqueries(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let used = subquery_results_used(&plan)?;
        let mut plan = plan;
        for (results, links) in &self.subqueries {
            if used
                .iter()
                .any(|u| ScalarSubqueryResults::ptr_eq(u, results))
            {
                plan = Arc::new(ScalarSubqueryExec::new(
                    plan,
                    links.clone(),
                    results.clone(),
                ));
            }
        }
        Ok(plan)
    }
}

fn sort_each_partition(
    input: Arc<dyn ExecutionPlan>,
    ordering: LexOrdering,
) -> Arc<dyn ExecutionPlan> {
    Arc::new(SortExec::new(ordering, input).with_preserve_partitioning(true))
}

/// Whether `plan` is (projections over) an ungrouped final aggregation of a
/// gather of shuffle files: its input is one row of partial state per producer.
fn is_final_of_gathered_partials(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = plan.clone();
    while let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        node = projection.input().clone();
    }
    let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
        return false;
    };
    if *aggregate.mode() != AggregateMode::Final || !aggregate.group_expr().is_empty() {
        return false;
    }
    let Some(coalesce) = aggregate.input().downcast_ref::<CoalescePartitionsExec>() else {
        return false;
    };
    coalesce
        .input()
        .downcast_ref::<ShuffleReaderExec>()
        .is_some()
}

/// The scalar-subquery results containers read by expressions anywhere in `plan`.
fn subquery_results_used(
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<Vec<ScalarSubqueryResults>, DataFusionError> {
    let mut used: Vec<ScalarSubqueryResults> = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                if let Some(sub) = e.downcast_ref::<ScalarSubqueryExpr>()
                    && !used
                        .iter()
                        .any(|u| ScalarSubqueryResults::ptr_eq(u, sub.results()))
                {
                    used.push(sub.results().clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        stack.extend(node.children().into_iter().cloned());
    }
    Ok(used)
}

/// Ids of the stages read by the readers in `plan` (without descending into them).
fn readers_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            ids.push(reader.stage_id());
        }
        stack.extend(node.children().into_iter().cloned());
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_plan::filter::FilterExec;

    /// A scan of `files` files of `bytes` each in the store at `url`.
    fn scan(url: &str, files: usize, bytes: u64) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let files: Vec<PartitionedFile> = (0..files)
            .map(|i| PartitionedFile::new(format!("t/f{i}.parquet"), bytes))
            .collect();
        let source = Arc::new(ParquetSource::new(schema));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(url).unwrap(), source)
            .with_file_groups(vec![FileGroup::new(files)])
            .build();
        DataSourceExec::from_data_source(config)
    }

    #[test]
    fn small_unfiltered_scans_are_read_where_gathered_few_files_of_them_remote() {
        let inline = InlineScans::default();
        assert!(inline.admits(&scan("file://", 8, 4 << 10)));
        assert!(inline.admits(&scan("memory://", 16, 64 << 10)));
        // Over a MiB in all.
        assert!(!inline.admits(&scan("file://", 8, 200 << 10)));
        // Remote: a request or two a file for every task that reads them.
        assert!(!inline.admits(&scan("s3://bucket", 8, 4 << 10)));
        assert!(inline.admits(&scan("s3://bucket", 2, 4 << 10)));
        // Nothing to read.
        assert!(!inline.admits(&scan("file://", 0, 0)));
        // A filter makes it a stage key filters may need.
        let small = scan("file://", 2, 1 << 10);
        let predicate = datafusion::physical_expr::expressions::binary(
            col("k", &small.schema()).unwrap(),
            datafusion::logical_expr::Operator::Gt,
            lit(1i64),
            &small.schema(),
        )
        .unwrap();
        let filtered: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(predicate, small.clone()).unwrap());
        assert!(!inline.admits(&filtered));
        // Anything but scans and projections keeps its stage.
        let gathered: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(small));
        assert!(!inline.admits(&gathered));
    }
}
