//! `KeyFilterExec`: drops the rows whose join keys the other side of the
//! join cannot match, just before the filtered stage's shuffle writer.
//!
//! ```text
//!   ShuffleWriterExec (any output)
//!     KeyFilterExec     keys = the stage's columns holding the join keys,
//!       ... scan ...    filter = the source stage's keys, merged
//! ```

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::row::RowConverter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::{KeyFilter, key_columns, key_converter};

/// Name of the counter of rows a key filter removed.
pub const ROWS_REMOVED_METRIC: &str = "key_filter_rows_removed";

/// Rows a filter checks before it judges whether it pays.
const TRIAL_ROWS: usize = 65_536;
/// A filter that removed less than this share of its trial rows lets the
/// rest through unchecked: the keys it would test cost more than it saves.
const MIN_REMOVED_SHARE: f64 = 0.02;

/// Keeps the rows whose `keys` the `filter` (built from another stage's
/// join keys) may match.
#[derive(Debug, Clone)]
pub struct KeyFilterExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    filter: Arc<KeyFilter>,
    /// The stage whose keys the filter holds (for plans and the job view).
    build_stage: u32,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl KeyFilterExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        filter: Arc<KeyFilter>,
        build_stage: u32,
    ) -> Self {
        Self {
            properties: input.properties().clone(),
            input,
            keys,
            filter,
            build_stage,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    pub fn filter(&self) -> &Arc<KeyFilter> {
        &self.filter
    }

    pub fn build_stage(&self) -> u32 {
        self.build_stage
    }
}

impl DisplayAs for KeyFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(
            f,
            "KeyFilterExec: keys=[{}] of stage {}: {}",
            keys.join(", "),
            self.build_stage,
            self.filter.describe()
        )
    }
}

/// One batch through the filter.
struct Apply {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    filter: Arc<KeyFilter>,
    converter: RowConverter,
    baseline: BaselineMetrics,
    removed: Count,
    /// Rows checked and removed so far, until the trial is over.
    checked: usize,
    dropped: usize,
    /// Set when the trial showed the filter does not pay.
    passing: bool,
}

impl Apply {
    fn batch(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.passing {
            self.baseline.record_output(batch.num_rows());
            return Ok(batch);
        }
        let _timer = self.baseline.elapsed_compute().timer();
        let keys = key_columns(&self.keys, &batch)?;
        let keep = self.filter.keep(&self.converter, &keys)?;
        let kept = filter_record_batch(&batch, &keep)?;
        let removed = batch.num_rows() - kept.num_rows();
        self.removed.add(removed);
        self.baseline.record_output(kept.num_rows());
        if self.checked < TRIAL_ROWS {
            self.checked += batch.num_rows();
            self.dropped += removed;
            self.passing = self.checked >= TRIAL_ROWS
                && (self.dropped as f64) < MIN_REMOVED_SHARE * self.checked as f64;
        }
        Ok(kept)
    }
}

impl ExecutionPlan for KeyFilterExec {
    fn name(&self) -> &str {
        "KeyFilterExec"
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
        for key in &self.keys {
            if f(key)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                input,
                self.keys.clone(),
                self.filter.clone(),
                self.build_stage,
            ))),
            Err(_) => internal_err!("KeyFilterExec takes exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let types = self
            .keys
            .iter()
            .map(|k| k.data_type(&schema))
            .collect::<Result<Vec<_>>>()?;
        let mut apply = Apply {
            keys: self.keys.clone(),
            filter: self.filter.clone(),
            converter: key_converter(&types)?,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            removed: MetricBuilder::new(&self.metrics).counter(ROWS_REMOVED_METRIC, partition),
            checked: 0,
            dropped: 0,
            passing: false,
        };
        let input = self.input.execute(partition, context)?;
        let stream = input
            .map(move |batch| apply.batch(batch?))
            .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
