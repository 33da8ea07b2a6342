//! `squall skew` (write the skewed data set) and `squall bench skew` (its
//! queries on single-node DataFusion, Squall's static plan and Squall's
//! adaptive plan, in one process; the harness is `tools::skew`).

use std::time::{Duration, Instant};

use clap::Args;
use squall_engine::Engine;
use squall_engine::planner::default_parallelism;
use squall_tools::bench::{geometric_mean, median};
use squall_tools::skew::{self, SkewBench, SkewQuery, SkewSpec, Timed};

use super::error::{CliError, Result};
use super::units;

#[derive(Debug, Args)]
pub struct SkewArgs {
    /// Where to write: a local folder or an object-store URL (facts/ and dims/ below it).
    #[arg(long, value_name = "URL")]
    out: String,
    /// Rows of `facts`.
    #[arg(long, default_value_t = SkewSpec::default().rows)]
    rows: u64,
    /// Distinct join keys (rows of `dims`).
    #[arg(long, default_value_t = SkewSpec::default().keys)]
    keys: u64,
    /// Distinct group keys.
    #[arg(long, default_value_t = SkewSpec::default().groups)]
    groups: u64,
    /// Zipf exponent of both keys (key i drawn with weight 1/i^s).
    #[arg(long, default_value_t = SkewSpec::default().exponent)]
    exponent: f64,
    /// Files per table.
    #[arg(long, default_value_t = SkewSpec::default().files)]
    files: usize,
    /// Seed of the draw: the same seed writes the same rows.
    #[arg(long, default_value_t = SkewSpec::default().seed)]
    seed: u64,
}

pub async fn generate(args: SkewArgs) -> Result<()> {
    let spec = SkewSpec {
        rows: args.rows,
        keys: args.keys,
        groups: args.groups,
        exponent: args.exponent,
        files: args.files,
        seed: args.seed,
    };
    let engine = Engine::embedded(None)?;
    let started = Instant::now();
    skew::generate(&engine.stores, &spec, &args.out).await?;
    eprintln!(
        "wrote the skewed data set ({} facts over {} keys and {} groups, Zipf {}, {} files per table) to {} in {:.1} s",
        spec.rows,
        spec.keys,
        spec.groups,
        spec.exponent,
        spec.files,
        args.out,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct BenchSkewArgs {
    /// Root of the skewed data set (as `squall skew` writes it).
    #[arg(long, value_name = "URL")]
    data: String,
    /// Memory pool of a task's first attempt on both Squall sides (the static
    /// side never escalates it).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size, default_value = "256MiB")]
    task_memory: u64,
    /// Shuffle width of the adaptive side (the static side's is --executors).
    #[arg(long, default_value_t = 32)]
    width: usize,
    /// Runs of each query on each side; medians are reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// In-process executors (default: cores); also DataFusion's target partitions.
    #[arg(long)]
    executors: Option<usize>,
}

pub async fn bench_skew(args: BenchSkewArgs) -> Result<()> {
    if args.task_memory == 0 || args.width > 4096 || args.iterations > 1000 {
        return Err(CliError::InvalidArgument(
            "--task-memory must be more than 0 bytes, --width at most 4096, --iterations at most 1000"
                .into(),
        ));
    }
    let bench = SkewBench {
        data: args.data.clone(),
        executors: args.executors.unwrap_or_else(default_parallelism),
        iterations: args.iterations,
        task_memory: args.task_memory,
        width: args.width,
    };
    println!(
        "skewed data set at {} — {} executors, {} iteration(s), task pool {} MiB; static: width {}, no escalation, no backups; adaptive: width {}, coalescing, skew splits, escalation, backups",
        args.data,
        bench.executors,
        bench.iterations,
        bench.task_memory >> 20,
        bench.executors,
        bench.width
    );
    println!("{}", super::machine::provenance());
    println!();
    println!(
        "| query | datafusion s | static s | static/datafusion | adaptive s | adaptive/datafusion | reduce tasks / partitions | split tasks | answers |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let results = bench.run(print_row).await?;
    println!();
    for q in &results {
        for (side, timed) in [("static", &q.static_plan), ("adaptive", &q.adaptive)] {
            if let Err(e) = timed {
                println!("{} ({side}): {e}", q.name);
            }
        }
        if let Err(e) = &q.check {
            println!("{}: {e}", q.name);
        }
    }
    let ratios = |side: fn(&SkewQuery) -> &Timed| -> Vec<f64> {
        results
            .iter()
            .filter_map(|q| ratio(side(q), &q.datafusion))
            .collect()
    };
    let adaptive = ratios(|q| &q.adaptive);
    let static_plan = ratios(|q| &q.static_plan);
    let failed =
        |side: fn(&SkewQuery) -> &Timed| results.iter().filter(|q| side(q).is_err()).count();
    let worst = adaptive.iter().copied().fold(0.0, f64::max);
    println!(
        "skew: adaptive/datafusion geometric mean {:.2} (worst {:.2}), {} failed; static/datafusion geometric mean {:.2} over {} run, {} failed; answers {}/{} ok",
        geometric_mean(adaptive.iter().copied()),
        worst,
        failed(|q| &q.adaptive),
        geometric_mean(static_plan.iter().copied()),
        static_plan.len(),
        failed(|q| &q.static_plan),
        results.iter().filter(|q| q.check.is_ok()).count(),
        results.len()
    );
    Ok(())
}

fn ratio(timed: &Timed, reference: &[Duration]) -> Option<f64> {
    let times = timed.as_ref().ok()?;
    let reference = median(reference).as_secs_f64();
    (!times.is_empty() && reference > 0.0).then(|| median(times).as_secs_f64() / reference)
}

fn print_row(q: &SkewQuery) {
    let seconds = |t: &Timed| match t {
        Ok(times) if !times.is_empty() => format!("{:.3}", median(times).as_secs_f64()),
        Ok(_) => "-".into(),
        Err(e) if e.contains("out of memory") || e.contains("Resources exhausted") => {
            "out of memory".into()
        }
        Err(_) => "failed".into(),
    };
    let ratio_text = |t: &Timed| {
        ratio(t, &q.datafusion)
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "| {} | {:.3} | {} | {} | {} | {} | {} / {} | {} | {} |",
        q.name,
        median(&q.datafusion).as_secs_f64(),
        seconds(&q.static_plan),
        ratio_text(&q.static_plan),
        seconds(&q.adaptive),
        ratio_text(&q.adaptive),
        q.tasks,
        q.partitions,
        q.split_tasks,
        if q.check.is_ok() { "ok" } else { "WRONG" }
    );
}
