//! Flags on how a job's tasks run — memory, attempts, backup tasks — shared by
//! `squall run` and `squall bench faults`, and the task options they make.

use std::time::Duration;

use clap::Args;
use squall_engine::TaskOptions;
use squall_engine::scheduler::{Coalescing, Exchange, ExchangeMode, Speculation};
use squall_executor::{Hedging, ShuffleCodec};

use super::error::{CliError, Result};
use super::units;

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Memory pool of a task's first attempt, in bytes (10GB, 512MiB, ...).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size,
          default_value_t = TaskOptions::default().memory_limit_bytes)]
    pub task_memory: u64,
    /// A task out of memory is tried again with twice the pool, up to this
    /// [default: 8GiB, at least --task-memory].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub task_memory_max: Option<u64>,
    /// Start N Lambda environments while the job is planned, so that its
    /// first tasks find them warm (--backend lambda or auto; at most the
    /// invocations in flight) [default: 0].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prewarm: usize,
    /// Attempts per task when failures are retryable.
    #[arg(long, default_value_t = TaskOptions::default().max_attempts)]
    pub max_attempts: u32,
    /// Keep one reduce task per shuffle partition: no coalescing of small
    /// partitions, no splitting of skewed ones.
    #[arg(long)]
    pub no_coalesce: bool,
    /// Shuffle bytes a reduce task reads at most, where coalescing can help
    /// (skewed partitions above it and 5× the median are split) [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub reduce_task_bytes: Option<u64>,
    /// How reduce stages read shuffles: auto (through a combine step where
    /// the requests it saves pay for it), direct (every reduce task reads
    /// every producer) or two-level (a combine step wherever one can be).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_exchange)]
    pub exchange: ExchangeMode,
    /// Never send a slow ranged read (a shuffle partition, a Parquet column
    /// chunk) a second time; by default one slower than the task's 95th
    /// percentile of reads, and at least 250ms, is sent again once.
    #[arg(long)]
    pub no_hedging: bool,
    /// How shuffle files are compressed: none (plain Arrow IPC), lz4 (fast, a third of the bytes) or zstd (less than half
    /// LZ4's bytes) [default: zstd where the work folder is an object store;
    /// on local disk or in memory none for a job reading at most 256 MiB of
    /// table columns, lz4 above].
    #[arg(long, value_name = "CODEC")]
    pub shuffle_codec: Option<ShuffleCodec>,
    /// Bytes of shuffle input at most of a stage that runs inside the one
    /// task of the stage reading it (the sort or aggregate under a query's
    /// final merge), instead of tasks of its own; 0: never [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub fuse_bytes: Option<u64>,
    #[command(flatten)]
    pub backups: BackupArgs,
}

/// Backup tasks for stragglers (see `squall_engine::scheduler::speculation`).
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Never start backup copies of straggling tasks.
    #[arg(long)]
    pub no_backups: bool,
    /// A running task straggles past this multiple of the median finished one [default: 2].
    #[arg(long, value_name = "X")]
    pub backup_multiplier: Option<f64>,
    /// ...once this fraction of its stage's tasks has finished [default: 0.75].
    #[arg(long, value_name = "FRACTION")]
    pub backup_quantile: Option<f64>,
    /// ...and once it has run this long (200ms, 2s) [default: 200ms].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub backup_after: Option<Duration>,
}

impl BackupArgs {
    pub fn speculation(&self) -> Result<Speculation> {
        let default = Speculation::default();
        let speculation = Speculation {
            enabled: !self.no_backups,
            multiplier: self.backup_multiplier.unwrap_or(default.multiplier),
            quantile: self.backup_quantile.unwrap_or(default.quantile),
            min_runtime: self.backup_after.unwrap_or(default.min_runtime),
            ..default
        };
        speculation.validate().map_err(CliError::InvalidArgument)?;
        Ok(speculation)
    }
}

impl TaskArgs {
    pub fn options(&self, max_stage_concurrency: Option<usize>) -> Result<TaskOptions> {
        if self.task_memory == 0 {
            return Err(CliError::InvalidArgument(
                "--task-memory must be more than 0 bytes".into(),
            ));
        }
        let default = TaskOptions::default();
        if self.reduce_task_bytes == Some(0) {
            return Err(CliError::InvalidArgument(
                "--reduce-task-bytes must be more than 0 bytes".into(),
            ));
        }
        let coalescing = if self.no_coalesce {
            Coalescing::disabled()
        } else {
            Coalescing {
                target_bytes: self
                    .reduce_task_bytes
                    .unwrap_or(default.coalescing.target_bytes),
                ..default.coalescing.clone()
            }
        };
        Ok(TaskOptions {
            max_attempts: self.max_attempts.max(1),
            memory_limit_bytes: self.task_memory,
            max_memory_limit_bytes: self
                .task_memory_max
                .unwrap_or(default.max_memory_limit_bytes)
                .max(self.task_memory),
            max_stage_concurrency,
            speculation: self.backups.speculation()?,
            coalescing,
            exchange: Exchange {
                mode: self.exchange,
                ..Exchange::default()
            },
            hedging: if self.no_hedging {
                Hedging::off()
            } else {
                Hedging::on()
            },
            shuffle_codec: self.shuffle_codec,
            prewarm: self.prewarm,
            fuse_max_bytes: self.fuse_bytes.unwrap_or(default.fuse_max_bytes),
            ..default
        })
    }
}

/// `--exchange`'s value.
pub fn parse_exchange(value: &str) -> std::result::Result<ExchangeMode, String> {
    value.parse()
}
