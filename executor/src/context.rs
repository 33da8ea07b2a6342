//! What an executor builds once (at start-up, or a Lambda cold start) and what each
//! task adds to it.
//!
//! # What belongs here
//! `ExecutorContext` (stores, spill directory, the function registry, its
//! functions held to [`ValueCaps::EXECUTION`]), the session
//! settings every Squall plan needs on both sides (`squall_session_config`), and the
//! per-task `TaskAttempt` session extension the writer nodes read.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionConfig;

use crate::bounds::{ValueCaps, bounded_defaults};
use crate::protocol::{ShuffleCodec, TaskId};
use crate::stores::StoreRegistry;

/// Largest estimated build side (bytes) a join broadcasts to every probe task.
pub const BROADCAST_JOIN_BYTES: usize = 16 << 20;
/// Largest estimated build side (rows) a join broadcasts to every probe task.
pub const BROADCAST_JOIN_ROWS: usize = 1 << 20;

/// Session settings that make DataFusion plans safe to cut into stateless tasks.
/// The control plane plans with them and every executor runs with them.
pub fn squall_session_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    let options = config.options_mut();
    // A task runs one partition alone: it must not steal sibling partitions' files.
    options.execution.enable_file_stream_work_stealing = false;
    // Dynamic filters: a TopK's (`ORDER BY ... LIMIT`) prunes the files and row
    // groups of a scan in its own task (the two share one filter through the
    // plan's encoding, see `codec::encode_plan`); pushed into a scan of another
    // stage it is never filled and keeps every row. A join's waits until every
    // partition of the join has built its side, and a task runs one partition
    // of its stage's plan: off here, the planner makes them
    // (`PlanOptions::join_filters`) and a task fills them only where it runs
    // its partition as a plan of one partition (`partitions::narrow`). An
    // aggregate's (min/max bounds) is off until tested here.
    options.optimizer.enable_dynamic_filter_pushdown = true;
    options.optimizer.enable_topk_dynamic_filter_pushdown = true;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // Tasks are the parallelism: no round-robin repartitions, and scans are split by
    // the planner, not regrouped by DataFusion.
    options.optimizer.enable_round_robin_repartition = false;
    options.optimizer.repartition_file_scans = false;
    // Broadcasting a build side of a few MiB to every probe task costs far less
    // than shuffling both sides through the bucket: raise DataFusion's single-node
    // thresholds for collect-left joins.
    options.optimizer.hash_join_single_partition_threshold = BROADCAST_JOIN_BYTES;
    options.optimizer.hash_join_single_partition_threshold_rows = BROADCAST_JOIN_ROWS;
    config
}

/// Memory kept for Parquet footers between tasks (and, in the control plane, jobs).
pub const METADATA_CACHE_BYTES: usize = 64 << 20;

/// A cache of Parquet footers (and page indexes) by object path, bounded to
/// [`METADATA_CACHE_BYTES`], least recently used out first. An entry is used only
/// while the object's size and modification time are those it was read with.
pub fn new_metadata_cache() -> Arc<FileMetadataCache> {
    Arc::new(DefaultCache::new(METADATA_CACHE_BYTES).with_name("squall-parquet-footers"))
}

/// Caches of a task's runtime: the executor's shared footer cache, and nothing
/// kept between tasks that could go stale (no listings, no statistics).
pub fn task_cache_config(metadata: &Arc<FileMetadataCache>) -> CacheManagerConfig {
    CacheManagerConfig::default()
        .with_file_metadata_cache(Some(metadata.clone()))
        .with_metadata_cache_limit(METADATA_CACHE_BYTES)
        .with_list_files_cache_limit(0)
        .with_file_statistics_cache_limit(0)
}

/// Built once per executor process and shared by its tasks.
#[derive(Debug, Clone)]
pub struct ExecutorContext {
    pub stores: Arc<StoreRegistry>,
    /// Where tasks spill (DataFusion's sorts and joins, shuffle buffers).
    pub spill_dir: PathBuf,
    /// Built once: holds the function registry every decoded plan resolves against.
    pub(crate) functions: Arc<SessionState>,
    /// Parquet footers read by earlier tasks of this process (a warm Lambda
    /// container keeps them): a scan reads a file's footer once, not once per task.
    pub(crate) footers: Arc<FileMetadataCache>,
}

impl ExecutorContext {
    pub fn new(stores: Arc<StoreRegistry>, spill_dir: PathBuf) -> Self {
        let functions = SessionStateBuilder::new()
            .with_config(squall_session_config())
            .with_default_features()
            .with_scalar_functions(bounded_defaults(ValueCaps::EXECUTION, None))
            .build();
        Self {
            stores,
            spill_dir,
            functions: Arc::new(functions),
            footers: new_metadata_cache(),
        }
    }
}

/// Session extension that tells Squall's writer nodes which attempt they run in.
#[derive(Debug, Clone)]
pub struct TaskAttempt {
    pub id: TaskId,
    pub spill_dir: PathBuf,
    /// How the shuffle partitions it writes are compressed.
    pub shuffle_codec: ShuffleCodec,
}
