//! Subcommands of the `squall` binary. Arguments are parsed by clap and converted
//! into the library's typed requests; all real work happens in the library.

mod backend;
mod bench;
mod burst;
mod client;
mod error;
mod exchange;
mod faults;
mod limits;
mod machine;
mod operators;
mod output;
mod principals;
mod progress;
mod query;
mod serve;
mod simulate;
mod skew;
mod sql;
mod tasks;
mod units;
mod views;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use squall_engine::planner::default_parallelism;
use squall_engine::{Engine, JobRequest, JobRun, ProgressSink, Stop};
use squall_executor::telemetry::LogFormat;
use squall_tools::tpch;

use error::{CliError, Result};
use query::{Format, QueryArgs};

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
    /// How log lines (standard error) are written: text, or json (one object
    /// a line with the job, stage, task and attempt they belong to). Which
    /// lines: SQUALL_LOG, else RUST_LOG (default: warn).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        env = "SQUALL_LOG_FORMAT",
        default_value = "text",
        value_parser = clap::value_parser!(LogFormat)
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one SQL job (in-process executors or AWS Lambda) and print its result.
    Run(Box<RunArgs>),
    /// Print the stage DAG a query would run as, without running it.
    Plan(PlanArgs),
    /// Ad-hoc SQL: a prompt, or -c SQL, -f FILE, or standard input; EXPLAIN
    /// and EXPLAIN ANALYZE; tables by --table, --catalog or a quoted URL in FROM.
    Sql(Box<sql::ShellArgs>),
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
    Bench(bench::BenchCommand),
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
    /// Replace the result a job committed under --output: the new manifest
    /// replaces the old in one write, and the old files go only after it (a
    /// reader sees one result or the other; a failed run leaves the old).
    #[arg(long, requires = "output")]
    overwrite: bool,
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
        Command::Sql(args) => sql::sql(*args).await,
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
        Command::Bench(command) => bench::run(command).await,
    }
}

async fn run_command(args: RunArgs) -> Result<()> {
    let request = JobRequest {
        sql: args.query.sql()?,
        tables: args.query.tables()?,
        output: args.output.clone(),
        local_output: None,
        plan: args.query.plan_options(args.backend.parallelism()),
        tasks: args.tasks.options(args.backend.max_stage_concurrency)?,
        scan_limit_bytes: args.scan_limit,
        deadline: args.deadline,
        cost_limit_usd: args.cost_limit,
        overwrite_output: args.overwrite,
    };
    let mut engine = args.backend.engine().await?;
    if let Some(path) = &args.prices {
        engine.prices = serve::read_prices(path)?;
    }
    let bars = ProgressBars::for_stderr();
    let progress = bars.clone().map(|b| b as Arc<dyn ProgressSink>);
    let meter = engine.meter(&request);
    let (stop, running) = cancel_on_interrupt();
    let run = JobRun {
        progress,
        meter: Some(meter.clone()),
        stop: Some(stop),
        ..JobRun::default()
    };
    let result = engine.run_as(&request, run).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
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
        None => squall_engine::read_result(&engine.stores, &result.files).await?,
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

/// Ctrl-C (SIGINT) while the job runs cancels it: its tasks stop, its
/// output claim and files and its work folder are removed before the
/// command ends (exit 130). A second Ctrl-C, or one once the job has ended,
/// quits at once.
fn cancel_on_interrupt() -> (
    tokio::sync::watch::Receiver<Stop>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let (tell, stop) = tokio::sync::watch::channel(Stop::Run);
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let job_running = running.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if job_running.load(Ordering::SeqCst) {
            eprintln!(
                "\ninterrupted: stopping the job and removing what it wrote \
                 (Ctrl-C again to quit now, leaving it)"
            );
            let _ = tell.send(Stop::Cancel);
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
        std::process::exit(130);
    });
    (stop, running)
}

async fn plan(args: PlanArgs) -> Result<()> {
    let executors = default_parallelism();
    let engine = Engine::embedded(Some(executors))?;
    let planned = squall_engine::plan_job(
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
    let engine = Engine::embedded(None)?;
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
    let engine = Engine::embedded(None)?;
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
    let root = squall_engine::tables::to_url(&args.data.to_string_lossy())?;
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
