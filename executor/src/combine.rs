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
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::codec::decode_plan;
use crate::protocol::{OutputFile, PartitionSlot, TaskMetrics, TaskSpec};
use crate::shuffle::ShuffleWriterExec;
use crate::shuffle::format::combine_files;
use crate::stores::StoreRegistry;
use crate::writer::StageWriter;

/// Whole files one combine task keeps in flight.
const FETCH_CONCURRENCY: usize = 8;

/// Runs a combine task: GETs the input files whole, writes their partitions
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
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?
        .bytes()
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
    if bytes.len() as u64 != size {
        return Err(DataFusionError::Execution(format!(
            "shuffle file {url} holds {} bytes, its producer committed {size}",
            bytes.len()
        )));
    }
    Ok(bytes)
}
