//! `ShuffleReaderExec`: starts a stage that consumes another stage's shuffle files.
//!
//! The planner leaves the reader unbound (it knows the input stage, its schema and
//! its partition count); when a task's plan is decoded, the codec binds it to the
//! committed outputs listed in the TaskSpec. A reader partition issues one ranged GET
//! per producer that has rows for it, many producers at once.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::format::decode_partition;
use crate::protocol::{PartitionSlot, StageInput};
use crate::stores::ObjectUrl;
use crate::usage::ThreadCpuTimer;

/// Ranged GETs one reader partition keeps in flight.
const FETCH_CONCURRENCY: usize = 16;

/// How reader partitions map onto the producers' files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Reader partition `p` is partition `p` of every producer (hash shuffles, and
    /// gathers, which have one partition).
    Partitioned,
    /// Reader partition `j` is the whole output of producer `j` (keeps each
    /// producer's sorted run apart for a sort-preserving merge).
    ByProducer,
}

#[derive(Debug, Clone)]
pub struct ShuffleReaderExec {
    stage_id: u32,
    schema: SchemaRef,
    mode: ReadMode,
    partitions: usize,
    input: Option<Arc<StageInput>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// An unbound reader of `stage_id` with `partitions` output partitions.
    pub fn new(stage_id: u32, schema: SchemaRef, mode: ReadMode, partitions: usize) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            stage_id,
            schema,
            mode,
            partitions,
            input: None,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same reader bound to the committed outputs of its input stage.
    pub fn bind(mut self, input: Arc<StageInput>) -> Result<Self> {
        if input.stage_id != self.stage_id {
            return internal_err!(
                "reader of stage {} bound to outputs of stage {}",
                self.stage_id,
                input.stage_id
            );
        }
        // Readers by producer may see fewer producers than partitions: the
        // input stage's tasks read several partitions each (coalesced); the
        // partitions past its producers are empty.
        let consistent = match (self.mode, input.slice) {
            (_, Some(s)) if s.is_empty() || s.end as usize > self.partitions => false,
            (ReadMode::Partitioned, None) => input
                .producers
                .iter()
                .all(|p| p.partitions.len() == self.partitions),
            (ReadMode::Partitioned, Some(s)) => input
                .producers
                .iter()
                .all(|p| p.partitions.len() == s.len()),
            (ReadMode::ByProducer, None) => input.producers.len() <= self.partitions,
            (ReadMode::ByProducer, Some(s)) => input.producers.len() <= s.len(),
        };
        if !consistent {
            return internal_err!(
                "outputs of stage {} do not match its reader ({} partitions, {:?})",
                self.stage_id,
                self.partitions,
                self.mode
            );
        }
        self.input = Some(input);
        Ok(self)
    }

    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The ranged GETs reader partition `partition` makes: one per producer file,
    /// covering that file's non-empty partitions it reads (adjacent in the file).
    fn fetches(&self, partition: usize) -> Result<Vec<Fetch>> {
        let Some(input) = &self.input else {
            return internal_err!(
                "ShuffleReaderExec of stage {} was not bound to its input",
                self.stage_id
            );
        };
        if partition >= self.partitions {
            return internal_err!(
                "ShuffleReaderExec of stage {} has no partition {partition}",
                self.stage_id
            );
        }
        // A sliced input holds only the partitions its task reads, and the
        // task's partition (the slice's first) returns all of them.
        let pieces: Vec<(&String, PartitionSlot)> = match (input.slice, self.mode) {
            (Some(s), _) if s.start as usize != partition => {
                return internal_err!(
                    "ShuffleReaderExec of stage {} was given partitions {}..{} only, not {partition}",
                    self.stage_id,
                    s.start,
                    s.end
                );
            }
            (Some(_), _) => input
                .producers
                .iter()
                .flat_map(|p| p.partitions.iter().map(move |s| (&p.url, *s)))
                .collect(),
            (None, ReadMode::Partitioned) => input
                .producers
                .iter()
                .map(|p| (&p.url, p.partitions[partition]))
                .collect(),
            (None, ReadMode::ByProducer) => input
                .producers
                .get(partition)
                .into_iter()
                .flat_map(|p| p.partitions.iter().map(move |s| (&p.url, *s)))
                .collect(),
        };
        let mut fetches: Vec<Fetch> = Vec::new();
        for (url, slot) in pieces.into_iter().filter(|(_, slot)| slot.rows > 0) {
            match fetches.last_mut() {
                Some(last) if last.url == *url && last.end() == slot.offset => {
                    last.lengths.push(slot.length)
                }
                _ => fetches.push(Fetch {
                    url: url.clone(),
                    offset: slot.offset,
                    lengths: vec![slot.length],
                }),
            }
        }
        Ok(fetches)
    }
}

/// One ranged GET: `lengths` are the consecutive partition streams it holds.
#[derive(Debug)]
struct Fetch {
    url: String,
    offset: u64,
    lengths: Vec<u64>,
}

impl Fetch {
    fn end(&self) -> u64 {
        self.offset + self.lengths.iter().sum::<u64>()
    }

    /// Decodes every partition stream of the fetched bytes, in order.
    fn decode(&self, bytes: Bytes) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        let mut start = 0usize;
        for &length in &self.lengths {
            let end = start + length as usize;
            if end > bytes.len() {
                return internal_err!("shuffle file {} is shorter than its index says", self.url);
            }
            batches.extend(decode_partition(bytes.slice(start..end))?);
            start = end;
        }
        Ok(batches)
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = match self.mode {
            ReadMode::Partitioned => "partitioned",
            ReadMode::ByProducer => "by_producer",
        };
        write!(
            f,
            "ShuffleReaderExec: stage={}, partitions={}, mode={mode}",
            self.stage_id, self.partitions
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ShuffleReaderExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let fetches = self.fetches(partition)?;
        let bytes_read = MetricBuilder::new(&self.metrics).counter("bytes_read", partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let compute = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let env = context.runtime_env();
        let fetches = futures::stream::iter(fetches).map(move |fetch| {
            let env = env.clone();
            let bytes_read = bytes_read.clone();
            let compute = compute.clone();
            async move {
                let target = ObjectUrl::parse(&fetch.url)?;
                let store = env.object_store(target.store_url())?;
                let bytes = store
                    .get_range(target.path(), fetch.offset..fetch.end())
                    .await
                    .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
                bytes_read.add(bytes.len());
                // Decoding is CPU work; keep it off the reactor thread.
                tokio::task::spawn_blocking(move || {
                    let _cpu = ThreadCpuTimer::start(&compute);
                    fetch.decode(bytes)
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        });
        let batches = fetches
            .buffer_unordered(FETCH_CONCURRENCY)
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten()
            .inspect_ok(move |b| output_rows.add(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            batches,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
