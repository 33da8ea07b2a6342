//! Adaptive reduce width: once the stages a reduce stage reads have committed,
//! their shuffle partitions are grouped into contiguous ranges of about a
//! target size, one reduce task per range (Spark AQE's coalescing, sized from
//! the bytes per partition every map task reports).
//!
//! A pure policy over sizes. The target is Spark's with `parallelismFirst`:
//! `max(min(target_bytes, total / parallelism), min_bytes)`, so that small
//! shuffles still give every executor a task, and large ones are cut into
//! `target_bytes` pieces whatever the shuffle width was.
//!
//! Requests: a reduce task makes one ranged read per file it reads (per
//! producer, or per combined file), and in an object store each read has a
//! price and a round trip. Spreading a small shuffle over a thousand workers
//! would make every task read a thousand files of a few KiB each — the
//! requests, not the bytes, would set the stage's cost and time. So the
//! parallelism a shuffle is spread over is cut back until each read carries
//! `min_read_bytes` on average ([`Coalescing::parallelism_for`]), never
//! asking more of a task than `target_bytes`.
//!
//! Skew: where the stage may split a partition among tasks (its input
//! `split_input`, the probe side of a join or the input of a partial
//! aggregate), a partition of that input larger than `skew_min_bytes` and
//! `skew_factor` times the median partition is split by producer ranges into
//! pieces of about the target (Spark's `OptimizeSkewedJoin`, with the
//! per-producer sizes every map task reports); each piece reads the stage's
//! other inputs' partition whole.

use std::ops::Range;

use squall_executor::Slice;

/// How reduce tasks are sized.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalescing {
    pub enabled: bool,
    /// Shuffle bytes one reduce task reads, at most where it can be helped.
    pub target_bytes: u64,
    /// A task reads at least this much, however many executors wait.
    pub min_bytes: u64,
    /// A partition of the splittable input is skewed above both this many
    /// times the median partition...
    pub skew_factor: f64,
    /// ...and this many bytes.
    pub skew_min_bytes: u64,
    /// Bytes of one piece of a split partition; None: the larger of the
    /// target and the mean of the partitions that are not skewed (Spark's).
    pub piece_bytes: Option<u64>,
    /// Bytes one ranged read of an object store should carry at least, on
    /// average, before a shuffle is spread wider (0: reads are free).
    pub min_read_bytes: u64,
}

/// Default of [`Coalescing::min_read_bytes`]: a GET costs $0.0004 per
/// thousand, what 1.8 MB take to move on a 2,048 MB Lambda worker at 150
/// MB/s ($0.0000166667 per GB-second) — and a round trip of ~27 ms, what
/// 4 MB take. Below 1 MiB a read is mostly its request.
pub const MIN_READ_BYTES: u64 = 1 << 20;

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            enabled: true,
            target_bytes: 64 << 20,
            min_bytes: 1 << 20,
            skew_factor: 5.0,
            skew_min_bytes: 256 << 20,
            piece_bytes: None,
            min_read_bytes: MIN_READ_BYTES,
        }
    }
}

/// One reduce task's share of the stage's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The partitions it reads.
    pub slice: Slice,
    /// For a piece of a split partition: the producers of the split input
    /// it reads (of the others, all).
    pub producers: Option<Range<usize>>,
}

impl Coalescing {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The executors a shuffle of `total` bytes is spread over, of
    /// `parallelism`, when each reduce task makes `reads` ranged reads of an
    /// object store: no more than leave each read `min_read_bytes` on average
    /// (capped at a task of `target_bytes`), and at least one.
    pub fn parallelism_for(&self, total: u64, parallelism: usize, reads: usize) -> usize {
        let floor = self
            .min_read_bytes
            .saturating_mul(reads as u64)
            .min(self.target_bytes);
        if !self.enabled || floor == 0 {
            return parallelism.max(1);
        }
        let by_reads = usize::try_from(total / floor).unwrap_or(usize::MAX);
        parallelism.min(by_reads).max(1)
    }

    /// What one task reads at most, for `total` bytes over `parallelism`
    /// executors.
    fn target(&self, total: u64, parallelism: usize) -> u64 {
        self.target_bytes
            .min(total / parallelism.max(1) as u64)
            .max(self.min_bytes)
            .max(1)
    }

    /// The partition ranges of the reduce tasks, for partitions of `sizes`
    /// bytes and `parallelism` executors; every partition in exactly one range,
    /// in order. Disabled: one range per partition.
    pub fn groups(&self, sizes: &[u64], parallelism: usize) -> Vec<Slice> {
        self.groups_apart(sizes, parallelism, &[])
    }

    /// [`groups`](Self::groups), with the partitions in `alone` each in a
    /// range of its own.
    fn groups_apart(&self, sizes: &[u64], parallelism: usize, alone: &[usize]) -> Vec<Slice> {
        let one_each = || (0..sizes.len() as u32).map(Slice::one).collect();
        if !self.enabled || sizes.len() <= 1 {
            return one_each();
        }
        let target = self.target(sizes.iter().sum(), parallelism);
        let mut groups = Vec::new();
        let mut start = 0u32;
        let mut bytes = 0u64;
        for (p, &size) in sizes.iter().enumerate() {
            let apart = alone.contains(&p) || (p > 0 && alone.contains(&(p - 1)));
            let p = p as u32;
            if p > start && (apart || bytes + size > target) {
                groups.push(Slice { start, end: p });
                start = p;
                bytes = 0;
            }
            bytes += size;
        }
        groups.push(Slice {
            start,
            end: sizes.len() as u32,
        });
        groups
    }

    /// The reduce tasks' shares: [`groups`](Self::groups) of the partitions
    /// of `sizes` bytes (all inputs the tasks slice), with each skewed
    /// partition of the splittable input — whose bytes are `split[m][p]` for
    /// producer `m` and partition `p` — split by producer ranges.
    pub fn shares(
        &self,
        sizes: &[u64],
        split: Option<&[Vec<u64>]>,
        parallelism: usize,
    ) -> Vec<Share> {
        let whole = |groups: Vec<Slice>| {
            groups
                .into_iter()
                .map(|slice| Share {
                    slice,
                    producers: None,
                })
                .collect()
        };
        let Some(split) = split.filter(|s| self.enabled && !s.is_empty()) else {
            return whole(self.groups(sizes, parallelism));
        };
        let probe: Vec<u64> = (0..sizes.len())
            .map(|p| split.iter().map(|m| m.get(p).copied().unwrap_or(0)).sum())
            .collect();
        let mut sorted = probe.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let bar = (median as f64 * self.skew_factor).max(self.skew_min_bytes as f64);
        let skewed: Vec<usize> = (0..probe.len())
            .filter(|p| probe[*p] as f64 > bar)
            .collect();
        if skewed.is_empty() {
            return whole(self.groups(sizes, parallelism));
        }
        let others: Vec<u64> = (0..sizes.len())
            .filter(|p| !skewed.contains(p))
            .map(|p| sizes[p])
            .collect();
        let mean = others.iter().sum::<u64>() / others.len().max(1) as u64;
        let piece = self
            .piece_bytes
            .unwrap_or_else(|| self.target(sizes.iter().sum(), parallelism).max(mean))
            .max(1);
        let mut shares = Vec::new();
        for slice in self.groups_apart(sizes, parallelism, &skewed) {
            let p = slice.start as usize;
            if slice.len() != 1 || !skewed.contains(&p) {
                shares.push(Share {
                    slice,
                    producers: None,
                });
                continue;
            }
            let mut start = 0;
            let mut bytes = 0u64;
            for (m, producer) in split.iter().enumerate() {
                let size = producer.get(p).copied().unwrap_or(0);
                if m > start && bytes + size > piece {
                    shares.push(Share {
                        slice,
                        producers: Some(start..m),
                    });
                    start = m;
                    bytes = 0;
                }
                bytes += size;
            }
            shares.push(Share {
                slice,
                producers: (start > 0).then_some(start..split.len()),
            });
        }
        shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ranges(groups: &[Slice]) -> Vec<(u32, u32)> {
        groups.iter().map(|s| (s.start, s.end)).collect()
    }

    #[test]
    fn small_partitions_are_packed_up_to_the_target() {
        let c = Coalescing::default();
        // 8 partitions of 20 MiB, 1 executor: 64 MiB target, 3 per task.
        let sizes = vec![20 * MIB; 8];
        assert_eq!(ranges(&c.groups(&sizes, 1)), vec![(0, 3), (3, 6), (6, 8)]);
        // Many executors: total / parallelism is the target, down to 1 MiB.
        assert_eq!(c.groups(&sizes, 8).len(), 8);
        let tiny = vec![1000; 64];
        assert_eq!(ranges(&c.groups(&tiny, 100)), vec![(0, 64)]);
    }

    #[test]
    fn reads_of_an_object_store_cut_the_parallelism_a_small_shuffle_gets() {
        let c = Coalescing::default();
        // 1 GiB over 1,000 workers: 1 MiB a task. Each task reading 1,000
        // producers' files would make reads of ~1 KiB; at 1 MiB a read it
        // would take 1,000 MiB, more than the 64 MiB target: tasks of 64 MiB.
        let total = 1 << 30;
        assert_eq!(c.parallelism_for(total, 1000, 0), 1000, "reads are free");
        assert_eq!(c.parallelism_for(total, 1000, 1000), 16);
        let sizes = vec![total / 1024; 1024];
        assert_eq!(
            c.groups(&sizes, c.parallelism_for(total, 1000, 1000)).len(),
            16
        );
        // Reading 4 files: 4 MiB a task, 256 tasks.
        assert_eq!(c.parallelism_for(total, 1000, 4), 256);
        // Enough bytes: the workers' parallelism stands.
        assert_eq!(c.parallelism_for(1 << 40, 1000, 1000), 1000);
        // Never below one, and off with coalescing.
        assert_eq!(c.parallelism_for(10, 1000, 1000), 1);
        assert_eq!(
            Coalescing::disabled().parallelism_for(total, 1000, 1000),
            1000
        );
        let free = Coalescing {
            min_read_bytes: 0,
            ..Coalescing::default()
        };
        assert_eq!(free.parallelism_for(total, 1000, 1000), 1000);
    }

    #[test]
    fn every_partition_is_in_one_range_in_order() {
        let c = Coalescing {
            target_bytes: 100,
            min_bytes: 10,
            ..Coalescing::default()
        };
        let sizes = [5, 0, 0, 300, 20, 20, 20, 80, 0, 1];
        let groups = c.groups(&sizes, 1);
        assert_eq!(
            ranges(&groups),
            vec![(0, 3), (3, 4), (4, 7), (7, 10)],
            "a partition above the target stays alone"
        );
        let mut next = 0;
        for g in &groups {
            assert_eq!(g.start, next);
            assert!(g.end > g.start);
            next = g.end;
        }
        assert_eq!(next as usize, sizes.len());
    }

    #[test]
    fn a_skewed_partition_is_split_by_producers_and_kept_apart() {
        let c = Coalescing {
            target_bytes: 100,
            min_bytes: 1,
            skew_factor: 5.0,
            skew_min_bytes: 50,
            ..Coalescing::default()
        };
        // 4 producers × 6 partitions; partition 2 holds 4 × 90 bytes.
        let split: Vec<Vec<u64>> = (0..4).map(|_| vec![10, 10, 90, 10, 10, 10]).collect();
        let sizes: Vec<u64> = (0..6).map(|p| split.iter().map(|m| m[p]).sum()).collect();
        let shares = c.shares(&sizes, Some(&split), 1);
        type View = ((u32, u32), Option<Range<usize>>);
        let view: Vec<View> = shares
            .iter()
            .map(|s| ((s.slice.start, s.slice.end), s.producers.clone()))
            .collect();
        assert_eq!(
            view,
            vec![
                ((0, 2), None),
                ((2, 3), Some(0..1)),
                ((2, 3), Some(1..2)),
                ((2, 3), Some(2..3)),
                ((2, 3), Some(3..4)),
                ((3, 5), None),
                ((5, 6), None),
            ]
        );
        // Without a splittable input, the partition is only kept whole.
        let whole = c.shares(&sizes, None, 1);
        assert!(whole.iter().all(|s| s.producers.is_none()));
        // Below the byte floor nothing is skewed.
        let floor = Coalescing {
            skew_min_bytes: 1000,
            ..c.clone()
        };
        assert!(
            floor
                .shares(&sizes, Some(&split), 1)
                .iter()
                .all(|s| s.producers.is_none())
        );
    }

    #[test]
    fn disabled_or_empty_keeps_one_task_per_partition() {
        let off = Coalescing::disabled();
        assert_eq!(off.groups(&[1, 2, 3], 1).len(), 3);
        let on = Coalescing::default();
        assert_eq!(ranges(&on.groups(&[0, 0, 0, 0], 4)), vec![(0, 4)]);
        assert!(on.groups(&[], 4).is_empty());
    }
}
