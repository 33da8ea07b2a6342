//! The combine step of a two-level exchange ([`TaskAction::Combine`]): one task
//! reads a group of producers' shuffle files whole and writes them as one file
//! of the same partitions (see [`combine_files`]), so that each reduce task
//! then reads one range of it where it read one range of every producer.
//!
//! The spec's plan is a shuffle writer over nothing: it names the folder and
//! the partitioning of the combined file, and the attempt's object is named by
//! it as any shuffle attempt's. The spec's one input lists the group's files.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::TaskContext;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

use crate::codec::decode_plan;
use crate::protocol::{OutputFile, PartitionSlot, TaskMetrics, TaskSpec};
use crate::shuffle::ShuffleWriterExec;
use crate::shuffle::format::combine_files;
use crate::stores::StoreRegistry;
use crate::writer::StageWriter;

/// Whole files one combine task keeps in flight.
const FETCH_CONCURRENCY: usize = 8;

/// Runs a combine task: GETs the input files whole (each as one range), writes their partitions
/// as one file at the attempt's URL, and returns it with the task's counters.
/// The files and the combined file are held in memory together, so their
/// bytes must fit twice in the task's pool.
pub async fn combine(
    ctx: &TaskContext,
    stores: &StoreRegistry,
    spec: &TaskSpec,
) -> Result<(OutputFile, TaskMetrics)> {
    let started = Instant::now();
    let plan = decode_plan(&spec.plan, ctx, []).map_err(|e| {
        DataFusionError::Plan(format!(
            "cannot decode the combine step's plan (a shuffle writer): {e}"
        ))
    })?;
    let Some(writer) = plan.downcast_ref::<ShuffleWriterExec>() else {
        return plan_err!(
            "a combine step's plan must be a shuffle writer, not {}",
            plan.name()
        );
    };
    let [input] = spec.inputs.as_slice() else {
        return plan_err!(
            "a combine step reads one stage's files, not {} stages'",
            spec.inputs.len()
        );
    };
    let partitions = writer.output().partition_count();
    if let Some(file) = input
        .producers
        .iter()
        .find(|f| f.partitions.len() != partitions)
    {
        return plan_err!(
            "shuffle file {} has {} partitions; the combined file has {partitions}",
            file.url,
            file.partitions.len()
        );
    }
    let bytes_in: u64 = input.producers.iter().map(|f| f.size).sum();
    if bytes_in.saturating_mul(2) > spec.memory_limit_bytes {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "combining {bytes_in} bytes of {} files needs twice that in memory; \
             the task may hold {} bytes",
            input.producers.len(),
            spec.memory_limit_bytes
        )));
    }
    let files = fetch_all(stores, &input.producers).await?;
    let (combined, slots) = combine_fetched(&files, &input.producers)?;
    drop(files);
    let url = writer.output_url(&spec.id);
    let (store, path) = stores.resolve(&url)?;
    let size = combined.len() as u64;
    store
        .put(&path, PutPayload::from(Bytes::from(combined)))
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
    let rows: u64 = slots.iter().map(|s| s.rows).sum();
    let metrics = TaskMetrics {
        rows_in: rows,
        bytes_in,
        rows_out: rows,
        bytes_out: size,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_memory_bytes: bytes_in.saturating_add(size),
        ..TaskMetrics::default()
    };
    let output = OutputFile {
        url,
        size,
        partitions: slots,
    };
    Ok((output, metrics))
}

/// The fetched `files`, whose indexes are `committed`'s, as one file.
fn combine_fetched(
    files: &[Bytes],
    committed: &[OutputFile],
) -> Result<(Vec<u8>, Vec<PartitionSlot>)> {
    let mut pieces: Vec<(&[u8], &[PartitionSlot])> = Vec::with_capacity(files.len());
    for (bytes, file) in files.iter().zip(committed) {
        pieces.push((bytes.as_ref(), file.partitions.as_slice()));
    }
    combine_files(&pieces)
}

/// The files' whole bytes, in order; a file shorter or longer than its size
/// is an error (it is not the file the producer committed).
async fn fetch_all(stores: &StoreRegistry, files: &[OutputFile]) -> Result<Vec<Bytes>> {
    let targets = files
        .iter()
        .map(|file| {
            let (store, path) = stores.resolve(&file.url)?;
            Ok(Fetch {
                store,
                path,
                size: file.size,
                url: file.url.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    futures::stream::iter(targets)
        .map(fetch_one)
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

/// One file to GET whole.
struct Fetch {
    store: Arc<dyn ObjectStore + 'static>,
    path: Path,
    /// Bytes its producer committed.
    size: u64,
    url: String,
}

/// One file's whole bytes, which must be the bytes its producer committed.
async fn fetch_one(fetch: Fetch) -> Result<Bytes> {
    let Fetch {
        store,
        path,
        size,
        url,
    } = fetch;
    // One range, the whole file: ranged reads are hedged (see `hedge`).
    let options = GetOptions {
        range: Some((0..size).into()),
        ..GetOptions::default()
    };
    let answer = store
        .get_opts(&path, options)
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
    let whole = answer.meta.size;
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
    if whole != size || bytes.len() as u64 != size {
        return Err(DataFusionError::Execution(format!(
            "shuffle file {url} holds {whole} bytes, its producer committed {size}"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, RecordBatch, types::Int64Type};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::StreamWriter;
    use datafusion::physical_plan::empty::EmptyExec;
    use lz4_flex::frame::FrameEncoder;

    use super::*;
    use crate::codec::encode_plan;
    use crate::context::ExecutorContext;
    use crate::protocol::{FailureKind, StageInput, TaskAction, TaskId, TaskOutcome, WIRE_VERSION};
    use crate::run::run_task;
    use crate::shuffle::ShuffleOutput;
    use crate::shuffle::format::{decode_partition, encode_footer};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    /// A shuffle file whose partitions hold `parts[p]`, put at `url`.
    async fn put_file(stores: &StoreRegistry, url: &str, parts: &[&[i64]]) -> OutputFile {
        let mut bytes = Vec::new();
        let mut slots = Vec::new();
        for values in parts {
            let offset = bytes.len() as u64;
            if !values.is_empty() {
                let batch = RecordBatch::try_new(
                    schema(),
                    vec![Arc::new(Int64Array::from(values.to_vec()))],
                )
                .unwrap();
                let mut writer =
                    StreamWriter::try_new(FrameEncoder::new(Vec::new()), &schema()).unwrap();
                writer.write(&batch).unwrap();
                writer.finish().unwrap();
                bytes.extend(writer.into_inner().unwrap().finish().unwrap());
            }
            slots.push(PartitionSlot {
                offset,
                length: bytes.len() as u64 - offset,
                rows: values.len() as u64,
            });
        }
        bytes.extend(encode_footer(&slots));
        let (store, path) = stores.resolve(url).unwrap();
        let size = bytes.len() as u64;
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
        OutputFile {
            url: url.into(),
            size,
            partitions: slots,
        }
    }

    /// A combine spec over `files`, writing `partitions`-way files.
    fn spec(files: Vec<OutputFile>, partitions: usize, memory: u64) -> TaskSpec {
        let writer = ShuffleWriterExec::new(
            Arc::new(EmptyExec::new(schema())),
            if partitions == 1 {
                ShuffleOutput::Single
            } else {
                let key = datafusion::physical_expr::expressions::col("v", &schema()).unwrap();
                ShuffleOutput::Hash(vec![key], partitions)
            },
            "memory:///w/stage-1/combined".into(),
        );
        TaskSpec {
            wire_version: WIRE_VERSION,
            id: TaskId {
                job_id: "j".into(),
                run_id: "r".into(),
                stage_id: 9,
                task: 0,
                attempt: 0,
            },
            action: TaskAction::Combine,
            plan: encode_plan(Arc::new(writer)).unwrap(),
            partition: None,
            inputs: vec![StageInput {
                stage_id: 1,
                producers: files,
                slice: None,
            }],
            memory_limit_bytes: memory,
            session_options: vec![],
            hedging: Default::default(),
        }
    }

    fn values(bytes: Bytes) -> Vec<i64> {
        decode_partition(bytes)
            .unwrap()
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn a_combine_task_writes_one_file_of_the_same_partitions() {
        let stores = Arc::new(StoreRegistry::new());
        let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
        let a = put_file(&stores, "memory:///w/stage-1/a.sqsh", &[&[1, 2], &[], &[3]]).await;
        let b = put_file(&stores, "memory:///w/stage-1/b.sqsh", &[&[4], &[5], &[]]).await;
        let result = run_task(&ctx, spec(vec![a.clone(), b.clone()], 3, 1 << 20)).await;
        let TaskOutcome::Succeeded { output, metrics } = result.outcome else {
            panic!("{:?}", result.outcome);
        };
        assert_eq!(
            output.url,
            "memory:///w/stage-1/combined/00/task-0-r-attempt-0.sqsh"
        );
        assert_eq!(
            output.partitions.iter().map(|s| s.rows).collect::<Vec<_>>(),
            [3, 1, 1]
        );
        assert_eq!((metrics.rows_in, metrics.rows_out), (5, 5));
        assert_eq!(metrics.bytes_in, a.size + b.size);
        // Two whole GETs and one PUT.
        let memory = &result.usage.requests["memory"];
        assert_eq!((memory.get, memory.put), (2, 1), "{:?}", result.usage);
        let (store, path) = stores.resolve(&output.url).unwrap();
        let file = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(file.len() as u64, output.size);
        let part = |p: usize| {
            let s = output.partitions[p];
            file.slice(s.offset as usize..(s.offset + s.length) as usize)
        };
        assert_eq!(values(part(0)), [1, 2, 4]);
        assert_eq!(values(part(1)), [5]);
        assert_eq!(values(part(2)), [3]);
    }

    #[tokio::test]
    async fn a_combine_task_refuses_what_does_not_fit() {
        let stores = Arc::new(StoreRegistry::new());
        let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
        let a = put_file(&stores, "memory:///w/stage-1/a.sqsh", &[&[1], &[2]]).await;
        let failure = |result: crate::protocol::TaskResult| match result.outcome {
            TaskOutcome::Failed(f) => f,
            other => panic!("{other:?}"),
        };
        // A file that is not what its producer committed.
        let mut short = a.clone();
        short.size += 1;
        let f = failure(run_task(&ctx, spec(vec![short], 2, 1 << 20)).await);
        assert!(
            f.message.contains("a.sqsh") && f.message.contains("committed"),
            "{f:?}"
        );
        // Files of another partitioning than the step's.
        let f = failure(run_task(&ctx, spec(vec![a.clone()], 3, 1 << 20)).await);
        assert!(f.message.contains("2 partitions"), "{f:?}");
        // Twice the bytes must fit in the pool.
        let f = failure(run_task(&ctx, spec(vec![a.clone()], 2, a.size)).await);
        assert_eq!(f.kind, FailureKind::ResourcesExhausted, "{f:?}");
        // A file that is not there.
        let mut gone = a.clone();
        gone.url = "memory:///w/stage-1/gone.sqsh".into();
        let f = failure(run_task(&ctx, spec(vec![gone], 2, 1 << 20)).await);
        assert_eq!(f.kind, FailureKind::NotFound, "{f:?}");
        // Nothing was written by any of them.
        let (store, _) = stores.resolve("memory:///w").unwrap();
        let written = store
            .list(Some(&Path::from("w/stage-1/combined")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert!(written.is_empty(), "{written:?}");
    }
}
