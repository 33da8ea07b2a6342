//! `squall bench`: TPC-H against single-node DataFusion (and DuckDB's
//! timings), the scheduler's cost per task, and the fault, skew and
//! scale-model benches (their own files). Every table is headed by the
//! commit, compiler, CPU and date it was measured with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use squall_engine::planner::{KeyFilterMode, default_parallelism};
use squall_executor::ShuffleCodec;
use squall_tools::bench;

use super::backend::BackendArgs;
use super::error::{CliError, Result};
use super::{burst, exchange, faults, machine, operators, simulate, skew};

#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
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
    /// Predict every TPC-H query on Lambda at a larger scale (SF 1000 on
    /// 1,000 workers by default) from runs here, as one table.
    Scale(simulate::BenchScaleArgs),
    /// Run TPC-H queries with their shuffles read direct and two-level
    /// (through combine steps), alternating: GETs, time and answers.
    Exchange(exchange::BenchExchangeArgs),
    /// Time and cost of TPC-H queries in-process only, on Lambda only and
    /// with --backend auto: on the emulators, and predicted at scale.
    Burst(burst::BenchBurstArgs),
}

#[derive(Debug, Args)]
pub(super) struct BenchTpchArgs {
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
    /// Also print where each query's CPU went: by operator on both sides
    /// (and Squall's outside operators), by stage, and summed over the
    /// queries.
    #[arg(long)]
    operators: bool,
    /// When a stage feeding one side of a join waits for the keys of the
    /// other side and drops the rows they cannot match: off, auto (where the
    /// wait costs at most four times the stage's own scan) or always.
    #[arg(long, default_value = "auto", value_name = "WHEN")]
    key_filters: KeyFilterMode,
    /// How shuffle files are compressed: lz4, zstd or none [default: as
    /// `squall run` chooses for the work folder].
    #[arg(long, value_name = "CODEC")]
    shuffle_codec: Option<ShuffleCodec>,
    /// Give every scan a stage of its own, small tables too (by default a
    /// stage joining with a table of at most 1 MiB scans it itself).
    #[arg(long)]
    no_inline_scans: bool,
    /// Run every stage's own tasks (by default a small stage read by one
    /// task runs inside that task, see `squall run --fuse-bytes`).
    #[arg(long)]
    no_fuse: bool,
    /// Keep every shuffled join shuffled (see `squall run --no-late-broadcast`).
    #[arg(long)]
    no_late_broadcast: bool,
    /// Do not push broadcast joins' keys into their probe scans (see
    /// `squall run --no-join-filters`).
    #[arg(long)]
    no_join_filters: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchTasksArgs {
    /// Number of tasks.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Runs of `count` tasks; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Runs one benchmark.
pub(super) async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Tpch(args) => bench_tpch(args).await,
        BenchCommand::Tasks(args) => bench_tasks(args).await,
        BenchCommand::Faults(args) => faults::bench_faults(args).await,
        BenchCommand::Skew(args) => skew::bench_skew(args).await,
        BenchCommand::Simulate(args) => simulate::bench_simulate(args).await,
        BenchCommand::Exchange(args) => exchange::bench_exchange(args).await,
        BenchCommand::Scale(args) => simulate::bench_scale(args).await,
        BenchCommand::Burst(args) => burst::bench_burst(args).await,
    }
}

/// DuckDB's median seconds per query from tests/bench/duckdb_tpch.py's JSON
/// (`{"q1": 0.12, ...}`).
fn duckdb_timings(path: &Path) -> Result<HashMap<usize, f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Io {
        context: format!("cannot read DuckDB timings {}", path.display()),
        source: e,
    })?;
    let raw: HashMap<String, f64> = serde_json::from_str(&text).map_err(|e| {
        CliError::InvalidArgument(format!("DuckDB timings {}: {e}", path.display()))
    })?;
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| {
            k.trim_start_matches(['q', 'Q'])
                .parse()
                .ok()
                .map(|q| (q, v))
        })
        .collect())
}

async fn bench_tpch(args: BenchTpchArgs) -> Result<()> {
    let duckdb = match &args.duckdb {
        Some(path) => duckdb_timings(path)?,
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
        key_filters: args.key_filters,
        shuffle_codec: args.shuffle_codec,
        inline_scans: !args.no_inline_scans,
        fuse: !args.no_fuse,
        late_broadcast: !args.no_late_broadcast,
        join_filters: !args.no_join_filters,
    };
    println!(
        "TPC-H on {} — {} executors, shuffle width {}, key filters {:?}, shuffle codec {}, small scans {}, small stages {}, late broadcasts {}, join filters {}, {} iterations, medians in seconds",
        args.data,
        bench.executors,
        bench
            .shuffle_partitions
            .map_or("follows the data".to_string(), |w| w.to_string()),
        bench.key_filters,
        bench
            .shuffle_codec
            .map_or("as the work folder's".to_string(), |c| c.to_string()),
        if bench.inline_scans {
            "inlined"
        } else {
            "in stages"
        },
        if bench.fuse { "fused" } else { "own tasks" },
        if bench.late_broadcast { "on" } else { "off" },
        if bench.join_filters { "on" } else { "off" },
        bench.iterations
    );
    println!("{}", machine::provenance());
    println!();
    let (duck_col, duck_rule) = if duckdb.is_empty() {
        ("", "")
    } else {
        (" duckdb s | squall/duckdb |", " ---: | ---: |")
    };
    println!(
        "| query | squall s | datafusion s | squall/datafusion |{duck_col} squall cpu s | datafusion cpu s | stages | tasks | shuffle written | shuffle/raw | scanned | answers |"
    );
    println!(
        "| ---: | ---: | ---: | ---: |{duck_rule} ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mut failures = Vec::new();
    let results = bench
        .run(|q| println!("{}", tpch_row(q, &duckdb, &mut failures)))
        .await?;
    println!();
    println!("{}", tpch_summary(&results, &duckdb));
    if args.operators {
        println!("{}", operators::breakdown(&results, bench.iterations));
    }
    if !failures.is_empty() {
        return Err(CliError::WrongAnswers {
            count: failures.len(),
            failures,
        });
    }
    Ok(())
}

/// One query's row of the TPC-H table; wrong answers are added to `failures`.
fn tpch_row(
    q: &bench::QueryBench,
    duckdb: &HashMap<usize, f64>,
    failures: &mut Vec<String>,
) -> String {
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
    format!(
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
    )
}

/// The line under the TPC-H table: geometric means and the worst query.
fn tpch_summary(results: &[bench::QueryBench], duckdb: &HashMap<usize, f64>) -> String {
    let geo = bench::geometric_mean(results.iter().map(|q| q.ratio()));
    let mut line = format!("geometric mean of squall/datafusion: {geo:.2}");
    if let Some(w) = results
        .iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
    {
        line.push_str(&format!("; worst Q{} at {:.2}", w.query, w.ratio()));
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
        line.push_str(&format!(
            "; geometric mean of squall/duckdb: {:.2}",
            bench::geometric_mean(duck)
        ));
    }
    line
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
