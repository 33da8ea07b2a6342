//! `squall bench burst`: TPC-H queries in-process only, on Lambda only and
//! with `--backend auto`, on the emulators (measured) and, through the scale
//! model, at larger scale factors (predicted); time and cost of each, and
//! auto's against the better of the other two.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use squall_engine::backend::{BurstPolicy, Place, Prefer};
use squall_engine::planner::default_parallelism;
use squall_engine::scheduler::Exchange;
use squall_engine::{Engine, JobRequest, JobResult, Prices};
use squall_tools::bench::median;
use squall_tools::burst::{Compared, Fleet, Outcome, compare};
use squall_tools::combine_model::with_exchange;
use squall_tools::simulate::{Platform, measured_options, plan_for_scale, profile, scale};
use squall_tools::tpch::{self, answers};

use super::backend::{BackendArgs, BackendKind};
use super::error::{CliError, Result};
use super::output::usd;

#[derive(Debug, Args)]
pub struct BenchBurstArgs {
    /// TPC-H tables the three backends run on through the emulators (an
    /// s3:// URL of `squall tpch`'s tables); none: the model only.
    #[arg(long, value_name = "URL")]
    data: Option<String>,
    /// The scale factor of `--data` ("0.1", "1"): every measured run's rows
    /// are checked against the reference answers at that scale.
    #[arg(long, default_value = "1")]
    data_scale: String,
    /// Where the reference answers are (sfX/qNN.csv below).
    #[arg(long, value_name = "DIR", default_value = "tests/tpch/answers")]
    answers: PathBuf,
    /// TPC-H tables the model measures (a folder, as `squall tpch` writes).
    #[arg(long)]
    small: PathBuf,
    /// The scale factor of `--small`.
    #[arg(long, default_value_t = 1.0)]
    small_scale: f64,
    /// Scale factors the model predicts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 1000.0])]
    at: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_values_t = 1..=22usize)]
    queries: Vec<usize>,
    /// Runs of each query on each backend through the emulators (medians).
    #[arg(long, default_value_t = 2)]
    iterations: usize,
    /// Lambda workers at scale, and their memory (MB).
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    #[arg(long, default_value_t = 4096)]
    memory: u64,
    /// Tasks of the fan-out prediction: one stage of them, 5 s each, from
    /// one function, from ten, and from ten pre-warmed.
    #[arg(long, default_value_t = 10_000)]
    fan_out: usize,
    /// Replays per prediction (medians).
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// The function, its endpoint and the work folder (--function,
    /// --lambda-endpoint, --work-dir s3://...), the local executors and the
    /// placement's knobs (--local-executors, --burst-above, --prefer) as
    /// `squall run --backend auto` takes them; --backend is ignored.
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn bench_burst(args: BenchBurstArgs) -> Result<()> {
    if !(1..=20).contains(&args.iterations) || !(1..=1000).contains(&args.runs) {
        return Err(CliError::InvalidArgument(
            "--iterations must be 1 to 20 and --runs 1 to 1000".into(),
        ));
    }
    let local_workers = args
        .backend
        .local_executors
        .unwrap_or_else(default_parallelism);
    println!("{}", super::machine::provenance());
    if let Some(data) = &args.data {
        emulated(&args, data).await?;
    }
    modelled(&args, local_workers).await?;
    fan_out(args.fan_out, args.memory)
}

/// How soon `tasks` tasks are all running, by functions and pre-warm.
fn fan_out(tasks: usize, memory: u64) -> Result<()> {
    if !(1..=100_000).contains(&tasks) {
        return Err(CliError::InvalidArgument(format!(
            "--fan-out {tasks}: from 1 to 100000"
        )));
    }
    let prices = Prices::default();
    println!();
    println!("Predicted fan-out: one stage of {tasks} tasks of 5 s on Lambda ({memory} MB)");
    println!("| functions | pre-warmed | every task running, s | stage done, s | $ |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (functions, prewarm) in [(1, 0), (1, tasks), (10, 0), (10, tasks)] {
        let lambda = Platform {
            functions,
            ..Platform::lambda(memory)
        };
        let replay = squall_tools::burst::fan_out(tasks, 5.0, &lambda, prewarm, &prices);
        println!(
            "| {functions} | {prewarm} | {:.1} | {:.1} | {} |",
            replay.last_start,
            replay.seconds,
            usd(replay.usd)
        );
    }
    Ok(())
}

/// The three backends on the emulators, each query `iterations` times.
async fn emulated(args: &BenchBurstArgs, data: &str) -> Result<()> {
    let lambda_only = BackendArgs {
        backend: Some(BackendKind::Lambda),
        local_executors: None,
        burst_above: None,
        prefer: None,
        ..args.backend.clone()
    };
    let auto = BackendArgs {
        backend: Some(BackendKind::Auto),
        ..args.backend.clone()
    };
    let local = BackendArgs {
        backend: Some(BackendKind::Local),
        executors: args.backend.local_executors,
        ..BackendArgs::default()
    };
    let engines = [
        local.engine().await?,
        lambda_only.engine().await?,
        auto.engine().await?,
    ];
    println!();
    println!(
        "Measured on the emulators ({data}; medians of {}): seconds and dollars (AWS's bill + this machine's share)",
        args.iterations
    );
    header();
    let prices = Prices::default();
    for &q in &args.queries {
        let mut row = Vec::new();
        let mut burst = (0, 0);
        for engine in &engines {
            let mut times = Vec::new();
            let mut cost = 0.0;
            for _ in 0..args.iterations {
                let request = JobRequest::new(tpch::query(q)?, tpch::table_specs(data));
                let started = Instant::now();
                let result = engine.run(&request, None).await?;
                times.push(started.elapsed());
                check(args, q, &result)?;
                cost = bill(&result, &prices);
                burst = placed(&result);
            }
            row.push((median(&times).as_secs_f64(), cost));
        }
        print_measured(q, &row, burst);
    }
    Ok(())
}

fn header() {
    println!(
        "| query | local s | $ | lambda s | $ | auto s | $ | auto / best time | auto / best cost | auto's stages (lambda/all) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
}

/// Fails the bench if a run's rows are not the reference answer.
fn check(args: &BenchBurstArgs, q: usize, result: &JobResult) -> Result<()> {
    let path = answers::answer_path(&args.answers, &args.data_scale, q);
    let expected = answers::load(&path)?;
    let got = answers::render(result.batches.as_deref().unwrap_or_default());
    answers::compare(&expected, &got, answers::is_ordered(q))
        .map_err(|e| CliError::InvalidArgument(format!("Q{q} gave a wrong answer: {e}")))
}

/// AWS's bill of a run and this machine's share of it.
fn bill(result: &JobResult, prices: &Prices) -> f64 {
    let total = &result.cost.total;
    total.usd + total.local_task_seconds * prices.local_vcpu_hour / 3600.0
}

/// Stages placed on Lambda, of all.
fn placed(result: &JobResult) -> (usize, usize) {
    let on_lambda = result
        .stages
        .iter()
        .filter(|s| {
            s.placement
                .as_ref()
                .is_some_and(|p| p.place == Place::Lambda)
        })
        .count();
    (on_lambda, result.stages.len())
}

fn print_measured(q: usize, row: &[(f64, f64)], burst: (usize, usize)) {
    let best_time = row[0].0.min(row[1].0);
    let best_cost = row[0].1.min(row[1].1);
    println!(
        "| Q{q} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {:.2} | {:.2} | {}/{} |",
        row[0].0,
        usd(row[0].1),
        row[1].0,
        usd(row[1].1),
        row[2].0,
        usd(row[2].1),
        row[2].0 / best_time.max(1e-9),
        row[2].1 / best_cost.max(1e-12),
        burst.0,
        burst.1
    );
}

/// Each query profiled here and compared three ways at each scale factor.
async fn modelled(args: &BenchBurstArgs, local_workers: usize) -> Result<()> {
    let prices = Prices::default();
    let lambda = Platform::lambda(args.memory);
    let fleet = Fleet {
        local_workers,
        lambda_workers: args.workers,
        lambda: lambda.clone(),
        prewarm: 0,
    };
    let policy = BurstPolicy {
        burst_above: args.backend.burst_above,
        prefer: prefer(&args.backend),
        ..BurstPolicy::new(args.memory)
    };
    let executors = default_parallelism();
    let engine = Engine::embedded(Some(executors))?;
    let root = squall_engine::tables::to_url(&args.small.to_string_lossy())?.to_string();
    for &at in &args.at {
        let factor = at / args.small_scale;
        if !(factor.is_finite() && factor > 0.0 && factor <= 1e6) {
            return Err(CliError::InvalidArgument(format!(
                "--at {at}: the scale factor over --small-scale must be positive, up to a million times"
            )));
        }
        println!();
        println!(
            "Predicted at SF {at} (×{factor} of {}): {local_workers} executors here, {} Lambda workers of {} MB; medians of {} replays",
            args.small.display(),
            args.workers,
            args.memory,
            args.runs
        );
        header();
        for &q in &args.queries {
            let mut request = JobRequest {
                plan: plan_for_scale(measured_options(executors), factor),
                ..JobRequest::new(tpch::query(q)?, tpch::table_specs(&root))
            };
            request.tasks.shuffle_codec = Some(lambda.shuffle_codec());
            let measured = profile(&engine, &request, executors).await?;
            let local = scale(&measured, factor, local_workers, &Platform::in_process())?;
            let cut = scale(&measured, factor, args.workers, &lambda)?;
            let memory = args.memory << 20;
            let exchange = Exchange::default();
            let (local, _) = with_exchange(&local, &exchange, &prices, memory, local_workers);
            let (cut, _) = with_exchange(&cut, &exchange, &prices, memory, args.workers);
            let compared = compare(
                &local,
                &cut,
                &policy,
                &fleet,
                &prices,
                measured.overhead_seconds,
                args.runs,
            );
            print_predicted(q, &compared);
        }
    }
    Ok(())
}

fn prefer(backend: &BackendArgs) -> Prefer {
    match backend.prefer {
        Some(super::backend::PreferArg::Cost) => Prefer::Cost,
        _ => Prefer::Time,
    }
}

fn print_predicted(q: usize, c: &Compared) {
    let row: Vec<(f64, f64)> = [&c.local, &c.lambda, &c.auto]
        .iter()
        .map(|o: &&Outcome| (o.replay.seconds, o.usd()))
        .collect();
    let on_lambda = c
        .placements
        .iter()
        .filter(|(_, p)| p.place == Place::Lambda || p.burst_tasks > 0)
        .count();
    print_measured(q, &row, (on_lambda, c.placements.len()));
}
