//! `squall bench faults`: TPC-H clean and under injected stragglers, crashes
//! and failures, in one process (the harness is `tools::faults`).

use std::path::PathBuf;

use clap::Args;
use squall_engine::planner::default_parallelism;
use squall_executor::FaultPlan;
use squall_tools::faults::{FaultQuery, FaultsBench};

use super::error::{CliError, Result};
use super::tasks::BackupArgs;
use squall_engine::scheduler::ExchangeMode;

#[derive(Debug, Args)]
pub struct BenchFaultsArgs {
    /// Root of the TPC-H tables (one folder per table, as `squall tpch` writes).
    #[arg(long, value_name = "URL")]
    data: String,
    /// Queries, comma separated (default: all 22).
    #[arg(long, value_delimiter = ',', default_values_t = 1..=22usize)]
    queries: Vec<usize>,
    /// Clean and faulted runs of each query; medians are compared.
    #[arg(long, default_value_t = 1)]
    iterations: usize,
    /// In-process executors (default: cores); also the shuffle width.
    #[arg(long)]
    executors: Option<usize>,
    /// Fraction of attempts that straggle.
    #[arg(long, default_value_t = 0.0)]
    stragglers: f64,
    /// How many times slower a straggler is.
    #[arg(long, default_value_t = 10.0)]
    slowdown: f64,
    /// Fraction of attempts whose executor crashes after writing its output.
    #[arg(long, default_value_t = 0.0)]
    crash: f64,
    /// Fraction of attempts that fail at once (retryably).
    #[arg(long, default_value_t = 0.0)]
    fail: f64,
    /// Seed of the draw: the same seed meets the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Reference answers (sfX/qNN.csv below); single-node DataFusion's answer
    /// where there is none.
    #[arg(long, value_name = "DIR", default_value = "tests/tpch/answers")]
    answers: PathBuf,
    #[command(flatten)]
    backups: BackupArgs,
    /// How reduce stages read shuffles (auto, direct, two-level), on both sides.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = super::tasks::parse_exchange)]
    exchange: ExchangeMode,
}

pub async fn bench_faults(args: BenchFaultsArgs) -> Result<()> {
    let plan = FaultPlan {
        seed: args.seed,
        stragglers: args.stragglers,
        slowdown: args.slowdown,
        crash: args.crash,
        fail: args.fail,
    };
    plan.validate().map_err(CliError::InvalidArgument)?;
    let bench = FaultsBench {
        data: args.data.clone(),
        queries: args.queries.clone(),
        iterations: args.iterations,
        executors: args.executors.unwrap_or_else(default_parallelism),
        plan,
        speculation: args.backups.speculation()?,
        exchange: args.exchange,
        answers: args.answers.is_dir().then(|| args.answers.clone()),
    };
    println!(
        "TPC-H on {} — {} executors, {} iteration(s), exchange {}; faults: {} stragglers ×{}, {} crash, {} fail, seed {}; backups {}",
        args.data,
        bench.executors,
        bench.iterations,
        bench.exchange,
        plan.stragglers,
        plan.slowdown,
        plan.crash,
        plan.fail,
        plan.seed,
        if bench.speculation.enabled {
            "on"
        } else {
            "off"
        },
    );
    println!("{}", super::machine::provenance());
    println!();
    println!(
        "| query | clean s | faulted s | faulted/clean | extra attempts | backups (won) | answers |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let report = bench.run(print_row).await?;
    let (stragglers, crashes, failures) = report.injected;
    println!();
    println!("injected: {stragglers} stragglers, {crashes} crashes, {failures} failures");
    for q in report.queries.iter() {
        if let Err(e) = &q.check {
            println!("q{}: {e}", q.query);
        }
    }
    println!(
        "faults: total ratio {:.2}, answers {}/{} ok",
        report.total_ratio(),
        report.answers_ok(),
        report.queries.len()
    );
    Ok(())
}

fn print_row(q: &FaultQuery) {
    let median = squall_tools::bench::median;
    println!(
        "| {} | {:.3} | {:.3} | {:.2} | {} | {} ({}) | {} |",
        q.query,
        median(&q.clean).as_secs_f64(),
        median(&q.faulted).as_secs_f64(),
        q.ratio(),
        q.extra_attempts,
        q.backups,
        q.backup_wins,
        if q.check.is_ok() { "ok" } else { "WRONG" }
    );
}
