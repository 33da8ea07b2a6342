//! Which partitions of a stage plan a task's partition reaches, and running a
//! task's partition as a plan of one partition.
//!
//! Task `t` of a stage runs partition `t` of the stage plan. Through operators
//! that compute their partition `i` from their input's partition `i` alone
//! ([`one_to_one`]) it reaches partition `t` of each scan and reader below and
//! nothing else of them. The control plane uses that to send a task only its
//! slice of the inputs; the executor uses it to cut the plan down to the task's
//! partition ([`narrow`]), so that the plan the task runs is one DataFusion runs
//! whole. That matters where an operator waits for all its partitions: a
//! collect-left hash join fills the dynamic filter it pushed into its probe
//! side's scan only once every partition of the join has built its side, and
//! in a plan of N partitions of which a task runs one, that never happens.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};

use crate::keys::KeyFilterExec;
use crate::root::stage_writer;

/// Whether partition `i` of `plan` is computed from partition `i` of child
/// `child` alone.
pub fn one_to_one(plan: &Arc<dyn ExecutionPlan>, child: usize) -> bool {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return match join.partition_mode() {
            PartitionMode::Partitioned => true,
            // The build side is collected whole by every partition.
            PartitionMode::CollectLeft => child == 1,
            PartitionMode::Auto => false,
        };
    }
    // A scalar subquery's main input runs partition for partition; the
    // subqueries (children after the first) are computed whole.
    if plan.downcast_ref::<ScalarSubqueryExec>().is_some() {
        return child == 0;
    }
    stage_writer(plan.as_ref()).is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
        || plan.downcast_ref::<KeyFilterExec>().is_some()
        || plan.downcast_ref::<AggregateExec>().is_some()
        || plan.downcast_ref::<SortExec>().is_some()
        || plan.downcast_ref::<LocalLimitExec>().is_some()
        || plan.downcast_ref::<BoundedWindowAggExec>().is_some()
        || plan.downcast_ref::<WindowAggExec>().is_some()
        || plan.downcast_ref::<SortMergeJoinExec>().is_some()
}

/// The file scan configuration of `plan`, if it is a file scan.
pub fn scan_config(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// The scan of `config` with its files in `groups`, a partition each.
pub fn regrouped(config: &FileScanConfig, groups: Vec<FileGroup>) -> Arc<dyn ExecutionPlan> {
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(groups)
        .build();
    DataSourceExec::from_data_source(config)
}

/// Partition `partition` of `plan` as a plan of one partition, if every path
/// from the root to a leaf that partition reaches goes through operators
/// mapping partitions one to one ([`one_to_one`]) down to file scans, each of
/// which then keeps that partition's files alone. None where such a path ends
/// anywhere else (a shuffle reader, a generator), or an operator on it maps
/// partitions otherwise (a union, a repartition): the task then runs its
/// partition of the plan as it is. A plan of one partition is returned as it is.
pub fn narrow(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let count = plan.properties().partitioning.partition_count();
    if count <= 1 {
        return Ok(Some(plan.clone()));
    }
    let Some(narrowed) = narrow_aligned(plan, partition, count)? else {
        return Ok(None);
    };
    Ok((narrowed.properties().partitioning.partition_count() == 1).then_some(narrowed))
}

/// `plan`, of `count` partitions, cut down to its partition `partition`.
fn narrow_aligned(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    count: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(config) = scan_config(plan) {
        let Some(group) = config.file_groups.get(partition) else {
            return Ok(None);
        };
        return Ok(Some(regrouped(config, vec![group.clone()])));
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(None);
    }
    let mut narrowed = Vec::with_capacity(children.len());
    for (index, child) in children.into_iter().enumerate() {
        if child.properties().partitioning.partition_count() != count {
            // Computed whole by every partition (a collect-left join's build
            // side), or mapped otherwise, which the partition count of the
            // result then shows.
            narrowed.push(child.clone());
            continue;
        }
        if !one_to_one(plan, index) {
            return Ok(None);
        }
        match narrow_aligned(child, partition, count)? {
            Some(child) => narrowed.push(child),
            None => return Ok(None),
        }
    }
    replace_children_if_necessary(plan.clone(), narrowed).map(Some)
}

/// Whether a hash join of `plan` made a dynamic filter for its probe side.
pub fn makes_join_filters(plan: &Arc<dyn ExecutionPlan>) -> bool {
    (plan.downcast_ref::<HashJoinExec>().is_some()
        && !plan.dynamic_expressions_produced().is_empty())
        || plan.children().into_iter().any(makes_join_filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::common::NullEquality;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::ParquetSource;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::logical_expr::JoinType;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::union::UnionExec;

    use crate::shuffle::{ReadMode, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]))
    }

    /// A scan of `files` files, one partition each.
    fn scan(name: &str, files: usize) -> Arc<dyn ExecutionPlan> {
        let groups = (0..files)
            .map(|i| {
                FileGroup::new(vec![PartitionedFile::new(
                    format!("{name}/f{i}.parquet"),
                    100,
                )])
            })
            .collect();
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::parse("file://").unwrap(),
            Arc::new(ParquetSource::new(schema())),
        )
        .with_file_groups(groups)
        .build();
        DataSourceExec::from_data_source(config)
    }

    /// A collect-left join of a gathered `build` and `probe`.
    fn join(build: Arc<dyn ExecutionPlan>, probe: Arc<dyn ExecutionPlan>) -> HashJoinExec {
        let on = vec![(col("k", &schema()).unwrap(), col("k", &schema()).unwrap())];
        HashJoinExec::try_new(
            Arc::new(CoalescePartitionsExec::new(build)),
            probe,
            on,
            None,
            &JoinType::Inner,
            None,
            PartitionMode::CollectLeft,
            NullEquality::NullEqualsNothing,
            false,
        )
        .unwrap()
    }

    /// `join` under a writer.
    fn written(join: HashJoinExec) -> Arc<dyn ExecutionPlan> {
        let output = ShuffleOutput::Hash(vec![col("k", &schema()).unwrap()], 4);
        Arc::new(ShuffleWriterExec::new(
            Arc::new(join),
            output,
            "memory:///w/1".into(),
        ))
    }

    fn broadcast(
        build: Arc<dyn ExecutionPlan>,
        probe: Arc<dyn ExecutionPlan>,
    ) -> Arc<dyn ExecutionPlan> {
        written(join(build, probe))
    }

    fn partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
        plan.properties().partitioning.partition_count()
    }

    /// The files of every scan of `plan`, by scan and partition.
    fn files(plan: &Arc<dyn ExecutionPlan>) -> Vec<Vec<Vec<String>>> {
        let mut out = vec![];
        if let Some(config) = scan_config(plan) {
            out.push(
                config
                    .file_groups
                    .iter()
                    .map(|g| g.files().iter().map(|f| f.path().to_string()).collect())
                    .collect(),
            );
        }
        for child in plan.children() {
            out.extend(files(child));
        }
        out
    }

    #[test]
    fn a_broadcast_joins_task_runs_its_own_files_as_one_partition() {
        let plan = broadcast(scan("d", 2), scan("t", 3));
        assert_eq!(partitions(&plan), 3);
        let narrowed = narrow(&plan, 1).unwrap().expect("narrowed");
        assert_eq!(partitions(&narrowed), 1);
        assert_eq!(narrowed.name(), plan.name());
        // The build side is read whole; the probe side is partition 1's file.
        assert_eq!(
            files(&narrowed),
            vec![
                vec![
                    vec!["d/f0.parquet".to_string()],
                    vec!["d/f1.parquet".to_string()]
                ],
                vec![vec!["t/f1.parquet".to_string()]],
            ]
        );
        // A plan of one partition is itself.
        let single = broadcast(scan("d", 2), scan("t", 1));
        let same = narrow(&single, 0).unwrap().expect("one partition");
        assert!(Arc::ptr_eq(&same, &single));
    }

    #[test]
    fn plans_reaching_readers_or_mapping_partitions_otherwise_are_not_narrowed() {
        // A partitioned shuffle read on the probe side.
        let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
            2,
            schema(),
            ReadMode::Partitioned,
            3,
        ));
        assert!(
            narrow(&broadcast(scan("d", 1), reader), 0)
                .unwrap()
                .is_none()
        );
        // A union shifts its inputs' partitions.
        let union = UnionExec::try_new(vec![scan("t", 2), scan("u", 1)]).unwrap();
        assert!(
            narrow(&broadcast(scan("d", 1), union), 2)
                .unwrap()
                .is_none()
        );
        // A partition the scans do not have.
        assert!(
            narrow(&broadcast(scan("d", 1), scan("t", 3)), 3)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn join_filters_are_found_where_a_join_made_one() {
        assert!(!makes_join_filters(&broadcast(scan("d", 1), scan("t", 2))));
        let filter = Arc::new(
            datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr::new(
                vec![col("k", &schema()).unwrap()],
                datafusion::physical_expr::expressions::lit(true),
            ),
        );
        let join = join(scan("d", 1), scan("t", 2))
            .with_dynamic_filter_expr(filter)
            .unwrap();
        assert!(makes_join_filters(&written(join)));
    }
}
