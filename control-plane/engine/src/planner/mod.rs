//! SQL to a DAG of stages of stateless tasks.
//!
//! # What belongs here
//! Checking that a statement is a read-only query, registering the job's tables,
//! computing scan splits, building DataFusion's physical plan with Squall's session
//! settings, and cutting it into stages (`stages`). Nothing here runs a task.

pub mod broadcast;
pub mod fuse;
pub mod generated;
pub mod guard;
pub mod joins;
pub mod key_filters;
pub mod pool;
mod prune;
pub mod slices;
pub mod splits;
pub mod stages;
pub mod statements;

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::execution::cache::Cache;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, CachedFileList, CachedFileMetadata, FileMetadataCache, FileStatisticsCache,
    ListFilesCache, TableScopedPath,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use squall_executor::context::{BROADCAST_JOIN_BYTES, BROADCAST_JOIN_ROWS};
use squall_executor::{
    METADATA_CACHE_BYTES, ObjectUrl, StoreRegistry, new_metadata_cache, squall_session_config,
};

use crate::error::{Result, SquallError};
use crate::tables::{ResolvedTable, TableGuard, TableSpec, register_table};
pub use broadcast::LateBroadcastLimits;
use datafusion::optimizer::Optimizer;
pub use key_filters::KeyFilterMode;
use pool::PlanBudget;
pub use splits::{MAX_SCAN_REQUESTS, ScanSplits, SplitScans};
use squall_executor::bounds::{CallBudget, ValueCaps, bounded_defaults};
pub use stages::{
    Cut, GatheredScan, InlineScans, Keep, KeyFilterSite, LateBroadcast, Stage, StageDag,
    StageOutput, cut_stages,
};

/// Default size of one scan task's input.
pub const DEFAULT_TARGET_PARTITION_BYTES: u64 = 128 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Width of every hash shuffle.
    pub shuffle_partitions: usize,
    /// Size of one scan task's input; larger Parquet files are split on row groups.
    pub target_partition_bytes: u64,
    /// Bounds of table listings (a shared server's; none for `squall run`).
    pub guard: TableGuard,
    /// A join broadcasts its build side to every probe task when the side is
    /// estimated at most this many rows and bytes; larger sides are shuffled.
    pub broadcast_rows: usize,
    pub broadcast_bytes: usize,
    /// Fewest tasks a scan is cut into, where it has that many files or row
    /// groups; None: `shuffle_partitions` (before any widening). With a wide
    /// shuffle that reduce stages coalesce, the executors are enough.
    pub min_scan_tasks: Option<usize>,
    /// Widen the shuffle with the data: None, `shuffle_partitions` is the width.
    pub widen: Option<Widen>,
    /// A scan is cut into `min_scan_tasks` only while each task still gets
    /// this many bytes: a task has a fixed cost (on Lambda an invocation,
    /// its requests and its PUT, ~0.1 s), and a thousand tasks of a few KiB
    /// each would also give every reader a thousand files to read. None:
    /// the backend's ([`MIN_SCAN_TASK_BYTES`] where it bills invocations,
    /// else none).
    pub min_scan_task_bytes: Option<u64>,
    /// When shuffled joins filter their probe side with their build side's
    /// keys (see [`key_filters`]).
    pub key_filters: KeyFilterMode,
    /// Which small tables a stage that joins with them scans itself rather
    /// than reading them from a stage of their own; None: every scan has
    /// its stage.
    pub inline_scans: Option<InlineScans>,
    /// How small the build side of a shuffled join whose probe side only
    /// scans a table must commit for the join to become a broadcast join
    /// (see [`broadcast`]); None: shuffled joins stay shuffled.
    pub late_broadcast: Option<LateBroadcastLimits>,
    /// Whether a hash join pushes a dynamic filter of its build side's keys
    /// (min/max, membership) into the scan of its probe side, as DataFusion
    /// does on one machine. It works where the join and the scan run in one
    /// task (a broadcast join over a scan): the scan skips the files and row
    /// groups whose statistics no build key falls in. Elsewhere it keeps
    /// every row.
    pub join_filters: bool,
}

/// [`PlanOptions::min_scan_task_bytes`] where tasks have a fixed cost worth
/// counting (Lambda): what a reduce task aims to read (the coalescing
/// target), ~0.45 s of a worker's transfer at 150 MB/s. A fifth of that
/// made the scale model's TPC-H SF 1000 suite cost 7 % more (BENCHMARKS.md).
pub const MIN_SCAN_TASK_BYTES: u64 = 64 << 20;

/// A shuffle width that grows with the bytes of the tables a query names: one
/// partition per `bytes_per_partition`, at least the configured width and at
/// most `max_partitions`. Reduce stages coalesce what turns out small, so a
/// width too generous costs little and one too narrow leaves every reduce
/// task a large share (TPC-H SF 10 on two executors: geometric mean of
/// squall/datafusion 1.44 at width 2, 1.18 at width 32; BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widen {
    pub bytes_per_partition: u64,
    pub max_partitions: usize,
}

impl Default for Widen {
    fn default() -> Self {
        Self {
            bytes_per_partition: DEFAULT_WIDEN_BYTES,
            max_partitions: DEFAULT_WIDEN_MAX,
        }
    }
}

impl Widen {
    /// The widening for a job on `workers` executors: up to a partition per
    /// worker past [`DEFAULT_WIDEN_MAX`] (at most [`MAX_WIDEN`]), so that a
    /// large shuffle still gives every worker a reduce task and reduce tasks
    /// a share their memory holds; a partition of a 1 TB shuffle at width
    /// 1,024 is 1 GB, and a second combine level cannot pay over partitions
    /// that large (see `scheduler::exchange`).
    pub fn for_workers(workers: usize) -> Self {
        Self {
            max_partitions: workers.clamp(DEFAULT_WIDEN_MAX, MAX_WIDEN),
            ..Self::default()
        }
    }
}

/// Table bytes per shuffle partition when the width follows the data.
pub const DEFAULT_WIDEN_BYTES: u64 = 64 << 20;
/// The most partitions a widened shuffle gets, however few the workers.
pub const DEFAULT_WIDEN_MAX: usize = 1024;
/// The most partitions a widened shuffle gets, however many the workers.
pub const MAX_WIDEN: usize = 16_384;

impl PlanOptions {
    /// The shuffle width for a query over tables of `table_bytes`.
    pub fn width_for(&self, table_bytes: u64) -> usize {
        let base = self.shuffle_partitions.max(1);
        match self.widen {
            None => base,
            Some(w) => {
                let wanted = table_bytes.div_ceil(w.bytes_per_partition.max(1));
                let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
                wanted.min(w.max_partitions).max(base)
            }
        }
    }
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            shuffle_partitions: default_parallelism(),
            target_partition_bytes: DEFAULT_TARGET_PARTITION_BYTES,
            guard: TableGuard::default(),
            broadcast_rows: BROADCAST_JOIN_ROWS,
            broadcast_bytes: BROADCAST_JOIN_BYTES,
            min_scan_tasks: None,
            widen: None,
            min_scan_task_bytes: None,
            key_filters: KeyFilterMode::default(),
            join_filters: true,
            inline_scans: Some(InlineScans::default()),
            late_broadcast: Some(LateBroadcastLimits::default()),
        }
    }
}

/// The number of cores, the default for executors and shuffle width.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Memory kept for per-file statistics between jobs.
const STATISTICS_CACHE_BYTES: usize = 16 << 20;
/// Bound of one job's listings handed to DataFusion (about a million files).
const JOB_LISTINGS_BYTES: usize = 256 << 20;

/// What planning keeps between jobs: Parquet footers and per-file statistics. An
/// entry is used only while the file's size and modification time are those of the
/// job's own listing, so a rewritten file is read again. Listings are never kept:
/// every job sees a table's files as they are when it is planned.
#[derive(Debug, Clone)]
pub struct PlanCaches {
    footers: Arc<FileMetadataCache>,
    statistics: Arc<FileStatisticsCache>,
}

impl Default for PlanCaches {
    fn default() -> Self {
        Self {
            footers: new_metadata_cache(),
            statistics: Arc::new(
                DefaultCache::<TableScopedPath, CachedFileMetadata>::new(STATISTICS_CACHE_BYTES)
                    .with_name("squall-file-statistics"),
            ),
        }
    }
}

impl PlanCaches {
    /// The caches of one job's planning session: the shared footers and statistics,
    /// and `listings`, this job's own listings (nothing is listed twice).
    fn config(&self, listings: Arc<ListFilesCache>) -> CacheManagerConfig {
        CacheManagerConfig::default()
            .with_file_metadata_cache(Some(self.footers.clone()))
            .with_metadata_cache_limit(METADATA_CACHE_BYTES)
            .with_file_statistics_cache(Some(self.statistics.clone()))
            .with_file_statistics_cache_limit(STATISTICS_CACHE_BYTES)
            .with_list_files_cache(Some(listings))
            .with_list_files_cache_limit(JOB_LISTINGS_BYTES)
    }
}

/// The files `resolve_table` kept for each prefix table, in the form DataFusion's
/// listing tables look up: DataFusion scans exactly the files the splits were
/// computed from, without a second LIST per table.
fn job_listings(tables: &[ResolvedTable]) -> Result<Arc<ListFilesCache>> {
    let cache = DefaultCache::<TableScopedPath, CachedFileList>::new(JOB_LISTINGS_BYTES)
        .with_name("squall-job-listings");
    for table in tables.iter().filter(|t| t.url.path().ends_with('/')) {
        let location = ObjectUrl::from_url(&table.url).map_err(|e| SquallError::Table {
            table: table.spec.name.clone(),
            message: e.to_string(),
        })?;
        let key = TableScopedPath {
            table: None,
            path: location.path().clone(),
        };
        cache.put(&key, CachedFileList::new(table.files.clone()));
    }
    Ok(Arc::new(cache))
}

/// A planned job: its stages and the tables it reads.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub dag: StageDag,
    pub tables: Vec<ResolvedTable>,
    /// DataFusion's physical plan before it was cut.
    pub physical_plan: Arc<dyn ExecutionPlan>,
    /// How its scans were cut (and weighed: [`ScanSplits::read_bytes`]).
    pub splits: Arc<ScanSplits>,
}

impl PlannedJob {
    /// Bytes of all files of all tables the query names (an upper bound of the scan).
    pub fn input_bytes(&self) -> u64 {
        self.tables.iter().map(ResolvedTable::total_bytes).sum()
    }
}

/// Plans `sql` over `tables`: shuffle files will go under `work_dir`, result files
/// under `result_dir`, with no time limit. Footers are read afresh; see
/// [`plan_job_within`] to keep them between jobs and bound the time.
pub async fn plan_job(
    sql: &str,
    tables: &[TableSpec],
    options: &PlanOptions,
    stores: Arc<StoreRegistry>,
    work_dir: &str,
    result_dir: &str,
) -> Result<PlannedJob> {
    let caches = PlanCaches::default();
    let budget = PlanBudget::unlimited();
    plan_job_within(
        sql, tables, options, stores, &caches, work_dir, result_dir, budget,
    )
    .await
}

/// [`plan_job`], reading footers and file statistics through `caches` and
/// stopping once `budget` is spent. The statement is held
/// to the bounds of [`guard`] and every stage's plan is proved to decode as
/// the executors will decode it, so nothing accepted fails later for its size
/// or depth. Run it on a thread with a large stack ([`pool`]).
#[allow(clippy::too_many_arguments)]
pub async fn plan_job_within(
    sql: &str,
    tables: &[TableSpec],
    options: &PlanOptions,
    stores: Arc<StoreRegistry>,
    caches: &PlanCaches,
    work_dir: &str,
    result_dir: &str,
    budget: Arc<PlanBudget>,
) -> Result<PlannedJob> {
    check_options(options)?;
    check_unique_names(tables)?;
    let started = std::time::Instant::now();
    // Parse first: a rejected statement or a syntax error costs no listing, and
    // only the tables the query names are listed and read.
    let (statement, named) = parse_checked(sql)?;
    let used: Vec<&TableSpec> = tables
        .iter()
        .filter(|t| {
            named
                .iter()
                .any(|n| *n == t.name || n.eq_ignore_ascii_case(&t.name))
        })
        .collect();

    // The store of a table's URL; failing names the table.
    let store_of = |table: &str, url: &url::Url| {
        stores.get_store(url).map_err(|e| SquallError::Table {
            table: table.to_string(),
            message: e.to_string(),
        })
    };
    // Tables are listed concurrently; partitioned ones only where the
    // query can read.
    let resolved =
        prune::resolve_tables(&statement, &used, options, &stores, caches, &budget).await?;
    let listed = started.elapsed();
    let min_scan_tasks = options
        .min_scan_tasks
        .unwrap_or(options.shuffle_partitions)
        .max(1);
    let width = options.width_for(resolved.iter().map(|t| t.total_bytes()).sum());
    let options = &PlanOptions {
        shuffle_partitions: width,
        ..options.clone()
    };
    let splits = ScanSplits::compute(
        &resolved,
        |t| store_of(&t.spec.name, &t.url),
        &caches.footers,
        options.target_partition_bytes,
        min_scan_tasks,
        options.min_scan_task_bytes.unwrap_or(0),
    )
    .await?;
    let splits = Arc::new(splits);

    let listings = job_listings(&resolved)?;
    let ctx = session(
        stores,
        caches.config(listings),
        splits.clone(),
        options,
        &budget,
    )?;
    let session_built = started.elapsed();
    futures::future::try_join_all(resolved.iter().map(|table| register_table(&ctx, table))).await?;
    let registered = started.elapsed();
    let physical_plan = physical_plan(&ctx, statement).await?;
    let physical_plan = generated::unproject_generated(physical_plan)
        .map_err(|source| SquallError::Internal { source })?;
    let optimized = started.elapsed();
    let distributable =
        joins::distributable_joins(physical_plan.clone(), options.shuffle_partitions)
            .map_err(|source| SquallError::Internal { source })?;
    let distributed = started.elapsed();
    let mut dag = cut_with_key_filters(distributable, work_dir, result_dir, options, &splits)
        .map_err(|source| SquallError::Internal { source })?;
    let cut = started.elapsed();
    // ~0.2 ms a TPC-H SF 1 stage (encode 74 us, decode 114 us; BENCHMARKS.md).
    prove_stages(&mut dag, &ctx.task_ctx())?;
    tracing::debug!(
        listed_us = listed.as_micros() as u64,
        session_us = session_built.as_micros() as u64,
        registered_us = registered.as_micros() as u64,
        optimized_us = optimized.as_micros() as u64,
        distributed_us = distributed.as_micros() as u64,
        cut_us = cut.as_micros() as u64,
        proved_us = started.elapsed().as_micros() as u64,
        "planning steps (cumulative)"
    );
    Ok(PlannedJob {
        dag,
        tables: resolved,
        physical_plan,
        splits,
    })
}

/// Cuts `plan` into stages and plans its key filters. Small scans are read
/// where they are gathered ([`InlineScans`]) but for those whose stages key
/// filters would use (a small filtered table is often what filters a large
/// one, through another small one): those are found in a first cut that
/// keeps every small scan's stage (with key filters off, none is needed).
fn cut_with_key_filters(
    plan: Arc<dyn ExecutionPlan>,
    work_dir: &str,
    result_dir: &str,
    options: &PlanOptions,
    splits: &ScanSplits,
) -> std::result::Result<StageDag, datafusion::common::DataFusionError> {
    let cut = |keep: &Keep| {
        let mut cut = cut_stages(
            plan.clone(),
            work_dir,
            result_dir,
            options.inline_scans,
            keep,
        )?;
        for stage in &mut cut.dag.stages {
            stage.read_bytes = splits.read_bytes(&stage.plan);
        }
        cut.dag.key_filters = key_filters::plan_key_filters(&mut cut.dag, options.key_filters);
        if let Some(limits) = options.late_broadcast {
            cut.dag.late_broadcasts = broadcast::late_broadcasts(&cut.dag, limits);
        }
        Ok::<_, datafusion::common::DataFusionError>(cut)
    };
    // Without key filters no small scan needs its stage: one cut.
    let first = match options.key_filters {
        KeyFilterMode::Off => cut(&Keep::These(HashSet::new()))?,
        _ => cut(&Keep::All)?,
    };
    if first.inlinable.is_empty() {
        return Ok(first.dag);
    }
    let used: HashSet<u32> = first
        .dag
        .key_filters
        .iter()
        .flat_map(|site| [site.source, site.target])
        .collect();
    let keep = first
        .inlinable
        .iter()
        .filter(|(stage, _)| used.contains(stage))
        .map(|(_, scan)| *scan)
        .collect();
    Ok(cut(&Keep::These(keep))?.dag)
}

/// Options no plan can be made with.
fn check_options(options: &PlanOptions) -> Result<()> {
    if options.shuffle_partitions == 0 {
        return Err(SquallError::InvalidArgument(
            "shuffle partitions must be at least 1".into(),
        ));
    }
    if options.target_partition_bytes == 0 {
        return Err(SquallError::InvalidArgument(
            "target partition bytes must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The statement of `sql`, held to the bounds of [`guard`], and the names of
/// the tables it reads.
fn parse_checked(sql: &str) -> Result<(DfStatement, Vec<String>)> {
    guard::check_text(sql)?;
    let parser = SessionStateBuilder::new()
        .with_config(squall_session_config())
        .build();
    let statement = parse_query(&parser, sql)?;
    if let DfStatement::Statement(query) = &statement {
        guard::check_statement(query)?;
    }
    let named: Vec<String> = parser
        .resolve_table_references(&statement)
        .map_err(SquallError::from_planning)?
        .iter()
        .map(|r| r.table().to_string())
        .collect();
    Ok((statement, named))
}

fn check_unique_names(tables: &[TableSpec]) -> Result<()> {
    let mut names: Vec<String> = tables.iter().map(|t| t.name.to_ascii_lowercase()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(SquallError::InvalidArgument(format!(
            "table '{}' is given twice",
            w[0]
        )));
    }
    Ok(())
}

/// Refuses a DAG a stage of which the executors could not decode (protobuf
/// decoders stop at a nesting depth): each stage's plan, as its first task
/// gets it, is encoded and decoded as an executor would (`ctx` resolves the
/// same function names to the same functions). A plan every task gets whole
/// keeps its encoding, which the scheduler sends.
fn prove_stages(dag: &mut StageDag, ctx: &datafusion::execution::TaskContext) -> Result<()> {
    for stage in &mut dag.stages {
        let undecodable = |e: datafusion::error::DataFusionError| SquallError::PlanUndecodable {
            stage: stage.id,
            message: e.to_string(),
        };
        let plan = stage.task_plan(0).map_err(undecodable)?;
        let bytes = squall_executor::encode_plan(plan).map_err(undecodable)?;
        squall_executor::decode_plan(&bytes, ctx, []).map_err(undecodable)?;
        if !stage.sliced_scans {
            stage.encoded = Some(Arc::new(bytes));
        }
    }
    Ok(())
}

fn session(
    stores: Arc<StoreRegistry>,
    caches: CacheManagerConfig,
    splits: Arc<ScanSplits>,
    options: &PlanOptions,
    budget: &Arc<PlanBudget>,
) -> Result<SessionContext> {
    let mut config = squall_session_config().with_target_partitions(options.shuffle_partitions);
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = options.broadcast_bytes;
    optimizer.hash_join_single_partition_threshold_rows = options.broadcast_rows;
    optimizer.enable_join_dynamic_filter_pushdown = options.join_filters;
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(stores)
        .with_cache_manager(caches)
        .build_arc()
        .map_err(|source| SquallError::Internal { source })?;
    let mut rules = PhysicalOptimizer::new().rules;
    rules.insert(0, Arc::new(SplitScans::new(splits)));
    // Constant folding builds values with the same functions the executors
    // run, held to the folding caps; every rule is followed by a guard.
    let functions = bounded_defaults(
        ValueCaps::FOLDING,
        Some(budget.clone() as Arc<dyn CallBudget>),
    );
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_scalar_functions(functions)
        .with_optimizer_rules(guard::PlanGuard::around(Optimizer::new().rules, budget))
        .with_physical_optimizer_rules(guard::PhysicalGuard::around(rules, budget))
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Parses `sql` and refuses anything but one read-only query.
fn parse_query(state: &SessionState, sql: &str) -> Result<DfStatement> {
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(SquallError::from_planning)?;
    match &statement {
        DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => Ok(statement),
        DfStatement::Statement(s) => Err(SquallError::Rejected {
            reason: statement_kind(s),
        }),
        other => Err(SquallError::Rejected {
            reason: format!("{} statements are not queries", df_statement_kind(other)),
        }),
    }
}

/// DataFusion's physical plan of a parsed query.
async fn physical_plan(
    ctx: &SessionContext,
    statement: DfStatement,
) -> Result<Arc<dyn ExecutionPlan>> {
    let state = ctx.state();
    let logical = state
        .statement_to_plan(statement)
        .await
        .map_err(SquallError::from_planning)?;
    state
        .create_physical_plan(&logical)
        .await
        .map_err(SquallError::from_planning)
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let keyword = match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "SHOW" | "TRUNCATE"
            ) =>
        {
            format!("{first} {second}")
        }
        [first, ..] => first.to_string(),
        [] => "empty".to_string(),
    };
    format!("{} is not a query", keyword.to_ascii_uppercase())
}

fn df_statement_kind(statement: &DfStatement) -> &'static str {
    match statement {
        DfStatement::Statement(_) => "SQL",
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Explain(_) => "EXPLAIN",
        DfStatement::Reset(_) => "RESET",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_cap_follows_the_workers() {
        assert_eq!(Widen::for_workers(2), Widen::default());
        assert_eq!(Widen::for_workers(1000).max_partitions, DEFAULT_WIDEN_MAX);
        assert_eq!(Widen::for_workers(10_000).max_partitions, 10_000);
        assert_eq!(Widen::for_workers(1 << 20).max_partitions, MAX_WIDEN);
        // A 1 TB shuffle on 10,000 workers: a partition each, not 1,024.
        let options = PlanOptions {
            shuffle_partitions: 10_000,
            widen: Some(Widen::for_workers(10_000)),
            ..PlanOptions::default()
        };
        assert_eq!(options.width_for(1 << 40), 10_000);
    }

    #[test]
    fn the_width_follows_the_tables_between_the_base_and_the_cap() {
        let fixed = PlanOptions {
            shuffle_partitions: 4,
            ..PlanOptions::default()
        };
        assert_eq!(fixed.width_for(100 << 30), 4, "no widening asked for");
        let widened = PlanOptions {
            widen: Some(Widen::default()),
            ..fixed.clone()
        };
        assert_eq!(widened.width_for(0), 4, "never below the base");
        assert_eq!(widened.width_for(64 << 20), 4);
        assert_eq!(
            widened.width_for((640 << 20) + 1),
            11,
            "one per 64 MiB, rounded up"
        );
        assert_eq!(widened.width_for(1 << 50), DEFAULT_WIDEN_MAX, "capped");
        let wide_base = PlanOptions {
            shuffle_partitions: 2000,
            ..widened
        };
        assert_eq!(
            wide_base.width_for(1 << 50),
            2000,
            "the cap never narrows the base"
        );
    }
}
