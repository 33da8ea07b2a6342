//! The two-level exchange in the scale model: each shuffle a stage reads at
//! scale is decided as the scheduler decides it ([`Exchange::estimate`], from
//! the producers', readers' and bytes' counts the scaled stages hold, priced
//! with the same table), and where it is two-level a combine step is put in
//! front of its reader: combiners that each read one range of each file of
//! their group of producers and write one file, the reader then making one
//! GET per group where it made one per producer. Sorted runs a stage merges
//! are merged in groups first where the policy says ([`Exchange::merge`]: a
//! reader of more than 48 runs), level on level while a reader would still
//! merge more than 48, the merge steps costing a decode, merge and encode of
//! their bytes. As in the scheduler, the fan-in a step is weighed by is the
//! reader's files of all its inputs.

use std::collections::HashMap;

use squall_engine::cost::Prices;
use squall_engine::scheduler::{Exchange, ExchangeChoice, Pricing, StageKind};

use crate::simulate::ScaledStage;

/// Ids of combine steps: this times their level plus the id of the stage
/// they combine.
pub const COMBINE_IDS: u32 = 1_000_000;

/// Combine or merge steps stacked on one input at most (the scheduler's).
const MAX_LEVELS: u32 = 3;

/// Bytes a second a combiner copies in memory (its reads and write are
/// the platform's transfers).
const COPY_BYTES_PER_SECOND: f64 = 2e9;

/// Fixed time of a combine task besides its bytes.
const COMBINE_OVERHEAD_SECONDS: f64 = 0.002;

/// Bytes a second a merge step decodes, merges and encodes (LZ4 and Arrow
/// IPC each way: a quarter of a copy's speed, not measured).
const MERGE_BYTES_PER_SECOND: f64 = 500e6;

/// `stages` with a combine step in front of every reader whose input
/// `policy` reads two-level, and every choice made (by reader). Combiners
/// hold `memory_bytes`.
pub fn with_exchange(
    stages: &[ScaledStage],
    policy: &Exchange,
    prices: &Prices,
    memory_bytes: u64,
    workers: usize,
) -> (Vec<ScaledStage>, Vec<(u32, ExchangeChoice)>) {
    let mut out: Vec<ScaledStage> = Vec::with_capacity(stages.len());
    let mut choices = Vec::new();
    // Tasks and bytes written per task, of every stage so far.
    let mut written: HashMap<u32, (usize, f64)> = HashMap::new();
    for stage in stages {
        let mut reader = stage.clone();
        let read = |inputs: &[u32], merge: bool| -> Vec<Input> {
            inputs
                .iter()
                .filter_map(|&input| {
                    let &(files, per_task) = written.get(&input)?;
                    let bytes = files as f64 * per_task;
                    Some(Input {
                        input,
                        source: input,
                        files,
                        bytes,
                        merge,
                        broadcast: stage.whole.contains(&input),
                    })
                })
                .collect()
        };
        let mut open = read(&stage.combinable, false);
        open.extend(read(&stage.mergeable, true));
        // Level by level, as the scheduler stacks them: every input one
        // level at a time, weighed beside the files the reader reads of its
        // other inputs; the reader's files of an input are then one a group
        // of the level below's.
        for level in 1..=MAX_LEVELS {
            let total = reader.shuffle_gets;
            let mut deeper = Vec::new();
            for input in open {
                let others = (total - input.files as f64).max(0.0) as usize;
                let pricing = Pricing {
                    prices,
                    memory_bytes,
                    workers,
                };
                let (choice, groups) = decide(level, &input, others, policy, stage.tasks, pricing);
                if level > 1 && !policy.stacks(&choice, others, input.broadcast && !input.merge) {
                    continue;
                }
                let cuts = groups.filter(|g| *g < input.files);
                if level == 1 || cuts.is_some() {
                    choices.push((stage.id, choice.clone()));
                }
                let Some(groups) = cuts else {
                    continue;
                };
                let id = COMBINE_IDS * level + input.input;
                let speed = match input.merge {
                    true => MERGE_BYTES_PER_SECOND,
                    false => COPY_BYTES_PER_SECOND,
                };
                let step = step(id, input.source, &choice, input.bytes, speed);
                let fewer = input.files - groups;
                put_in_front(
                    &mut reader,
                    step,
                    input.source,
                    fewer,
                    &mut written,
                    &mut out,
                );
                deeper.push(Input {
                    source: id,
                    files: groups,
                    ..input
                });
            }
            open = deeper;
        }
        reader.combinable.clear();
        reader.mergeable.clear();
        written.insert(reader.id, (reader.tasks, reader.bytes_out));
        out.push(reader);
    }
    (out, choices)
}

/// The choice for level `level` of `input`, read by `readers` tasks that
/// read `others` files of their other inputs, and the files a reader then
/// reads of it where the level is taken.
fn decide(
    level: u32,
    input: &Input,
    others: usize,
    policy: &Exchange,
    readers: usize,
    pricing: Pricing<'_>,
) -> (ExchangeChoice, Option<usize>) {
    let policy = match level {
        1 => policy.beside(others),
        _ => policy.deeper().beside(others),
    };
    if input.merge {
        let (choice, groups) = policy.merge(input.source, input.files, readers, pricing.prices);
        (choice, groups.map(|g| g.len()))
    } else {
        let bytes = input.bytes as u64;
        let choice = policy.estimate(input.source, input.files, readers, bytes, pricing);
        let groups = choice.two_level.then_some(choice.groups);
        (choice, groups)
    }
}

/// A shuffle input of a reader, as the levels in front of it leave it.
struct Input {
    /// The stage it is.
    input: u32,
    /// The stage whose files the reader reads of it (the last level's).
    source: u32,
    files: usize,
    bytes: f64,
    /// Sorted runs merged (else files combined).
    merge: bool,
    /// Read whole by every reader task.
    broadcast: bool,
}

/// The step `id` over stage `input`'s files, two-level by `choice` (a
/// combine or a merge step: `choice.combiners` tasks, each reading one range
/// of each file of its group), `bytes` in all, passed at `bytes_per_second`.
fn step(
    id: u32,
    input: u32,
    choice: &ExchangeChoice,
    bytes: f64,
    bytes_per_second: f64,
) -> ScaledStage {
    let tasks = choice.combiners.max(1);
    let per_task = bytes / tasks as f64;
    let reads = choice.producers as f64 / choice.groups.max(1) as f64;
    ScaledStage {
        id,
        kind: StageKind::Reduce,
        inputs: vec![input],
        tasks,
        bytes_scanned: 0.0,
        bytes_in: per_task,
        bytes_out: per_task,
        gets: reads.max(1.0),
        shuffle_gets: reads,
        compute_seconds: COMBINE_OVERHEAD_SECONDS + per_task / bytes_per_second,
        combinable: vec![],
        whole: vec![],
        mergeable: vec![],
    }
}

/// Puts `step` in front of `reader` in place of stage `source`, the reader
/// then reading `fewer` files less a task.
fn put_in_front(
    reader: &mut ScaledStage,
    step: ScaledStage,
    source: u32,
    fewer: usize,
    written: &mut HashMap<u32, (usize, f64)>,
    out: &mut Vec<ScaledStage>,
) {
    reader.gets = (reader.gets - fewer as f64).max(1.0);
    reader.shuffle_gets = (reader.shuffle_gets - fewer as f64).max(0.0);
    for i in reader.inputs.iter_mut().filter(|i| **i == source) {
        *i = step.id;
    }
    written.insert(step.id, (step.tasks, step.bytes_out));
    out.push(step);
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_engine::scheduler::ExchangeMode;

    fn stage(id: u32, inputs: Vec<u32>, tasks: usize, gets: f64, out: f64) -> ScaledStage {
        ScaledStage {
            id,
            kind: StageKind::Reduce,
            combinable: inputs.clone(),
            inputs,
            tasks,
            bytes_scanned: 0.0,
            bytes_in: 0.0,
            bytes_out: out,
            gets,
            shuffle_gets: gets,
            compute_seconds: 0.01,
            whole: vec![],
            mergeable: vec![],
        }
    }

    #[test]
    fn a_wide_shuffle_gets_a_combine_step_and_its_reader_fewer_gets() {
        // 2,000 producers of 10 MB into 1,024 reduce tasks.
        let stages = vec![
            stage(1, vec![], 2000, 10.0, 10e6),
            stage(2, vec![1], 1024, 2000.0, 1e6),
        ];
        let policy = Exchange {
            group_files: 64,
            ..Exchange::default()
        };
        let (out, choices) = with_exchange(&stages, &policy, &Prices::default(), 2 << 30, 1000);
        assert_eq!(out.len(), 3);
        let (reader, choice) = &choices[0];
        assert_eq!(*reader, 2);
        assert!(choice.two_level, "{choice:?}");
        let step = &out[1];
        assert_eq!(step.id, COMBINE_IDS + 1);
        assert_eq!(step.inputs, vec![1]);
        assert_eq!(step.tasks, choice.combiners);
        // 32 groups of 64 files (640 MB): ten ranges of 64 MiB each.
        assert_eq!((choice.groups, choice.combiners), (32, 320));
        assert_eq!(out[2].inputs, vec![COMBINE_IDS + 1]);
        assert!((out[2].gets - 32.0).abs() < 1e-9, "{:?}", out[2]);
        // As many GETs in all as the choice counted.
        let total: f64 = out[1..]
            .iter()
            .map(|s| s.shuffle_gets * s.tasks as f64)
            .sum();
        assert!(
            (total - choice.requests_two_level as f64).abs() < 1.0,
            "{total}"
        );
        // Direct: the stages as they were.
        let direct = Exchange {
            mode: ExchangeMode::Direct,
            ..policy
        };
        let (same, _) = with_exchange(&stages, &direct, &Prices::default(), 2 << 30, 1000);
        assert_eq!(same.len(), 2);
        assert!((same[1].gets - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn tens_of_thousands_of_producers_get_a_second_level() {
        // 50,000 producers of 1 MB into 10,000 reduce tasks: 782 groups of
        // 64 at the first level, 13 at the second.
        let stages = vec![
            stage(1, vec![], 50_000, 10.0, 1e6),
            stage(2, vec![1], 10_000, 50_000.0, 1e6),
        ];
        let (out, choices) = with_exchange(
            &stages,
            &Exchange::default(),
            &Prices::default(),
            2 << 30,
            1000,
        );
        assert_eq!(
            out.len(),
            4,
            "{:?}",
            out.iter().map(|s| s.id).collect::<Vec<_>>()
        );
        assert_eq!(choices.len(), 2);
        assert_eq!(out[1].id, COMBINE_IDS + 1);
        assert_eq!(out[2].id, 2 * COMBINE_IDS + 1);
        assert_eq!(out[2].inputs, vec![COMBINE_IDS + 1]);
        assert_eq!(out[3].inputs, vec![2 * COMBINE_IDS + 1]);
        assert!(out[3].gets <= 64.0, "{:?}", out[3]);
        assert!(out[1..3].iter().all(|s| s.gets <= 64.0));
    }

    #[test]
    fn a_merge_of_many_sorted_runs_gets_a_merge_step() {
        let mut merge = stage(2, vec![1], 1, 1024.0, 1e6);
        merge.combinable.clear();
        merge.mergeable = vec![1];
        let stages = vec![stage(1, vec![], 1024, 10.0, 1e6), merge];
        let policy = Exchange {
            group_files: 64,
            ..Exchange::default()
        };
        let (out, choices) = with_exchange(&stages, &policy, &Prices::default(), 2 << 30, 1000);
        assert!(choices[0].1.merge && choices[0].1.two_level);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].tasks, 16, "1,024 runs merged 64 at a time");
        assert!((out[2].gets - 16.0).abs() < 1e-9);
    }

    #[test]
    fn a_readers_inputs_are_weighed_together() {
        // 40 partial results of each of two stages, gathered by one task:
        // under the fan-in bound each, 80 files together.
        let stages = vec![
            stage(1, vec![], 40, 10.0, 1e5),
            stage(2, vec![], 40, 10.0, 1e5),
            stage(3, vec![1, 2], 1, 80.0, 1e5),
        ];
        let policy = Exchange::default();
        let (out, choices) = with_exchange(&stages, &policy, &Prices::default(), 2 << 30, 1000);
        assert_eq!(choices.len(), 2);
        assert!(choices.iter().all(|(_, c)| c.two_level), "{choices:?}");
        assert_eq!(out.len(), 5);
        assert!((out[4].gets - 2.0).abs() < 1e-9, "{:?}", out[4]);
        // One of them alone stays direct.
        let (alone, choices) = with_exchange(
            &[stages[0].clone(), stage(3, vec![1], 1, 40.0, 1e5)],
            &policy,
            &Prices::default(),
            2 << 30,
            1000,
        );
        assert_eq!(alone.len(), 2);
        assert!(!choices[0].1.two_level);
    }

    #[test]
    fn files_under_the_bound_read_by_many_tasks_are_combined_again_where_it_pays() {
        // 2,000 small results read whole by 2,088 tasks: 42 combined files
        // a task (under the bound), 87,696 GETs; one more level, 2,130.
        let mut reader = stage(2, vec![1], 2088, 2000.0, 1e6);
        reader.whole = vec![1];
        let stages = vec![stage(1, vec![], 2000, 10.0, 4096.0), reader];
        let policy = Exchange::default();
        let (out, choices) = with_exchange(&stages, &policy, &Prices::default(), 2 << 30, 1000);
        let ids: Vec<u32> = out.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, COMBINE_IDS + 1, 2 * COMBINE_IDS + 1, 2]);
        assert_eq!((out[1].tasks, out[2].tasks), (42, 1));
        assert!((out[3].gets - 1.0).abs() < 1e-9, "{:?}", out[3]);
        assert!(choices[1].1.reason.contains("fewer GETs"), "{choices:?}");
        // Forced two-level stacks only past the bound: 42 files stay.
        let forced = Exchange {
            mode: squall_engine::scheduler::ExchangeMode::TwoLevel,
            ..policy
        };
        let (out, _) = with_exchange(&stages, &forced, &Prices::default(), 2 << 30, 1000);
        assert_eq!(out.len(), 3);
        // Read in slices, one range of each file a task: not again either.
        let sliced = [stages[0].clone(), stage(2, vec![1], 2088, 2000.0, 1e6)];
        let (out, _) = with_exchange(&sliced, &policy, &Prices::default(), 2 << 30, 1000);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn merged_runs_past_the_fan_in_bound_are_merged_again() {
        // 10,000 runs merged 48 at a time: 209, then 5.
        let mut merge = stage(2, vec![1], 1, 10_000.0, 1e6);
        merge.combinable.clear();
        merge.mergeable = vec![1];
        let stages = vec![stage(1, vec![], 10_000, 10.0, 1e4), merge];
        let policy = Exchange::default();
        let (out, choices) = with_exchange(&stages, &policy, &Prices::default(), 2 << 30, 1000);
        let ids: Vec<u32> = out.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, COMBINE_IDS + 1, 2 * COMBINE_IDS + 1, 2]);
        assert_eq!((out[1].tasks, out[2].tasks), (209, 5));
        assert_eq!(out[2].inputs, vec![COMBINE_IDS + 1]);
        assert_eq!(out[3].inputs, vec![2 * COMBINE_IDS + 1]);
        assert!((out[3].gets - 5.0).abs() < 1e-9, "{:?}", out[3]);
        assert_eq!(choices.len(), 2);
        assert!(choices.iter().all(|(_, c)| c.merge && c.two_level));
    }
}
