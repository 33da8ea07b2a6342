//! The fault and straggler harness behind `squall bench faults`: TPC-H queries
//! run clean and under a [`FaultPlan`] (stragglers, crashes, failures) in one
//! process, timed against each other and checked against independent answers.
//!
//! # What belongs here
//! Running, timing and checking; printing is the CLI's. Targets are read from
//! its report (BENCHMARKS.md), never from timed tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_executor::FaultPlan;

use crate::bench::{median, scale_name_of};
use crate::tpch::{self, answers};
use squall_engine::backend::FaultyBackend;
use squall_engine::engine::{Engine, JobRequest, JobRun};
use squall_engine::error::{Result, SquallError};
use squall_engine::planner::PlanOptions;
use squall_engine::scheduler::{Exchange, ExchangeMode, Speculation};
use squall_engine::urls::to_url;

/// What `bench faults` runs.
#[derive(Debug, Clone)]
pub struct FaultsBench {
    /// Root of the eight table folders.
    pub data: String,
    pub queries: Vec<usize>,
    /// Clean and faulted runs per query (each side's median is compared).
    pub iterations: usize,
    pub executors: usize,
    pub plan: FaultPlan,
    /// Backup tasks, on both sides.
    pub speculation: Speculation,
    /// How reduce stages read shuffles, on both sides.
    pub exchange: ExchangeMode,
    /// Reference answers (`sfX/qNN.csv` below); where there is none for a
    /// query, single-node DataFusion's answer is the reference.
    pub answers: Option<PathBuf>,
}

/// One query's figures.
#[derive(Debug, Clone)]
pub struct FaultQuery {
    pub query: usize,
    pub clean: Vec<Duration>,
    pub faulted: Vec<Duration>,
    /// Over all faulted runs: attempts beyond one per task, backups started and won.
    pub extra_attempts: u64,
    pub backups: u64,
    pub backup_wins: u64,
    /// Every faulted run's answer against the reference (the first mismatch).
    pub check: std::result::Result<(), String>,
}

impl FaultQuery {
    /// Faulted median over clean median.
    pub fn ratio(&self) -> f64 {
        median(&self.faulted).as_secs_f64() / median(&self.clean).as_secs_f64().max(1e-9)
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct FaultsReport {
    pub queries: Vec<FaultQuery>,
    /// Faults injected: stragglers, crashes, failures.
    pub injected: (u64, u64, u64),
}

impl FaultsReport {
    /// The sum of faulted medians over the sum of clean medians.
    pub fn total_ratio(&self) -> f64 {
        let sum = |f: fn(&FaultQuery) -> &Vec<Duration>| -> f64 {
            self.queries
                .iter()
                .map(|q| median(f(q)).as_secs_f64())
                .sum()
        };
        sum(|q| &q.faulted) / sum(|q| &q.clean).max(1e-9)
    }

    pub fn answers_ok(&self) -> usize {
        self.queries.iter().filter(|q| q.check.is_ok()).count()
    }
}

impl FaultsBench {
    /// Runs each query clean then faulted, `iterations` times each; `on_query`
    /// is called as each query finishes.
    pub async fn run(&self, mut on_query: impl FnMut(&FaultQuery)) -> Result<FaultsReport> {
        if self.iterations == 0 {
            return Err(SquallError::InvalidArgument(
                "iterations must be at least 1".into(),
            ));
        }
        self.speculation
            .validate()
            .map_err(SquallError::InvalidArgument)?;
        let root = to_url(&self.data)?;
        let root = root.as_str().trim_end_matches('/').to_string();
        let clean = Engine::embedded(Some(self.executors))?;
        let faulty = Arc::new(FaultyBackend::new(clean.backend.clone(), self.plan)?);
        let faulted = Engine {
            backend: faulty.clone(),
            ..clean.clone()
        };
        let tables = tpch::table_specs(&root);
        let ctx = tpch::single_node_context(&root, self.executors).await?;
        let scale = scale_name_of(&ctx).await?;
        let mut report = FaultsReport {
            queries: vec![],
            injected: (0, 0, 0),
        };
        for &q in &self.queries {
            let sql = tpch::query(q)?;
            let ordered = answers::is_ordered(q);
            let reference = match &self.answers {
                Some(dir) => {
                    let path = answers::answer_path(dir, &scale, q);
                    path.exists().then(|| answers::load(&path)).transpose()?
                }
                None => None,
            };
            let reference = match reference {
                Some(rows) => rows,
                None => answers::render(&tpch::single_node_collect(&ctx, sql).await?),
            };
            let mut request = JobRequest::new(sql, tables.clone());
            request.plan = PlanOptions {
                shuffle_partitions: self.executors,
                ..PlanOptions::default()
            };
            request.tasks.speculation = self.speculation.clone();
            request.tasks.exchange = Exchange {
                mode: self.exchange,
                ..Exchange::default()
            };
            let mut bench = FaultQuery {
                query: q,
                clean: vec![],
                faulted: vec![],
                extra_attempts: 0,
                backups: 0,
                backup_wins: 0,
                check: Ok(()),
            };
            for i in 0..self.iterations {
                let started = Instant::now();
                clean.run(&request, None).await?;
                bench.clean.push(started.elapsed());

                // A fixed job id per query and iteration: the same seed meets
                // the same faults on every run of the harness.
                let run = JobRun {
                    job_id: Some(format!("{:08x}{:08x}", q, i)),
                    ..JobRun::default()
                };
                let started = Instant::now();
                let result = faulted.run_as(&request, run).await?;
                bench.faulted.push(started.elapsed());
                let tasks: u64 = result.stages.iter().map(|s| s.tasks as u64).sum();
                let attempts: u64 = result.stages.iter().map(|s| u64::from(s.attempts)).sum();
                bench.extra_attempts += attempts.saturating_sub(tasks);
                bench.backups += result
                    .stages
                    .iter()
                    .map(|s| u64::from(s.backups))
                    .sum::<u64>();
                bench.backup_wins += result
                    .stages
                    .iter()
                    .map(|s| u64::from(s.backup_wins))
                    .sum::<u64>();
                let ours = answers::render(result.batches.as_deref().unwrap_or_default());
                if bench.check.is_ok() {
                    bench.check = answers::compare(&reference, &ours, ordered)
                        .map_err(|e| format!("faulted run {}: {e}", i + 1));
                }
            }
            on_query(&bench);
            report.queries.push(bench);
        }
        report.injected = faulty.counts().get();
        Ok(report)
    }
}
