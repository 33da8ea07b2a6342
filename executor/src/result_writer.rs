//! `ResultWriterExec`: ends the final stage. Each task attempt writes its partition
//! as one Parquet file under the job's output prefix; the control plane's manifest
//! names the committed ones.

use std::fmt;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricBuilder;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::protocol::{OutputFile, PartitionSlot, TaskId};
use crate::writer::{Target, WriteCall, WriterExec, WriterKind};

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

/// Result files: the output of a job's final stage, one Parquet file per attempt
/// under the job's output folder.
#[derive(Debug, Clone)]
pub struct ResultFiles {
    dir: String,
}

/// Ends a job's final stage.
pub type ResultWriterExec = WriterExec<ResultFiles>;

impl ResultWriterExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, dir: String) -> Self {
        Self::with_kind(input, ResultFiles { dir })
    }
}

impl WriterKind for ResultFiles {
    const NAME: &'static str = "ResultWriterExec";

    fn dir(&self) -> &str {
        &self.dir
    }

    /// Named by task first (so a listing keeps the result's order): see
    /// [`result_file_name`].
    fn object_name(&self, task: &TaskId) -> String {
        result_file_name(task)
    }

    async fn write(&self, call: WriteCall<'_>) -> Result<OutputFile> {
        self.write_file(call).await
    }

    fn describe(&self, _f: &mut fmt::Formatter) -> fmt::Result {
        Ok(())
    }
}

impl ResultFiles {
    async fn write_file(&self, call: WriteCall<'_>) -> Result<OutputFile> {
        let Target { url, path, store } = call.target(self)?;
        let (input, metrics, partition, ctx, _) = call.into_parts();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let sink = BufWriter::new(store.clone(), path.clone());
        let mut writer = AsyncArrowWriter::try_new(sink, input.schema(), Some(props))?;
        let mut rows = 0u64;
        let mut stream = input.execute(partition, ctx)?;
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
            .head(&path)
            .await
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?
            .size;
        MetricBuilder::new(metrics)
            .output_rows(partition)
            .add(rows as usize);
        Ok(OutputFile {
            url,
            keys: vec![],
            size,
            partitions: vec![PartitionSlot {
                offset: 0,
                length: size,
                rows,
            }],
        })
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
