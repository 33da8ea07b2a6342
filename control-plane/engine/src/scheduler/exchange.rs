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
    /// memory: at most a quarter of the task's pool is used).
    pub group_bytes: u64,
    /// Auto: two-level must cut the input's requests at least this many times.
    pub min_reduction: f64,
    /// Bytes a combiner moves per second (GET whole, copy, PUT), for pricing
    /// its extra pass.
    pub bytes_per_second: f64,
}

impl Default for Exchange {
    fn default() -> Self {
        Self {
            mode: ExchangeMode::Auto,
            min_requests: 2048,
            max_fan_in: 512,
            group_files: 64,
            group_bytes: 256 << 20,
            min_reduction: 2.0,
            bytes_per_second: 100e6,
        }
    }
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

    /// The groups of consecutive producers one combiner each reads: at most
    /// `group_files` files and `group_bytes` bytes (or a quarter of
    /// `memory_bytes`) each, one file at least.
    pub fn groups(&self, files: &[OutputFile], memory_bytes: u64) -> Vec<Range<usize>> {
        let bytes_cap = self.group_bytes.min(memory_bytes / 4).max(1);
        let files_cap = self.group_files.max(2);
        let mut groups = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (i, file) in files.iter().enumerate() {
            if i > start && (i - start >= files_cap || bytes + file.size > bytes_cap) {
                groups.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += file.size;
        }
        if start < files.len() {
            groups.push(start..files.len());
        }
        groups
    }

    /// Decides for the input `input` whose committed files are `files`, read
    /// by reduce tasks that each read the partitions of one of `slices`
    /// (None: every task reads every partition — a broadcast). Returns the
    /// choice and, for two-level, the combiners' groups. `memory_bytes`: a
    /// combine task's pool.
    pub fn decide(
        &self,
        input: u32,
        files: &[OutputFile],
        slices: &Slices,
        prices: &Prices,
        memory_bytes: u64,
    ) -> (ExchangeChoice, Option<Vec<Range<usize>>>) {
        let groups = self.groups(files, memory_bytes);
        let direct = reads(files.iter().map(|f| vec![f]), slices);
        let combined = groups.iter().map(|g| files[g.clone()].iter().collect());
        let two_level = reads(combined, slices).total + files.len() as u64;
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let saved = (direct.total as f64 - two_level as f64) * prices.s3_get_per_thousand / 1e3;
        let memory_gb = memory_bytes as f64 / (1u64 << 30) as f64;
        let extra = groups.len() as f64
            * (prices.s3_put_per_thousand / 1e3 + prices.lambda_per_million_requests / 1e6)
            + bytes as f64 / self.bytes_per_second.max(1.0)
                * memory_gb
                * prices.lambda_gb_second_x86_64;
        let saving_usd = saved - extra;
        let fewer = direct.total as f64 / two_level.max(1) as f64;
        let combinable = files.len() >= 2 && groups.len() < files.len();
        let (two_level_chosen, reason) = match self.mode {
            ExchangeMode::Direct => (false, "direct by the job's setting".to_string()),
            ExchangeMode::TwoLevel if combinable => {
                (true, "two-level by the job's setting".to_string())
            }
            _ if !combinable => (false, "too few producers to combine".to_string()),
            ExchangeMode::TwoLevel => unreachable!("handled above"),
            ExchangeMode::Auto => self.auto(&direct, fewer, saving_usd),
        };
        let choice = ExchangeChoice {
            input,
            two_level: two_level_chosen,
            producers: files.len(),
            combiners: if two_level_chosen { groups.len() } else { 0 },
            reduce_tasks: slices.tasks(),
            requests_direct: direct.total,
            requests_two_level: two_level,
            saving_usd,
            reason,
        };
        (choice, two_level_chosen.then_some(groups))
    }

    /// Auto's decision and its reason.
    fn auto(&self, direct: &Reads, fewer: f64, saving_usd: f64) -> (bool, String) {
        let large = direct.total >= self.min_requests || direct.max_fan_in > self.max_fan_in;
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

/// GETs of reading files, and the most files one task reads.
struct Reads {
    total: u64,
    max_fan_in: usize,
}

/// The GETs reduce tasks make reading `sources` (each one file, or a
/// combined file of several): one per source per task that has rows of it.
fn reads<'a>(sources: impl Iterator<Item = Vec<&'a OutputFile>>, slices: &Slices) -> Reads {
    let sources: Vec<Vec<&OutputFile>> = sources.collect();
    let has_rows = |source: &[&OutputFile], slice: Option<Slice>| {
        source.iter().any(|f| {
            let slots = match slice {
                Some(s) => {
                    let end = (s.end as usize).min(f.partitions.len());
                    let start = (s.start as usize).min(end);
                    &f.partitions[start..end]
                }
                None => &f.partitions[..],
            };
            slots.iter().any(|p| p.rows > 0)
        })
    };
    let per_task: Vec<usize> = match slices {
        Slices::Each(slices) => slices
            .iter()
            .map(|s| sources.iter().filter(|src| has_rows(src, Some(*s))).count())
            .collect(),
        Slices::All(n) => {
            let any = sources.iter().filter(|src| has_rows(src, None)).count();
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

    fn one_each(n: u32) -> Slices {
        Slices::Each((0..n).map(Slice::one).collect())
    }

    #[test]
    fn groups_hold_at_most_g_files_and_the_byte_cap() {
        let policy = Exchange {
            group_files: 4,
            group_bytes: 1000,
            ..Exchange::default()
        };
        let files: Vec<_> = (0..10).map(|_| file(2, 100, &[])).collect();
        let groups = policy.groups(&files, 1 << 30);
        assert_eq!(groups, vec![0..4, 4..8, 8..10]);
        // 200 bytes a file, 1000 bytes a group: 5 files... but 4 at most.
        let big: Vec<_> = (0..6).map(|_| file(2, 300, &[])).collect();
        assert_eq!(
            policy.groups(&big, 1 << 30),
            vec![0..1, 1..2, 2..3, 3..4, 4..5, 5..6]
        );
        // A quarter of a small pool caps the bytes.
        assert_eq!(
            policy.groups(&files, 1600),
            vec![0..2, 2..4, 4..6, 6..8, 8..10]
        );
    }

    #[test]
    fn requests_fall_from_m_times_r_to_m_plus_r_times_m_over_g() {
        let policy = Exchange::default();
        // 256 producers, 256 reduce tasks, 64 files a combiner: 4 combiners.
        let files: Vec<_> = (0..256).map(|_| file(256, 10, &[])).collect();
        let (choice, groups) =
            policy.decide(1, &files, &one_each(256), &Prices::default(), 2 << 30);
        assert_eq!(choice.requests_direct, 256 * 256);
        assert_eq!(choice.requests_two_level, 256 + 256 * 4);
        assert!(choice.two_level, "{choice:?}");
        assert_eq!(choice.combiners, 4);
        assert_eq!(groups.unwrap().len(), 4);
        assert!(choice.saving_usd > 0.0);
    }

    #[test]
    fn auto_keeps_small_shuffles_direct_and_the_modes_force() {
        let files: Vec<_> = (0..8).map(|_| file(16, 10, &[])).collect();
        let slices = one_each(16);
        let prices = Prices::default();
        let (auto, groups) = Exchange::default().decide(3, &files, &slices, &prices, 2 << 30);
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
        let (choice, groups) = forced.decide(3, &files, &slices, &prices, 2 << 30);
        assert!(choice.two_level);
        assert_eq!(groups.unwrap(), vec![0..3, 3..6, 6..8]);
        // One producer: nothing to combine, whatever the setting.
        let (one, _) = forced.decide(3, &files[..1], &slices, &prices, 2 << 30);
        assert!(!one.two_level, "{one:?}");
        let (direct, _) = Exchange::direct().decide(3, &files, &slices, &prices, 2 << 30);
        assert!(!direct.two_level);
    }

    #[test]
    fn empty_partitions_are_not_read_and_broadcasts_count_every_task() {
        // Producer 0 has rows in partition 0 only, producer 1 in 1 only.
        let files = vec![file(2, 10, &[1]), file(2, 10, &[0])];
        let direct = reads(files.iter().map(|f| vec![f]), &one_each(2));
        assert_eq!(direct.total, 2);
        let combined = reads(std::iter::once(files.iter().collect()), &one_each(2));
        assert_eq!(combined.total, 2, "the combined file has rows in both");
        let broadcast = reads(files.iter().map(|f| vec![f]), &Slices::All(5));
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
        let (choice, _) = policy.decide(1, &files, &Slices::All(10), &Prices::default(), 8 << 30);
        assert!(!choice.two_level, "{choice:?}");
        assert!(choice.reason.contains("cost"), "{}", choice.reason);
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
