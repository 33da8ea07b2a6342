//! Makes joins safe to split into tasks.
//!
//! A collect-left join builds its hash table from the whole left side and probes it
//! with each right partition. For join types that also emit left rows (LEFT, FULL,
//! LEFT SEMI/ANTI/MARK), DataFusion emits them once every probe partition of the
//! *process* has finished, from a bitmap the partitions share. With one probe
//! partition per task that never happens (each task sees one partition of many), so
//! those joins are rewritten:
//! - LEFT SEMI/ANTI hash joins without a filter keep the broadcast and never shuffle
//!   the big probe side: each probe task finds which of its keys the (small) build
//!   side has — a right semi join against the whole build side — and shuffles only
//!   those keys, de-duplicated; a partitioned semi/anti join of the build side with
//!   the matched keys gives the answer. The matched keys of a task are at most its
//!   probe rows, so this never shuffles more than the plain partitioned join;
//! - other hash joins become partitioned joins: both sides hash-shuffled on the
//!   join keys, so each task owns a disjoint slice of the left side;
//! - null-aware anti joins (`NOT IN`) and nested-loop joins have no keys to
//!   partition on: their probe side is gathered so one task sees all of it.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{
    HashJoinExec, HashJoinExecBuilder, NestedLoopJoinExec, PartitionMode,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, replace_children_if_necessary,
};

/// True for join types whose output includes rows (or marks) of the build side
/// that only the complete probe can decide.
fn emits_build_side(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
    )
}

/// Rewrites every join whose result would depend on sibling tasks; see the module doc.
pub fn distributable_joins(
    plan: Arc<dyn ExecutionPlan>,
    shuffle_partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let collect_left = *join.partition_mode() == PartitionMode::CollectLeft;
            if !collect_left || !emits_build_side(*join.join_type()) {
                return Ok(Transformed::no(node));
            }
            if join.null_aware {
                let right = gather(join.right().clone());
                let rebuilt =
                    replace_children_if_necessary(node.clone(), vec![join.left().clone(), right])?;
                return Ok(Transformed::yes(rebuilt));
            }
            let left = match join.left().downcast_ref::<CoalescePartitionsExec>() {
                Some(coalesce) => coalesce.input().clone(),
                None => join.left().clone(),
            };
            if matches!(join.join_type(), JoinType::LeftSemi | JoinType::LeftAnti)
                && join.filter().is_none()
            {
                return Ok(Transformed::yes(semi_join_on_matched_keys(
                    join,
                    left,
                    shuffle_partitions,
                )?));
            }
            let left_keys = join.on().iter().map(|(l, _)| l.clone()).collect();
            let right_keys = join.on().iter().map(|(_, r)| r.clone()).collect();
            let left = Arc::new(RepartitionExec::try_new(
                left,
                Partitioning::Hash(left_keys, shuffle_partitions),
            )?);
            let right = Arc::new(RepartitionExec::try_new(
                join.right().clone(),
                Partitioning::Hash(right_keys, shuffle_partitions),
            )?);
            let rebuilt = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .with_new_children(vec![left, right])?
                .build_exec()?;
            return Ok(Transformed::yes(rebuilt));
        }
        if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
            if !emits_build_side(*join.join_type())
                || join.right().output_partitioning().partition_count() <= 1
            {
                return Ok(Transformed::no(node));
            }
            let right = gather(join.right().clone());
            let rebuilt =
                replace_children_if_necessary(node.clone(), vec![join.left().clone(), right])?;
            return Ok(Transformed::yes(rebuilt));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// LEFT SEMI/ANTI (`small`, probe) as described in the module doc:
///
/// ```text
/// small_by_key = hash(small)                                  (one stage, read twice)
/// matched      = probe RIGHT SEMI JOIN gather(small_by_key)   (in each probe task)
/// keys         = hash(partial distinct(matched's join keys))
/// result       = small_by_key LEFT SEMI/ANTI JOIN keys        (partitioned)
/// ```
fn semi_join_on_matched_keys(
    join: &HashJoinExec,
    small: Arc<dyn ExecutionPlan>,
    shuffle_partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let small_keys: Vec<_> = join.on().iter().map(|(l, _)| l.clone()).collect();
    let small_by_key: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        small,
        Partitioning::Hash(small_keys.clone(), shuffle_partitions),
    )?);
    let matched = HashJoinExecBuilder::new(
        Arc::new(CoalescePartitionsExec::new(small_by_key.clone())),
        join.right().clone(),
        join.on().to_vec(),
        JoinType::RightSemi,
    )
    .with_partition_mode(PartitionMode::CollectLeft)
    .with_null_equality(join.null_equality())
    .build_exec()?;
    let names: Vec<String> = (0..join.on().len()).map(|i| format!("key{i}")).collect();
    let keys = ProjectionExec::try_new(
        join.on()
            .iter()
            .zip(&names)
            .map(|((_, r), name)| (r.clone(), name.clone())),
        matched,
    )?;
    let columns: Vec<Arc<dyn PhysicalExpr>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>)
        .collect();
    let group_by =
        PhysicalGroupBy::new_single(columns.iter().cloned().zip(names.iter().cloned()).collect());
    let keys_schema = keys.schema();
    let distinct = AggregateExec::try_new(
        AggregateMode::Partial,
        group_by,
        vec![],
        vec![],
        Arc::new(keys),
        keys_schema,
    )?;
    let keys_by_key = Arc::new(RepartitionExec::try_new(
        Arc::new(distinct),
        Partitioning::Hash(columns.clone(), shuffle_partitions),
    )?);
    join.builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_on(small_keys.into_iter().zip(columns).collect())
        .with_new_children(vec![small_by_key, keys_by_key])?
        .build_exec()
}

fn gather(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() <= 1 {
        plan
    } else {
        Arc::new(CoalescePartitionsExec::new(plan))
    }
}
