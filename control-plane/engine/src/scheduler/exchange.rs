//! Two-level exchange: whether a reduce stage reads a shuffle input straight
//! from its producers' files (direct: one ranged GET per producer per reduce
//! task, M × R) or through a combine step first (two-level: combiners read
//! groups of the producers' files whole and write one file each of the same
//! partitions; reduce tasks then read one range per combiner, so about
//! M + R × M/g requests) — Starling's combiners, decided per shuffle.
//!
//! A pure policy over the committed files and the reduce tasks' slices, made
//! at run time when the input has committed (as coalescing is), and priced
//! with the job's price table: the GETs saved against the combine step's
//! whole-file GETs, PUTs, invocations and the compute of one more pass over
//! the bytes.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use squall_executor::{OutputFile, Slice};

use crate::cost::Prices;

/// Ranged GETs a reduce task keeps in flight (the shuffle reader's).
const READS_IN_FLIGHT: f64 = 16.0;

/// One GET's time to its first byte on S3, median (BENCHMARKS.md, "Scale
/// model").
const READ_SECONDS: f64 = 0.027;

/// How a reduce stage reads its shuffle inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeMode {
    /// Two-level where it pays (see [`Exchange::decide`]).
    #[default]
    Auto,
    /// Every reduce task reads every producer.
    Direct,
    /// Every input that can be combined is (a test and tuning knob).
    TwoLevel,
}

impl fmt::Display for ExchangeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExchangeMode::Auto => "auto",
            ExchangeMode::Direct => "direct",
            ExchangeMode::TwoLevel => "two-level",
        })
    }
}

impl FromStr for ExchangeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ExchangeMode::Auto),
            "direct" => Ok(ExchangeMode::Direct),
            "two-level" => Ok(ExchangeMode::TwoLevel),
            other => Err(format!(
                "exchange '{other}' is not one of auto, direct, two-level"
            )),
        }
    }
}

/// The exchange policy of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub mode: ExchangeMode,
    /// Auto: an input is combined only if reading it direct takes at least
    /// this many GETs...
    pub min_requests: u64,
    /// ...or some reduce task reads more than this many producers' files.
    pub max_fan_in: usize,
    /// Files one combiner reads at most (the `g` of M + R × M/g).
    pub group_files: usize,
    /// Bytes one combiner reads at most (it holds them, and its output, in
    /// memory: at most a quarter of the task's pool is used). 64 MiB keeps a
    /// combine step's pass under a second at 100 MB/s, and the range it
    /// reads of each of 48 files over 1 MiB on average (what a GET is
    /// worth: `coalesce::MIN_READ_BYTES`).
    pub group_bytes: u64,
    /// Auto: two-level must cut the input's requests at least this many times.
    pub min_reduction: f64,
    /// Bytes a combiner moves per second (GET whole, copy, PUT), for pricing
    /// its extra pass.
    pub bytes_per_second: f64,
    /// Auto, where only dollars speak for two-level: seconds the combine
    /// step may add to the job past the reads its readers no longer wait
    /// for before the time it adds is priced too — a second at what the
    /// job's workers bill for one (a few cents of GETs are not worth a
    /// slower answer on a thousand workers).
    pub max_added_seconds: f64,
}

impl Default for Exchange {
    fn default() -> Self {
        Self {
            mode: ExchangeMode::Auto,
            min_requests: 2048,
            // A reader of more files than a combiner reads goes through
            // combiners where the pass is short (the fan-in rule).
            max_fan_in: 48,
            // Every task of a combine or merge step, and every reader of
            // its files, then makes fewer than 50 reads (stacking levels
            // where a reader would read more than this).
            group_files: 48,
            group_bytes: 64 << 20,
            min_reduction: 2.0,
            bytes_per_second: 100e6,
            max_added_seconds: 1.0,
        }
    }
}

/// What an exchange's choice is priced with: the job's price table, a combine
/// task's memory pool, and the tasks the job runs at once (what a second of
/// the job is worth).
#[derive(Debug, Clone, Copy)]
pub struct Pricing<'a> {
    pub prices: &'a Prices,
    pub memory_bytes: u64,
    pub workers: usize,
}

/// What was decided for one shuffle input of a reduce stage, and from what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeChoice {
    /// The input stage.
    pub input: u32,
    pub two_level: bool,
    pub producers: usize,
    /// Combiners (0 for direct).
    pub combiners: usize,
    /// The groups of producers they take ranges of partitions of (0 for
    /// direct): a reduce task reads about one combined file a group.
    pub groups: usize,
    /// Sorted runs merged in groups (a merge tree's first level) rather
    /// than files combined.
    #[serde(default)]
    pub merge: bool,
    /// Reduce tasks that read the input.
    pub reduce_tasks: usize,
    /// GETs of the input read direct: one per producer per reduce task
    /// that has rows in it.
    pub requests_direct: u64,
    /// GETs two-level: the combiners' whole files, then one per combiner
    /// per reduce task that has rows in it.
    pub requests_two_level: u64,
    /// Dollars two-level saves (negative: costs more), by the price table.
    pub saving_usd: f64,
    /// Why, in words.
    pub reason: String,
}

impl Exchange {
    /// Direct always.
    pub fn direct() -> Self {
        Self {
            mode: ExchangeMode::Direct,
            ..Self::default()
        }
    }

    /// The policy for a level of combine steps over combined files: the
    /// fan-in rule from `group_files` files on (the first level's starts at
    /// `max_fan_in`), since a reader that would read more files than a
    /// combiner does is what another level is for.
    pub fn deeper(&self) -> Exchange {
        Exchange {
            max_fan_in: self.group_files,
            ..self.clone()
        }
    }

    /// The policy for an input read beside other inputs of which each reduce
    /// task reads `others` files: the fan-in rule counts what a reader reads
    /// of all its inputs, so it takes a step where this input's files
    /// would bring the reader past `max_fan_in`.
    pub fn beside(&self, others: usize) -> Exchange {
        Exchange {
            max_fan_in: self.max_fan_in.saturating_sub(others),
            ..self.clone()
        }
    }

    /// Whether a level of steps over files already combined (or merged) is
    /// taken where it was decided as `choice`, for a reader that reads
    /// `others` files of its other inputs: where the reader would read more
    /// files than `group_files`, and (auto) where the priced rule takes it
    /// for an input every reader reads whole (`broadcast`) — 44 files read
    /// by 2,088 tasks are 91,872 GETs, or 2,132 through one more level, for
    /// a pass over a few MiB. (A sliced input's reader reads one range of
    /// each file; another level would pass all of its bytes again to spare
    /// each reader a few reads.) A forced two-level exchange stacks only past
    /// the bound (it would take every level it could).
    pub fn stacks(&self, choice: &ExchangeChoice, others: usize, broadcast: bool) -> bool {
        let fan_in = choice.requests_direct / choice.reduce_tasks.max(1) as u64;
        let past = fan_in + others as u64 > self.group_files as u64;
        let priced = self.mode == ExchangeMode::Auto && broadcast && choice.two_level;
        past || priced
    }

    /// The most of `files` one reduce task reads, reading the partitions
    /// `slices` says (one GET each).
    pub fn fan_in(files: &[OutputFile], slices: &Slices) -> usize {
        reads(files.iter().map(|f| (vec![f], None)), slices).max_fan_in
    }

    /// Bytes one combiner reads at most with a pool of `memory_bytes`.
    fn bytes_cap(&self, memory_bytes: u64) -> u64 {
        self.group_bytes.min(memory_bytes / 4).max(1)
    }

    /// The combiners of `files`: groups of `group_files` consecutive
    /// producers, and within each group ranges of consecutive partitions of
    /// at most `group_bytes` (or a quarter of `memory_bytes`) of the group's
    /// files, one partition at least; partitions no file of the group has
    /// rows in are left out where a range can start or end.
    pub fn combiners(&self, files: &[OutputFile], memory_bytes: u64) -> Vec<Combiner> {
        let cap = self.bytes_cap(memory_bytes);
        let width = files.first().map_or(0, |f| f.partitions.len());
        let mut combiners = Vec::new();
        let group = self.group_files.max(2);
        for start in (0..files.len()).step_by(group) {
            let producers = start..(start + group).min(files.len());
            let sizes: Vec<u64> = (0..width)
                .map(|p| {
                    files[producers.clone()]
                        .iter()
                        .map(|f| f.partitions.get(p).map_or(0, |s| s.length))
                        .sum()
                })
                .collect();
            let mut first = 0usize;
            let mut bytes = 0u64;
            for (p, &size) in sizes.iter().enumerate() {
                if p > first && bytes + size > cap {
                    combiners.push(Combiner::new(producers.clone(), first, p));
                    first = p;
                    bytes = 0;
                }
                bytes += size;
            }
            if width > 0 {
                combiners.push(Combiner::new(producers, first, width));
            }
        }
        combiners
    }

    /// Decides for the input `input` whose committed files are `files`, read
    /// by reduce tasks that each read the partitions of one of `slices`
    /// (None: every task reads every partition — a broadcast). Returns the
    /// choice and, for two-level, the combiners' groups.
    pub fn decide(
        &self,
        input: u32,
        files: &[OutputFile],
        slices: &Slices,
        pricing: Pricing<'_>,
    ) -> (ExchangeChoice, Option<Vec<Combiner>>) {
        let combiners = self.combiners(files, pricing.memory_bytes);
        let direct = reads(files.iter().map(|f| (vec![f], None)), slices);
        let combined = combiners
            .iter()
            .map(|c| (files[c.producers.clone()].iter().collect(), Some(c.slice)));
        // A combiner reads one range of each of its files that has rows in
        // its partitions.
        let combining: u64 = combiners
            .iter()
            .map(|c| {
                let has = |f: &&OutputFile| has_rows(f, Some(c.slice));
                files[c.producers.clone()].iter().filter(has).count() as u64
            })
            .sum();
        let mut groups: Vec<&Range<usize>> = combiners.iter().map(|c| &c.producers).collect();
        groups.dedup();
        let shape = Shape {
            producers: files.len(),
            combiners: combiners.len(),
            groups: groups.len(),
            reduce_tasks: slices.tasks(),
            bytes: files.iter().map(|f| f.size).sum(),
            direct,
            two_level: reads(combined, slices).total + combining,
        };
        let choice = self.choose(input, &shape, pricing);
        let combiners = choice.two_level.then_some(combiners);
        (choice, combiners)
    }

    /// [`decide`](Self::decide) for a shuffle known by its counts only (the
    /// scale model's): `producers` files of `bytes` in all, every one with
    /// rows for every one of `reduce_tasks` readers.
    pub fn estimate(
        &self,
        input: u32,
        producers: usize,
        reduce_tasks: usize,
        bytes: u64,
        pricing: Pricing<'_>,
    ) -> ExchangeChoice {
        let groups = producers.div_ceil(self.group_files.max(2)).max(1) as u64;
        let group_bytes = bytes / groups;
        let pieces = group_bytes
            .div_ceil(self.bytes_cap(pricing.memory_bytes))
            .clamp(1, reduce_tasks.max(1) as u64);
        let (m, r) = (producers as u64, reduce_tasks as u64);
        let shape = Shape {
            producers,
            combiners: (groups * pieces) as usize,
            groups: groups as usize,
            reduce_tasks,
            bytes,
            direct: Reads {
                total: m * r,
                max_fan_in: producers,
            },
            // Each file read once a piece; each reduce task reads a group's
            // piece holding its partitions.
            two_level: m * pieces + r * groups,
        };
        self.choose(input, &shape, pricing)
    }

    /// The choice for a shuffle of `shape`, priced.
    fn choose(&self, input: u32, shape: &Shape, pricing: Pricing<'_>) -> ExchangeChoice {
        let Pricing {
            prices,
            memory_bytes,
            workers,
        } = pricing;
        let direct = &shape.direct;
        let saved =
            (direct.total as f64 - shape.two_level as f64) * prices.s3_get_per_thousand / 1e3;
        let memory_gb = memory_bytes as f64 / (1u64 << 30) as f64;
        let extra = shape.combiners as f64
            * (prices.s3_put_per_thousand / 1e3 + prices.lambda_per_million_requests / 1e6)
            + shape.bytes as f64 / self.bytes_per_second.max(1.0)
                * memory_gb
                * prices.lambda_gb_second_x86_64;
        let saving_usd = saved - extra;
        // What a second of the job is worth: its workers' bill for one.
        let second_usd = workers as f64 * memory_gb * prices.lambda_gb_second_x86_64;
        let fewer = direct.total as f64 / shape.two_level.max(1) as f64;
        let combinable = shape.producers >= 2 && shape.groups < shape.producers;
        let (two_level, reason) = match self.mode {
            ExchangeMode::Direct => (false, "direct by the job's setting".to_string()),
            ExchangeMode::TwoLevel if combinable => {
                (true, "two-level by the job's setting".to_string())
            }
            _ if !combinable => (
                false,
                "combining would not cut the requests (too few producers)".to_string(),
            ),
            ExchangeMode::TwoLevel => unreachable!("handled above"),
            ExchangeMode::Auto => self.auto(shape, fewer, saving_usd, second_usd),
        };
        ExchangeChoice {
            input,
            two_level,
            producers: shape.producers,
            combiners: if two_level { shape.combiners } else { 0 },
            groups: if two_level { shape.groups } else { 0 },
            merge: false,
            reduce_tasks: shape.reduce_tasks,
            requests_direct: direct.total,
            requests_two_level: shape.two_level,
            saving_usd,
            reason,
        }
    }

    /// Whether the sorted runs of `producers` producers that `readers` tasks
    /// merge are merged in groups of `group_files` first (a merge tree):
    /// where a reader would read more than `max_fan_in` runs (auto), or
    /// wherever runs can be grouped (two-level). The groups, if so.
    pub fn merge(
        &self,
        input: u32,
        producers: usize,
        readers: usize,
        prices: &Prices,
    ) -> (ExchangeChoice, Option<Vec<Range<usize>>>) {
        let g = self.group_files.max(2);
        let groups: Vec<Range<usize>> = (0..producers)
            .step_by(g)
            .map(|start| start..(start + g).min(producers))
            .collect();
        let (m, r, c) = (producers as u64, readers as u64, groups.len() as u64);
        let (direct, two_level) = (m * r, m + c * r);
        let groupable = producers >= 2 && groups.len() < producers;
        let (merge, reason) = match self.mode {
            ExchangeMode::Direct => (false, "direct by the job's setting".to_string()),
            ExchangeMode::TwoLevel if groupable => (
                true,
                format!("{producers} sorted runs merged {g} at a time, by the job's setting"),
            ),
            _ if !groupable => (false, "too few sorted runs to merge in groups".to_string()),
            ExchangeMode::TwoLevel => unreachable!("handled above"),
            ExchangeMode::Auto if producers > self.max_fan_in => (
                true,
                format!(
                    "a merge of {producers} sorted runs: merged {g} at a time into {} first",
                    groups.len()
                ),
            ),
            ExchangeMode::Auto => (
                false,
                format!(
                    "{producers} sorted runs are within the fan-in bound ({})",
                    self.max_fan_in
                ),
            ),
        };
        let choice = ExchangeChoice {
            input,
            two_level: merge,
            producers,
            combiners: if merge { groups.len() } else { 0 },
            groups: if merge { groups.len() } else { 0 },
            merge: true,
            reduce_tasks: readers,
            requests_direct: direct,
            requests_two_level: two_level,
            saving_usd: (direct as f64 - two_level as f64) * prices.s3_get_per_thousand / 1e3,
            reason,
        };
        (choice, merge.then_some(groups))
    }

    /// Auto's decision and its reason: two-level where a reduce task would
    /// read more than `max_fan_in` files (its reads go 16 at a time: a tree
    /// of combiners reads them side by side) and the combine pass adds at
    /// most `max_added_seconds` past the reads it spares the reader, or
    /// where the requests it saves pay for the extra pass.
    fn auto(&self, shape: &Shape, fewer: f64, saving_usd: f64, second_usd: f64) -> (bool, String) {
        let direct = &shape.direct;
        // The reads a reduce task no longer waits for, against the combine
        // step's own pass over its bytes.
        let waits =
            direct.max_fan_in.saturating_sub(shape.groups) as f64 / READS_IN_FLIGHT * READ_SECONDS;
        let pass =
            shape.bytes as f64 / shape.combiners.max(1) as f64 / self.bytes_per_second.max(1.0);
        // What the step adds to the job past the reads it spares.
        let added = pass - waits;
        if direct.max_fan_in > self.max_fan_in
            && shape.groups * 4 <= direct.max_fan_in
            && added < self.max_added_seconds
        {
            return (
                true,
                format!(
                    "a reduce task would read {} files; through {} combiners, {}",
                    direct.max_fan_in, shape.combiners, shape.groups
                ),
            );
        }
        let large = direct.total >= self.min_requests;
        if !large {
            (
                false,
                format!(
                    "{} GETs and a fan-in of {} are below the thresholds ({} GETs, fan-in {})",
                    direct.total, direct.max_fan_in, self.min_requests, self.max_fan_in
                ),
            )
        } else if fewer < self.min_reduction {
            (
                false,
                format!(
                    "two-level would cut requests only {fewer:.1}x (needs {:.1}x)",
                    self.min_reduction
                ),
            )
        } else if saving_usd <= 0.0 {
            (
                false,
                format!("the combine step would cost ${:.6} more", -saving_usd),
            )
        } else if added > self.max_added_seconds && saving_usd < added * second_usd {
            (
                false,
                format!(
                    "the combine step would save ${saving_usd:.6} but add {added:.1} s (${:.6} of the job's workers' time)",
                    added * second_usd
                ),
            )
        } else {
            (
                true,
                format!("{fewer:.1}x fewer GETs, saving ${saving_usd:.6}"),
            )
        }
    }
}

/// The partitions each reduce task reads.
#[derive(Debug, Clone)]
pub enum Slices {
    /// Task `t` reads the partitions of `slices[t]` of every producer.
    Each(Vec<Slice>),
    /// Each of `n` tasks reads every partition (the input is broadcast).
    All(usize),
}

impl Slices {
    fn tasks(&self) -> usize {
        match self {
            Slices::Each(slices) => slices.len(),
            Slices::All(n) => *n,
        }
    }
}

/// One combiner: the producers whose files it reads, and the partitions of
/// them it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combiner {
    pub producers: Range<usize>,
    pub slice: Slice,
}

impl Combiner {
    fn new(producers: Range<usize>, first: usize, end: usize) -> Self {
        Self {
            producers,
            slice: Slice {
                start: first as u32,
                end: end as u32,
            },
        }
    }
}

/// A shuffle input as the decision sees it.
struct Shape {
    producers: usize,
    combiners: usize,
    groups: usize,
    reduce_tasks: usize,
    bytes: u64,
    direct: Reads,
    /// GETs two-level, the combiners' included.
    two_level: u64,
}

/// GETs of reading files, and the most files one task reads.
struct Reads {
    total: u64,
    max_fan_in: usize,
}

/// Whether `file` has rows in the partitions of `slice` (None: any).
fn has_rows(file: &OutputFile, slice: Option<Slice>) -> bool {
    let slots = match slice {
        Some(s) => {
            let end = (s.end as usize).min(file.partitions.len());
            let start = (s.start as usize).min(end);
            &file.partitions[start..end]
        }
        None => &file.partitions[..],
    };
    slots.iter().any(|p| p.rows > 0)
}

/// The partitions two slices share, if any.
fn overlap(a: Slice, b: Option<Slice>) -> Option<Slice> {
    let Some(b) = b else { return Some(a) };
    let (start, end) = (a.start.max(b.start), a.end.min(b.end));
    (start < end).then_some(Slice { start, end })
}

/// The GETs reduce tasks make reading `sources` (each one file, or a
/// combined file of several files' partitions in a slice): one per source
/// per task that has rows of it.
fn reads<'a>(
    sources: impl Iterator<Item = (Vec<&'a OutputFile>, Option<Slice>)>,
    slices: &Slices,
) -> Reads {
    let sources: Vec<(Vec<&OutputFile>, Option<Slice>)> = sources.collect();
    let read = |(files, only): &(Vec<&OutputFile>, Option<Slice>), task: Option<Slice>| {
        let wanted = match task {
            Some(t) => overlap(t, *only),
            None => Some(only.unwrap_or(Slice {
                start: 0,
                end: u32::MAX,
            })),
        };
        wanted.is_some_and(|w| files.iter().any(|f| has_rows(f, Some(w))))
    };
    let per_task: Vec<usize> = match slices {
        Slices::Each(slices) => slices
            .iter()
            .map(|s| sources.iter().filter(|src| read(src, Some(*s))).count())
            .collect(),
        Slices::All(n) => {
            let any = sources.iter().filter(|src| read(src, None)).count();
            vec![any; *n]
        }
    };
    Reads {
        total: per_task.iter().map(|n| *n as u64).sum(),
        max_fan_in: per_task.into_iter().max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_executor::PartitionSlot;

    /// A producer's file of `partitions` partitions of `bytes` bytes and one
    /// row each (none where `empty` says).
    fn file(partitions: usize, bytes: u64, empty: &[usize]) -> OutputFile {
        OutputFile {
            url: "memory:///f".into(),
            keys: vec![],
            size: bytes * partitions as u64,
            partitions: (0..partitions)
                .map(|p| PartitionSlot {
                    offset: p as u64 * bytes,
                    length: bytes,
                    rows: u64::from(!empty.contains(&p)),
                })
                .collect(),
        }
    }

    fn pricing(prices: &Prices, memory_bytes: u64, workers: usize) -> Pricing<'_> {
        Pricing {
            prices,
            memory_bytes,
            workers,
        }
    }

    fn one_each(n: u32) -> Slices {
        Slices::Each((0..n).map(Slice::one).collect())
    }

    #[test]
    fn combiners_take_g_files_and_ranges_of_partitions_under_the_byte_cap() {
        let policy = Exchange {
            group_files: 4,
            group_bytes: 1000,
            ..Exchange::default()
        };
        let c = |producers: Range<usize>, start: u32, end: u32| Combiner {
            producers,
            slice: Slice { start, end },
        };
        let files: Vec<_> = (0..10).map(|_| file(2, 100, &[])).collect();
        assert_eq!(
            policy.combiners(&files, 1 << 30),
            vec![c(0..4, 0, 2), c(4..8, 0, 2), c(8..10, 0, 2)]
        );
        // 1,200 bytes a partition in a group of four: a range each.
        let big: Vec<_> = (0..6).map(|_| file(2, 300, &[])).collect();
        assert_eq!(
            policy.combiners(&big, 1 << 30),
            vec![c(0..4, 0, 1), c(0..4, 1, 2), c(4..6, 0, 1), c(4..6, 1, 2)]
        );
        // A quarter of a small pool caps the bytes.
        assert_eq!(policy.combiners(&files, 1600).len(), 2 + 2 + 1);
    }

    #[test]
    fn requests_fall_from_m_times_r_to_m_plus_r_times_m_over_g() {
        let policy = Exchange {
            group_files: 64,
            group_bytes: 256 << 20,
            ..Exchange::default()
        };
        // 256 producers, 256 reduce tasks, 64 files a combiner: 4 combiners.
        let files: Vec<_> = (0..256).map(|_| file(256, 10, &[])).collect();
        let (choice, groups) = policy.decide(
            1,
            &files,
            &one_each(256),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert_eq!(choice.requests_direct, 256 * 256);
        assert_eq!(choice.requests_two_level, 256 + 256 * 4);
        assert!(choice.two_level, "{choice:?}");
        assert_eq!(choice.combiners, 4);
        assert_eq!(groups.unwrap().len(), 4);
        assert!(choice.saving_usd > 0.0);
        // Files too large for a combiner to take whole: ranges of their
        // partitions, and still 3.8x fewer requests...
        let large: Vec<_> = (0..256).map(|_| file(256, 1 << 20, &[])).collect();
        let forced = Exchange {
            mode: ExchangeMode::TwoLevel,
            ..policy.clone()
        };
        let (choice, combiners) = forced.decide(
            1,
            &large,
            &one_each(256),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        let combiners = combiners.unwrap();
        // 64 files of 256 MiB a group: 64 ranges of 4 partitions each.
        assert_eq!(combiners.len(), 4 * 64, "{choice:?}");
        assert_eq!(choice.requests_two_level, 256 * 64 + 256 * 4);
        // ...but another pass over 64 GiB costs more than 48,128 GETs: auto
        // reads it direct.
        let (auto, _) = policy.decide(
            1,
            &large,
            &one_each(256),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert!(!auto.two_level && auto.saving_usd < 0.0, "{auto:?}");
    }

    #[test]
    fn auto_keeps_small_shuffles_direct_and_the_modes_force() {
        let files: Vec<_> = (0..8).map(|_| file(16, 10, &[])).collect();
        let slices = one_each(16);
        let prices = Prices::default();
        let (auto, groups) =
            Exchange::default().decide(3, &files, &slices, pricing(&prices, 2 << 30, 1000));
        assert!(!auto.two_level && groups.is_none());
        assert!(
            auto.reason.contains("below the thresholds"),
            "{}",
            auto.reason
        );
        let forced = Exchange {
            mode: ExchangeMode::TwoLevel,
            group_files: 3,
            ..Exchange::default()
        };
        let (choice, combiners) =
            forced.decide(3, &files, &slices, pricing(&prices, 2 << 30, 1000));
        assert!(choice.two_level);
        let groups: Vec<_> = combiners
            .unwrap()
            .into_iter()
            .map(|c| c.producers)
            .collect();
        assert_eq!(groups, vec![0..3, 3..6, 6..8]);
        // One producer: nothing to combine, whatever the setting.
        let (one, _) = forced.decide(3, &files[..1], &slices, pricing(&prices, 2 << 30, 1000));
        assert!(!one.two_level, "{one:?}");
        let (direct, _) =
            Exchange::direct().decide(3, &files, &slices, pricing(&prices, 2 << 30, 1000));
        assert!(!direct.two_level);
    }

    #[test]
    fn empty_partitions_are_not_read_and_broadcasts_count_every_task() {
        // Producer 0 has rows in partition 0 only, producer 1 in 1 only.
        let files = [file(2, 10, &[1]), file(2, 10, &[0])];
        let direct = reads(files.iter().map(|f| (vec![f], None)), &one_each(2));
        assert_eq!(direct.total, 2);
        let combined = reads(
            std::iter::once((files.iter().collect(), None)),
            &one_each(2),
        );
        assert_eq!(combined.total, 2, "the combined file has rows in both");
        // A combined file of partition 1 only is read by task 1 only.
        let piece = Some(Slice::one(1));
        let sliced = reads(
            std::iter::once((files.iter().collect(), piece)),
            &one_each(2),
        );
        assert_eq!(sliced.total, 1);
        let broadcast = reads(files.iter().map(|f| (vec![f], None)), &Slices::All(5));
        assert_eq!((broadcast.total, broadcast.max_fan_in), (10, 2));
    }

    #[test]
    fn auto_declines_when_the_extra_pass_costs_more_than_it_saves() {
        // Ten tasks read 600 huge files each: 8x fewer GETs, but the pass
        // over 120 GB costs more than the GETs it saves.
        let files: Vec<_> = (0..600).map(|_| file(1, 200 << 20, &[])).collect();
        let policy = Exchange {
            group_bytes: u64::MAX,
            ..Exchange::default()
        };
        let (choice, _) = policy.decide(
            1,
            &files,
            &Slices::All(10),
            pricing(&Prices::default(), 8 << 30, 1000),
        );
        assert!(!choice.two_level, "{choice:?}");
        assert!(choice.reason.contains("cost"), "{}", choice.reason);
    }

    #[test]
    fn auto_declines_a_saving_of_cents_that_would_slow_the_job() {
        // 96 files of 5 MiB read by 256 tasks: 24,576 GETs direct, 608
        // through 2 combiners — a saving, but each combiner moves 240 MiB
        // (2.5 s) to spare each reader 0.16 s of reads: on 1,000 workers
        // the 2.3 s added are worth more than the GETs.
        let files: Vec<_> = (0..96).map(|_| file(256, 20 << 10, &[])).collect();
        let slices = one_each(256);
        let prices = Prices::default();
        let policy = Exchange {
            group_bytes: 256 << 20,
            ..Exchange::default()
        };
        let (choice, _) = policy.decide(1, &files, &slices, pricing(&prices, 2 << 30, 1000));
        assert!(!choice.two_level && choice.saving_usd > 0.0, "{choice:?}");
        assert!(choice.reason.contains("add 2."), "{}", choice.reason);
        let patient = Exchange {
            max_added_seconds: f64::INFINITY,
            ..policy.clone()
        };
        let (choice, _) = patient.decide(1, &files, &slices, pricing(&prices, 2 << 30, 1000));
        assert!(choice.two_level, "{choice:?}");
        assert_eq!(choice.requests_two_level, 96 + 256 * 2);
        // On one worker a second is worth little: the GETs saved decide.
        let (alone, _) = policy.decide(1, &files, &slices, pricing(&prices, 2 << 30, 1));
        assert!(alone.two_level, "{alone:?}");
    }

    #[test]
    fn estimates_from_counts_agree_with_decisions_from_files() {
        let policy = Exchange {
            group_files: 64,
            group_bytes: 256 << 20,
            ..Exchange::default()
        };
        let files: Vec<_> = (0..256).map(|_| file(256, 10, &[])).collect();
        let prices = Prices::default();
        let (choice, _) = policy.decide(1, &files, &one_each(256), pricing(&prices, 2 << 30, 1000));
        let bytes = files.iter().map(|f| f.size).sum();
        let estimate = policy.estimate(1, 256, 256, bytes, pricing(&prices, 2 << 30, 1000));
        assert_eq!(estimate, choice);
        // Large files: fewer of them a combiner (256 MiB each at most here).
        let big = policy.estimate(
            1,
            2000,
            1024,
            2000 * (100 << 20),
            pricing(&prices, 2 << 30, 1000),
        );
        assert!(big.two_level, "{big:?}");
        // 32 groups of 6,250 MiB, in 25 ranges each.
        assert_eq!(big.combiners, 32 * 25);
        assert_eq!(big.requests_two_level, 2000 * 25 + 1024 * 32);
    }

    #[test]
    fn a_single_reader_of_many_producers_reads_them_through_combiners() {
        // 1,000 partial aggregates gathered by one task: as many GETs either
        // way, but 21 files (of 48 producers each) for the task to read
        // where it had 1,000.
        let policy = Exchange::default();
        let files: Vec<_> = (0..1000).map(|_| file(1, 500, &[])).collect();
        let (choice, combiners) = policy.decide(
            1,
            &files,
            &one_each(1),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert!(choice.two_level, "{choice:?}");
        assert_eq!(combiners.unwrap().len(), 21);
        assert_eq!(choice.requests_two_level, 1000 + 21);
        assert!(choice.reason.contains("1000 files"), "{}", choice.reason);
        // 40 producers: under the fan-in bound, and no fewer requests.
        let (few, _) = policy.decide(
            1,
            &files[..40],
            &one_each(1),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert!(!few.two_level, "{few:?}");
    }

    #[test]
    fn levels_stack_past_the_bound_or_where_auto_prices_them_in() {
        // 44 combined files of a broadcast read whole by 2,088 tasks: under
        // the bound, but 91,872 GETs where one more level reads them in 1
        // file each (44 + 2,088).
        let files: Vec<_> = (0..44).map(|_| file(1, 4 << 10, &[])).collect();
        let prices = Prices::default();
        let deeper = Exchange::default().deeper();
        let (choice, combiners) = deeper.decide(
            1,
            &files,
            &Slices::All(2088),
            pricing(&prices, 2 << 30, 1000),
        );
        assert!(choice.two_level, "{choice:?}");
        assert_eq!(combiners.unwrap().len(), 1);
        assert!(deeper.stacks(&choice, 0, true));
        // Not for a sliced input: under the bound it stays.
        assert!(!deeper.stacks(&choice, 0, false));
        // Forced two-level stacks only past the bound: 44 + 4 files read
        // beside it is not past 48, 44 + 5 is.
        let forced = Exchange {
            mode: ExchangeMode::TwoLevel,
            ..deeper.clone()
        };
        assert!(!forced.stacks(&choice, 4, true));
        assert!(forced.stacks(&choice, 5, true));
        // Auto, where the priced rule declines: not under the bound.
        let declined = ExchangeChoice {
            two_level: false,
            ..choice
        };
        assert!(!deeper.stacks(&declined, 0, true));
        assert!(deeper.stacks(&declined, 5, false));
    }

    #[test]
    fn sorted_runs_past_the_fan_in_bound_are_merged_in_groups() {
        let policy = Exchange::default();
        let prices = Prices::default();
        let (choice, groups) = policy.merge(4, 1000, 1, &prices);
        assert!(choice.two_level, "{choice:?}");
        let groups = groups.unwrap();
        assert_eq!(groups.len(), 21);
        assert_eq!((groups[0].clone(), groups[20].clone()), (0..48, 960..1000));
        assert_eq!(choice.requests_two_level, 1000 + 21);
        let (few, none) = policy.merge(4, 40, 1, &prices);
        assert!(!few.two_level && none.is_none(), "{few:?}");
        let forced = Exchange {
            mode: ExchangeMode::TwoLevel,
            group_files: 2,
            ..Exchange::default()
        };
        let (three, groups) = forced.merge(4, 3, 1, &prices);
        assert!(three.two_level);
        assert_eq!(groups.unwrap(), vec![0..2, 2..3]);
        assert!(!forced.merge(4, 1, 1, &prices).0.two_level);
    }

    #[test]
    fn a_deeper_level_counts_a_fan_in_past_one_combiners_files() {
        // One reader of 200 combined files of a first level: too few
        // requests to pay, but more files than a combiner reads (under a
        // first level's fan-in bound set at 512, over a deeper one's).
        let files: Vec<_> = (0..200).map(|_| file(1, 500, &[])).collect();
        let policy = Exchange {
            max_fan_in: 512,
            ..Exchange::default()
        };
        let (first, _) = policy.decide(
            1,
            &files,
            &one_each(1),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert!(!first.two_level, "{first:?}");
        let (deeper, combiners) = policy.deeper().decide(
            1,
            &files,
            &one_each(1),
            pricing(&Prices::default(), 2 << 30, 1000),
        );
        assert!(deeper.two_level, "{deeper:?}");
        assert_eq!(combiners.unwrap().len(), 5);
    }

    #[test]
    fn the_fan_in_rule_counts_a_readers_files_of_its_other_inputs() {
        // 40 partial results: under the bound alone, over it beside 30
        // files the reader reads of another input.
        let files: Vec<_> = (0..40).map(|_| file(1, 500, &[])).collect();
        assert_eq!(Exchange::fan_in(&files, &one_each(1)), 40);
        assert_eq!(Exchange::fan_in(&files, &Slices::All(3)), 40);
        let policy = Exchange::default();
        let prices = Prices::default();
        let price = pricing(&prices, 2 << 30, 1000);
        let (alone, _) = policy.decide(1, &files, &one_each(1), price);
        assert!(!alone.two_level, "{alone:?}");
        let (beside, combiners) = policy.beside(30).decide(1, &files, &one_each(1), price);
        assert!(beside.two_level, "{beside:?}");
        assert_eq!(combiners.unwrap().len(), 1);
        // Sorted runs likewise.
        assert!(!policy.merge(4, 40, 1, &prices).0.two_level);
        assert!(policy.beside(30).merge(4, 40, 1, &prices).0.two_level);
        // Files with no rows for a reader are not read by it.
        let sparse: Vec<_> = (0..40).map(|i| file(2, 500, &[i % 2])).collect();
        assert_eq!(Exchange::fan_in(&sparse, &one_each(2)), 20);
    }

    #[test]
    fn modes_parse_and_print() {
        for mode in [
            ExchangeMode::Auto,
            ExchangeMode::Direct,
            ExchangeMode::TwoLevel,
        ] {
            assert_eq!(mode.to_string().parse::<ExchangeMode>(), Ok(mode));
        }
        let err = "sideways".parse::<ExchangeMode>().unwrap_err();
        assert!(
            err.contains("sideways") && err.contains("two-level"),
            "{err}"
        );
    }
}
