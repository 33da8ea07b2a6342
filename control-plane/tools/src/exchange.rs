//! `squall bench exchange`: TPC-H queries run direct and two-level in the same
//! process, one after the other, with the reduce tasks one per partition (no
//! coalescing, so the exchange alone changes the requests): the GETs each run
//! made (counted by the executors' counting stores, as `squall run
//! --show-cost` reports them), the time, and both answers checked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bench::median;
use crate::tpch::{self, answers};
use squall_engine::engine::{Engine, JobRequest, JobResult};
use squall_engine::error::{Result, SquallError};
use squall_engine::planner::PlanOptions;
use squall_engine::scheduler::{Coalescing, Exchange, ExchangeMode};
use squall_engine::urls::to_url;

/// What `bench exchange` runs.
#[derive(Debug, Clone)]
pub struct ExchangeBench {
    /// Root of the eight table folders.
    pub data: String,
    pub queries: Vec<usize>,
    pub iterations: usize,
    pub executors: usize,
    /// Width of the hash shuffles.
    pub shuffle_partitions: usize,
    /// Reference answers (`sfX/qNN.csv` below); None: the two runs are
    /// compared with each other only.
    pub answers: Option<PathBuf>,
    /// Scale factor of the data, as the answers folders name it.
    pub scale: String,
}

/// One way of running a query: its times and what its first run made.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub times: Vec<Duration>,
    /// GETs and PUTs of the first run, every store.
    pub gets: u64,
    pub puts: u64,
    /// Shuffle inputs read through a combine step, and the combiners.
    pub combined_inputs: usize,
    pub combiners: usize,
    /// Its answer against the reference (or, without one, the other side's).
    pub check: Option<std::result::Result<(), String>>,
}

impl Side {
    pub fn median(&self) -> Duration {
        median(&self.times)
    }
}

/// One query's figures.
#[derive(Debug, Clone)]
pub struct ExchangeQuery {
    pub query: usize,
    pub direct: Side,
    pub two_level: Side,
}

impl ExchangeQuery {
    /// Direct GETs over two-level GETs.
    pub fn fewer_gets(&self) -> f64 {
        self.direct.gets as f64 / self.two_level.gets.max(1) as f64
    }

    /// Two-level time over direct time (medians).
    pub fn time_ratio(&self) -> f64 {
        self.two_level.median().as_secs_f64() / self.direct.median().as_secs_f64().max(1e-9)
    }
}

impl ExchangeBench {
    /// Runs every query `iterations` times each way, alternating; `on_query`
    /// is called as each query finishes.
    pub async fn run(
        &self,
        mut on_query: impl FnMut(&ExchangeQuery),
    ) -> Result<Vec<ExchangeQuery>> {
        if self.iterations == 0 || self.shuffle_partitions == 0 {
            return Err(SquallError::InvalidArgument(
                "iterations and the shuffle width must be at least 1".into(),
            ));
        }
        let root = to_url(&self.data)?;
        let root = root.as_str().trim_end_matches('/').to_string();
        let engine = Engine::embedded(Some(self.executors))?;
        let tables = tpch::table_specs(&root);
        let mut results = Vec::new();
        for &q in &self.queries {
            let expected = match &self.answers {
                Some(dir) => {
                    let path = answers::answer_path(dir, &self.scale, q);
                    path.exists().then(|| answers::load(&path)).transpose()?
                }
                None => None,
            };
            let request = |mode: ExchangeMode| {
                let mut request = JobRequest::new(tpch::query(q)?, tables.clone());
                request.plan = PlanOptions {
                    shuffle_partitions: self.shuffle_partitions,
                    // Scans cut into as many tasks as the width (where there
                    // are files or row groups enough), as `squall run
                    // --shuffle-partitions` does: many producers.
                    min_scan_tasks: None,
                    ..PlanOptions::default()
                };
                request.tasks.coalescing = Coalescing::disabled();
                request.tasks.exchange = Exchange {
                    mode,
                    ..Exchange::default()
                };
                Ok::<_, SquallError>(request)
            };
            let (direct_request, two_level_request) = (
                request(ExchangeMode::Direct)?,
                request(ExchangeMode::TwoLevel)?,
            );
            let mut direct = Side::default();
            let mut two_level = Side::default();
            let mut answers_of = Vec::new();
            for i in 0..self.iterations {
                for (side, request) in [
                    (&mut direct, &direct_request),
                    (&mut two_level, &two_level_request),
                ] {
                    let started = Instant::now();
                    let result = engine.run(request, None).await?;
                    side.times.push(started.elapsed());
                    if i == 0 {
                        side.note(&result);
                        answers_of.push(answers::render(
                            result.batches.as_deref().unwrap_or_default(),
                        ));
                    }
                }
            }
            let ordered = answers::is_ordered(q);
            let reference = expected.unwrap_or_else(|| answers_of[0].clone());
            direct.check = Some(answers::compare(&reference, &answers_of[0], ordered));
            two_level.check = Some(answers::compare(&reference, &answers_of[1], ordered));
            let query = ExchangeQuery {
                query: q,
                direct,
                two_level,
            };
            on_query(&query);
            results.push(query);
        }
        Ok(results)
    }
}

impl Side {
    fn note(&mut self, result: &JobResult) {
        self.gets = result.cost.total.requests.get;
        self.puts = result.cost.total.requests.put;
        let exchanges = result.stages.iter().flat_map(|s| &s.exchanges);
        let combined: Vec<_> = exchanges.filter(|e| e.two_level).collect();
        self.combined_inputs = combined.len();
        self.combiners = combined.iter().map(|e| e.combiners).sum();
    }
}
