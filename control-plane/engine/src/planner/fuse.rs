//! A small stage run by the one task that reads it, instead of by tasks of
//! its own.
//!
//! Every stage costs a round of task launches, a shuffle written and read
//! back, and a wait for its slowest task. Where a stage reads only shuffles,
//! writes one partition per task, and is read by a stage of one task (the
//! sort and merge at the top of most queries), that one task can run the
//! stage's plan itself: the consumer's reader of it becomes the stage's plan
//! as one task of it sized to the whole shuffle would run it (see
//! `scheduler::coalesce`): every partition of each input in one stream, a
//! ranged read per producer file, not one per partition and file. The scheduler decides at run time, from
//! the bytes those inputs committed (see `scheduler::job`); this module only
//! rewrites the plans.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use squall_executor::{ReadMode, ShuffleReaderExec};

use super::stages::{Stage, StageOutput};

/// Whether `stage` could run inside the task of a stage that reads it: it
/// writes one partition per task and reads nothing but shuffles partition
/// by partition (no table, no generator whose rows would be made again).
pub fn fusable(stage: &Stage) -> bool {
    if stage.output != StageOutput::Single || stage.sliced_scans || stage.inputs.is_empty() {
        return false;
    }
    let mut only_shuffles = true;
    let walked = stage.plan.apply(|node| {
        let leaf = node.children().is_empty();
        let allowed = node
            .downcast_ref::<ShuffleReaderExec>()
            .is_some_and(|r| r.mode() == ReadMode::Partitioned)
            || node.downcast_ref::<EmptyExec>().is_some()
            || node.downcast_ref::<PlaceholderRowExec>().is_some();
        if leaf && !allowed {
            only_shuffles = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    walked.is_ok() && only_shuffles
}

/// The plan under `producer`'s writer as one task of it reading every
/// partition runs it: each reader of an input stage (of `files` files)
/// made one stream of all of them, a whole file at a time.
fn whole(producer: &Stage, files: &HashMap<u32, usize>) -> Result<Arc<dyn ExecutionPlan>> {
    producer
        .writer_input()?
        .transform_up(|node| {
            let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(&count) = files.get(&reader.stage_id()) else {
                return Err(DataFusionError::Internal(format!(
                    "stage {} was not committed",
                    reader.stage_id()
                )));
            };
            let by_file = ShuffleReaderExec::new(
                reader.stage_id(),
                reader.schema(),
                ReadMode::ByProducer,
                count.max(1),
            );
            Ok(Transformed::yes(Arc::new(CoalescePartitionsExec::new(
                Arc::new(by_file),
            ))))
        })
        .map(|t| t.data)
}

/// `consumer` running `producer` itself: each reader of `producer` in its
/// plan replaced by the plan under `producer`'s writer run as one stream
/// over all of its inputs (`files`: how many files each input stage
/// committed), and `producer`'s inputs read whole. An error where
/// `producer` is not [`fusable`] or its plan does not fit the reader; the
/// caller then runs both as planned.
pub fn fused_stage(
    consumer: &Stage,
    producer: &Stage,
    files: &HashMap<u32, usize>,
) -> Result<Stage> {
    if !fusable(producer) {
        return Err(DataFusionError::Internal(format!(
            "stage {} cannot run inside another stage's task",
            producer.id
        )));
    }
    let body = whole(producer, files)?;
    let mut replaced = 0usize;
    let plan = consumer
        .plan
        .clone()
        .transform_up(|node| {
            let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                return Ok(Transformed::no(node));
            };
            if reader.stage_id() != producer.id {
                return Ok(Transformed::no(node));
            }
            if reader.schema() != body.schema() {
                return Err(DataFusionError::Internal(format!(
                    "stage {}'s reader of stage {} expects another schema",
                    consumer.id, producer.id
                )));
            }
            let partitions = body.output_partitioning().partition_count();
            let fused: Arc<dyn ExecutionPlan> = match reader.mode() {
                ReadMode::ByProducer if partitions <= reader.partitions() => body.clone(),
                ReadMode::Partitioned if reader.partitions() == 1 => {
                    if partitions == 1 {
                        body.clone()
                    } else {
                        Arc::new(CoalescePartitionsExec::new(body.clone()))
                    }
                }
                mode => {
                    return Err(DataFusionError::Internal(format!(
                        "stage {}'s reader of stage {} ({mode:?}, {} partitions) cannot take its {partitions} partitions",
                        consumer.id,
                        producer.id,
                        reader.partitions()
                    )));
                }
            };
            replaced += 1;
            Ok(Transformed::yes(fused))
        })?
        .data;
    if replaced == 0 {
        return Err(DataFusionError::Internal(format!(
            "stage {} does not read stage {}",
            consumer.id, producer.id
        )));
    }
    let mut inputs: Vec<u32> = consumer
        .inputs
        .iter()
        .copied()
        .filter(|i| *i != producer.id)
        .collect();
    let had: HashSet<u32> = inputs.iter().copied().collect();
    inputs.extend(producer.inputs.iter().filter(|i| !had.contains(i)));
    let mut sliced_inputs = consumer.sliced_inputs.clone();
    sliced_inputs.remove(&producer.id);
    if producer
        .inputs
        .iter()
        .any(|i| sliced_inputs.contains_key(i))
    {
        return Err(DataFusionError::Internal(format!(
            "stage {} reads a slice of an input stage {} reads whole",
            consumer.id, producer.id
        )));
    }
    Ok(Stage {
        plan,
        inputs,
        sliced_inputs,
        split_input: consumer.split_input.filter(|i| *i != producer.id),
        encoded: None,
        read_bytes: consumer.read_bytes.saturating_add(producer.read_bytes),
        ..consumer.clone()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
    use squall_executor::{ShuffleOutput, ShuffleWriterExec};

    pub(crate) fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]))
    }

    fn reader(stage: u32, mode: ReadMode, partitions: usize) -> Arc<dyn ExecutionPlan> {
        Arc::new(ShuffleReaderExec::new(stage, schema(), mode, partitions))
    }

    /// Stage `id` of `tasks` tasks writing one partition each over `body`.
    pub(crate) fn single_stage(id: u32, inputs: Vec<u32>, body: Arc<dyn ExecutionPlan>) -> Stage {
        let tasks = body.output_partitioning().partition_count();
        Stage {
            id,
            plan: Arc::new(ShuffleWriterExec::new(
                body,
                ShuffleOutput::Single,
                format!("memory:///work/{id}"),
            )),
            tasks,
            inputs,
            sliced_inputs: HashMap::new(),
            sliced_scans: false,
            split_input: None,
            output: StageOutput::Single,
            encoded: None,
            read_bytes: 0,
        }
    }

    /// The producer (stage 2, reading 4 partitions of stage 1) and a final
    /// stage of one task reading it by `mode`.
    pub(crate) fn pair(mode: ReadMode) -> (Stage, Stage) {
        let producer = single_stage(2, vec![1], reader(1, ReadMode::Partitioned, 4));
        let partitions = if mode == ReadMode::ByProducer { 4 } else { 1 };
        let read = reader(2, mode, partitions);
        let plan: Arc<dyn ExecutionPlan> = match mode {
            ReadMode::ByProducer => Arc::new(SortPreservingMergeExec::new(
                [datafusion::physical_expr::PhysicalSortExpr::new_default(
                    datafusion::physical_expr::expressions::col("k", &schema()).unwrap(),
                )]
                .into(),
                read,
            )),
            ReadMode::Partitioned => Arc::new(CoalescePartitionsExec::new(read)),
        };
        let consumer = Stage {
            id: 3,
            plan,
            tasks: 1,
            inputs: vec![2],
            sliced_inputs: HashMap::from([(2, mode)]),
            sliced_scans: false,
            split_input: Some(2),
            output: StageOutput::Result,
            encoded: None,
            read_bytes: 7,
        };
        (producer, consumer)
    }

    /// Stage 1 committed three files.
    fn files() -> HashMap<u32, usize> {
        HashMap::from([(1, 3)])
    }

    fn shown(stage: &Stage) -> String {
        displayable(stage.plan.as_ref()).indent(true).to_string()
    }

    #[test]
    fn a_reader_by_producer_becomes_the_producers_plan_over_whole_files() {
        let (producer, consumer) = pair(ReadMode::ByProducer);
        let fused = fused_stage(&consumer, &producer, &files()).unwrap();
        let text = shown(&fused);
        // One stream of every partition of stage 1, a whole file at a time.
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines[1..],
            [
                "CoalescePartitionsExec",
                "ShuffleReaderExec: stage=1, partitions=3, mode=by_producer"
            ],
            "{text}"
        );
        assert!(!text.contains("ShuffleWriterExec"), "{text}");
        assert_eq!(fused.inputs, vec![1]);
        assert!(fused.sliced_inputs.is_empty());
        assert_eq!(fused.split_input, None);
        assert_eq!((fused.id, fused.tasks, fused.read_bytes), (3, 1, 7));
        assert_eq!(fused.output, StageOutput::Result);
    }

    #[test]
    fn a_gathering_reader_becomes_the_producers_plan_merged() {
        let (producer, consumer) = pair(ReadMode::Partitioned);
        let fused = fused_stage(&consumer, &producer, &files()).unwrap();
        let text = shown(&fused);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "CoalescePartitionsExec",
                "CoalescePartitionsExec",
                "ShuffleReaderExec: stage=1, partitions=3, mode=by_producer"
            ],
            "{text}"
        );
    }

    #[test]
    fn only_stages_of_shuffles_writing_one_partition_are_fused() {
        let (producer, consumer) = pair(ReadMode::ByProducer);
        assert!(fusable(&producer));
        // A table scan (here rows in memory) would be read again.
        let memory = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[vec![]],
            schema(),
            None,
        )
        .unwrap();
        let scans = single_stage(2, vec![1], memory);
        assert!(!fusable(&scans));
        assert!(fused_stage(&consumer, &scans, &files()).is_err());
        // Hash partitions need an exchange between the two.
        let hashed = Stage {
            output: StageOutput::Hash(4),
            ..producer.clone()
        };
        assert!(!fusable(&hashed));
        // A stage that does not read the producer is not rewritten.
        let other = Stage {
            id: 5,
            ..producer.clone()
        };
        assert!(fused_stage(&consumer, &other, &files()).is_err());
    }
}
