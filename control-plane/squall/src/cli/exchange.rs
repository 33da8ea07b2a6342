//! `squall bench exchange`: TPC-H queries with their shuffles read direct and
//! two-level, alternating in one process; a table of GETs, times and answers.

use std::path::PathBuf;

use clap::Args;
use squall_engine::planner::default_parallelism;
use squall_tools::bench::geometric_mean;
use squall_tools::exchange::{ExchangeBench, ExchangeQuery, Side};

use super::error::{CliError, Result};
use super::machine;

#[derive(Debug, Args)]
pub(super) struct BenchExchangeArgs {
    /// Root of the TPC-H tables (one folder per table, as `squall tpch` writes;
    /// many files per table make many producers).
    #[arg(long, value_name = "URL")]
    data: String,
    /// Scale factor of the data, as the answers folders name it (1, 0.1, ...).
    #[arg(long)]
    scale: String,
    /// Queries, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [9usize, 12, 18])]
    queries: Vec<usize>,
    /// Runs of each query each way; medians are reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// In-process executors (default: cores).
    #[arg(long)]
    executors: Option<usize>,
    /// Width of the hash shuffles; one reduce task per partition.
    #[arg(long, default_value_t = 256)]
    shuffle_partitions: usize,
    /// Reference answers (sfX/qNN.csv below); where there is none, the two
    /// runs' answers are compared with each other.
    #[arg(long, value_name = "DIR", default_value = "tests/tpch/answers")]
    answers: PathBuf,
}

pub(super) async fn bench_exchange(args: BenchExchangeArgs) -> Result<()> {
    let bench = ExchangeBench {
        data: args.data.clone(),
        queries: args.queries.clone(),
        iterations: args.iterations,
        executors: args.executors.unwrap_or_else(default_parallelism),
        shuffle_partitions: args.shuffle_partitions,
        answers: args.answers.is_dir().then(|| args.answers.clone()),
        scale: args.scale.clone(),
    };
    println!(
        "TPC-H SF {} on {} — {} executors, shuffle width {}, no coalescing, {} iterations each way, medians in seconds; GETs of the first run, every store",
        args.scale, args.data, bench.executors, bench.shuffle_partitions, bench.iterations
    );
    println!("{}", machine::provenance());
    println!();
    println!(
        "| query | direct s | two-level s | two-level/direct | direct GETs | two-level GETs | fewer GETs | direct PUTs | two-level PUTs | combined inputs | combiners | answers |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mut failures = Vec::new();
    let results = bench.run(|q| println!("{}", row(q, &mut failures))).await?;
    println!();
    let times = geometric_mean(results.iter().map(ExchangeQuery::time_ratio));
    let fewer = geometric_mean(results.iter().map(ExchangeQuery::fewer_gets));
    println!(
        "geometric mean of two-level/direct time: {times:.2}; of direct/two-level GETs: {fewer:.1}x"
    );
    if !failures.is_empty() {
        return Err(CliError::WrongAnswers {
            count: failures.len(),
            failures,
        });
    }
    Ok(())
}

/// One query's row; wrong answers are added to `failures`.
fn row(q: &ExchangeQuery, failures: &mut Vec<String>) -> String {
    let mut wrong = Vec::new();
    for (name, side) in [("direct", &q.direct), ("two-level", &q.two_level)] {
        if let Some(Err(e)) = &side.check {
            wrong.push(name);
            failures.push(format!("Q{} {name}: {e}", q.query));
        }
    }
    let check = if wrong.is_empty() {
        "ok".to_string()
    } else {
        format!("WRONG ({})", wrong.join(", "))
    };
    let secs = |s: &Side| s.median().as_secs_f64();
    format!(
        "| Q{} | {:.3} | {:.3} | {:.2} | {} | {} | {:.1}x | {} | {} | {} | {} | {check} |",
        q.query,
        secs(&q.direct),
        secs(&q.two_level),
        q.time_ratio(),
        q.direct.gets,
        q.two_level.gets,
        q.fewer_gets(),
        q.direct.puts,
        q.two_level.puts,
        q.two_level.combined_inputs,
        q.two_level.combiners,
    )
}
