//! When a stage that is ready runs inside the task of the stage that reads
//! it instead of running tasks of its own (the plan rewrite is
//! `planner::fuse`). Pure: decided from the DAG and what its inputs
//! committed.

use std::collections::HashMap;
use std::sync::Arc;

use squall_executor::OutputFile;

use crate::planner::fuse::fusable;
use crate::planner::{Stage, StageDag};

/// Most shuffle files a fused stage's inputs may hold: its readers then
/// make at most this many reads per partition inside the one task, where
/// the stage's own tasks would have shared them.
pub const FUSE_MAX_FILES: usize = 256;

/// The index in `pending` of the stage whose one task is to run `stage`
/// (ready: its inputs are in `committed`), or None where it runs its own
/// tasks: fusing is off (`max_bytes` 0), it is not [`fusable`], a key
/// filter summarises or filters its rows, more than one stage reads it or
/// its reader runs more than one task, or its inputs hold more than
/// `max_bytes` of shuffle partitions or more than [`FUSE_MAX_FILES`] files.
pub fn fusion_target(
    dag: &StageDag,
    committed: &HashMap<u32, Vec<OutputFile>>,
    stage: &Stage,
    pending: &[Arc<Stage>],
    max_bytes: u64,
) -> Option<usize> {
    if max_bytes == 0 || !fusable(stage) {
        return None;
    }
    if dag
        .key_filters
        .iter()
        .any(|site| site.source == stage.id || site.target == stage.id)
    {
        return None;
    }
    let mut readers = pending
        .iter()
        .enumerate()
        .filter(|(_, s)| s.inputs.contains(&stage.id));
    let (at, reader) = readers.next()?;
    if readers.next().is_some() || reader.tasks != 1 {
        return None;
    }
    let mut bytes = 0u64;
    let mut files = 0usize;
    for input in &stage.inputs {
        let producers = committed.get(input)?;
        files += producers.len();
        bytes = producers
            .iter()
            .flat_map(|p| &p.partitions)
            .fold(bytes, |sum, slot| sum.saturating_add(slot.length));
    }
    (bytes <= max_bytes && files <= FUSE_MAX_FILES).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::fuse::tests::pair;
    use crate::planner::{KeyFilterSite, StageOutput};
    use squall_executor::{PartitionSlot, ReadMode};

    /// What stage 1 committed: `files` files of `bytes` in 4 partitions.
    fn committed(files: usize, bytes: u64) -> HashMap<u32, Vec<OutputFile>> {
        let file = |i: usize| OutputFile {
            url: format!("memory:///work/1/{i}"),
            size: bytes + 16,
            partitions: (0..4)
                .map(|p| PartitionSlot {
                    offset: p * bytes / 4,
                    length: bytes / 4,
                    rows: 1,
                })
                .collect(),
            keys: vec![],
        };
        HashMap::from([(1, (0..files).map(file).collect())])
    }

    fn dag(stages: Vec<Stage>) -> StageDag {
        StageDag {
            schema: crate::planner::fuse::tests::schema(),
            stages,
            key_filters: vec![],
            late_broadcasts: vec![],
        }
    }

    #[test]
    fn a_small_stage_goes_to_the_one_task_reading_it() {
        let (producer, consumer) = pair(ReadMode::ByProducer);
        let pending = vec![Arc::new(consumer.clone())];
        let dag = dag(vec![producer.clone(), consumer.clone()]);
        let small = committed(2, 1 << 20);
        assert_eq!(
            fusion_target(&dag, &small, &producer, &pending, 2 << 20),
            Some(0)
        );
        // Past the bytes, or off.
        assert_eq!(
            fusion_target(&dag, &small, &producer, &pending, (2 << 20) - 1),
            None
        );
        assert_eq!(fusion_target(&dag, &small, &producer, &pending, 0), None);
        // Too many files.
        let many = committed(FUSE_MAX_FILES + 1, 4);
        assert_eq!(
            fusion_target(&dag, &many, &producer, &pending, 1 << 30),
            None
        );
        // Its input not committed.
        assert_eq!(
            fusion_target(&dag, &HashMap::new(), &producer, &pending, 1 << 30),
            None
        );
    }

    #[test]
    fn a_stage_read_by_many_tasks_or_stages_or_filtering_keeps_its_tasks() {
        let (producer, consumer) = pair(ReadMode::ByProducer);
        let small = committed(2, 64);
        let wide = Stage {
            tasks: 2,
            output: StageOutput::Hash(2),
            ..consumer.clone()
        };
        let d = dag(vec![producer.clone(), wide.clone()]);
        assert_eq!(
            fusion_target(&d, &small, &producer, &[Arc::new(wide)], 1 << 30),
            None
        );
        let second = Stage {
            id: 4,
            ..consumer.clone()
        };
        let pending = [Arc::new(consumer.clone()), Arc::new(second.clone())];
        let d = dag(vec![producer.clone(), consumer.clone(), second]);
        assert_eq!(
            fusion_target(&d, &small, &producer, &pending, 1 << 30),
            None
        );
        // Its writers summarise keys that filter another stage.
        let mut d = dag(vec![producer.clone(), consumer.clone()]);
        d.key_filters.push(KeyFilterSite {
            source: producer.id,
            source_keys: vec![0],
            source_set: 0,
            target: 9,
            target_keys: vec![0],
            join: 3,
            join_type: datafusion::common::JoinType::Inner,
            wait: false,
        });
        let pending = [Arc::new(consumer)];
        assert_eq!(
            fusion_target(&d, &small, &producer, &pending, 1 << 30),
            None
        );
    }
}
