//! `run_task`: the one entry point that runs a TaskSpec. The in-process backend and
//! the Lambda handler both call it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tracing::Instrument;

use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};

use crate::codec::decode_plan;
use crate::combine::combine;
use crate::context::{ExecutorContext, TaskAttempt, task_cache_config};
use crate::hedge::Hedger;
use crate::keys;
use crate::partitions::{makes_join_filters, narrow, scan_config};
use crate::protocol::{
    FailureKind, OutputFile, TaskAction, TaskFailure, TaskMetrics, TaskOutcome, TaskResult,
    TaskSpec, WIRE_VERSION,
};
use crate::root::stage_writer;
use crate::shuffle::writer::RAW_BYTES_METRIC;
use crate::stop::{StopFlag, stoppable};
use crate::stores::StoreRegistry;
use crate::telemetry;
use crate::usage::{RequestCounter, TaskUsage};

/// Runs one task attempt. Never panics on a bad spec: every failure is a typed
/// `TaskOutcome::Failed` that says whether a retry can help.
pub async fn run_task(ctx: &ExecutorContext, spec: TaskSpec) -> TaskResult {
    run_task_until(ctx, spec, None).await
}

/// [`run_task`], ending (failed) within a batch of each operator once `stop`
/// is raised.
pub async fn run_task_stoppable(
    ctx: &ExecutorContext,
    spec: TaskSpec,
    stop: StopFlag,
) -> TaskResult {
    run_task_until(ctx, spec, Some(stop)).await
}

async fn run_task_until(
    ctx: &ExecutorContext,
    spec: TaskSpec,
    stop: Option<StopFlag>,
) -> TaskResult {
    let span = tracing::info_span!(
        "task",
        job = %spec.id.job_id,
        stage = spec.id.stage_id,
        task = spec.id.task,
        attempt = spec.id.attempt,
    );
    // Run apart from the attempt that sent it (a spawned task, another
    // process), the task joins the attempt's trace through its spec.
    if tracing::Span::current().is_none() {
        telemetry::set_parent(&span, spec.trace_context.as_deref());
    }
    run_task_in_span(ctx, spec, stop).instrument(span).await
}

async fn run_task_in_span(
    ctx: &ExecutorContext,
    spec: TaskSpec,
    stop: Option<StopFlag>,
) -> TaskResult {
    let started = Instant::now();
    let id = spec.id.clone();
    let requests = RequestCounter::new();
    let hedger = Hedger::new(spec.hedging.clone(), requests.clone());
    let mut cpu_ms = 0;
    let outcome = if spec.wire_version != WIRE_VERSION {
        TaskOutcome::Failed(TaskFailure {
            kind: FailureKind::WireVersion,
            message: format!(
                "task spec has wire version {}, this executor speaks {WIRE_VERSION}",
                spec.wire_version
            ),
            retryable: false,
        })
    } else if spec.action == TaskAction::Ping {
        TaskOutcome::Succeeded {
            output: OutputFile {
                url: String::new(),
                keys: vec![],
                size: 0,
                partitions: vec![],
            },
            metrics: TaskMetrics::default(),
        }
    } else {
        match run(ctx, spec, stop, &requests, &hedger, &mut cpu_ms).await {
            Ok((output, metrics)) => TaskOutcome::Succeeded { output, metrics },
            Err(failure) => TaskOutcome::Failed(failure),
        }
    };
    TaskResult {
        wire_version: WIRE_VERSION,
        id,
        outcome,
        usage: TaskUsage {
            reported: true,
            requests: requests.snapshot(),
            duration_ms: started.elapsed().as_millis() as u64,
            cpu_ms,
            function: None,
            read_p95_ms: hedger.quantile().map(|d| d.as_millis() as u64),
        },
    }
}

async fn run(
    ctx: &ExecutorContext,
    spec: TaskSpec,
    stop: Option<StopFlag>,
    requests: &Arc<RequestCounter>,
    hedger: &Arc<Hedger>,
    cpu_ms: &mut u64,
) -> std::result::Result<(OutputFile, TaskMetrics), TaskFailure> {
    let started = Instant::now();
    let pool = Arc::new(PeakPool::new(spec.memory_limit_bytes as usize));
    let stores = Arc::new(ctx.stores.counted(requests.clone()).hedged(hedger.clone()));
    let task_ctx =
        task_context(ctx, stores.clone(), &spec, pool.clone()).map_err(|e| classify(&e))?;
    if spec.action == TaskAction::Combine {
        return combine(&task_ctx, &stores, &spec)
            .await
            .map_err(|e| classify(&e));
    }
    let context_us = started.elapsed().as_micros() as u64;
    let decoding = tracing::info_span!("decode", plan_bytes = spec.plan.len());
    let plan = decoding
        .in_scope(|| decode_plan(&spec.plan, &task_ctx, spec.inputs))
        .map_err(|e| TaskFailure {
            kind: FailureKind::PlanDecode,
            message: format!("cannot decode the stage plan: {e}"),
            retryable: false,
        })?;
    let partition = spec.partition.unwrap_or(spec.id.task) as usize;
    let (plan, partition, task_ctx) = decoding
        .in_scope(|| for_task(plan, partition, task_ctx))
        .map_err(|e| classify(&e))?;
    let plan = match &stop {
        Some(flag) => stoppable(plan, flag).map_err(|e| classify(&e))?,
        None => plan,
    };
    let decoded_us = started.elapsed().as_micros() as u64;
    // Reading the inputs, computing and writing the output stream together:
    // one span, its counters set when it ends.
    let executing = tracing::info_span!(
        "execute",
        rows_in = tracing::field::Empty,
        bytes_in = tracing::field::Empty,
        rows_out = tracing::field::Empty,
        bytes_out = tracing::field::Empty,
    );
    let written = match stage_writer(plan.as_ref()) {
        Some(writer) => {
            writer
                .write(partition, task_ctx, &spec.id)
                .instrument(executing.clone())
                .await
        }
        None => internal_err!(
            "a stage plan must end in a Squall writer, not {}",
            plan.name()
        ),
    };
    let mut cpu_us = cpu_by_operator(&plan);
    *cpu_ms = cpu_us.values().sum::<u64>() / 1000;
    let output = written.map_err(|e| classify(&e))?;
    let mut metrics = collect_metrics(&plan);
    // The task's steps before its operators (wall time, on one core).
    cpu_us.insert("(task context)".into(), context_us);
    cpu_us.insert("(plan decode)".into(), decoded_us - context_us);
    metrics.cpu_us = cpu_us;
    metrics.operator_output = output_by_operator(&plan);
    metrics.rows_out = output.partitions.iter().map(|s| s.rows).sum();
    metrics.bytes_out = output.size;
    metrics.elapsed_ms = started.elapsed().as_millis() as u64;
    executing.record("rows_in", metrics.rows_in);
    executing.record("bytes_in", metrics.bytes_in);
    executing.record("rows_out", metrics.rows_out);
    executing.record("bytes_out", metrics.bytes_out);
    drop(executing);
    tracing::debug!(
        task = %spec.id,
        context_us,
        decoded_us,
        done_us = started.elapsed().as_micros() as u64,
        "task steps (cumulative)"
    );
    metrics.peak_memory_bytes = pool.peak() as u64;
    Ok((output, metrics))
}

/// The plan the task runs, the partition of it, and the context to run it in.
/// A plan whose hash joins made dynamic filters for their probe sides runs as
/// a plan of one partition where it can ([`narrow`]): its joins then fill their
/// filters as they would in DataFusion. Elsewhere the joins are told not to
/// (they would wait for partitions no task of theirs runs), and their filters
/// keep every row.
fn for_task(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    ctx: Arc<TaskContext>,
) -> Result<(Arc<dyn ExecutionPlan>, usize, Arc<TaskContext>)> {
    let (plan, partition, join_filters) = if !makes_join_filters(&plan) {
        (plan, partition, false)
    } else if plan.properties().partitioning.partition_count() <= 1 {
        (plan, partition, true)
    } else {
        match narrow(&plan, partition)? {
            Some(narrowed) => (narrowed, 0, true),
            None => (plan, partition, false),
        }
    };
    let options = ctx.session_config().options();
    if options.optimizer.enable_join_dynamic_filter_pushdown == join_filters {
        return Ok((plan, partition, ctx));
    }
    let mut config = ctx.session_config().clone();
    config
        .options_mut()
        .optimizer
        .enable_join_dynamic_filter_pushdown = join_filters;
    match Arc::try_unwrap(ctx) {
        Ok(ctx) => Ok((plan, partition, Arc::new(ctx.with_session_config(config)))),
        // Filters left unfilled keep every row.
        Err(ctx) if join_filters => Ok((plan, partition, ctx)),
        Err(_) => internal_err!("the task context is shared before its plan runs"),
    }
}

fn task_context(
    ctx: &ExecutorContext,
    stores: Arc<StoreRegistry>,
    spec: &TaskSpec,
    pool: Arc<PeakPool>,
) -> Result<Arc<TaskContext>> {
    let mut config = ctx.functions.config().clone();
    for (key, value) in &spec.session_options {
        config.options_mut().set(key, value)?;
    }
    let config = config.with_extension(Arc::new(TaskAttempt {
        id: spec.id.clone(),
        spill_dir: ctx.spill_dir.clone(),
        shuffle_codec: spec.shuffle_codec,
    }));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![ctx.spill_dir.clone()])),
        )
        .with_object_store_registry(stores)
        .with_cache_manager(task_cache_config(&ctx.footers))
        .build_arc()?;
    let state = &ctx.functions;
    Ok(Arc::new(TaskContext::new(
        Some(spec.id.to_string()),
        spec.id.job_id.clone(),
        config,
        state.scalar_functions().clone(),
        state.higher_order_functions().clone(),
        state.aggregate_functions().clone(),
        state.window_functions().clone(),
        runtime,
    )))
}

/// Maps an error to a task failure, deciding here whether a retry can help.
pub fn classify(error: &DataFusionError) -> TaskFailure {
    let message = error.to_string();
    let (kind, retryable) = match error.find_root() {
        DataFusionError::ObjectStore(e) => match e.as_ref() {
            object_store::Error::NotFound { .. } => (FailureKind::NotFound, false),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => (FailureKind::Storage, false),
            _ => (FailureKind::Storage, true),
        },
        DataFusionError::IoError(_) => (FailureKind::Storage, true),
        DataFusionError::ResourcesExhausted(_) => (FailureKind::ResourcesExhausted, false),
        DataFusionError::Internal(_) => (FailureKind::Internal, false),
        DataFusionError::External(e) => match e.downcast_ref::<object_store::Error>() {
            Some(object_store::Error::NotFound { .. }) => (FailureKind::NotFound, false),
            Some(_) => (FailureKind::Storage, true),
            None => (FailureKind::Execution, false),
        },
        _ => (FailureKind::Execution, false),
    };
    TaskFailure {
        kind,
        message,
        retryable,
    }
}

/// The bytes a CSV or JSON scan read: the files (or byte ranges of files) of
/// the partitions it ran. DataFusion counts `bytes_scanned` for Parquet only;
/// without this a text table's job would show, and be charged, none.
fn text_scan_bytes(node: &Arc<dyn ExecutionPlan>, set: &MetricsSet) -> u64 {
    let Some(config) = scan_config(node) else {
        return 0;
    };
    if config.file_source().file_type() == "parquet" {
        return 0;
    }
    let ran: HashSet<usize> = set
        .iter()
        .filter(|m| matches!(m.value(), MetricValue::OutputRows(_)))
        .filter_map(|m| m.partition())
        .collect();
    config
        .file_groups
        .iter()
        .enumerate()
        .filter(|(partition, _)| ran.contains(partition))
        .flat_map(|(_, group)| group.files())
        .map(|file| match &file.range {
            Some(range) => (range.end - range.start).max(0) as u64,
            None => file.object_meta.size,
        })
        .sum()
}

/// Rows and bytes the plan's leaves read (table scans and shuffle readers).
fn collect_metrics(plan: &Arc<dyn ExecutionPlan>) -> TaskMetrics {
    let mut metrics = TaskMetrics::default();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        let children = node.children();
        if let Some(set) = node.metrics() {
            let text = text_scan_bytes(&node, &set);
            metrics.bytes_in += text;
            metrics.bytes_scanned += text;
            for metric in set.iter() {
                match metric.value() {
                    MetricValue::OutputRows(count) if children.is_empty() => {
                        metrics.rows_in += count.value() as u64
                    }
                    MetricValue::SpilledBytes(count) => {
                        metrics.spilled_bytes += count.value() as u64
                    }
                    MetricValue::Count { name, count } if name == "bytes_scanned" => {
                        metrics.bytes_in += count.value() as u64;
                        metrics.bytes_scanned += count.value() as u64;
                    }
                    MetricValue::Count { name, count } if name == RAW_BYTES_METRIC => {
                        metrics.raw_bytes_out += count.value() as u64
                    }
                    MetricValue::Count { name, count } if name == "bytes_read" => {
                        metrics.bytes_in += count.value() as u64
                    }
                    MetricValue::Count { name, count } if name == keys::ROWS_REMOVED_METRIC => {
                        metrics.key_filter_rows_removed += count.value() as u64
                    }
                    _ => {}
                }
            }
        }
        stack.extend(children.into_iter().cloned());
    }
    metrics
}

/// The compute time each operator of an executed `plan` measured, in
/// microseconds, summed by operator name (`elapsed_compute`, or a file
/// scan's `time_elapsed_processing`): where a plan's CPU goes, the same for
/// a stage's plan and a single-node one.
pub fn cpu_by_operator(plan: &Arc<dyn ExecutionPlan>) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        if let Some(set) = node.metrics() {
            let mut nanos = 0u64;
            for metric in set.iter() {
                match metric.value() {
                    MetricValue::ElapsedCompute(time) => nanos += time.value() as u64,
                    MetricValue::Time { name, time } if name == "time_elapsed_processing" => {
                        nanos += time.value() as u64
                    }
                    _ => {}
                }
            }
            *by_name.entry(node.name().to_string()).or_insert(0) += nanos / 1000;
        }
        stack.extend(node.children().into_iter().cloned());
    }
    by_name
}

/// Rows and bytes each operator of `plan` (run) produced, by name.
pub fn output_by_operator(plan: &Arc<dyn ExecutionPlan>) -> BTreeMap<String, (u64, u64)> {
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        if let Some(set) = node.metrics() {
            let (mut rows, mut bytes) = (0u64, 0u64);
            for metric in set.iter() {
                match metric.value() {
                    MetricValue::OutputRows(count) => rows += count.value() as u64,
                    MetricValue::OutputBytes(count) => bytes += count.value() as u64,
                    _ => {}
                }
            }
            let entry = by_name.entry(node.name().to_string()).or_default();
            entry.0 += rows;
            entry.1 += bytes;
        }
        stack.extend(node.children().into_iter().cloned());
    }
    by_name
}

impl std::fmt::Display for PeakPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peak {} bytes)", self.inner, self.peak())
    }
}

/// A fair spill pool that remembers the most it ever held.
#[derive(Debug)]
struct PeakPool {
    inner: FairSpillPool,
    peak: AtomicUsize,
}

impl PeakPool {
    fn new(limit: usize) -> Self {
        Self {
            inner: FairSpillPool::new(limit),
            peak: AtomicUsize::new(0),
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note(&self) {
        self.peak
            .fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }
}

impl MemoryPool for PeakPool {
    fn name(&self) -> &str {
        "squall_peak_fair_spill_pool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.note();
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.note();
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_is_decided_from_the_root_cause() {
        let not_found = DataFusionError::ObjectStore(Box::new(object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        }));
        let f = classify(&not_found.context("reading input"));
        assert_eq!(f.kind, FailureKind::NotFound);
        assert!(!f.retryable);

        let flaky = DataFusionError::ObjectStore(Box::new(object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        }));
        assert!(classify(&flaky).retryable);
        let oom = DataFusionError::ResourcesExhausted("no".into());
        assert!(!classify(&oom).retryable);
        let plan = DataFusionError::Plan("bad".into());
        assert_eq!(classify(&plan).kind, FailureKind::Execution);
    }
}
