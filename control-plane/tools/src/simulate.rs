//! A scale model: how long a job would take, and what it would cost, on data
//! many times larger and many more workers than a laptop has.
//!
//! # What belongs here
//! [`profile`] runs the job on a small data set and keeps its stage DAG and
//! what each stage's tasks measured (time, bytes, requests). [`scale`] turns
//! that into the stages of the same plan over data `factor` times larger, cut
//! as Squall would cut it for `workers` executors (scan tasks of at most the
//! target partition bytes and at least one per worker, the shuffle width
//! following the tables, reduce tasks coalesced to the shuffle's bytes).
//! [`simulate`] replays those stages on a [`Platform`] — Lambda, or the
//! in-process backend the model is checked against — drawing each task's
//! invocation, cold start, requests and stalls at random, with and without
//! backup tasks, and prices the attempts with the cost module's price table.
//!
//! The model and its parameters are described, with their sources, in
//! BENCHMARKS.md ("Scale model"). The small run is planned for the large
//! data as far as joins go ([`plan_for_scale`]: a side broadcast only if it
//! would be at scale). What it does not know: skew, memory pressure and
//! spilling at scale, and throttling beyond the account's burst.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use squall_executor::ReadMode;

use squall_engine::cost::{Prices, Requests};
use squall_engine::engine::{Engine, JobRequest, JobRun};
use squall_engine::error::{Result, SquallError};
use squall_engine::planner::{
    DEFAULT_TARGET_PARTITION_BYTES, MAX_SCAN_REQUESTS, MIN_SCAN_TASK_BYTES, PlanOptions, Widen,
};
use squall_engine::scheduler::coalesce::MIN_READ_BYTES;
use squall_engine::scheduler::{Coalescing, JobEvent, ProgressSink, StageKind};

pub use squall_engine::platform::{Latency, Platform};

/// What one task of the small run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskSample {
    pub seconds: f64,
    pub bytes_scanned: u64,
    /// Shuffle bytes read.
    pub bytes_shuffled_in: u64,
    pub bytes_out: u64,
    pub rows_in: u64,
    pub rows_out: u64,
}

/// One stage of the small run.
#[derive(Debug, Clone)]
pub struct StageProfile {
    pub id: u32,
    pub kind: StageKind,
    /// Input stages: whether each task reads a slice of it (`true`) or all of
    /// it (a broadcast or a gather).
    pub inputs: Vec<(u32, bool)>,
    /// Whether its tasks scan tables partition by partition.
    pub scans: bool,
    /// Bytes its scans read, as the planner weighs them: of the table files
    /// they read, the share the columns read hold in the footers
    /// ([`ScanSplits::read_bytes`](squall_engine::planner::ScanSplits::read_bytes)).
    pub read_bytes: u64,
    /// Rows a row group of the tables its scans read holds (None: not
    /// known, or no scan).
    pub rows_per_group: Option<f64>,
    /// Partitions its plan has (tasks before coalescing): a stage of one
    /// partition stays one task at any scale, one coalesced into a task
    /// because its shuffle was small does not.
    pub partitions: usize,
    pub tasks: Vec<TaskSample>,
    /// GET (and HEAD) requests the stage made.
    pub gets: u64,
    /// Inputs a combine step may stand in for (see the two-level exchange).
    pub combinable: Vec<u32>,
    /// Inputs whose sorted runs it merges (a merge step may merge them in
    /// groups first).
    pub mergeable: Vec<u32>,
}

impl StageProfile {
    fn sum(&self, f: impl Fn(&TaskSample) -> u64) -> u64 {
        self.tasks.iter().map(f).sum()
    }

    /// The stages it reads a slice of (`sliced`) or all of (not).
    fn inputs_read(&self, sliced: bool) -> impl Iterator<Item = u32> + '_ {
        self.inputs
            .iter()
            .filter(move |(_, s)| *s == sliced)
            .map(|(i, _)| *i)
    }
}

/// A job as measured on small data.
#[derive(Debug, Clone)]
pub struct Profile {
    pub stages: Vec<StageProfile>,
    /// Bytes of all files of the tables the job names.
    pub table_bytes: u64,
    /// From submission to result, as measured.
    pub seconds: f64,
    /// Planning and committing: the job's time outside its stages' tasks.
    pub overhead_seconds: f64,
    pub executors: usize,
}

/// Collects the winning attempts' metrics by stage.
#[derive(Default)]
struct Samples {
    by_stage: Mutex<BTreeMap<u32, (StageKind, Vec<TaskSample>)>>,
}

impl ProgressSink for Samples {
    fn on_event(&self, event: &JobEvent) {
        if let JobEvent::TaskSucceeded {
            stage,
            kind,
            metrics,
            ..
        } = event
        {
            let mut by_stage = self.by_stage.lock().unwrap_or_else(|e| e.into_inner());
            let entry = by_stage.entry(*stage).or_insert((*kind, Vec::new()));
            entry.1.push(TaskSample {
                seconds: metrics.elapsed_ms as f64 / 1000.0,
                bytes_scanned: metrics.bytes_scanned,
                bytes_shuffled_in: metrics.bytes_in.saturating_sub(metrics.bytes_scanned),
                bytes_out: metrics.bytes_out,
                rows_in: metrics.rows_in,
                rows_out: metrics.rows_out,
            });
        }
    }
}

/// Runs `request` on `engine` and keeps what its stages measured.
pub async fn profile(engine: &Engine, request: &JobRequest, executors: usize) -> Result<Profile> {
    let planned = engine.check(request).await?;
    let samples = Arc::new(Samples::default());
    let run = JobRun {
        progress: Some(samples.clone()),
        ..JobRun::default()
    };
    let started = Instant::now();
    let result = engine.run_as(request, run).await?;
    let seconds = started.elapsed().as_secs_f64();
    let by_stage = std::mem::take(&mut *samples.by_stage.lock().unwrap_or_else(|e| e.into_inner()));
    let mut stages = Vec::new();
    for stage in &result.dag.stages {
        let Some((kind, tasks)) = by_stage.get(&stage.id) else {
            return Err(SquallError::Inconsistent {
                what: format!("no task of stage {} reported", stage.id),
            });
        };
        let inputs = stage
            .inputs
            .iter()
            .map(|i| {
                let sliced = matches!(
                    stage.sliced_inputs.get(i),
                    Some(ReadMode::Partitioned) | Some(ReadMode::ByProducer)
                );
                (*i, sliced)
            })
            .collect();
        let gets = result
            .cost
            .stages
            .get(&stage.id)
            .map_or(0, |c| c.requests.get + c.requests.head);
        stages.push(StageProfile {
            id: stage.id,
            kind: *kind,
            inputs,
            scans: tasks.iter().any(|t| t.bytes_scanned > 0),
            read_bytes: planned.splits.read_bytes(&stage.plan),
            rows_per_group: planned.splits.rows_per_group(&stage.plan),
            partitions: stage.tasks,
            tasks: tasks.clone(),
            gets,
            combinable: squall_engine::scheduler::combinable(stage, &result.dag),
            mergeable: squall_engine::scheduler::mergeable(stage, &result.dag),
        });
    }
    Ok(Profile {
        stages,
        table_bytes: planned.input_bytes(),
        seconds,
        overhead_seconds: (seconds - critical_path(&result.stages, &result.dag)).max(0.0),
        executors,
    })
}

/// `options` for a run on tables `factor` times smaller than those
/// predicted: the broadcast thresholds cut by the factor, so that a join
/// whose small side would pass them at scale shuffles in the measured run
/// too (the plan replayed is the one the large tables would get).
pub fn plan_for_scale(options: PlanOptions, factor: f64) -> PlanOptions {
    let cut = |n: usize| (n as f64 / factor.max(1.0)) as usize;
    PlanOptions {
        broadcast_rows: cut(options.broadcast_rows),
        broadcast_bytes: cut(options.broadcast_bytes),
        ..options
    }
}

/// The longest chain of stage times through the DAG.
fn critical_path(
    stats: &[squall_engine::scheduler::StageStats],
    dag: &squall_engine::planner::StageDag,
) -> f64 {
    let time: HashMap<u32, f64> = stats
        .iter()
        .map(|s| (s.stage, s.elapsed_ms as f64 / 1000.0))
        .collect();
    let mut done: HashMap<u32, f64> = HashMap::new();
    for stage in &dag.stages {
        let start = stage
            .inputs
            .iter()
            .filter_map(|i| done.get(i))
            .fold(0.0, |a: f64, b| a.max(*b));
        done.insert(
            stage.id,
            start + time.get(&stage.id).copied().unwrap_or(0.0),
        );
    }
    done.values().fold(0.0, |a: f64, b| a.max(*b))
}

/// A stage of the job at scale.
#[derive(Debug, Clone)]
pub struct ScaledStage {
    pub id: u32,
    pub kind: StageKind,
    pub inputs: Vec<u32>,
    pub tasks: usize,
    /// Per task: table bytes scanned, shuffle bytes read, bytes written.
    pub bytes_scanned: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    /// Per task: GET requests (table ranges, one per producer per input).
    pub gets: f64,
    /// Per task: the part of `gets` that reads shuffle files.
    pub shuffle_gets: f64,
    /// Per task: compute seconds, as the small run measured per byte.
    pub compute_seconds: f64,
    /// Inputs a combine step may stand in for.
    pub combinable: Vec<u32>,
    /// Of its inputs, those each task reads whole (broadcasts).
    pub whole: Vec<u32>,
    /// Inputs whose sorted runs it merges.
    pub mergeable: Vec<u32>,
}

/// The most tasks one stage may have at scale (the replay keeps each one).
pub const MAX_TASKS: usize = 2_000_000;

/// Fixed time of a task besides its bytes, as the in-process backend spends it.
const TASK_OVERHEAD_SECONDS: f64 = 0.002;
/// Bytes of a measured scan task below which its requests are taken as
/// those of a task of this size (see [`scale`]).
const SCAN_GET_BYTES: f64 = (16 << 20) as f64;
/// An operator whose output rows are under this share of its input rows
/// (an aggregation) writes about the same bytes per task at any scale.
const REDUCING_SHARE: f64 = 0.01;

/// How stages are cut into tasks at scale, as the planner and scheduler
/// would cut them for the workers of a platform.
struct Cutting {
    factor: f64,
    workers: usize,
    width: usize,
    coalescing: Coalescing,
    min_scan_task_bytes: f64,
}

impl Cutting {
    fn new(profile: &Profile, factor: f64, workers: usize, platform: &Platform) -> Self {
        let workers = workers.max(1);
        let options = PlanOptions {
            shuffle_partitions: workers,
            widen: Some(Widen::for_workers(workers)),
            ..PlanOptions::default()
        };
        // Reads cost requests where the platform's store has a latency, and
        // tasks a fixed cost where the platform invokes them.
        let coalescing = Coalescing {
            min_read_bytes: if platform.request.median > 0.0 {
                MIN_READ_BYTES
            } else {
                0
            },
            ..Coalescing::default()
        };
        let min_scan_task_bytes = if platform.invoke.median > 0.0 {
            MIN_SCAN_TASK_BYTES as f64
        } else {
            0.0
        };
        Cutting {
            factor,
            workers,
            width: options.width_for((profile.table_bytes as f64 * factor) as u64),
            coalescing,
            min_scan_task_bytes,
        }
    }

    /// Tasks of `stage` scanning `scanned` bytes (of the columns it reads)
    /// and reading `sliced_in`
    /// bytes in slices, its inputs having `tasks_of` tasks.
    fn tasks(
        &self,
        stage: &StageProfile,
        scanned: f64,
        sliced_in: f64,
        tasks_of: &HashMap<u32, usize>,
    ) -> usize {
        if stage.scans {
            // As the planner packs a scan: by its files' bytes weighed by
            // the columns read, or by its reads where they weigh more (at
            // most MAX_SCAN_REQUESTS a task), and one task a worker while
            // each still gets a task's worth.
            let reads = scan_gets_per_byte(stage, self.factor) * scanned;
            let by_reads = reads / MAX_SCAN_REQUESTS as f64 * DEFAULT_TARGET_PARTITION_BYTES as f64;
            let files = (stage.read_bytes as f64 * self.factor)
                .max(scanned)
                .max(by_reads);
            let by_bytes = (files / DEFAULT_TARGET_PARTITION_BYTES as f64).ceil() as usize;
            let worth = if self.min_scan_task_bytes > 0.0 {
                (files / self.min_scan_task_bytes) as usize
            } else {
                usize::MAX
            };
            by_bytes.max(self.workers.min(worth)).max(1)
        } else if sliced_in > 0.0 && stage.partitions > 1 {
            // Reduce tasks sized to the shuffle, as the scheduler coalesces:
            // over the workers, while each read of a producer's file still
            // carries its minimum.
            let per = (sliced_in / self.width as f64) as u64;
            let reads: usize = stage
                .inputs_read(true)
                .map(|i| tasks_of.get(&i).copied().unwrap_or(1))
                .sum();
            let parallelism =
                self.coalescing
                    .parallelism_for(sliced_in as u64, self.workers, reads);
            self.coalescing
                .groups(&vec![per; self.width], parallelism)
                .len()
        } else {
            stage.tasks.len().max(1)
        }
    }
}

/// The profile's stages over data `factor` times larger, cut for `workers`
/// of `platform`: where its tasks have a fixed cost (an invocation) a scan
/// is cut for the workers only into tasks worth starting, and where its
/// requests have one (an object store) reduce tasks are spread only while
/// each read carries its minimum, as the planner and scheduler do there.
pub fn scale(
    profile: &Profile,
    factor: f64,
    workers: usize,
    platform: &Platform,
) -> Result<Vec<ScaledStage>> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(SquallError::InvalidArgument(format!(
            "the scale factor must be a positive number, not {factor}"
        )));
    }
    let cutting = Cutting::new(profile, factor, workers, platform);
    let mut out_total: HashMap<u32, f64> = HashMap::new();
    let mut tasks_of: HashMap<u32, usize> = HashMap::new();
    let mut scaled = Vec::new();
    for stage in &profile.stages {
        let n = stage.tasks.len().max(1) as f64;
        let scanned = stage.sum(|t| t.bytes_scanned) as f64 * factor;
        let bytes_of = |sliced| -> f64 {
            stage
                .inputs_read(sliced)
                .map(|i| out_total.get(&i).copied().unwrap_or(0.0))
                .sum()
        };
        let (sliced_in, whole_in) = (bytes_of(true), bytes_of(false));
        let tasks = cutting.tasks(stage, scanned, sliced_in, &tasks_of);
        if tasks > MAX_TASKS {
            return Err(SquallError::InvalidArgument(format!(
                "stage {} would run {tasks} tasks at this scale, more than the {MAX_TASKS} the model replays",
                stage.id
            )));
        }
        let t = tasks as f64;
        let bytes_scanned = scanned / t;
        let bytes_in = sliced_in / t + whole_in;
        // Compute per byte read, as measured (after a fixed overhead).
        let measured_bytes = stage.sum(|t| t.bytes_scanned + t.bytes_shuffled_in).max(1) as f64;
        let measured_seconds: f64 = stage.tasks.iter().map(|t| t.seconds).sum();
        let per_byte = ((measured_seconds - n * TASK_OVERHEAD_SECONDS).max(0.0)) / measured_bytes;
        let compute_seconds = TASK_OVERHEAD_SECONDS + per_byte * (bytes_scanned + bytes_in);
        // Output: aggregations write about as much per task as before; the
        // rest in proportion to what they read.
        let rows_in = stage.sum(|t| t.rows_in).max(1) as f64;
        let rows_out = stage.sum(|t| t.rows_out) as f64;
        let measured_out = stage.sum(|t| t.bytes_out) as f64;
        let out = if rows_out / rows_in < REDUCING_SHARE {
            measured_out / n * t
        } else {
            measured_out / measured_bytes * (bytes_scanned + bytes_in) * t
        };
        // A scan task's requests are a footer and a range per column chunk
        // of each row group, whatever their sizes: they grow with the task's
        // bytes past what the measured tasks read, counted as at least
        // SCAN_GET_BYTES (a measured task of a small table makes as many
        // requests at scale as it did here, not one per few KiB).
        let scan_gets = scan_gets_per_byte(stage, factor);
        let producers: f64 = stage
            .inputs
            .iter()
            .map(|(i, _)| tasks_of.get(i).copied().unwrap_or(1) as f64)
            .sum();
        let gets = if stage.scans {
            scan_gets * bytes_scanned.max(SCAN_GET_BYTES) + producers
        } else {
            producers
        };
        out_total.insert(stage.id, out);
        tasks_of.insert(stage.id, tasks);
        scaled.push(ScaledStage {
            id: stage.id,
            kind: stage.kind,
            inputs: stage.inputs.iter().map(|(i, _)| *i).collect(),
            tasks,
            bytes_scanned,
            bytes_in,
            bytes_out: out / t,
            gets: gets.max(1.0),
            shuffle_gets: producers,
            compute_seconds,
            combinable: stage.combinable.clone(),
            whole: stage.inputs_read(false).collect(),
            mergeable: stage.mergeable.clone(),
        });
    }
    Ok(scaled)
}

/// One replay's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub seconds: f64,
    pub attempts: u64,
    pub backups: u64,
    pub gb_seconds: f64,
    pub requests: Requests,
    pub usd: f64,
    /// The most shuffle GETs per second any one key prefix took, its stage
    /// and whether S3's rate per prefix held the stage back.
    pub prefix_rate: f64,
    pub prefix_stage: u32,
    pub prefix_throttled: bool,
    /// Workers started by the end (warm for a query run right after).
    pub warm_workers: usize,
}

/// GETs a second S3 serves per partitioned key prefix.
pub const S3_GETS_PER_PREFIX: f64 = 5_500.0;

/// Prefixes a stage's shuffle files are spread over (see the executor's
/// `shuffle::writer::spread_prefix`).
pub const SHUFFLE_PREFIXES: f64 = 256.0;

/// Rows a row group holds at most as Parquet writers write them (arrow-rs's
/// and DataFusion's default): the model takes the tables at scale as written
/// so, their row groups `factor` times larger than here up to this.
pub const WRITER_ROW_GROUP_ROWS: f64 = 1_048_576.0;

/// A scan's requests a byte of the columns it reads at `factor` times the
/// data: as measured (a measured task of a small table counted as one of at
/// least [`SCAN_GET_BYTES`], so that its requests are not taken as one per
/// few KiB at scale), fewer where its row groups would be larger — a range
/// is read per column of a row group, and a table of 19,000-row row groups
/// here has row groups of a million rows at a thousand times the data.
fn scan_gets_per_byte(stage: &StageProfile, factor: f64) -> f64 {
    let n = stage.tasks.len().max(1) as f64;
    let measured_per_task = stage.sum(|t| t.bytes_scanned) as f64 / n;
    let measured = stage.gets as f64 / n / measured_per_task.max(SCAN_GET_BYTES);
    let larger = stage.rows_per_group.map_or(1.0, |rows| {
        let at_scale = (rows * factor).min(WRITER_ROW_GROUP_ROWS).max(rows);
        at_scale / rows.max(1.0)
    });
    measured / larger
}

/// Time of one attempt of a task of `stage`, billed and not (the invoke),
/// and the reads it hedged.
fn attempt(
    stage: &ScaledStage,
    platform: &Platform,
    cold: bool,
    rng: &mut fastrand::Rng,
) -> (f64, f64, u64) {
    let invoke = platform.invoke.draw(rng);
    let init = if cold {
        platform.cold_start.draw(rng)
    } else {
        0.0
    };
    // Requests go out `request_concurrency` at a time; a stall holds its wave.
    let waves = (stage.gets / platform.request_concurrency).ceil().max(1.0) as usize;
    let mut requests = 0.0;
    let mut hedged = 0;
    for _ in 0..waves.min(10_000) {
        let mut wave = platform.request.draw(rng);
        let in_wave = stage.gets.min(platform.request_concurrency);
        if platform.stall_probability > 0.0
            && rng.f64() < 1.0 - (1.0 - platform.stall_probability).powf(in_wave)
        {
            let (lo, hi) = platform.stall_seconds;
            let stalled = wave + lo + rng.f64() * (hi - lo);
            wave = match platform.hedge_after {
                // Sent again when it is late; the copy rarely stalls too.
                Some(after) if stalled > after => {
                    hedged += 1;
                    stalled.min(after + platform.request.draw(rng))
                }
                _ => stalled,
            };
        }
        requests += wave;
    }
    let moved = stage.bytes_scanned + stage.bytes_in + stage.bytes_out;
    let transfer = platform.bandwidth.map_or(0.0, |b| moved / b);
    // The write's own round trip.
    let put = platform.request.draw(rng);
    let compute = stage.compute_seconds * platform.cpu_factor;
    let billed = init + requests + transfer + put + compute;
    (invoke + billed, billed, hedged)
}

/// Replays the stages on `workers` workers of `platform`, the first `warm`
/// of them already started (a query run right after another on the same
/// function), with backup tasks (Squall's defaults: after 75 % of a stage,
/// a task running over twice the median and 200 ms gets one copy) or
/// without.
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    stages: &[ScaledStage],
    platform: &Platform,
    workers: usize,
    warm: usize,
    backups: bool,
    prices: &Prices,
    overhead_seconds: f64,
    seed: u64,
) -> Replay {
    let workers = workers.max(1);
    // How long the job's first attempts took: what a stage of one task is
    // compared with for a backup, as the scheduler does.
    let mut job_durations: Vec<f64> = Vec::new();
    // When each worker is next free, and whether it has run anything yet.
    let mut free: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> = (0..workers)
        .map(|w| std::cmp::Reverse((0f64.to_bits(), w)))
        .collect();
    let mut warm: Vec<bool> = (0..workers).map(|w| w < warm).collect();
    let mut started_fresh = 0usize;
    let mut done: HashMap<u32, f64> = HashMap::new();
    let mut replay = Replay::default();
    let mut billed_seconds = 0.0;
    for stage in stages {
        let ready = stage
            .inputs
            .iter()
            .filter_map(|i| done.get(i))
            .fold(0.0, |a: f64, b| a.max(*b));
        let mut spans: Vec<(f64, f64)> = Vec::with_capacity(stage.tasks);
        for task in 0..stage.tasks {
            let mut rng = attempt_rng(seed, stage.id, task, 0);
            // The earliest free worker (times are never negative, so their
            // bits order as they do).
            let Some(std::cmp::Reverse((bits, slot))) = free.pop() else {
                break;
            };
            let mut start = f64::from_bits(bits).max(ready);
            let cold = !warm[slot];
            if cold {
                // Lambda starts at most so many fresh environments per 10 s.
                let wave = started_fresh / platform.new_workers_per_10s.max(1);
                start = start.max(wave as f64 * 10.0);
                started_fresh += 1;
                warm[slot] = true;
            }
            let (took, billed, hedged) = attempt(stage, platform, cold, &mut rng);
            billed_seconds += billed;
            replay.attempts += 1;
            replay.requests.hedged += hedged;
            free.push(std::cmp::Reverse(((start + took).to_bits(), slot)));
            spans.push((start, start + took));
        }
        let mut durations: Vec<f64> = spans.iter().map(|(s, e)| e - s).collect();
        durations.sort_by(f64::total_cmp);
        let single = stage.tasks == 1;
        if single {
            job_durations.sort_by(f64::total_cmp);
        }
        let compared = if single { &job_durations } else { &durations };
        if backups && !compared.is_empty() {
            billed_seconds += back_up(stage, platform, seed, &mut spans, compared, &mut replay);
        }
        job_durations.extend(durations);
        let end = spans.iter().fold(ready, |a, (_, e)| a.max(*e));
        let end = per_prefix(stage, platform, ready, end, &mut replay);
        done.insert(stage.id, end);
        let t = stage.tasks as u64;
        replay.requests.get += (stage.gets * stage.tasks as f64).round() as u64;
        replay.requests.put += t;
    }
    replay.requests.get += replay.requests.hedged;
    replay.seconds = overhead_seconds + done.values().fold(0.0, |a: f64, b| a.max(*b));
    replay.warm_workers = warm.iter().filter(|w| **w).count();
    price(&mut replay, platform, billed_seconds, prices);
    replay
}

/// The end of `stage` (ready at `ready`, its tasks done at `end`) under S3's
/// rate per key prefix: its shuffle reads go to its inputs' folders, each
/// spread over [`SHUFFLE_PREFIXES`]; where they would pass
/// [`S3_GETS_PER_PREFIX`], the stage takes as long as the rate allows.
/// Notes the busiest prefix in `replay`. Only for a platform with request
/// latencies (S3's); the in-process backend has no such limit.
fn per_prefix(
    stage: &ScaledStage,
    platform: &Platform,
    ready: f64,
    end: f64,
    replay: &mut Replay,
) -> f64 {
    if platform.request.median <= 0.0 || stage.inputs.is_empty() {
        return end;
    }
    let gets = stage.shuffle_gets * stage.tasks as f64;
    let prefixes = SHUFFLE_PREFIXES * stage.inputs.len() as f64;
    let fastest = gets / (S3_GETS_PER_PREFIX * prefixes);
    let took = (end - ready).max(1e-9);
    let rate = gets / took / prefixes;
    if rate > replay.prefix_rate {
        replay.prefix_rate = rate;
        replay.prefix_stage = stage.id;
    }
    if fastest > took {
        replay.prefix_throttled = true;
        ready + fastest
    } else {
        end
    }
}

/// Each attempt draws from a stream of its own, so that a replay with backups
/// sees the same first attempts as one without.
fn attempt_rng(seed: u64, stage: u32, task: usize, copy: u64) -> fastrand::Rng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(stage) << 40)
        .wrapping_add((task as u64) << 2)
        .wrapping_add(copy);
    fastrand::Rng::with_seed(mix)
}

/// Backup copies of a stage's stragglers, started as the scheduler starts
/// them (`compared`: the sorted durations a task is compared with); a task
/// ends when its first copy does. Returns the seconds the backups bill.
fn back_up(
    stage: &ScaledStage,
    platform: &Platform,
    seed: u64,
    spans: &mut [(f64, f64)],
    compared: &[f64],
    replay: &mut Replay,
) -> f64 {
    let single = stage.tasks == 1;
    let mut billed_seconds = 0.0;
    let median = compared[compared.len() / 2];
    let mut ends: Vec<f64> = spans.iter().map(|(_, e)| *e).collect();
    ends.sort_by(f64::total_cmp);
    let at_75 = if single {
        0.0
    } else {
        ends[(ends.len() * 3 / 4).min(ends.len() - 1)]
    };
    for (task, span) in spans.iter_mut().enumerate() {
        let due = span.0 + (2.0 * median).max(0.2);
        let backup_at = due.max(at_75);
        if span.1 > backup_at {
            let mut rng = attempt_rng(seed, stage.id, task, 1);
            let (took, billed, hedged) = attempt(stage, platform, false, &mut rng);
            billed_seconds += billed;
            replay.attempts += 1;
            replay.backups += 1;
            replay.requests.hedged += hedged;
            // The loser is not stopped (Lambda cannot be): billed whole.
            span.1 = span.1.min(backup_at + took);
        }
    }
    billed_seconds
}

/// The replay's GB-seconds and dollars, for a platform with a memory size.
fn price(replay: &mut Replay, platform: &Platform, billed_seconds: f64, prices: &Prices) {
    if let Some(mb) = platform.memory_mb {
        replay.gb_seconds = billed_seconds * mb as f64 / 1024.0;
        replay.usd = replay.gb_seconds * platform.gb_second_usd(prices)
            + replay.attempts as f64 * prices.lambda_per_million_requests / 1e6
            + replay.requests.put as f64 * prices.s3_put_per_thousand / 1000.0
            + replay.requests.get as f64 * prices.s3_get_per_thousand / 1000.0;
    }
}

/// Median and 90th percentile of `runs` replays with seeds `0..runs`.
#[allow(clippy::too_many_arguments)]
pub fn replays(
    stages: &[ScaledStage],
    platform: &Platform,
    workers: usize,
    warm: usize,
    backups: bool,
    prices: &Prices,
    overhead_seconds: f64,
    runs: usize,
) -> (Replay, f64) {
    let mut all: Vec<Replay> = (0..runs.max(1) as u64)
        .map(|seed| {
            simulate(
                stages,
                platform,
                workers,
                warm,
                backups,
                prices,
                overhead_seconds,
                seed,
            )
        })
        .collect();
    all.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let p90 = all[(all.len() * 9 / 10).min(all.len() - 1)].seconds;
    (all[all.len() / 2].clone(), p90)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(
        id: u32,
        inputs: Vec<(u32, bool)>,
        scans: bool,
        tasks: Vec<TaskSample>,
    ) -> StageProfile {
        StageProfile {
            id,
            kind: if scans {
                StageKind::Scan
            } else {
                StageKind::Final
            },
            combinable: inputs.iter().map(|(i, _)| *i).collect(),
            mergeable: vec![],
            inputs,
            scans,
            read_bytes: 0,
            rows_per_group: None,
            partitions: tasks.len(),
            tasks,
            gets: 10,
        }
    }

    /// Q1's shape: a scan with a partial aggregate, a final aggregate.
    fn q1_like() -> Profile {
        let scan = TaskSample {
            seconds: 1.0,
            bytes_scanned: 100 << 20,
            bytes_shuffled_in: 0,
            bytes_out: 1000,
            rows_in: 1_000_000,
            rows_out: 4,
        };
        let merge = TaskSample {
            seconds: 0.01,
            bytes_scanned: 0,
            bytes_shuffled_in: 2000,
            bytes_out: 500,
            rows_in: 8,
            rows_out: 4,
        };
        Profile {
            stages: vec![
                stage(1, vec![], true, vec![scan, scan]),
                stage(2, vec![(1, false)], false, vec![merge]),
            ],
            table_bytes: 200 << 20,
            seconds: 1.1,
            overhead_seconds: 0.05,
            executors: 2,
        }
    }

    #[test]
    fn scans_of_small_row_groups_read_fewer_ranges_at_scale() {
        // Row groups of 500,000 rows here are of 1,048,576 at 1,000 times
        // the data (a writer's most): 2.1 times fewer ranges a byte.
        let mut plain = q1_like();
        plain.stages[0].gets = 50;
        let mut small = plain.clone();
        small.stages[0].rows_per_group = Some(500_000.0);
        let larger = scale(&small, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let plain_scaled = scale(&plain, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        assert_eq!(plain_scaled[0].tasks, larger[0].tasks);
        let ratio = plain_scaled[0].gets / larger[0].gets;
        assert!((ratio - 2.097152).abs() < 1e-6, "{ratio}");
        let plain = plain_scaled;
        // Row groups of two million rows here stay as they are.
        let mut big = q1_like();
        big.stages[0].gets = 50;
        big.stages[0].rows_per_group = Some(2e6);
        let same = scale(&big, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        assert_eq!(same[0].gets, plain[0].gets);
    }

    #[test]
    fn a_scan_is_cut_into_tasks_of_at_most_48_reads() {
        // 200 reads a task of 100 MiB here: at 1,000 times the data,
        // 400,000, in tasks of 48 (24 MiB each).
        let mut many = q1_like();
        many.stages[0].gets = 400;
        let scaled = scale(&many, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        assert_eq!(scaled[0].tasks, 400_000usize.div_ceil(48));
        assert!(scaled[0].gets <= 48.0, "{:?}", scaled[0]);
    }

    #[test]
    fn scans_are_cut_by_bytes_and_workers_and_aggregates_stay_small() {
        let scaled = scale(&q1_like(), 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        // 200,000 MiB scanned in tasks of at most 128 MiB: 1,563.
        assert_eq!(scaled[0].tasks, 1563);
        let per_task = 200_000.0 * (1u64 << 20) as f64 / 1563.0;
        assert!((scaled[0].bytes_scanned - per_task).abs() < 1.0);
        // A partial aggregate writes as much per task as before.
        assert!((scaled[0].bytes_out - 1000.0).abs() < 1e-6);
        // The final aggregate reads every producer: one GET each.
        assert_eq!(scaled[1].tasks, 1);
        assert!((scaled[1].bytes_in - 1563.0 * 1000.0).abs() < 1e-3);
        assert!((scaled[1].gets - 1563.0).abs() < 1e-9);
        // Compute per byte as measured: (1 s − overhead) per 100 MiB.
        let expected = TASK_OVERHEAD_SECONDS
            + (1.0 - TASK_OVERHEAD_SECONDS) * per_task / (100u64 << 20) as f64;
        assert!((scaled[0].compute_seconds - expected).abs() < 1e-9);
        assert!(scale(&q1_like(), 0.0, 10, &Platform::lambda(2048)).is_err());
    }

    #[test]
    fn on_lambda_a_small_scan_gets_tasks_worth_starting_and_its_reader_few_reads() {
        // 200 MiB scanned on 1,000 workers: a task a worker in-process; on
        // Lambda three of at least 64 MiB (and the final reader three GETs).
        let lambda = scale(&q1_like(), 1.0, 1000, &Platform::lambda(2048)).unwrap();
        assert_eq!(lambda[0].tasks, 3);
        assert!((lambda[1].shuffle_gets - 3.0).abs() < 1e-9);
        let local = scale(&q1_like(), 1.0, 1000, &Platform::in_process()).unwrap();
        assert_eq!(local[0].tasks, 1000);
    }

    #[test]
    fn a_scan_is_cut_by_the_bytes_the_planner_weighs_it_by() {
        // The 200 MiB read weigh 1,000 MiB in the planner's packing (a
        // scan's share is at least a sixteenth of its files): at 1,000
        // times the data, tasks of 128 MiB of that weight (7,813), each
        // reading a fifth of it, with a fifth of the requests.
        let mut narrow = q1_like();
        narrow.stages[0].read_bytes = 1000 << 20;
        let wide = scale(&q1_like(), 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let scaled = scale(&narrow, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        assert_eq!(scaled[0].tasks, 7813);
        let per_task = 200_000.0 * (1u64 << 20) as f64 / 7813.0;
        assert!((scaled[0].bytes_scanned - per_task).abs() < 1.0);
        let ratio = wide[0].gets / scaled[0].gets;
        assert!((ratio - 7813.0 / 1563.0).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn in_process_replay_is_list_scheduling_of_the_measured_times() {
        let profile = q1_like();
        let scaled = scale(&profile, 1.0, 2, &Platform::in_process()).unwrap();
        let on = |workers| {
            simulate(
                &scaled,
                &Platform::in_process(),
                workers,
                0,
                false,
                &Prices::default(),
                0.0,
                1,
            )
        };
        let replay = on(2);
        // Two scan tasks side by side, then the merge.
        let want = scaled[0].compute_seconds + scaled[1].compute_seconds;
        assert!((replay.seconds - want).abs() < 1e-9, "{replay:?}");
        assert_eq!(replay.usd, 0.0);
        // One worker: the scans one after the other.
        let one = on(1);
        assert!(
            (one.seconds - (2.0 * scaled[0].compute_seconds + scaled[1].compute_seconds)).abs()
                < 1e-9
        );
    }

    #[test]
    fn lambda_replays_bill_every_attempt_and_backups_cut_the_tail() {
        let mut profile = q1_like();
        let scaled = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        // The scans alone, with stalls common: backups have tails to cut.
        profile.stages.truncate(1);
        let scans = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let mut platform = Platform::lambda(2048);
        platform.stall_probability = 0.01;
        platform.hedge_after = None;
        let prices = Prices::default();
        let (slow, _) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        let (hedged, _) = replays(&scans, &platform, 1000, 0, true, &prices, 0.0, 9);
        assert!(hedged.backups > 0);
        assert!(hedged.seconds < slow.seconds, "{hedged:?} vs {slow:?}");
        assert!(hedged.gb_seconds > slow.gb_seconds, "backups are billed");
        let platform = Platform::lambda(2048);
        let prices = Prices::default();
        let (without, _) = replays(&scaled, &platform, 1000, 0, false, &prices, 0.0, 9);
        assert_eq!(without.attempts, 1564);
        assert_eq!(without.requests.put, 1564);
        assert!(without.usd > 0.0 && without.gb_seconds > 0.0);
        // 1,563 tasks on 1,000 workers: two waves of scans.
        assert!(without.seconds > 2.0 * scaled[0].compute_seconds);
    }

    #[test]
    fn workers_kept_warm_from_a_query_before_bill_no_cold_starts() {
        let scaled = scale(&q1_like(), 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let platform = Platform::lambda(2048);
        let prices = Prices::default();
        let cold = simulate(&scaled, &platform, 1000, 0, false, &prices, 0.0, 3);
        assert_eq!(cold.warm_workers, 1000, "every worker ran a task");
        let warm = simulate(&scaled, &platform, 1000, 1000, false, &prices, 0.0, 3);
        assert!(warm.gb_seconds < cold.gb_seconds, "{warm:?} vs {cold:?}");
        assert!(warm.seconds <= cold.seconds);
        // A cold start is ~0.25 s of 2 GB on each of 1,000 workers.
        let saved = cold.gb_seconds - warm.gb_seconds;
        assert!((250.0..1000.0).contains(&saved), "{saved} GB-s");
    }

    #[test]
    fn hedged_reads_cut_stalls_without_backups_and_are_billed() {
        let mut profile = q1_like();
        profile.stages.truncate(1);
        let scans = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let prices = Prices::default();
        let mut platform = Platform::lambda(2048);
        platform.stall_probability = 0.01;
        let (hedged, p90_hedged) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        platform.hedge_after = None;
        let (stalled, p90_stalled) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        assert!(hedged.requests.hedged > 0 && stalled.requests.hedged == 0);
        assert_eq!(
            hedged.requests.get,
            stalled.requests.get + hedged.requests.hedged,
            "a hedge is one more GET"
        );
        assert!(
            hedged.seconds < stalled.seconds,
            "{hedged:?} vs {stalled:?}"
        );
        assert!(p90_hedged < p90_stalled);
    }

    #[test]
    fn a_stage_reading_faster_than_its_prefixes_allow_is_held_to_their_rate() {
        // 10,000 tasks reading 10,000 producers each: 10^8 GETs over 256
        // prefixes at 5,500 a second each, at least 71 s.
        let stage = ScaledStage {
            id: 2,
            kind: StageKind::Reduce,
            inputs: vec![1],
            tasks: 10_000,
            bytes_scanned: 0.0,
            bytes_in: 0.0,
            bytes_out: 0.0,
            gets: 10_000.0,
            shuffle_gets: 10_000.0,
            compute_seconds: 0.0,
            combinable: vec![1],
            whole: vec![],
            mergeable: vec![],
        };
        let mut replay = Replay::default();
        let platform = Platform::lambda(2048);
        let end = per_prefix(&stage, &platform, 10.0, 20.0, &mut replay);
        let fastest = 1e8 / (S3_GETS_PER_PREFIX * SHUFFLE_PREFIXES);
        assert!((end - (10.0 + fastest)).abs() < 1e-6, "{end}");
        assert!(replay.prefix_throttled && replay.prefix_stage == 2);
        assert!(replay.prefix_rate > S3_GETS_PER_PREFIX);
        // In-process: no such limit.
        let mut local = Replay::default();
        assert_eq!(
            per_prefix(&stage, &Platform::in_process(), 10.0, 20.0, &mut local),
            20.0
        );
    }
}
