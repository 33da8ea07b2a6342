//! How a job's tasks are run: attempts, memory, concurrency, backups,
//! coalescing, the exchange, hedged reads and the result cap.

use squall_executor::{Hedging, ShuffleCodec};

use super::coalesce::Coalescing;
use super::exchange::Exchange;
use super::speculation::Speculation;
use crate::backend::Place;

/// How a job's tasks are run.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Attempts per task, counting the first.
    pub max_attempts: u32,
    /// Memory pool limit of each task's first attempt.
    pub memory_limit_bytes: u64,
    /// A task that runs out of memory is tried again with twice the pool, up
    /// to this (no larger than `memory_limit_bytes`: no escalation).
    pub max_memory_limit_bytes: u64,
    /// Tasks of this job running at once (None: the backend's limit).
    pub max_concurrency: Option<usize>,
    /// Tasks of any one stage running at once (None: no limit beyond the job's).
    pub max_stage_concurrency: Option<usize>,
    pub session_options: Vec<(String, String)>,
    /// When stragglers get backup copies.
    pub speculation: Speculation,
    /// How reduce tasks are sized to the shuffle they read.
    pub coalescing: Coalescing,
    /// Whether reduce stages read their shuffles direct or through a
    /// combine step.
    pub exchange: Exchange,
    /// When tasks send slow ranged reads again.
    pub hedging: Hedging,
    /// How shuffle files are compressed (None: by where they go, see
    /// [`ShuffleCodec::for_folder`]; the engine decides for each job).
    pub shuffle_codec: Option<ShuffleCodec>,
    /// Most bytes of result files the job may commit: past it, the job fails
    /// and its running tasks are stopped (None: no limit).
    pub max_result_bytes: Option<u64>,
    /// Every stage at this place (None: where the backend places each; a
    /// backend that cannot run tasks there fails the job before it runs).
    pub place: Option<Place>,
    /// Why `place` was set, where not because the job asked (None: the job
    /// asked).
    pub place_reason: Option<String>,
    /// Lambda environments to start while the job is planned (pings sent at
    /// once, billed to the job as stage 0); 0: none.
    pub prewarm: usize,
    /// A stage that reads at most this many bytes of shuffles, writes one
    /// partition per task and is read by a stage of one task runs inside
    /// that task (see `planner::fuse`); 0: every stage runs its own tasks.
    pub fuse_max_bytes: u64,
}

/// Default of [`TaskOptions::fuse_max_bytes`]: what one task reads in well
/// under a second from an object store, and sorts or aggregates in memory.
pub const FUSE_MAX_BYTES: u64 = 16 << 20;

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            memory_limit_bytes: 2 << 30,
            max_memory_limit_bytes: 8 << 30,
            speculation: Speculation::default(),
            coalescing: Coalescing::default(),
            exchange: Exchange::default(),
            hedging: Hedging::on(),
            shuffle_codec: None,
            max_concurrency: None,
            max_stage_concurrency: None,
            session_options: vec![],
            max_result_bytes: None,
            place: None,
            place_reason: None,
            prewarm: 0,
            fuse_max_bytes: FUSE_MAX_BYTES,
        }
    }
}
