//! Subcommands of the `squall` binary. Arguments are parsed by clap and converted
//! into the library's typed requests; all real work happens in the library.

mod backend;
mod client;
mod error;
mod faults;
mod output;
mod principals;
mod progress;
mod serve;
mod simulate;
mod skew;
mod tasks;
mod units;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::HashMap;

use squall_control_plane::bench;
use squall_control_plane::planner::{DEFAULT_TARGET_PARTITION_BYTES, Widen, default_parallelism};
use squall_control_plane::{
    Engine, JobRequest, JobRun, PlanOptions, ProgressSink, TableSpec, tpch,
};

use error::{CliError, Result};

use backend::BackendArgs;
use output::write_result;
use progress::ProgressBars;
use serve::ServeArgs;

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
    /// Run one SQL job (in-process executors or AWS Lambda) and print its result.
    Run(Box<RunArgs>),
    /// Print the stage DAG a query would run as, without running it.
    Plan(PlanArgs),
    /// Predict a query's time and cost on data many times larger and many
    /// workers (Lambda), from a run on the tables given.
    Simulate(simulate::SimulateArgs),
    /// Serve the HTTP job API (jobs, catalog tables, schedules) until stopped.
    Serve(Box<ServeArgs>),
    /// Submit a job to a server; print its id, or follow it with --watch.
    Submit(client::SubmitArgs),
    /// List a server's jobs.
    Jobs(client::JobsArgs),
    /// Show one job of a server; follow it with --watch.
    Job(client::JobArgsById),
    /// Print a succeeded job's result.
    Result(client::ResultArgs),
    /// Cancel a queued or running job.
    Cancel(client::CancelArgs),
    /// A server's catalog tables.
    Tables(client::TablesArgs),
    /// A server's scheduled jobs.
    Schedules(client::SchedulesArgs),
    /// Write the eight TPC-H tables as Parquet.
    Tpch(TpchArgs),
    /// Write a skewed data set (Zipf join and group keys) as Parquet.
    Skew(skew::SkewArgs),
    /// Generate TPC-H SF 0.1 locally (if missing) and run a few TPC-H queries.
    Demo(DemoArgs),
    /// Benchmarks: TPC-H against single-node DataFusion, scheduler overhead, faults, skew.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time TPC-H queries on Squall and on single-node DataFusion, alternating.
    Tpch(BenchTpchArgs),
    /// Time N tasks that only round-trip the task protocol through the scheduler.
    Tasks(BenchTasksArgs),
    /// Time TPC-H clean and under injected stragglers, crashes and failures.
    Faults(faults::BenchFaultsArgs),
    /// Time the skewed data set's queries: single-node DataFusion, Squall's
    /// static plan and Squall's adaptive plan, with a small task pool.
    Skew(skew::BenchSkewArgs),
    /// Check the scale model: predict TPC-H queries on larger tables from a
    /// run on smaller ones, run them, print the error.
    Simulate(simulate::BenchSimulateArgs),
}

#[derive(Debug, Args)]
struct BenchTpchArgs {
    /// Root of the TPC-H tables (one folder per table, as `squall tpch` writes).
    #[arg(long, value_name = "URL")]
    data: String,
    /// Queries, comma separated (default: all 22).
    #[arg(long, value_delimiter = ',', default_values_t = 1..=22usize)]
    queries: Vec<usize>,
    /// Runs of each query on each side; medians are reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// In-process executors (default: cores); also DataFusion's target partitions.
    #[arg(long)]
    executors: Option<usize>,
    /// Width of Squall's hash shuffles [default: executors, widened with the
    /// data as in `squall run`]; reduce stages coalesce its partitions to
    /// about 64 MiB a task.
    #[arg(long)]
    shuffle_partitions: Option<usize>,
    /// Reference answers to check both sides against (sfX/qNN.csv below);
    /// where there is none, Squall's answer is checked against DataFusion's.
    #[arg(long, value_name = "DIR", default_value = "tests/tpch/answers")]
    answers: PathBuf,
    /// Scale factor of the data (default: from the row count of customer).
    #[arg(long)]
    scale: Option<String>,
    /// DuckDB timings from tests/bench/duckdb_tpch.py (JSON), shown as a column.
    #[arg(long, value_name = "FILE")]
    duckdb: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchTasksArgs {
    /// Number of tasks.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Runs of `count` tasks; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// A table: NAME=URL or NAME:FORMAT=URL (FORMAT: parquet, csv, json). URL is a
    /// file or a prefix: s3://bucket/prefix/, file:///path, memory:///, or a local path.
    #[arg(long = "table", value_name = "NAME=URL", required = true)]
    tables: Vec<String>,
    #[command(flatten)]
    sql: SqlArgs,
    /// Width of hash shuffles [default: the executors, widened to one
    /// partition per 64 MiB of the tables' files, up to 1024; reduce stages
    /// coalesce small partitions].
    #[arg(long)]
    shuffle_partitions: Option<usize>,
    /// Bytes of input per scan task; larger Parquet files are split on row groups.
    #[arg(long, default_value_t = DEFAULT_TARGET_PARTITION_BYTES)]
    target_partition_bytes: u64,
}

impl QueryArgs {
    fn tables(&self) -> Result<Vec<TableSpec>> {
        self.tables
            .iter()
            .map(|t| t.parse().map_err(CliError::from))
            .collect()
    }

    fn sql(&self) -> Result<String> {
        self.sql.read()
    }

    fn plan_options(&self, executors: usize) -> PlanOptions {
        PlanOptions {
            shuffle_partitions: self.shuffle_partitions.unwrap_or(executors),
            target_partition_bytes: self.target_partition_bytes,
            // No width given: scans need only as many tasks as executors, and
            // the shuffle grows with the tables (reduce stages coalesce it).
            min_scan_tasks: self.shuffle_partitions.is_none().then_some(executors),
            widen: self.shuffle_partitions.is_none().then(Widen::default),
            ..PlanOptions::default()
        }
    }
}

/// The query: `--sql SQL` or `--sql-file FILE` (`squall run`, `plan`, `submit`, ...).
#[derive(Debug, Args)]
struct SqlArgs {
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
    fn read(&self) -> Result<String> {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
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
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    tasks: tasks::TaskArgs,
    /// Refuse to run when the tables' files add up to more than this (10GB, 512MiB, ...).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    scan_limit: Option<u64>,
    /// Stop the job when it has run this long (90s, 15m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    deadline: Option<std::time::Duration>,
    /// Stop the job once its estimated cost passes this many US dollars.
    #[arg(long, value_name = "USD", value_parser = units::parse_usd)]
    cost_limit: Option<f64>,
    /// Price table (TOML, the keys of `[prices]` in the serve config) the
    /// cost estimate uses instead of us-east-1 list prices.
    #[arg(long, value_name = "FILE")]
    prices: Option<std::path::PathBuf>,
    /// Print what the job used and cost on stderr even when it is not a
    /// terminal (on a terminal it always is).
    #[arg(long)]
    show_cost: bool,
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
        Command::Run(args) => run_command(*args).await,
        Command::Plan(args) => plan(args).await,
        Command::Simulate(args) => simulate::simulate(args).await,
        Command::Serve(args) => serve::serve(*args).await,
        Command::Submit(args) => client::submit(args).await,
        Command::Jobs(args) => client::jobs(args).await,
        Command::Job(args) => client::job(args).await,
        Command::Result(args) => client::result(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Tables(args) => client::tables(args).await,
        Command::Schedules(args) => client::schedules(args).await,
        Command::Tpch(args) => generate(args).await,
        Command::Skew(args) => skew::generate(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Bench(BenchCommand::Tpch(args)) => bench_tpch(args).await,
        Command::Bench(BenchCommand::Tasks(args)) => bench_tasks(args).await,
        Command::Bench(BenchCommand::Faults(args)) => faults::bench_faults(args).await,
        Command::Bench(BenchCommand::Skew(args)) => skew::bench_skew(args).await,
        Command::Bench(BenchCommand::Simulate(args)) => simulate::bench_simulate(args).await,
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

async fn run_command(args: RunArgs) -> Result<()> {
    let request = JobRequest {
        sql: args.query.sql()?,
        tables: args.query.tables()?,
        output: args.output.clone(),
        plan: args.query.plan_options(args.backend.parallelism()),
        tasks: args.tasks.options(args.backend.max_stage_concurrency)?,
        scan_limit_bytes: args.scan_limit,
        deadline: args.deadline,
        cost_limit_usd: args.cost_limit,
    };
    let mut engine = args.backend.engine().await?;
    if let Some(path) = &args.prices {
        engine.prices = serve::read_prices(path)?;
    }
    let bars = ProgressBars::for_stderr();
    let progress = bars.clone().map(|b| b as Arc<dyn ProgressSink>);
    let meter = engine.meter(&request);
    let run = JobRun {
        progress,
        meter: Some(meter.clone()),
        ..JobRun::default()
    };
    let result = engine.run_as(&request, run).await;
    if let Some(bars) = bars {
        bars.clear();
    }
    // What it cost, however it ended.
    if args.show_cost || std::io::stderr().is_terminal() {
        eprintln!("cost: {}", output::cost_summary(&meter.report().total));
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
        std::fs::create_dir_all(&staging)
            .map_err(CliError::io(format!("cannot create {}", staging.display())))?;
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
            return Err(e.into());
        }
        if args.data.exists() {
            // An incomplete earlier copy.
            std::fs::remove_dir_all(&args.data).map_err(CliError::io(format!(
                "cannot replace {}",
                args.data.display()
            )))?;
        }
        std::fs::rename(&staging, &args.data).map_err(CliError::io(format!(
            "cannot move data into {}",
            args.data.display()
        )))?;
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

async fn bench_tpch(args: BenchTpchArgs) -> Result<()> {
    let duckdb: HashMap<usize, f64> = match &args.duckdb {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::Io {
                context: format!("cannot read DuckDB timings {}", path.display()),
                source: e,
            })?;
            let raw: HashMap<String, f64> = serde_json::from_str(&text).map_err(|e| {
                CliError::InvalidArgument(format!("DuckDB timings {}: {e}", path.display()))
            })?;
            raw.into_iter()
                .filter_map(|(k, v)| {
                    k.trim_start_matches(['q', 'Q'])
                        .parse()
                        .ok()
                        .map(|q| (q, v))
                })
                .collect()
        }
        None => HashMap::new(),
    };
    let bench = bench::TpchBench {
        data: args.data.clone(),
        queries: args.queries.clone(),
        iterations: args.iterations,
        executors: args.executors.unwrap_or_else(default_parallelism),
        shuffle_partitions: args.shuffle_partitions,
        answers: args.answers.is_dir().then(|| args.answers.clone()),
        scale: args.scale.clone(),
    };
    println!(
        "TPC-H on {} — {} executors, shuffle width {}, {} iterations, medians in seconds",
        args.data,
        bench.executors,
        bench
            .shuffle_partitions
            .map_or("follows the data".to_string(), |w| w.to_string()),
        bench.iterations
    );
    println!();
    let duck_col = if duckdb.is_empty() {
        ""
    } else {
        " duckdb s | squall/duckdb |"
    };
    let duck_rule = if duckdb.is_empty() {
        ""
    } else {
        " ---: | ---: |"
    };
    println!(
        "| query | squall s | datafusion s | squall/datafusion |{duck_col} squall cpu s | datafusion cpu s | stages | tasks | shuffle written | shuffle/raw | scanned | answers |"
    );
    println!(
        "| ---: | ---: | ---: | ---: |{duck_rule} ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mut failures = Vec::new();
    let results = bench
        .run(|q| {
            let duck = match duckdb.get(&q.query) {
                Some(d) => format!(
                    " {d:.3} | {:.2} |",
                    q.squall_median().as_secs_f64() / d.max(1e-9)
                ),
                None if duckdb.is_empty() => String::new(),
                None => " - | - |".to_string(),
            };
            let check = match (&q.squall_check, &q.datafusion_check) {
                (Some(Ok(())), Some(Ok(()))) => "ok".to_string(),
                (None, _) => "not checked".to_string(),
                (Some(s), Some(d)) => {
                    let mut wrong = Vec::new();
                    if let Err(e) = s {
                        wrong.push("squall");
                        failures.push(format!("Q{} squall: {e}", q.query));
                    }
                    if let Err(e) = d {
                        wrong.push("datafusion");
                        failures.push(format!("Q{} datafusion: {e}", q.query));
                    }
                    format!("WRONG ({})", wrong.join(", "))
                }
                // No reference file: Squall's answer against DataFusion's.
                (Some(Ok(())), None) => "ok (= datafusion)".to_string(),
                (Some(Err(e)), None) => {
                    failures.push(format!("Q{} squall against datafusion: {e}", q.query));
                    "WRONG (squall vs datafusion)".to_string()
                }
            };
            println!(
                "| Q{} | {:.3} | {:.3} | {:.2} |{duck} {:.3} | {:.3} | {} | {} | {} | {:.2} | {} | {check} |",
                q.query,
                q.squall_median().as_secs_f64(),
                q.datafusion_median().as_secs_f64(),
                q.ratio(),
                q.squall_cpu_median().as_secs_f64(),
                q.datafusion_cpu_median().as_secs_f64(),
                q.stages,
                q.tasks,
                indicatif::HumanBytes(q.shuffle_bytes),
                q.shuffle_bytes as f64 / q.shuffle_raw_bytes.max(1) as f64,
                indicatif::HumanBytes(q.scanned_bytes),
            );
        })
        .await?;
    println!();
    let geo = bench::geometric_mean(results.iter().map(|q| q.ratio()));
    let worst = results
        .iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    print!("geometric mean of squall/datafusion: {geo:.2}");
    if let Some(w) = worst {
        print!("; worst Q{} at {:.2}", w.query, w.ratio());
    }
    let duck: Vec<f64> = results
        .iter()
        .filter_map(|q| {
            duckdb
                .get(&q.query)
                .map(|d| q.squall_median().as_secs_f64() / d.max(1e-9))
        })
        .collect();
    if !duck.is_empty() {
        print!(
            "; geometric mean of squall/duckdb: {:.2}",
            bench::geometric_mean(duck)
        );
    }
    println!();
    if !failures.is_empty() {
        return Err(CliError::WrongAnswers {
            count: failures.len(),
            failures,
        });
    }
    Ok(())
}

async fn bench_tasks(args: BenchTasksArgs) -> Result<()> {
    if args.count == 0 || args.runs == 0 {
        return Err(CliError::InvalidArgument(
            "--count and --runs must be at least 1".into(),
        ));
    }
    let engine = args.backend.engine().await?;
    // Warm up the runtime and allocator (and, on Lambda, the functions).
    let warm_up = args.count.min(1_000).min(engine.backend.max_concurrency());
    bench::tasks(&engine, warm_up).await?;
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(bench::tasks(&engine, args.count).await?);
    }
    runs.sort_by_key(|r| r.elapsed);
    let median = &runs[runs.len() / 2];
    println!(
        "{} no-op tasks through the scheduler and the {} backend ({} at once): median of {} runs {:.3} s, {:.0} tasks/s, {:.1} us per task",
        median.tasks,
        engine.backend.name(),
        engine.backend.max_concurrency(),
        runs.len(),
        median.elapsed.as_secs_f64(),
        median.tasks_per_second(),
        median.per_task().as_secs_f64() * 1e6
    );
    // With C tasks in flight, each round trip took about C times the wall time per task.
    let in_flight = engine.backend.max_concurrency().min(median.tasks);
    println!(
        "round trip per task (scheduler, {} backend, executor) at {in_flight} in flight: about {:.2} ms",
        engine.backend.name(),
        median.per_task().as_secs_f64() * in_flight as f64 * 1e3
    );
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
