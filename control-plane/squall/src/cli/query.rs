//! The arguments that name a query: its tables (`--table`), its SQL (`--sql`,
//! `--sql-file`) and how it is cut (`--shuffle-partitions`,
//! `--target-partition-bytes`); and the format results are printed in.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use squall_engine::planner::{DEFAULT_TARGET_PARTITION_BYTES, KeyFilterMode, Widen};
use squall_engine::tables::{set_csv_options, set_partitions};
use squall_engine::{PlanOptions, TableSpec};

use super::error::{CliError, Result};
use super::output::OutputFormat;

#[derive(Debug, Args)]
pub(super) struct QueryArgs {
    #[command(flatten)]
    tables: TableArgs,
    #[command(flatten)]
    sql: SqlArgs,
    #[command(flatten)]
    plan: PlanKnobs,
}

/// The tables a query reads: `--table`, `--partition`, `--csv`.
#[derive(Debug, Args)]
pub(super) struct TableArgs {
    /// A table: NAME=URL or NAME:FORMAT=URL (FORMAT: parquet, csv, json). URL is a
    /// file or a prefix: s3://bucket/prefix/, file:///path, memory:///, or a local path.
    #[arg(long = "table", value_name = "NAME=URL")]
    tables: Vec<String>,
    /// A table's Hive partition columns, outermost folder first:
    /// [TABLE=]COLUMN[:TYPE],... (TYPE: int, string, date, boolean, double;
    /// TABLE may be left out with one --table). By default a table whose
    /// folders are key=value gets those columns, typed by their values.
    #[arg(long = "partition", value_name = "[TABLE=]COLUMNS")]
    partitions: Vec<String>,
    /// A CSV table's dialect: [TABLE=]delimiter=;,header=false,quote=',escape=\,null=NA
    /// (delimiter also tab, comma, semicolon, pipe, space; default: comma,
    /// a header row, double quotes, no escape, only empty fields NULL).
    #[arg(long = "csv", value_name = "[TABLE=]OPTIONS")]
    csv: Vec<String>,
}

impl TableArgs {
    pub(super) fn specs(&self) -> Result<Vec<TableSpec>> {
        let mut tables = self
            .tables
            .iter()
            .map(|t| t.parse().map_err(CliError::from))
            .collect::<Result<Vec<TableSpec>>>()?;
        set_partitions(&mut tables, &self.partitions)?;
        set_csv_options(&mut tables, &self.csv)?;
        Ok(tables)
    }
}

/// How a query is cut into stages and tasks.
#[derive(Debug, Args)]
pub(super) struct PlanKnobs {
    /// Width of hash shuffles [default: the executors, widened to one
    /// partition per 64 MiB of the tables' files, up to 1024 or one per
    /// executor past that (16,384 at most); reduce stages coalesce small
    /// partitions].
    #[arg(long)]
    shuffle_partitions: Option<usize>,
    /// Bytes of input per scan task; larger Parquet files are split on row groups.
    #[arg(long, default_value_t = DEFAULT_TARGET_PARTITION_BYTES)]
    target_partition_bytes: u64,
    /// When a stage feeding one side of a join waits for the keys of the
    /// other side and drops the rows they cannot match: off, auto (where the
    /// wait costs at most four times the stage's own scan) or always.
    #[arg(long, default_value = "auto", value_name = "WHEN")]
    key_filters: KeyFilterMode,
    /// Keep every shuffled join shuffled: by default a join whose probe side
    /// only scans a table waits for its build side (where the planner's
    /// estimate of it is near the broadcast limits) and, when that commits
    /// at most 1 Mi rows and 16 MiB, scans the probe side in its own tasks.
    #[arg(long)]
    no_late_broadcast: bool,
    /// Do not push a broadcast join's build-side keys into its probe side's
    /// scan (by default the scan skips files and row groups whose statistics
    /// hold none of them, as in single-node DataFusion).
    #[arg(long)]
    no_join_filters: bool,
}

impl QueryArgs {
    pub(super) fn tables(&self) -> Result<Vec<TableSpec>> {
        self.tables.specs()
    }

    pub(super) fn plan_options(&self, executors: usize) -> PlanOptions {
        self.plan.plan_options(executors)
    }

    pub(super) fn sql(&self) -> Result<String> {
        self.sql.read()
    }
}

impl PlanKnobs {
    pub(super) fn plan_options(&self, executors: usize) -> PlanOptions {
        PlanOptions {
            shuffle_partitions: self.shuffle_partitions.unwrap_or(executors),
            target_partition_bytes: self.target_partition_bytes,
            // No width given: scans need only as many tasks as executors, and
            // the shuffle grows with the tables (reduce stages coalesce it).
            min_scan_tasks: self.shuffle_partitions.is_none().then_some(executors),
            widen: self
                .shuffle_partitions
                .is_none()
                .then(|| Widen::for_workers(executors)),
            key_filters: self.key_filters,
            late_broadcast: (!self.no_late_broadcast).then(Default::default),
            join_filters: !self.no_join_filters,
            ..PlanOptions::default()
        }
    }
}

/// The query: `--sql SQL` or `--sql-file FILE` (`squall run`, `plan`, `submit`, ...).
#[derive(Debug, Args)]
pub(super) struct SqlArgs {
    /// The SQL query.
    #[arg(
        long,
        conflicts_with = "sql_file",
        required_unless_present = "sql_file"
    )]
    sql: Option<String>,
    /// A file holding the SQL query.
    #[arg(long, value_name = "FILE")]
    sql_file: Option<PathBuf>,
}

impl SqlArgs {
    pub(super) fn read(&self) -> Result<String> {
        match (&self.sql, &self.sql_file) {
            (Some(sql), _) => Ok(sql.clone()),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| CliError::Io {
                context: format!("cannot read SQL file {}", path.display()),
                source: e,
            }),
            (None, None) => Err(CliError::InvalidArgument("give --sql or --sql-file".into())),
        }
    }
}

/// How `squall run` and `squall result` print rows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Format {
    Table,
    Csv,
    Json,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => OutputFormat::Table,
            Format::Csv => OutputFormat::Csv,
            Format::Json => OutputFormat::Json,
        }
    }
}
