//! The node that ends every stage plan: it runs the task's one partition and
//! writes it as one object per attempt, named by the attempt.
//!
//! # What belongs here
//! [`WriterExec`], the one plan node for both kinds of stage output, generic
//! over [`WriterKind`] (shuffle files, result files: see `shuffle::writer` and
//! `result_writer`); [`StageWriter`], what the executor and the control plane
//! ask of a stage's writer whatever its kind, and [`stage_writer`], which finds
//! it at a plan's root. What a kind writes, and how, lives with the kind.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::future::BoxFuture;

use crate::context::TaskAttempt;
use crate::protocol::{OutputFile, TaskId};
use crate::stores::ObjectUrl;

/// What a kind of stage output is: where an attempt's object goes, and how the
/// partition is written there.
pub trait WriterKind: fmt::Debug + Clone + Send + Sync + 'static {
    /// The plan node's name.
    const NAME: &'static str;

    /// The folder (URL) the kind's objects go in.
    fn dir(&self) -> &str;

    /// The name of the object one attempt of one task writes in [`dir`](Self::dir):
    /// it names the attempt (task, run, attempt; for results also the job).
    fn object_name(&self, task: &TaskId) -> String;

    /// The object one attempt of one task writes.
    fn output_url(&self, task: &TaskId) -> String {
        format!(
            "{}/{}",
            self.dir().trim_end_matches('/'),
            self.object_name(task)
        )
    }

    /// Runs the input's partition and writes it as the attempt's object.
    fn write(&self, call: WriteCall<'_>) -> impl Future<Output = Result<OutputFile>> + Send;

    /// The expressions the kind holds (a hash shuffle's keys).
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// What `EXPLAIN` shows after the node's name.
    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result;
}

/// What a writer is asked to write: partition `partition` of `input`, as
/// `task`'s object, counting into `metrics`.
pub struct WriteCall<'a> {
    pub input: &'a Arc<dyn ExecutionPlan>,
    pub metrics: &'a ExecutionPlanMetricsSet,
    pub partition: usize,
    pub ctx: Arc<TaskContext>,
    pub task: &'a TaskId,
}

type CallParts<'a> = (
    &'a Arc<dyn ExecutionPlan>,
    &'a ExecutionPlanMetricsSet,
    usize,
    Arc<TaskContext>,
    &'a TaskId,
);

/// Where an attempt's object goes.
pub struct Target {
    pub url: String,
    pub path: object_store::path::Path,
    pub store: Arc<dyn object_store::ObjectStore>,
}

impl<'a> WriteCall<'a> {
    /// The object this attempt of a `kind` writer writes, and its store.
    pub fn target(&self, kind: &impl WriterKind) -> Result<Target> {
        let url = kind.output_url(self.task);
        let parsed = ObjectUrl::parse(&url)?;
        let store = self.ctx.runtime_env().object_store(parsed.store_url())?;
        Ok(Target {
            path: parsed.path().clone(),
            url,
            store,
        })
    }

    /// Input, metrics, partition, task context and task, in that order.
    pub fn into_parts(self) -> CallParts<'a> {
        (
            self.input,
            self.metrics,
            self.partition,
            self.ctx,
            self.task,
        )
    }
}

/// Ends a stage: writes its input's partition as one object per attempt.
#[derive(Debug, Clone)]
pub struct WriterExec<K> {
    input: Arc<dyn ExecutionPlan>,
    kind: K,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl<K: WriterKind> WriterExec<K> {
    pub fn with_kind(input: Arc<dyn ExecutionPlan>, kind: K) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(summary_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            kind,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// The folder (URL) this stage's objects go in.
    pub fn dir(&self) -> &str {
        self.kind.dir()
    }
}

/// A stage's writer, whatever its kind.
pub trait StageWriter: Send + Sync {
    /// The object one attempt of one task writes.
    fn output_url(&self, task: &TaskId) -> String;

    /// Runs input partition `partition` and writes it as `task`'s object.
    fn write<'a>(
        &'a self,
        partition: usize,
        ctx: Arc<TaskContext>,
        task: &'a TaskId,
    ) -> BoxFuture<'a, Result<OutputFile>>;
}

impl<K: WriterKind> StageWriter for WriterExec<K> {
    fn output_url(&self, task: &TaskId) -> String {
        self.kind.output_url(task)
    }

    fn write<'a>(
        &'a self,
        partition: usize,
        ctx: Arc<TaskContext>,
        task: &'a TaskId,
    ) -> BoxFuture<'a, Result<OutputFile>> {
        Box::pin(self.kind.write(WriteCall {
            input: &self.input,
            metrics: &self.metrics,
            partition,
            ctx,
            task,
        }))
    }
}

/// Schema of the one-row summary a writer's `execute` yields.
pub fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
}

impl<K: WriterKind> DisplayAs for WriterExec<K> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", K::NAME)?;
        self.kind.describe(f)
    }
}

impl<K: WriterKind> ExecutionPlan for WriterExec<K> {
    fn name(&self) -> &str {
        K::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.kind.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::with_kind(input, self.kind.clone()))),
            Err(_) => internal_err!("{} takes exactly one child", K::NAME),
        }
    }

    /// Writes the partition and yields one summary row (rows, bytes). The attempt
    /// comes from the task's [`TaskAttempt`] session extension.
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(attempt) = context.session_config().get_extension::<TaskAttempt>() else {
            return internal_err!("{} runs only inside a Squall task", K::NAME);
        };
        let task = attempt.id.clone();
        let this = self.clone();
        let summary = async move {
            let out = StageWriter::write(&this, partition, context, &task).await?;
            let rows: u64 = out.partitions.iter().map(|s| s.rows).sum();
            Ok(RecordBatch::try_new(
                summary_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![rows])),
                    Arc::new(UInt64Array::from(vec![out.size])),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            summary_schema(),
            futures::stream::once(summary),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
