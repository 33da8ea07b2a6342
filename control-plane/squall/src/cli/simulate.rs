//! `squall simulate` (a job's time and cost at a scale this machine cannot
//! run, from a run it can) and `squall bench simulate` (the model checked
//! against runs it can measure).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use squall_engine::planner::default_parallelism;
use squall_engine::scheduler::{Exchange, ExchangeChoice, ExchangeMode, TaskOptions};
use squall_engine::{Engine, JobRequest, Prices};
use squall_tools::combine_model::with_exchange;
use squall_tools::replay::{Replay, replays};
use squall_tools::simulate::{
    Platform, Profile, ScaledStage, measured_options, plan_for_scale, profile, scale,
};
use squall_tools::tpch;

use super::error::{CliError, Result};
use super::output::usd;
use super::query::QueryArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlatformKind {
    /// AWS Lambda (the model's parameters: BENCHMARKS.md, "Scale model").
    Lambda,
    /// This machine's in-process executors (what the model is checked against).
    InProcess,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// How many times larger the data is than the tables given (TPC-H SF 1
    /// tables and 1000: SF 1000).
    #[arg(long)]
    scale_factor: f64,
    /// Workers at the larger scale (Lambda: concurrent invocations).
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    #[arg(long, value_enum, default_value_t = PlatformKind::Lambda)]
    platform: PlatformKind,
    /// Lambda memory, MB (billed, and the vCPU share below 1,769 MB).
    #[arg(long, default_value_t = 2048)]
    memory: u64,
    /// Replays per prediction (the median is printed, and the 90th percentile).
    #[arg(long, default_value_t = 25)]
    runs: usize,
    /// In-process executors of the measured run [default: cores].
    #[arg(long)]
    executors: Option<usize>,
    /// Price table (TOML, as `squall run --prices`).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    #[command(flatten)]
    shuffle: ShuffleModelArgs,
}

/// How the model reads shuffles at scale, as `squall run` would.
#[derive(Debug, Args)]
pub struct ShuffleModelArgs {
    /// How reduce stages read shuffles at scale (auto, direct, two-level).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = super::tasks::parse_exchange)]
    exchange: ExchangeMode,
    /// Model no hedged reads (a stalled read waits out its stall).
    #[arg(long)]
    no_hedging: bool,
}

/// A prediction: the stages at scale (combine steps in), the exchanges
/// chosen, and the replays' medians and 90th percentiles without backups
/// and with.
struct Prediction {
    stages: Vec<ScaledStage>,
    exchanges: Vec<(u32, ExchangeChoice)>,
    without: (Replay, f64),
    with: (Replay, f64),
    /// With backups, `warm` workers started before (a query run right after
    /// another).
    after: (Replay, f64),
}

#[allow(clippy::too_many_arguments)]
fn predict(
    measured: &Profile,
    factor: f64,
    workers: usize,
    warm: usize,
    platform: &Platform,
    prices: &Prices,
    runs: usize,
    shuffle: &ShuffleModelArgs,
) -> Result<Prediction> {
    let stages = scale(measured, factor, workers, platform)?;
    let policy = Exchange {
        mode: shuffle.exchange,
        ..Exchange::default()
    };
    let memory = platform
        .memory_mb
        .map_or(TaskOptions::default().memory_limit_bytes, |mb| mb << 20);
    let (stages, exchanges) = with_exchange(&stages, &policy, prices, memory, workers);
    let mut platform = platform.clone();
    if shuffle.no_hedging {
        platform.hedge_after = None;
    }
    let replay = |warm, backups| {
        replays(
            &stages,
            &platform,
            workers,
            warm,
            backups,
            prices,
            measured.overhead_seconds,
            runs,
        )
    };
    Ok(Prediction {
        without: replay(0, false),
        with: replay(0, true),
        after: replay(warm, true),
        stages,
        exchanges,
    })
}

fn platform(kind: PlatformKind, memory: u64) -> Result<Platform> {
    if !(128..=10_240).contains(&memory) {
        return Err(CliError::InvalidArgument(format!(
            "--memory {memory}: Lambda functions have 128 to 10240 MB"
        )));
    }
    Ok(match kind {
        PlatformKind::Lambda => Platform::lambda(memory),
        PlatformKind::InProcess => Platform::in_process(),
    })
}

fn check_workers(workers: usize) -> Result<()> {
    if !(1..=100_000).contains(&workers) {
        return Err(CliError::InvalidArgument(format!(
            "--workers {workers}: from 1 to 100000"
        )));
    }
    Ok(())
}

/// Replays per prediction: 1 to 1,000.
fn check_runs(runs: usize) -> Result<()> {
    if !(1..=1000).contains(&runs) {
        return Err(CliError::InvalidArgument(format!(
            "--runs {runs}: from 1 to 1000"
        )));
    }
    Ok(())
}

/// The most a scale factor may be (SF 1 tables to SF 1,000,000).
const MAX_FACTOR: f64 = 1e6;

fn check_factor(flag: &str, factor: f64) -> Result<()> {
    if !(factor.is_finite() && factor > 0.0 && factor <= MAX_FACTOR) {
        return Err(CliError::InvalidArgument(format!(
            "{flag} {factor}: the scale factor must be a positive number up to {MAX_FACTOR}"
        )));
    }
    Ok(())
}

pub async fn simulate(args: SimulateArgs) -> Result<()> {
    check_workers(args.workers)?;
    check_factor("--scale-factor", args.scale_factor)?;
    check_runs(args.runs)?;
    let platform = platform(args.platform, args.memory)?;
    let prices = match &args.prices {
        Some(path) => super::serve::read_prices(path)?,
        None => Prices::default(),
    };
    let executors = args.executors.unwrap_or_else(default_parallelism);
    let engine = Engine::embedded(Some(executors))?;
    let mut request = JobRequest {
        plan: plan_for_scale(args.query.plan_options(executors), args.scale_factor),
        ..JobRequest::new(args.query.sql()?, args.query.tables()?)
    };
    request.tasks.shuffle_codec = Some(platform.shuffle_codec());
    let measured = profile(&engine, &request, executors).await?;
    let predicted = predict(
        &measured,
        args.scale_factor,
        args.workers,
        0,
        &platform,
        &prices,
        args.runs,
        &args.shuffle,
    )?;
    print_profile(&measured);
    println!();
    print_stages(&predicted.stages);
    for (reader, e) in &predicted.exchanges {
        println!(
            "  stage {reader} reads stage {} {}: {} producers × {} reduce tasks, {} GETs direct, {} two-level ({} combiners) — {}",
            e.input,
            if e.two_level { "two-level" } else { "direct" },
            e.producers,
            e.reduce_tasks,
            e.requests_direct,
            e.requests_two_level,
            e.combiners,
            e.reason
        );
    }
    println!();
    for (backups, (median, p90)) in [(false, &predicted.without), (true, &predicted.with)] {
        let (median, p90) = (median.clone(), *p90);
        println!(
            "{} on {} {} workers, {}: {:.1} s (p90 {:.1} s), {} ({:.0} GB-s, {} invocations, {} backups, {} GET of which {} hedged, {} PUT; busiest prefix {:.0} GET/s{})",
            if backups {
                "with backups   "
            } else {
                "without backups"
            },
            args.workers,
            platform.name,
            format_args!("×{}", args.scale_factor),
            median.seconds,
            p90,
            usd(median.usd),
            median.gb_seconds,
            median.attempts,
            median.backups,
            median.requests.get,
            median.requests.hedged,
            median.requests.put,
            median.prefix_rate,
            if median.prefix_throttled {
                ", held back by S3's rate per prefix"
            } else {
                ""
            },
        );
    }
    Ok(())
}

fn print_profile(profile: &Profile) {
    println!(
        "measured: {:.2} s on {} in-process executors ({:.2} s planning and committing), tables {} bytes",
        profile.seconds, profile.executors, profile.overhead_seconds, profile.table_bytes
    );
    for stage in &profile.stages {
        let secs: f64 = stage.tasks.iter().map(|t| t.seconds).sum();
        let scanned: u64 = stage.tasks.iter().map(|t| t.bytes_scanned).sum();
        let shuffled: u64 = stage.tasks.iter().map(|t| t.bytes_shuffled_in).sum();
        println!(
            "  stage {} ({}): {} tasks, {:.2} task-s, {} scanned, {} shuffled in",
            stage.id,
            stage.kind.as_str(),
            stage.tasks.len(),
            secs,
            indicatif::HumanBytes(scanned),
            indicatif::HumanBytes(shuffled)
        );
    }
}

fn print_stages(stages: &[ScaledStage]) {
    println!("at scale, per task:");
    for s in stages {
        println!(
            "  stage {} ({}): {} tasks, {} scanned + {} read, {} written, {:.0} GETs, {:.2} s compute",
            s.id,
            s.kind.as_str(),
            s.tasks,
            indicatif::HumanBytes(s.bytes_scanned as u64),
            indicatif::HumanBytes(s.bytes_in as u64),
            indicatif::HumanBytes(s.bytes_out as u64),
            s.gets,
            s.compute_seconds
        );
    }
}

#[derive(Debug, Args)]
pub struct BenchSimulateArgs {
    /// TPC-H tables the model measures (as `squall tpch` writes them; a
    /// folder or an s3:// URL).
    #[arg(long)]
    small: PathBuf,
    /// The same tables `--factor` times larger, run to check the prediction.
    #[arg(long)]
    large: PathBuf,
    /// How many times larger `--large` is.
    #[arg(long)]
    factor: f64,
    #[arg(long, value_delimiter = ',', default_values_t = [1, 6, 12])]
    queries: Vec<usize>,
    /// Where the measured runs go: in-process (`--executors`), or Lambda
    /// (`cargo lambda watch`: `--backend lambda --function ... --lambda-endpoint
    /// ... --work-dir s3://...`, tables in S3), predicted with the emulator's
    /// invocation overhead.
    #[command(flatten)]
    backend: super::backend::BackendArgs,
    /// Runs of each query on the large tables (the median is compared).
    #[arg(long, default_value_t = 3)]
    iterations: usize,
}

/// Predicts each query on the large tables from a run on the small ones,
/// runs it there, and prints the error.
pub async fn bench_simulate(args: BenchSimulateArgs) -> Result<()> {
    check_factor("--factor", args.factor)?;
    if !(1..=100).contains(&args.iterations) {
        return Err(CliError::InvalidArgument(format!(
            "--iterations {}: from 1 to 100",
            args.iterations
        )));
    }
    let executors = args.backend.parallelism();
    let platform = match args.backend.kind() {
        super::backend::BackendKind::Local => Platform::in_process(),
        super::backend::BackendKind::Lambda => Platform::emulated_lambda(),
        super::backend::BackendKind::Auto => {
            return Err(CliError::InvalidArgument(
                "bench simulate replays one backend: --backend local or lambda".into(),
            ));
        }
    };
    let engine = args.backend.engine().await?;
    let options = || measured_options(executors);
    // The small tables planned as the large ones are.
    let small_options = || plan_for_scale(options(), args.factor);
    let dir = |p: &PathBuf| -> Result<String> {
        Ok(squall_engine::tables::to_url(&p.to_string_lossy())?.to_string())
    };
    let (small, large) = (dir(&args.small)?, dir(&args.large)?);
    println!("{}", super::machine::provenance());
    println!("query  predicted_s  measured_s  error");
    let mut errors = Vec::new();
    for &q in &args.queries {
        let sql = tpch::query(q)?;
        let request = |root: &str| JobRequest {
            plan: options(),
            ..JobRequest::new(sql, tpch::table_specs(root))
        };
        let small_request = JobRequest {
            plan: small_options(),
            ..JobRequest::new(sql, tpch::table_specs(&small))
        };
        // A warm-up of each, as the measured runs are warm.
        engine.run(&small_request, None).await?;
        let measured = profile(&engine, &small_request, executors).await?;
        let stages = scale(&measured, args.factor, executors, &platform)?;
        let (predicted, _) = replays(
            &stages,
            &platform,
            executors,
            0,
            true,
            &Prices::default(),
            measured.overhead_seconds,
            1,
        );
        engine.run(&request(&large), None).await?;
        let mut times = Vec::new();
        for _ in 0..args.iterations.max(1) {
            let started = Instant::now();
            engine.run(&request(&large), None).await?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let actual = times[times.len() / 2];
        let error = predicted.seconds / actual - 1.0;
        errors.push(error.abs());
        println!(
            "Q{q:<5} {:>11.3}  {:>10.3}  {:>+5.0}%",
            predicted.seconds,
            actual,
            error * 100.0
        );
    }
    errors.sort_by(f64::total_cmp);
    println!(
        "simulate: median absolute error {:.0}%, worst {:.0}%",
        errors[errors.len() / 2] * 100.0,
        errors.last().copied().unwrap_or_default() * 100.0
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    /// TPC-H tables the model measures (as `squall tpch` writes them).
    #[arg(long)]
    data: PathBuf,
    /// How many times larger the predicted tables are (SF 1 tables and
    /// 1000: SF 1000).
    #[arg(long, default_value_t = 1000.0)]
    scale_factor: f64,
    /// Lambda workers at the larger scale.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Lambda memory, MB.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
    /// Queries, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = 1..=22usize)]
    queries: Vec<usize>,
    /// Replays per prediction (medians and 90th percentiles).
    #[arg(long, default_value_t = 25)]
    runs: usize,
    /// In-process executors of the measured runs [default: cores].
    #[arg(long)]
    executors: Option<usize>,
    #[command(flatten)]
    shuffle: ShuffleModelArgs,
}

/// One query's row of `bench scale`.
fn print_row(q: usize, p: &Prediction) {
    let (with, with_p90) = &p.with;
    let (without, without_p90) = &p.without;
    let busiest = p
        .stages
        .iter()
        .max_by(|a, b| a.gets.total_cmp(&b.gets))
        .map_or((0.0, 0), |s| (s.gets, s.id));
    println!(
        "| Q{q} | {} | {} | {} | {} | {:.0} ({}) | {} | {:.0}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
        p.stages.len(),
        p.stages.iter().map(|s| s.tasks).sum::<usize>(),
        p.exchanges.iter().filter(|(_, e)| e.two_level).count(),
        with.requests.get,
        busiest.0,
        busiest.1,
        with.requests.hedged,
        with.prefix_rate,
        if with.prefix_throttled { " (held)" } else { "" },
        without.seconds,
        without_p90,
        with.seconds,
        with_p90,
        with.gb_seconds,
        usd(with.usd),
    );
}

/// The suite's totals: one query after another, each starting cold, and
/// back to back on one function (a query finds the workers the ones before
/// it started still warm).
#[derive(Default)]
struct Suite {
    seconds: f64,
    usd: f64,
    throttled: usize,
    gb_seconds: f64,
    gets: u64,
    puts: u64,
    warm: usize,
    warm_seconds: f64,
    warm_usd: f64,
}

impl Suite {
    fn add(&mut self, p: &Prediction) {
        let with = &p.with.0;
        self.seconds += with.seconds;
        self.usd += with.usd;
        self.throttled += usize::from(with.prefix_throttled);
        self.gb_seconds += with.gb_seconds;
        self.gets += with.requests.get;
        self.puts += with.requests.put;
        self.warm_seconds += p.after.0.seconds;
        self.warm_usd += p.after.0.usd;
        self.warm = self.warm.max(p.after.0.warm_workers);
    }

    fn print(&self, platform: &Platform, prices: &Prices) {
        println!();
        println!(
            "suite: {:.0} s and {} (medians with backups, one query after another); {} queries held back by S3's rate per prefix",
            self.seconds,
            usd(self.usd),
            self.throttled
        );
        println!(
            "of which: {:.0} GB-s ({}), {} GETs ({}), {} PUTs ({}), the rest invocations; back to back on one function (each query finding the workers the ones before started warm): {:.0} s and {}",
            self.gb_seconds,
            usd(self.gb_seconds * platform.gb_second_usd(prices)),
            self.gets,
            usd(self.gets as f64 * prices.s3_get_per_thousand / 1e3),
            self.puts,
            usd(self.puts as f64 * prices.s3_put_per_thousand / 1e3),
            self.warm_seconds,
            usd(self.warm_usd),
        );
    }
}

/// Predicts every TPC-H query on Lambda at a larger scale from runs here,
/// and tabulates them with the suite's totals.
pub async fn bench_scale(args: BenchScaleArgs) -> Result<()> {
    check_workers(args.workers)?;
    check_factor("--scale-factor", args.scale_factor)?;
    check_runs(args.runs)?;
    let platform = platform(PlatformKind::Lambda, args.memory)?;
    let prices = Prices::default();
    let executors = args.executors.unwrap_or_else(default_parallelism);
    let engine = Engine::embedded(Some(executors))?;
    let root = squall_engine::tables::to_url(&args.data.to_string_lossy())?.to_string();
    println!(
        "TPC-H ×{} on {} Lambda workers of {} MB, predicted from runs on {} ({} executors); exchange {}, hedged reads {}; {} replays, median and 90th percentile",
        args.scale_factor,
        args.workers,
        args.memory,
        args.data.display(),
        executors,
        args.shuffle.exchange,
        if args.shuffle.no_hedging { "off" } else { "on" },
        args.runs
    );
    println!("{}", super::machine::provenance());
    println!();
    println!(
        "| query | stages | tasks | two-level inputs | GETs | most GETs a task (stage) | hedged | busiest prefix GET/s | s, no backups | p90 | s, backups | p90 | GB-s | $ (backups) |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut suite = Suite::default();
    for &q in &args.queries {
        let mut request = JobRequest {
            plan: plan_for_scale(measured_options(executors), args.scale_factor),
            ..JobRequest::new(tpch::query(q)?, tpch::table_specs(&root))
        };
        request.tasks.shuffle_codec = Some(platform.shuffle_codec());
        let measured = profile(&engine, &request, executors).await?;
        let p = predict(
            &measured,
            args.scale_factor,
            args.workers,
            suite.warm,
            &platform,
            &prices,
            args.runs,
            &args.shuffle,
        )?;
        print_row(q, &p);
        suite.add(&p);
    }
    suite.print(&platform, &prices);
    Ok(())
}
