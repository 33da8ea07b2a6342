//! Which shuffle inputs, and which file scans, a task needs only a slice of.
//!
//! A TaskSpec carries the committed outputs of the stages its stage reads. In
//! full that is producers × partitions slot locations — for a thousand producers
//! and a thousand-way shuffle, a million slots in every one of a thousand specs.
//! But task `t` runs plan partition `t`, and through operators that compute their
//! partition `i` from their input's partition `i` (projections, filters,
//! aggregates, partitioned joins, the writers...) it reaches reader partition `t`
//! only. For such readers the scheduler sends only that slice (see
//! `StageInput::sliced`). Anything not known to map partitions one to one
//! (unions, coalesces, merges, the build side of a collect-left join, any
//! operator not listed here) gets the whole input: a wrong guess here is caught
//! by the reader, which refuses a partition it was not given.
//!
//! File scans reached the same way are sliced too ([`slice_scans`]): a scan
//! task's plan keeps only its own partition's files, the other partitions left
//! empty (so the plan's partitioning is unchanged), and its spec does not grow
//! with the number of tasks in the stage.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::datasource::physical_plan::FileGroup;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
pub(super) use squall_executor::scan_config;
use squall_executor::{ReadMode, ShuffleReaderExec, one_to_one, regrouped, stage_writer};

/// The input stages of `plan` that every task reads only its own partition of,
/// with the mode of their readers.
pub fn sliceable_inputs(plan: &Arc<dyn ExecutionPlan>) -> HashMap<u32, ReadMode> {
    let mut seen: HashMap<u32, Option<ReadMode>> = HashMap::new();
    walk(plan, true, &mut seen);
    seen.into_iter()
        .filter_map(|(stage, mode)| mode.map(|m| (stage, m)))
        .collect()
}

/// `aligned`: executing partition `t` of `plan` executes partition `t` of it and
/// nothing else of it, for every task `t`.
fn walk(plan: &Arc<dyn ExecutionPlan>, aligned: bool, seen: &mut HashMap<u32, Option<ReadMode>>) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        let mode = aligned.then_some(reader.mode());
        seen.entry(reader.stage_id())
            .and_modify(|m| {
                if *m != mode {
                    *m = None;
                }
            })
            .or_insert(mode);
        return;
    }
    let partitions = plan.properties().partitioning.partition_count();
    for (index, child) in plan.children().into_iter().enumerate() {
        let same_count = child.properties().partitioning.partition_count() == partitions;
        walk(
            child,
            aligned && same_count && one_to_one(plan, index),
            seen,
        );
    }
}

/// Whether `plan` holds a file scan that every task reads only its own
/// partition of.
pub fn has_sliceable_scans(plan: &Arc<dyn ExecutionPlan>) -> bool {
    fn find(plan: &Arc<dyn ExecutionPlan>, aligned: bool) -> bool {
        if scan_config(plan).is_some() {
            return aligned && plan.properties().partitioning.partition_count() > 1;
        }
        let partitions = plan.properties().partitioning.partition_count();
        plan.children()
            .into_iter()
            .enumerate()
            .any(|(index, child)| {
                let same = child.properties().partitioning.partition_count() == partitions;
                find(child, aligned && same && one_to_one(plan, index))
            })
    }
    find(plan, true)
}

/// `plan` as task `task` runs it: every file scan it reads only partition
/// `task` of keeps that partition's files alone.
pub fn slice_scans(
    plan: &Arc<dyn ExecutionPlan>,
    task: usize,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    fn slice(
        plan: &Arc<dyn ExecutionPlan>,
        aligned: bool,
        task: usize,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if let Some(config) = scan_config(plan) {
            if !aligned {
                return Ok(plan.clone());
            }
            let groups = config
                .file_groups
                .iter()
                .enumerate()
                .map(|(i, group)| {
                    if i == task {
                        group.clone()
                    } else {
                        FileGroup::new(vec![])
                    }
                })
                .collect();
            return Ok(regrouped(config, groups));
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(plan.clone());
        }
        let partitions = plan.properties().partitioning.partition_count();
        let sliced = children
            .into_iter()
            .enumerate()
            .map(|(index, child)| {
                let same = child.properties().partitioning.partition_count() == partitions;
                slice(child, aligned && same && one_to_one(plan, index), task)
            })
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        replace_children_if_necessary(plan.clone(), sliced)
    }
    slice(plan, true, task)
}

/// The input stage whose partitions may be split among several tasks by
/// producer, every piece reading the stage's other inputs' partition whole
/// (skew splitting, see `scheduler::coalesce`): a partitioned reader reached
/// from the stage's root through operators that handle each input row on its
/// own — projections, filters, partial aggregates, and the probe side of hash
/// joins that never emit a build-side row by itself (inner, right, right
/// semi, right anti). Anything else (a final aggregate, a sort, a window, a
/// join that emits unmatched build rows) needs a partition whole: None.
pub fn splittable_input(plan: &Arc<dyn ExecutionPlan>) -> Option<u32> {
    fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<u32> {
        if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
            return (reader.mode() == ReadMode::Partitioned).then(|| reader.stage_id());
        }
        let children = plan.children();
        if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
            let probe_only = matches!(
                join.join_type(),
                JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
            ) && matches!(
                join.partition_mode(),
                PartitionMode::Partitioned | PartitionMode::CollectLeft
            );
            if !probe_only {
                return None;
            }
            let stage = find(children[1])?;
            // The build side must not read the same stage.
            return (!reads_stage(children[0], stage)).then_some(stage);
        }
        let row_by_row = stage_writer(plan.as_ref()).is_some()
            || plan.downcast_ref::<ProjectionExec>().is_some()
            || plan.downcast_ref::<FilterExec>().is_some()
            || plan.downcast_ref::<CooperativeExec>().is_some()
            || plan
                .downcast_ref::<AggregateExec>()
                .is_some_and(|a| *a.mode() == AggregateMode::Partial);
        match children.as_slice() {
            [child] if row_by_row => find(child),
            _ => None,
        }
    }
    find(plan)
}

/// Whether `plan` reads stage `stage` anywhere.
fn reads_stage(plan: &Arc<dyn ExecutionPlan>, stage: u32) -> bool {
    plan.downcast_ref::<ShuffleReaderExec>()
        .is_some_and(|r| r.stage_id() == stage)
        || plan.children().into_iter().any(|c| reads_stage(c, stage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::union::UnionExec;

    fn reader(stage: u32, mode: ReadMode, partitions: usize) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        Arc::new(ShuffleReaderExec::new(stage, schema, mode, partitions))
    }

    #[test]
    fn aligned_readers_are_sliced_and_others_are_not() {
        let direct = reader(1, ReadMode::Partitioned, 4);
        let sorted = Arc::new(
            SortExec::new(
                datafusion::physical_expr::LexOrdering::new(vec![
                    datafusion::physical_expr::PhysicalSortExpr::new_default(Arc::new(
                        datafusion::physical_expr::expressions::Column::new("a", 0),
                    )),
                ])
                .unwrap(),
                reader(2, ReadMode::ByProducer, 4),
            )
            .with_preserve_partitioning(true),
        );
        let merged: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(reader(
            3,
            ReadMode::Partitioned,
            4,
        )));
        assert_eq!(
            sliceable_inputs(&direct),
            HashMap::from([(1, ReadMode::Partitioned)])
        );
        assert_eq!(
            sliceable_inputs(&(sorted as Arc<dyn ExecutionPlan>)),
            HashMap::from([(2, ReadMode::ByProducer)])
        );
        assert!(
            sliceable_inputs(&merged).is_empty(),
            "a coalesce reads every partition"
        );
        // A union shifts its inputs' partitions: nothing under it is sliced.
        let union = UnionExec::try_new(vec![
            reader(4, ReadMode::Partitioned, 2),
            reader(5, ReadMode::Partitioned, 2),
        ])
        .unwrap();
        assert!(sliceable_inputs(&union).is_empty());
    }

    #[test]
    fn a_scalar_subquery_slices_its_main_input_not_its_subqueries() {
        use datafusion::logical_expr::physical_planning_context::{
            ScalarSubqueryResults, SubqueryIndex,
        };
        use datafusion::physical_plan::scalar_subquery::ScalarSubqueryLink;
        let plan: Arc<dyn ExecutionPlan> = Arc::new(ScalarSubqueryExec::new(
            reader(6, ReadMode::Partitioned, 4),
            vec![ScalarSubqueryLink {
                plan: reader(3, ReadMode::Partitioned, 4),
                index: SubqueryIndex::new(0),
            }],
            ScalarSubqueryResults::new(1),
        ));
        assert_eq!(
            sliceable_inputs(&plan),
            HashMap::from([(6, ReadMode::Partitioned)]),
            "the main input is read partition for partition, the subquery whole"
        );
    }
}
