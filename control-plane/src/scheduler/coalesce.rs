//! Adaptive reduce width: once the stages a reduce stage reads have committed,
//! their shuffle partitions are grouped into contiguous ranges of about a
//! target size, one reduce task per range (Spark AQE's coalescing, sized from
//! the bytes per partition every map task reports).
//!
//! A pure policy over sizes. The target is Spark's with `parallelismFirst`:
//! `max(min(target_bytes, total / parallelism), min_bytes)`, so that small
//! shuffles still give every executor a task, and large ones are cut into
//! `target_bytes` pieces whatever the shuffle width was.

use squall_executor::Slice;

/// How reduce tasks are sized.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalescing {
    pub enabled: bool,
    /// Shuffle bytes one reduce task reads, at most where it can be helped.
    pub target_bytes: u64,
    /// A task reads at least this much, however many executors wait.
    pub min_bytes: u64,
}

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            enabled: true,
            target_bytes: 64 << 20,
            min_bytes: 1 << 20,
        }
    }
}

impl Coalescing {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The partition ranges of the reduce tasks, for partitions of `sizes`
    /// bytes and `parallelism` executors; every partition in exactly one range,
    /// in order. Disabled: one range per partition.
    pub fn groups(&self, sizes: &[u64], parallelism: usize) -> Vec<Slice> {
        let one_each = || (0..sizes.len() as u32).map(Slice::one).collect();
        if !self.enabled || sizes.len() <= 1 {
            return one_each();
        }
        let total: u64 = sizes.iter().sum();
        let target = self
            .target_bytes
            .min(total / parallelism.max(1) as u64)
            .max(self.min_bytes)
            .max(1);
        let mut groups = Vec::new();
        let mut start = 0u32;
        let mut bytes = 0u64;
        for (p, &size) in sizes.iter().enumerate() {
            let p = p as u32;
            if p > start && bytes + size > target {
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
    fn disabled_or_empty_keeps_one_task_per_partition() {
        let off = Coalescing::disabled();
        assert_eq!(off.groups(&[1, 2, 3], 1).len(), 3);
        let on = Coalescing::default();
        assert_eq!(ranges(&on.groups(&[0, 0, 0, 0], 4)), vec![(0, 4)]);
        assert!(on.groups(&[], 4).is_empty());
    }
}
