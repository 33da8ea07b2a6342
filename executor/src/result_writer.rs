//! `ResultWriterExec`: ends the final stage. Each task attempt writes its partition
//! as one Parquet file under the job's output prefix; the control plane's manifest
//! names the committed ones.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::context::TaskAttempt;
use crate::protocol::{OutputFile, PartitionSlot, TaskId};
use crate::shuffle::writer::summary_schema;
use crate::stores::ObjectUrl;

/// The name of the result file one attempt writes:
/// `part-{task}-{job}-{run}-{attempt}.parquet`.
pub fn result_file_name(task: &TaskId) -> String {
    format!(
        "part-{:05}-{}-{}-{}.parquet",
        task.task, task.job_id, task.run_id, task.attempt
    )
}

/// Whether `name` is a result file some attempt of job `job_id` wrote (of any run).
pub fn is_result_file_of(name: &str, job_id: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".parquet"))
    else {
        return false;
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match rest.split('-').collect::<Vec<_>>().as_slice() {
        [task, job, run, attempt] => {
            digits(task) && *job == job_id && !run.is_empty() && digits(attempt)
        }
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub struct ResultWriterExec {
    input: Arc<dyn ExecutionPlan>,
    /// URL prefix of the job's result files.
    output_dir: String,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ResultWriterExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, output_dir: String) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(summary_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            output_dir,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn output_dir(&self) -> &str {
        &self.output_dir
    }

    /// The file one attempt of one task writes: named by task first (so a
    /// listing keeps the result's order), then job, run and attempt, so that no
    /// two attempts of any jobs sharing the folder write the same object.
    pub fn output_url(&self, task: &TaskId) -> String {
        format!(
            "{}/{}",
            self.output_dir.trim_end_matches('/'),
            result_file_name(task)
        )
    }

    pub async fn write(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
        task: &TaskId,
    ) -> Result<OutputFile> {
        let url = self.output_url(task);
        let target = ObjectUrl::parse(&url)?;
        let store = ctx.runtime_env().object_store(target.store_url())?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let sink = BufWriter::new(store.clone(), target.path().clone());
        let mut writer = AsyncArrowWriter::try_new(sink, self.input.schema(), Some(props))?;
        let mut rows = 0u64;
        let mut stream = self.input.execute(partition, ctx)?;
        let written = async {
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).await?;
            }
            Ok::<_, DataFusionError>(())
        }
        .await;
        if let Err(e) = written {
            // The upload is abandoned unfinished, so no object appears.
            drop(writer);
            return Err(e);
        }
        writer.close().await?;
        let size = store
            .head(target.path())
            .await
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?
            .size;
        MetricBuilder::new(&self.metrics)
            .output_rows(partition)
            .add(rows as usize);
        Ok(OutputFile {
            url,
            size,
            partitions: vec![PartitionSlot {
                offset: 0,
                length: size,
                rows,
            }],
        })
    }
}

impl DisplayAs for ResultWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ResultWriterExec")
    }
}

impl ExecutionPlan for ResultWriterExec {
    fn name(&self) -> &str {
        "ResultWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(ResultWriterExec::new(
                input,
                self.output_dir.clone(),
            ))),
            Err(_) => internal_err!("ResultWriterExec takes exactly one child"),
        }
    }

    /// Writes the partition and yields one summary row (rows, bytes).
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(attempt) = context.session_config().get_extension::<TaskAttempt>() else {
            return internal_err!("ResultWriterExec runs only inside a Squall task");
        };
        let task = attempt.id.clone();
        let this = self.clone();
        let fut = async move {
            let out = this.write(partition, context, &task).await?;
            Ok(RecordBatch::try_new(
                summary_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![out.partitions[0].rows])),
                    Arc::new(UInt64Array::from(vec![out.size])),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            summary_schema(),
            futures::stream::once(fut),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_files_name_their_job_run_and_attempt() {
        let id = TaskId {
            job_id: "0123456789abcdef".into(),
            run_id: "r1".into(),
            stage_id: 3,
            task: 7,
            attempt: 2,
        };
        let name = result_file_name(&id);
        assert_eq!(name, "part-00007-0123456789abcdef-r1-2.parquet");
        assert!(is_result_file_of(&name, "0123456789abcdef"));
        assert!(!is_result_file_of(&name, "0123456789abcdee"));
        assert!(!is_result_file_of(
            "part-00007-0123456789abcdef",
            "0123456789abcdef"
        ));
        assert!(!is_result_file_of(
            "data-0123456789abcdef-x.parquet",
            "0123456789abcdef"
        ));
        // Files of an older Squall (`part-{task}-{attempt}`) are no job's.
        assert!(!is_result_file_of("part-00001-0.parquet", "0"));
    }
}
