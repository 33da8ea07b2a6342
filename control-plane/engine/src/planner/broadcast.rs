//! Shuffled joins that become broadcast joins when their build side turns
//! out small.
//!
//! The planner shuffles both sides of a join it estimates large on both
//! sides, and its estimates of filtered sides are often far off: DataFusion
//! takes a filter it cannot bound by statistics to keep a fifth of the rows
//! (TPC-H Q12's filtered lineitem, 31 thousand rows at SF 1, is planned as
//! 1.2 million, so the 1.5 million orders are shuffled to meet it). Where
//! the join's probe (right) side is a stage that only scans a table, that
//! stage can wait for the build side; when the build side commits within
//! the broadcast limits, the join's stage takes the scan into its own
//! tasks, one per scan partition, each reading the whole build side (a
//! collect-left join), and the probe side is never shuffled. When it is
//! larger, the probe stage runs as planned, its key filter (if any) ready.
//! The plan rewrite is here; the scheduler decides when the build side
//! commits (`scheduler::job`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, JoinType, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use squall_executor::context::{BROADCAST_JOIN_BYTES, BROADCAST_JOIN_ROWS};
use squall_executor::{
    KeyFilterExec, ReadMode, ShuffleReaderExec, ShuffleWriterExec, stage_writer,
};

use super::key_filters::readers_of;
use super::slices::{has_sliceable_scans, scan_config};
use super::stages::{LateBroadcast, Stage, StageDag, StageOutput};

/// A probe stage waits for the build side only while the planner's
/// estimate of the build side is within this many times the limit: past
/// it a side that small would be an estimate off by more than this, and
/// the wait would only put the build side's time before the probe scan's
/// on the job's path (on a machine whose cores both stages share, the wait
/// costs little: they would have shared them).
pub const WAIT_ESTIMATE_RATIO: usize = 32;

/// How small a build side must commit for its shuffled join to become a
/// broadcast join (by default the planner's own broadcast limits, so a
/// late broadcast is the join it would have planned had it known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateBroadcastLimits {
    pub rows: usize,
    /// Bytes of Arrow data (before any shuffle compression).
    pub bytes: usize,
}

impl Default for LateBroadcastLimits {
    fn default() -> Self {
        Self {
            rows: BROADCAST_JOIN_ROWS,
            bytes: BROADCAST_JOIN_BYTES,
        }
    }
}

/// Join types a collect-left join computes task by task: no left row is
/// emitted for lack of a match, which only the tasks together could know.
fn probe_decides(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
    )
}

fn reader(plan: &Arc<dyn ExecutionPlan>) -> Option<&ShuffleReaderExec> {
    plan.downcast_ref::<ShuffleReaderExec>()
        .filter(|r| r.mode() == ReadMode::Partitioned)
}

/// The shuffled join reached from `plan` through operators that handle
/// each row on its own (and collect-left joins' probe sides), both of whose
/// sides are shuffle readers: (build stage, probe stage).
fn shuffled_join(plan: &Arc<dyn ExecutionPlan>) -> Option<(u32, u32)> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return match join.partition_mode() {
            PartitionMode::Partitioned if probe_decides(*join.join_type()) => Some((
                reader(join.left())?.stage_id(),
                reader(join.right())?.stage_id(),
            )),
            PartitionMode::CollectLeft => shuffled_join(join.right()),
            _ => None,
        };
    }
    let rowwise = stage_writer(plan.as_ref()).is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
        || plan.downcast_ref::<KeyFilterExec>().is_some()
        || plan
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial);
    match plan.children().as_slice() {
        [child] if rowwise => shuffled_join(child),
        _ => None,
    }
}

/// Whether `stage` only scans a table (through filters and projections)
/// and hash-partitions the rows.
fn scan_only(stage: &Stage) -> bool {
    fn scans(plan: &Arc<dyn ExecutionPlan>) -> bool {
        if scan_config(plan).is_some() {
            return true;
        }
        let through = plan.downcast_ref::<ProjectionExec>().is_some()
            || plan.downcast_ref::<FilterExec>().is_some()
            || plan.downcast_ref::<CooperativeExec>().is_some();
        match plan.children().as_slice() {
            [child] if through => scans(child),
            _ => false,
        }
    }
    let Some(writer) = stage.plan.downcast_ref::<ShuffleWriterExec>() else {
        return false;
    };
    matches!(stage.output, StageOutput::Hash(_))
        && stage.inputs.is_empty()
        && stage.read_bytes > 0
        && scans(writer.input())
}

/// The shuffled joins of `dag` whose probe side could be scanned by the
/// join's stage within `limits`. The probe stage waits for the build side
/// where the planner's estimate of the build side is within
/// [`WAIT_ESTIMATE_RATIO`] times the rows: without the wait it would be
/// running before the build side commits, and could not be taken in.
pub fn late_broadcasts(dag: &StageDag, limits: LateBroadcastLimits) -> Vec<LateBroadcast> {
    let mut sites = Vec::new();
    for join in &dag.stages {
        if join.sliced_scans || join.inputs.len() < 2 {
            continue;
        }
        let Some((build, probe)) = shuffled_join(&join.plan) else {
            continue;
        };
        let (Some(build_stage), Some(probe_stage)) = (dag.stage(build), dag.stage(probe)) else {
            continue;
        };
        let only_reader = dag
            .stages
            .iter()
            .filter(|s| s.inputs.contains(&probe))
            .all(|s| s.id == join.id);
        let sliced_elsewhere = join
            .sliced_inputs
            .keys()
            .any(|i| *i != build && *i != probe);
        // A probe stage whose keys filter another stage must commit them.
        let summarises = dag.key_filters.iter().any(|f| f.source == probe);
        if build == probe
            || !scan_only(probe_stage)
            || !only_reader
            || sliced_elsewhere
            || summarises
            || readers_of(&join.plan, build) != 1
            || readers_of(&join.plan, probe) != 1
        {
            continue;
        }
        let estimate = build_stage
            .plan
            .downcast_ref::<ShuffleWriterExec>()
            .and_then(|w| {
                StatisticsContext::new()
                    .compute(w.input().as_ref(), &StatisticsArgs::new())
                    .ok()
            })
            .and_then(|s| s.num_rows.get_value().copied());
        let wait =
            estimate.is_some_and(|rows| rows <= limits.rows.saturating_mul(WAIT_ESTIMATE_RATIO));
        sites.push(LateBroadcast {
            join: join.id,
            build,
            probe,
            wait,
            max_rows: limits.rows as u64,
            max_bytes: limits.bytes as u64,
        });
    }
    sites
}

/// `join_stage` with its shuffled join of `build` and `probe` made a
/// collect-left join: the build side read whole (all `build_files` files of
/// the build stage), the probe side the plan under `probe`'s writer, the
/// stage's tasks `probe`'s scan tasks.
pub fn broadcast_stage(
    join_stage: &Stage,
    probe: &Stage,
    build: u32,
    build_files: usize,
) -> Result<Stage> {
    let body = probe.writer_input()?;
    let mut replaced = 0usize;
    let plan = join_stage
        .plan
        .clone()
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let (Some(left), Some(right)) = (reader(join.left()), reader(join.right())) else {
                return Ok(Transformed::no(node));
            };
            if left.stage_id() != build || right.stage_id() != probe.id {
                return Ok(Transformed::no(node));
            }
            if right.schema() != body.schema() {
                return Err(DataFusionError::Internal(format!(
                    "stage {}'s reader of stage {} expects another schema",
                    join_stage.id, probe.id
                )));
            }
            let whole = ShuffleReaderExec::new(
                build,
                left.schema(),
                ReadMode::ByProducer,
                build_files.max(1),
            );
            let left: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(Arc::new(whole)));
            let joined = join
                .builder()
                .with_partition_mode(PartitionMode::CollectLeft)
                .with_new_children(vec![left, body.clone()])?
                .recompute_properties()
                .build_exec()?;
            replaced += 1;
            Ok(Transformed::yes(joined))
        })?
        .data;
    if replaced != 1 {
        return Err(DataFusionError::Internal(format!(
            "stage {} has no shuffled join of stages {build} and {}",
            join_stage.id, probe.id
        )));
    }
    let mut sliced_inputs = join_stage.sliced_inputs.clone();
    sliced_inputs.retain(|i, _| *i != build && *i != probe.id);
    if !sliced_inputs.is_empty() {
        return Err(DataFusionError::Internal(format!(
            "stage {} reads other shuffles partition by partition",
            join_stage.id
        )));
    }
    Ok(Stage {
        sliced_scans: has_sliceable_scans(&plan),
        plan,
        tasks: probe.tasks,
        inputs: join_stage
            .inputs
            .iter()
            .copied()
            .filter(|i| *i != probe.id)
            .collect(),
        sliced_inputs,
        split_input: None,
        encoded: None,
        read_bytes: join_stage.read_bytes.saturating_add(probe.read_bytes),
        ..join_stage.clone()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::common::NullEquality;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_plan::{ExecutionPlanProperties, displayable};
    use squall_executor::ShuffleOutput;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]))
    }

    fn reader(stage: u32) -> Arc<dyn ExecutionPlan> {
        Arc::new(ShuffleReaderExec::new(
            stage,
            schema(),
            ReadMode::Partitioned,
            4,
        ))
    }

    fn stage(
        id: u32,
        plan: Arc<dyn ExecutionPlan>,
        inputs: Vec<u32>,
        output: StageOutput,
    ) -> Stage {
        Stage {
            id,
            tasks: plan.output_partitioning().partition_count(),
            plan,
            inputs,
            sliced_inputs: HashMap::new(),
            sliced_scans: false,
            split_input: None,
            output,
            encoded: None,
            read_bytes: 0,
        }
    }

    /// Stage 2: a filtered scan of three files, hash-partitioned four ways.
    fn probe() -> Stage {
        let files = (0..3)
            .map(|i| FileGroup::new(vec![PartitionedFile::new(format!("t/f{i}.parquet"), 100)]))
            .collect();
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::parse("file://").unwrap(),
            Arc::new(ParquetSource::new(schema())),
        )
        .with_file_groups(files)
        .build();
        let scan = DataSourceExec::from_data_source(config);
        let filter = FilterExec::try_new(
            datafusion::physical_expr::expressions::binary(
                col("k", &schema()).unwrap(),
                datafusion::logical_expr::Operator::Gt,
                lit(0i64),
                &schema(),
            )
            .unwrap(),
            scan,
        )
        .unwrap();
        let output = ShuffleOutput::Hash(vec![col("k", &schema()).unwrap()], 4);
        let plan = Arc::new(ShuffleWriterExec::new(
            Arc::new(filter),
            output,
            "memory:///w/2".into(),
        ));
        Stage {
            read_bytes: 300,
            sliced_scans: true,
            ..stage(2, plan, vec![], StageOutput::Hash(4))
        }
    }

    /// Stage 3: `join_type` of stage 1 (build) and stage 2 (probe), partitioned.
    fn join(join_type: JoinType) -> Stage {
        let on = vec![(col("k", &schema()).unwrap(), col("k", &schema()).unwrap())];
        let join = HashJoinExec::try_new(
            reader(1),
            reader(2),
            on,
            None,
            &join_type,
            None,
            PartitionMode::Partitioned,
            NullEquality::NullEqualsNothing,
            false,
        )
        .unwrap();
        let plan = Arc::new(ShuffleWriterExec::new(
            Arc::new(join),
            ShuffleOutput::Single,
            "memory:///w/3".into(),
        ));
        Stage {
            sliced_inputs: HashMap::from([(1, ReadMode::Partitioned), (2, ReadMode::Partitioned)]),
            ..stage(3, plan, vec![1, 2], StageOutput::Single)
        }
    }

    fn dag(join_type: JoinType) -> StageDag {
        let build = Stage {
            read_bytes: 1000,
            ..stage(1, reader(9), vec![9], StageOutput::Hash(4))
        };
        let build = Stage {
            plan: Arc::new(ShuffleWriterExec::new(
                build.plan.clone(),
                ShuffleOutput::Hash(vec![col("k", &schema()).unwrap()], 4),
                "memory:///w/1".into(),
            )),
            ..build
        };
        StageDag {
            stages: vec![build, probe(), join(join_type)],
            schema: schema(),
            key_filters: vec![],
            late_broadcasts: vec![],
        }
    }

    #[test]
    fn joins_that_emit_no_unmatched_build_row_over_a_scanned_probe_side_are_sites() {
        for join_type in [
            JoinType::Inner,
            JoinType::Right,
            JoinType::RightSemi,
            JoinType::RightAnti,
        ] {
            let sites = late_broadcasts(&dag(join_type), LateBroadcastLimits::default());
            assert_eq!(sites.len(), 1, "{join_type}");
            let site = &sites[0];
            assert_eq!(
                (site.join, site.build, site.probe),
                (3, 1, 2),
                "{join_type}"
            );
            assert_eq!((site.max_rows, site.max_bytes), (1 << 20, 16 << 20));
        }
        // Unmatched build rows need every probe row: no site.
        for join_type in [
            JoinType::Left,
            JoinType::Full,
            JoinType::LeftSemi,
            JoinType::LeftAnti,
        ] {
            assert!(late_broadcasts(&dag(join_type), LateBroadcastLimits::default()).is_empty());
        }
        // A probe stage that reads a shuffle is not a scan to take in.
        let mut shuffled = dag(JoinType::Inner);
        shuffled.stages[1].inputs = vec![9];
        assert!(late_broadcasts(&shuffled, LateBroadcastLimits::default()).is_empty());
    }

    #[test]
    fn the_join_stage_takes_in_the_scan_and_reads_the_build_side_whole() {
        let dag = dag(JoinType::Inner);
        let joined = broadcast_stage(&dag.stages[2], &dag.stages[1], 1, 5).unwrap();
        let text = displayable(joined.plan.as_ref()).indent(true).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert!(
            lines[1].starts_with("HashJoinExec: mode=CollectLeft, join_type=Inner"),
            "{text}"
        );
        assert_eq!(lines[2], "CoalescePartitionsExec", "{text}");
        assert_eq!(
            lines[3], "ShuffleReaderExec: stage=1, partitions=5, mode=by_producer",
            "{text}"
        );
        assert!(lines[4].starts_with("FilterExec"), "{text}");
        assert!(lines[5].starts_with("DataSourceExec"), "{text}");
        assert_eq!(joined.tasks, 3);
        assert_eq!(joined.inputs, vec![1]);
        assert!(joined.sliced_inputs.is_empty() && joined.sliced_scans);
        assert_eq!(
            (joined.read_bytes, joined.output.clone()),
            (300, StageOutput::Single)
        );
        // Stages that do not hold that join are not rewritten.
        assert!(broadcast_stage(&dag.stages[2], &dag.stages[1], 7, 5).is_err());
    }
}
