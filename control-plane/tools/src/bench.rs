//! Benchmarks: TPC-H on Squall against single-node DataFusion in the same process,
//! and the scheduler's per-task overhead.
//!
//! # What belongs here
//! Running and timing; printing is the CLI's. Speed targets are checked by reading
//! these reports (BENCHMARKS.md), never by timed tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::tpch::{self, answers};
use squall_engine::cost::JobMeter;
use squall_engine::engine::{Engine, JobRequest, JobResult};
use squall_engine::error::{Result, SquallError};
use squall_engine::planner::{InlineScans, KeyFilterMode, PlanOptions};
use squall_engine::scheduler::{Scheduler, TaskOptions};
use squall_engine::urls::to_url;
use squall_executor::ShuffleCodec;

/// What `bench tpch` runs.
#[derive(Debug, Clone)]
pub struct TpchBench {
    /// Root of the eight table folders.
    pub data: String,
    pub queries: Vec<usize>,
    pub iterations: usize,
    /// In-process executors; also DataFusion's target partitions.
    pub executors: usize,
    /// Width of Squall's hash shuffles; None: widened with the data from
    /// `executors` (see `planner::Widen`).
    pub shuffle_partitions: Option<usize>,
    /// Reference answers (`sfX/qNN.csv` below); None: do not check.
    pub answers: Option<PathBuf>,
    /// Scale factor of the data; None: read from the row count of `customer`.
    pub scale: Option<String>,
    /// When joins filter their probe side with their build side's keys.
    pub key_filters: KeyFilterMode,
    /// How shuffle files are compressed (None: as `squall run` chooses for
    /// the work folder).
    pub shuffle_codec: Option<ShuffleCodec>,
    /// Whether small tables are scanned by the stages that join with them
    /// (see [`PlanOptions::inline_scans`]).
    pub inline_scans: bool,
    /// Whether small stages read by one task run inside it (see
    /// [`TaskOptions::fuse_max_bytes`]).
    pub fuse: bool,
    /// Whether shuffled joins become broadcast joins when their build side
    /// commits small (see [`PlanOptions::late_broadcast`]).
    pub late_broadcast: bool,
    /// Whether broadcast joins push their keys into their probe scans (see
    /// [`PlanOptions::join_filters`]).
    pub join_filters: bool,
}

/// One query's figures.
#[derive(Debug, Clone)]
pub struct QueryBench {
    pub query: usize,
    pub squall: Vec<Duration>,
    pub datafusion: Vec<Duration>,
    /// CPU time (user + system) of the whole process during each run.
    pub squall_cpu: Vec<Duration>,
    pub datafusion_cpu: Vec<Duration>,
    pub stages: usize,
    pub tasks: usize,
    /// Bytes written to shuffle files (all stages but the last).
    pub shuffle_bytes: u64,
    /// Arrow bytes those shuffle files hold, uncompressed.
    pub shuffle_raw_bytes: u64,
    /// Bytes read from the tables.
    pub scanned_bytes: u64,
    /// Squall's answer against the reference: None when there is no reference.
    pub squall_check: Option<std::result::Result<(), String>>,
    pub datafusion_check: Option<std::result::Result<(), String>>,
    /// CPU microseconds by operator, summed over the runs: Squall's tasks
    /// (with their steps outside operators) and DataFusion's plan.
    pub squall_operators: BTreeMap<String, u64>,
    pub datafusion_operators: BTreeMap<String, u64>,
    /// Squall's by stage and operator, summed over the runs.
    pub stage_operators: BTreeMap<u32, BTreeMap<String, u64>>,
}

impl QueryBench {
    pub fn squall_median(&self) -> Duration {
        median(&self.squall)
    }

    pub fn datafusion_median(&self) -> Duration {
        median(&self.datafusion)
    }

    pub fn squall_cpu_median(&self) -> Duration {
        median(&self.squall_cpu)
    }

    pub fn datafusion_cpu_median(&self) -> Duration {
        median(&self.datafusion_cpu)
    }

    /// Squall's median over DataFusion's.
    pub fn ratio(&self) -> f64 {
        self.squall_median().as_secs_f64() / self.datafusion_median().as_secs_f64().max(1e-9)
    }
}

pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Geometric mean of positive numbers (1 for none).
pub fn geometric_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v.ln(), n + 1));
    if n == 0 { 1.0 } else { (sum / n as f64).exp() }
}

/// The scale factor as the answers folders name it ("0.01", "0.1", "1", "10").
fn scale_name(scale: f64) -> String {
    let text = format!("{scale}");
    text.trim_end_matches(".0").to_string()
}

impl TpchBench {
    /// Runs every query `iterations` times on each side, alternating Squall and
    /// DataFusion; `on_query` is called as each query finishes.
    pub async fn run(&self, mut on_query: impl FnMut(&QueryBench)) -> Result<Vec<QueryBench>> {
        if self.iterations == 0 {
            return Err(SquallError::InvalidArgument(
                "iterations must be at least 1".into(),
            ));
        }
        let root = to_url(&self.data)?;
        let root = root.as_str().trim_end_matches('/').to_string();
        let engine = Engine::embedded(Some(self.executors))?;
        let tables = tpch::table_specs(&root);
        let ctx = tpch::single_node_context(&root, self.executors).await?;
        let scale = match &self.scale {
            Some(s) => s.clone(),
            None => scale_name(customer_rows(&ctx).await? as f64 / 150_000.0),
        };
        let mut results = Vec::new();
        for &q in &self.queries {
            let sql = tpch::query(q)?;
            let expected = match &self.answers {
                Some(dir) => {
                    let path = answers::answer_path(dir, &scale, q);
                    path.exists().then(|| answers::load(&path)).transpose()?
                }
                None => None,
            };
            let mut request = JobRequest::new(sql, tables.clone());
            request.plan = PlanOptions {
                shuffle_partitions: self.shuffle_partitions.unwrap_or(self.executors),
                min_scan_tasks: Some(self.executors),
                // No width given: it follows the data, as in `squall run`.
                widen: self
                    .shuffle_partitions
                    .is_none()
                    .then(squall_engine::planner::Widen::default),
                key_filters: self.key_filters,
                inline_scans: self.inline_scans.then(InlineScans::default),
                late_broadcast: self.late_broadcast.then(Default::default),
                join_filters: self.join_filters,
                ..PlanOptions::default()
            };
            request.tasks.shuffle_codec = self.shuffle_codec;
            if !self.fuse {
                request.tasks.fuse_max_bytes = 0;
            }
            let mut bench = QueryBench {
                query: q,
                squall: vec![],
                datafusion: vec![],
                squall_cpu: vec![],
                datafusion_cpu: vec![],
                stages: 0,
                tasks: 0,
                shuffle_bytes: 0,
                shuffle_raw_bytes: 0,
                scanned_bytes: 0,
                squall_check: None,
                datafusion_check: None,
                squall_operators: BTreeMap::new(),
                datafusion_operators: BTreeMap::new(),
                stage_operators: BTreeMap::new(),
            };
            for i in 0..self.iterations {
                let started = Instant::now();
                let cpu = process_cpu();
                let result = engine.run(&request, None).await?;
                bench.squall.push(started.elapsed());
                bench.squall_cpu.push(process_cpu().saturating_sub(cpu));

                let started = Instant::now();
                let cpu = process_cpu();
                let (df_batches, df_operators) = tpch::single_node_profile(&ctx, sql).await?;
                bench.datafusion.push(started.elapsed());
                bench.datafusion_cpu.push(process_cpu().saturating_sub(cpu));
                add_all(&mut bench.datafusion_operators, &df_operators);
                for stage in &result.stages {
                    add_all(&mut bench.squall_operators, &stage.cpu_us);
                    add_all(
                        bench.stage_operators.entry(stage.stage).or_default(),
                        &stage.cpu_us,
                    );
                }

                if i == 0 {
                    bench.first_run(&result, &df_batches, expected.as_deref());
                }
            }
            on_query(&bench);
            results.push(bench);
        }
        Ok(results)
    }
}

impl QueryBench {
    /// What the first run of the query shows: its stages, tasks and bytes,
    /// and both answers checked against `expected` (where there is none,
    /// Squall's against DataFusion's).
    fn first_run(
        &mut self,
        result: &JobResult,
        df_batches: &[RecordBatch],
        expected: Option<&[Vec<String>]>,
    ) {
        let fused = result.stages.iter().filter(|s| s.fused_into.is_some());
        self.stages = result.dag.stages.len() - fused.count();
        // Tasks run: a reduce stage's width is chosen as it starts.
        self.tasks = result.stages.iter().map(|s| s.tasks).sum();
        let last = result.dag.final_stage().id;
        let shuffles = result.stages.iter().filter(|s| s.stage != last);
        self.shuffle_bytes = shuffles.clone().map(|s| s.bytes_out).sum();
        self.shuffle_raw_bytes = shuffles.map(|s| s.raw_bytes_out).sum();
        self.scanned_bytes = result.stages.iter().map(|s| s.bytes_scanned).sum();
        let ordered = answers::is_ordered(self.query);
        let ours = answers::render(result.batches.as_deref().unwrap_or_default());
        let theirs = answers::render(df_batches);
        match expected {
            Some(expected) => {
                self.squall_check = Some(answers::compare(expected, &ours, ordered));
                self.datafusion_check = Some(answers::compare(expected, &theirs, ordered));
            }
            // No reference answer (SF 10): DataFusion's is the reference.
            None => self.squall_check = Some(answers::compare(&theirs, &ours, ordered)),
        }
    }
}

/// Adds `more`'s microseconds to `sum`'s, key by key.
fn add_all(sum: &mut BTreeMap<String, u64>, more: &BTreeMap<String, u64>) {
    for (key, us) in more {
        *sum.entry(key.clone()).or_insert(0) += us;
    }
}

/// CPU time (user + system) this process has used so far; zero where the OS
/// cannot say.
pub fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` to the pointer it is given, which points
    // to memory of that type and size.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it initialized the struct (zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The scale factor of the TPC-H tables registered in `ctx`, as the answers
/// folders name it, from the row count of `customer`.
pub(crate) async fn scale_name_of(ctx: &SessionContext) -> Result<String> {
    Ok(scale_name(customer_rows(ctx).await? as f64 / 150_000.0))
}

async fn customer_rows(ctx: &SessionContext) -> Result<u64> {
    let batches = tpch::single_node_collect(ctx, "SELECT count(*) FROM customer").await?;
    let rows = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
        })
        .map(|a| a.value(0))
        .unwrap_or(0);
    Ok(rows.max(0) as u64)
}

/// What `bench tasks` measured.
#[derive(Debug, Clone)]
pub struct TasksBench {
    pub tasks: usize,
    pub elapsed: Duration,
}

impl TasksBench {
    pub fn tasks_per_second(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Wall time per task (at the backend's concurrency).
    pub fn per_task(&self) -> Duration {
        self.elapsed / (self.tasks.max(1) as u32)
    }
}

/// Runs `count` ping tasks through the scheduler and `engine`'s backend.
pub async fn tasks(engine: &Engine, count: usize) -> Result<TasksBench> {
    if count == 0 {
        return Err(SquallError::InvalidArgument(
            "count must be at least 1".into(),
        ));
    }
    let options = TaskOptions::default();
    let scheduler = Scheduler {
        job_id: "bench-tasks",
        run_id: "bench",
        backend: engine.backend.clone(),
        stores: Arc::clone(&engine.stores),
        options: &options,
        progress: None,
        journal: None,
        meter: JobMeter::new(engine.prices.clone(), None),
    };
    let started = Instant::now();
    let stats = scheduler.ping(count).await?;
    let elapsed = started.elapsed();
    if stats.attempts as usize != count {
        return Err(SquallError::Inconsistent {
            what: format!("{} attempts for {count} ping tasks", stats.attempts),
        });
    }
    Ok(TasksBench {
        tasks: count,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_means() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(&[ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
        assert!((geometric_mean([1.0, 4.0]) - 2.0).abs() < 1e-12);
        assert_eq!(scale_name(0.01), "0.01");
        assert_eq!(scale_name(1.0), "1");
        assert_eq!(scale_name(10.0), "10");
    }
}
