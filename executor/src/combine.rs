//! The combine step of a two-level exchange ([`TaskAction::Combine`]): one task
//! reads a group of producers' shuffle files whole and writes them as one file
//! of the same partitions (see [`combine_files`]), so that each reduce task
//! then reads one range of it where it read one range of every producer.
//!
//! The spec's plan is a shuffle writer over nothing: it names the folder and
//! the partitioning of the combined file, and the attempt's object is named by
//! it as any shuffle attempt's. The spec's one input lists the group's files,
//! and may be a slice of their partitions: the combiner then reads only
//! those (one range of each file) and its file holds only those, the others
//! empty, so that each combiner's bytes stay bounded however large the
//! producers' files are (Starling's combiners take a range of partitions
//! from a group of producers, too).

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::TaskContext;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

use crate::codec::decode_plan;
use crate::protocol::{OutputFile, PartitionSlot, Slice, TaskMetrics, TaskSpec};
use crate::shuffle::ShuffleWriterExec;
use crate::shuffle::format::combine_files;
use crate::stores::StoreRegistry;
use crate::writer::StageWriter;

/// Whole files one combine task keeps in flight.
const FETCH_CONCURRENCY: usize = 8;

/// Runs a combine task: GETs, of each input file, the one range holding the
/// partitions it combines (all of them, or the input's slice), and writes
/// them as one file of the writer's partitions (those outside the slice
/// empty) at the attempt's URL; returns it with the task's counters. What it
/// reads and writes is held in memory together, so it must fit twice in the
/// task's pool.
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
    let slice = input.slice.unwrap_or(Slice {
        start: 0,
        end: partitions as u32,
    });
    if slice.is_empty() || slice.end as usize > partitions {
        return plan_err!(
            "a combine step of {partitions} partitions was given partitions {}..{}",
            slice.start,
            slice.end
        );
    }
    if let Some(file) = input
        .producers
        .iter()
        .find(|f| f.partitions.len() != slice.len())
    {
        return plan_err!(
            "shuffle file {} has {} partitions; the combine step takes {} of {partitions}",
            file.url,
            file.partitions.len(),
            slice.len()
        );
    }
    let pieces: Vec<Piece> = input.producers.iter().filter_map(Piece::of).collect();
    let bytes_in: u64 = pieces.iter().map(|p| p.range.end - p.range.start).sum();
    if bytes_in.saturating_mul(2) > spec.memory_limit_bytes {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "combining {bytes_in} bytes of {} files needs twice that in memory; \
             the task may hold {} bytes",
            pieces.len(),
            spec.memory_limit_bytes
        )));
    }
    let fetched = fetch_all(stores, &pieces).await?;
    let (combined, slots) = combine_fetched(&fetched, &pieces, slice, partitions)?;
    drop(fetched);
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

/// What a combine task reads of one file: the range holding the partitions
/// it takes (adjacent in the file), and their slots.
struct Piece<'a> {
    file: &'a OutputFile,
    range: Range<u64>,
}

impl<'a> Piece<'a> {
    /// None where the file has no rows in the partitions taken: nothing to read.
    fn of(file: &'a OutputFile) -> Option<Self> {
        let full = || file.partitions.iter().filter(|s| s.length > 0);
        let start = full().map(|s| s.offset).min()?;
        let end = full().map(|s| s.offset.saturating_add(s.length)).max()?;
        Some(Self {
            file,
            range: start..end,
        })
    }
}

/// The fetched pieces as one file of `partitions` partitions, the pieces'
/// slots being those of partitions `slice` and the others empty.
fn combine_fetched(
    fetched: &[Bytes],
    pieces: &[Piece],
    slice: Slice,
    partitions: usize,
) -> Result<(Vec<u8>, Vec<PartitionSlot>)> {
    let empty = PartitionSlot {
        offset: 0,
        length: 0,
        rows: 0,
    };
    let mut indexes: Vec<Vec<PartitionSlot>> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let mut index = vec![empty; partitions];
        for (i, slot) in piece.file.partitions.iter().enumerate() {
            if slot.length > 0 {
                index[slice.start as usize + i] = PartitionSlot {
                    offset: slot.offset - piece.range.start,
                    ..*slot
                };
            }
        }
        indexes.push(index);
    }
    let inputs: Vec<(&[u8], &[PartitionSlot])> = fetched
        .iter()
        .zip(&indexes)
        .map(|(bytes, index)| (bytes.as_ref(), index.as_slice()))
        .collect();
    if inputs.is_empty() {
        // No file has rows here: an empty file of empty partitions.
        let mut file = Vec::new();
        file.extend(crate::shuffle::format::encode_footer(&vec![
            empty;
            partitions
        ]));
        return Ok((file, vec![empty; partitions]));
    }
    combine_files(&inputs)
}

/// Each piece's bytes, in order; a file that is not the size its producer
/// committed is an error (it is not the file the producer wrote).
async fn fetch_all(stores: &StoreRegistry, pieces: &[Piece<'_>]) -> Result<Vec<Bytes>> {
    let targets = pieces
        .iter()
        .map(|piece| {
            let (store, path) = stores.resolve(&piece.file.url)?;
            Ok(Fetch {
                store,
                path,
                size: piece.file.size,
                range: piece.range.clone(),
                url: piece.file.url.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    futures::stream::iter(targets)
        .map(fetch_one)
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

/// One range of a file to GET.
struct Fetch {
    store: Arc<dyn ObjectStore + 'static>,
    path: Path,
    /// Bytes its producer committed.
    size: u64,
    range: Range<u64>,
    url: String,
}

/// One file's whole bytes, which must be the bytes its producer committed.
async fn fetch_one(fetch: Fetch) -> Result<Bytes> {
    let Fetch {
        store,
        path,
        size,
        range,
        url,
    } = fetch;
    // A ranged read: those are hedged (see `hedge`).
    let wanted = range.end - range.start;
    let options = GetOptions {
        range: Some(range.into()),
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
    if whole != size || bytes.len() as u64 != wanted {
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
    use crate::shuffle::format::{decode_footer, decode_partition, encode_footer};

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
        let data = |f: &OutputFile| f.partitions.iter().map(|s| s.length).sum::<u64>();
        assert_eq!(
            metrics.bytes_in,
            data(&a) + data(&b),
            "partitions, not footers"
        );
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
    async fn a_combine_task_of_a_slice_reads_and_writes_those_partitions_only() {
        let stores = Arc::new(StoreRegistry::new());
        let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
        let a = put_file(
            &stores,
            "memory:///w/stage-1/a.sqsh",
            &[&[1, 2], &[], &[3], &[]],
        )
        .await;
        let b = put_file(
            &stores,
            "memory:///w/stage-1/b.sqsh",
            &[&[4], &[5], &[], &[]],
        )
        .await;
        let c = put_file(
            &stores,
            "memory:///w/stage-1/c.sqsh",
            &[&[6], &[], &[], &[7]],
        )
        .await;
        let slice = Slice { start: 1, end: 3 };
        let files = [a, b, c].map(|f| {
            let mut cut = f.clone();
            cut.partitions = f.partitions[1..3].to_vec();
            cut
        });
        let mut spec = spec(files.to_vec(), 4, 1 << 20);
        spec.inputs[0].slice = Some(slice);
        let result = run_task(&ctx, spec).await;
        let TaskOutcome::Succeeded { output, .. } = result.outcome else {
            panic!("{:?}", result.outcome);
        };
        // Partitions 1 and 2 only; c has no rows there and is not read.
        let rows: Vec<u64> = output.partitions.iter().map(|s| s.rows).collect();
        assert_eq!(rows, [0, 1, 1, 0]);
        assert_eq!(result.usage.requests["memory"].get, 2, "{:?}", result.usage);
        let (store, path) = stores.resolve(&output.url).unwrap();
        let file = store.get(&path).await.unwrap().bytes().await.unwrap();
        let part = |p: usize| {
            let s = output.partitions[p];
            file.slice(s.offset as usize..(s.offset + s.length) as usize)
        };
        assert_eq!(values(part(1)), [5]);
        assert_eq!(values(part(2)), [3]);
        assert_eq!(decode_footer(&file).unwrap(), output.partitions);
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
