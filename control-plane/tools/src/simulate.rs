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

/// How the model's measured runs are planned on `executors` in-process
/// executors: shuffles as wide as they, scans in at least as many tasks,
/// widened with the data as `squall run` does.
pub fn measured_options(executors: usize) -> PlanOptions {
    PlanOptions {
        shuffle_partitions: executors,
        min_scan_tasks: Some(executors),
        widen: Some(Widen::default()),
        ..PlanOptions::default()
    }
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

/// Profiles the model's tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn stage(
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
    pub(crate) fn q1_like() -> Profile {
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
}

#[cfg(test)]
mod tests {
    use super::fixtures::q1_like;
    use super::*;

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
}
