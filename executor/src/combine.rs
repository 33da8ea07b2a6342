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
        keys: vec![],
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
