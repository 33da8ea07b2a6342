//! Subcommands of the `squall` binary. Arguments are parsed by clap and converted
//! into the library's typed requests; all real work happens in the library.

mod output;
mod progress;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use squall_control_plane::planner::{DEFAULT_TARGET_PARTITION_BYTES, default_parallelism};
use squall_control_plane::{
    Engine, JobRequest, PlanOptions, ProgressSink, Result, SquallError, TableSpec, TaskOptions,
    tpch,
};

use output::write_result;
use progress::ProgressBars;

#[derive(Debug, Parser)]
#[command(
    name = "squall",
    version,
    about = "Serverless MPP SQL over object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one SQL job on in-process executors and print its result.
    Run(RunArgs),
    /// Print the stage DAG a query would run as, without running it.
    Plan(PlanArgs),
    /// Write the eight TPC-H tables as Parquet.
    Tpch(TpchArgs),
    /// Generate TPC-H SF 0.1 locally (if missing) and run a few TPC-H queries.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// A table: NAME=URL or NAME:FORMAT=URL (FORMAT: parquet, csv, json). URL is a
    /// file or a prefix: s3://bucket/prefix/, file:///path, memory:///, or a local path.
    #[arg(long = "table", value_name = "NAME=URL", required = true)]
    tables: Vec<String>,
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
    /// Width of hash shuffles (default: the number of cores).
    #[arg(long)]
    shuffle_partitions: Option<usize>,
    /// Bytes of input per scan task; larger Parquet files are split on row groups.
    #[arg(long, default_value_t = DEFAULT_TARGET_PARTITION_BYTES)]
    target_partition_bytes: u64,
}

impl QueryArgs {
    fn tables(&self) -> Result<Vec<TableSpec>> {
        self.tables.iter().map(|t| t.parse()).collect()
    }

    fn sql(&self) -> Result<String> {
        match (&self.sql, &self.sql_file) {
            (Some(sql), _) => Ok(sql.clone()),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| SquallError::Io {
                context: format!("cannot read SQL file {}", path.display()),
                source: e,
            }),
            (None, None) => Err(SquallError::InvalidArgument(
                "give --sql or --sql-file".into(),
            )),
        }
    }

    fn plan_options(&self, executors: usize) -> PlanOptions {
        PlanOptions {
            shuffle_partitions: self.shuffle_partitions.unwrap_or(executors),
            target_partition_bytes: self.target_partition_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// How to print the result on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Keep the result as Parquet files plus a manifest under this URL (and print it).
    #[arg(long, value_name = "URL")]
    output: Option<String>,
    /// In-process executors running at once (default: the number of cores).
    #[arg(long)]
    executors: Option<usize>,
    /// Where shuffle files go (default: a folder in the OS temp directory).
    #[arg(long, value_name = "URL")]
    work_dir: Option<String>,
    /// Memory limit of one task, in bytes.
    #[arg(long, default_value_t = TaskOptions::default().memory_limit_bytes)]
    task_memory: u64,
    /// Attempts per task when failures are retryable.
    #[arg(long, default_value_t = TaskOptions::default().max_attempts)]
    max_attempts: u32,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(Debug, Args)]
struct TpchArgs {
    /// Scale factor (1 is about 1 GB of CSV, 345 MB of Parquet).
    #[arg(long)]
    scale: f64,
    /// Where to write: a local folder or an object-store URL.
    #[arg(long, value_name = "URL")]
    out: String,
    /// Files per table.
    #[arg(long, default_value_t = 1)]
    parts: usize,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Folder for the TPC-H data (generated if missing).
    #[arg(long, default_value = "data/tpch-sf0.1")]
    data: PathBuf,
    /// Scale factor to generate when the data is missing.
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// TPC-H queries to run, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3, 5, 6, 10])]
    queries: Vec<usize>,
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_job(args).await,
        Command::Plan(args) => plan(args).await,
        Command::Tpch(args) => generate(args).await,
        Command::Demo(args) => demo(args).await,
    }
}

fn engine(executors: Option<usize>, work_dir: Option<&str>) -> Result<Engine> {
    let engine = Engine::embedded(executors)?;
    match work_dir {
        None => Ok(engine),
        Some(dir) => {
            let url = squall_control_plane::tables::to_url(dir)?;
            Ok(Engine {
                work_root: url.as_str().trim_end_matches('/').to_string(),
                ..engine
            })
        }
    }
}

async fn run_job(args: RunArgs) -> Result<()> {
    let executors = args.executors.unwrap_or_else(default_parallelism);
    let engine = engine(Some(executors), args.work_dir.as_deref())?;
    let request = JobRequest {
        sql: args.query.sql()?,
        tables: args.query.tables()?,
        output: args.output.clone(),
        plan: args.query.plan_options(executors),
        tasks: TaskOptions {
            max_attempts: args.max_attempts.max(1),
            memory_limit_bytes: args.task_memory,
            ..TaskOptions::default()
        },
    };
    let bars = ProgressBars::for_stderr();
    let progress = bars.clone().map(|b| b as Arc<dyn ProgressSink>);
    let result = engine.run(&request, progress).await;
    if let Some(bars) = bars {
        bars.clear();
    }
    let result = result?;
    let batches = match &result.batches {
        Some(batches) => batches.clone(),
        None => squall_control_plane::read_result(&engine.stores, &result.files).await?,
    };
    write_result(
        &mut std::io::stdout().lock(),
        &result.schema,
        &batches,
        args.format.into(),
    )?;
    if let Some(manifest) = &result.manifest_url {
        eprintln!("result: {} rows, manifest {manifest}", result.rows);
    }
    Ok(())
}

async fn plan(args: PlanArgs) -> Result<()> {
    let executors = default_parallelism();
    let engine = engine(Some(executors), None)?;
    let planned = squall_control_plane::plan_job(
        &args.query.sql()?,
        &args.query.tables()?,
        &args.query.plan_options(executors),
        engine.stores.clone(),
        "work://job",
        "work://job/result",
    )
    .await?;
    print!("{}", planned.dag.display(&[]));
    Ok(())
}

async fn generate(args: TpchArgs) -> Result<()> {
    let engine = engine(None, None)?;
    let bar = progress::file_bar((args.parts * tpch::TABLES.len()) as u64, "writing TPC-H");
    let started = Instant::now();
    tpch::generate(&engine.stores, args.scale, &args.out, args.parts, |url| {
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!(
        "wrote TPC-H SF {} ({} files per table) to {} in {:.1} s",
        args.scale,
        args.parts,
        args.out,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let engine = engine(None, None)?;
    if !tpch::local_data_present(&args.data) {
        eprintln!(
            "generating TPC-H SF {} into {} ...",
            args.scale,
            args.data.display()
        );
        // Generate next to the target and rename it into place, so that an
        // interrupted run never leaves data that looks complete.
        let staging = staging_dir(&args.data);
        let io = |context: String| move |source| SquallError::Io { context, source };
        std::fs::create_dir_all(&staging)
            .map_err(io(format!("cannot create {}", staging.display())))?;
        let bar = progress::file_bar(4 * tpch::TABLES.len() as u64, "writing TPC-H");
        let generated = tpch::generate(
            &engine.stores,
            args.scale,
            &staging.to_string_lossy(),
            4,
            |_| {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            },
        )
        .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Err(e) = generated {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if args.data.exists() {
            // An incomplete earlier copy.
            std::fs::remove_dir_all(&args.data)
                .map_err(io(format!("cannot replace {}", args.data.display())))?;
        }
        std::fs::rename(&staging, &args.data)
            .map_err(io(format!("cannot move data into {}", args.data.display())))?;
    }
    let root = squall_control_plane::tables::to_url(&args.data.to_string_lossy())?;
    let tables = tpch::table_specs(root.as_str());
    let mut stdout = std::io::stdout().lock();
    for q in args.queries {
        let request = JobRequest::new(tpch::query(q)?, tables.clone());
        let started = Instant::now();
        let result = engine.run(&request, None).await?;
        let stages = result.dag.stages.len();
        let tasks = result.dag.task_count();
        println!(
            "-- TPC-H Q{q}: {} rows in {:.2} s ({stages} stages, {tasks} tasks)",
            result.rows,
            started.elapsed().as_secs_f64()
        );
        write_result(
            &mut stdout,
            &result.schema,
            result.batches.as_deref().unwrap_or_default(),
            output::OutputFormat::Table,
        )?;
        println!();
    }
    Ok(())
}

/// A private sibling of `dir` to build it in.
fn staging_dir(dir: &std::path::Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "data".to_string(), |n| n.to_string_lossy().to_string());
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    let staging = format!(".{name}.partial-{}", std::process::id());
    parent.map_or_else(|| PathBuf::from(&staging), |p| p.join(&staging))
}

impl From<Format> for output::OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => output::OutputFormat::Table,
            Format::Csv => output::OutputFormat::Csv,
            Format::Json => output::OutputFormat::Json,
        }
    }
}
