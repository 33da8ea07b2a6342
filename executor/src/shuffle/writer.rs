//! `ShuffleWriterExec`: ends a map stage. Runs one input partition, splits its rows
//! into output partitions (hash, or a single one for gathers), and writes them as one
//! shuffle file (see `format`) per task attempt.
//!
//! Partitions are buffered as compressed IPC streams in memory, accounted in the
//! task's memory pool; when the pool says no, the buffers go to local temp files and
//! the object is assembled from them at the end. Small outputs are one PUT.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, StreamWriter,
    write_message,
};
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::metrics::MetricBuilder;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use lz4_flex::frame::FrameEncoder;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::format::{IPC_END, encode_footer};
use crate::context::TaskAttempt;
use crate::keys::{KeySet, KeySummarizer, key_columns};
use crate::protocol::{OutputFile, PartitionSlot, ShuffleCodec, TaskId};
use crate::usage::ThreadCpuTimer;
use crate::writer::{Target, WriteCall, WriterExec, WriterKind};

/// Where a map task's rows go.
#[derive(Debug, Clone)]
pub enum ShuffleOutput {
    /// Hash-partitioned into `n` partitions with DataFusion's repartition hash, so
    /// both sides of a partitioned join agree.
    Hash(Vec<Arc<dyn PhysicalExpr>>, usize),
    /// All rows in one partition: the consumer gathers every producer.
    Single,
}

impl ShuffleOutput {
    pub fn partition_count(&self) -> usize {
        match self {
            ShuffleOutput::Hash(_, n) => *n,
            ShuffleOutput::Single => 1,
        }
    }
}

impl fmt::Display for ShuffleOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShuffleOutput::Hash(exprs, n) => {
                let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                write!(f, "hash([{}], {n})", exprs.join(", "))
            }
            ShuffleOutput::Single => write!(f, "single"),
        }
    }
}

/// Shuffle files: the output of a map stage, one file per attempt holding
/// every output partition (see `format`).
#[derive(Debug, Clone)]
pub struct ShuffleFiles {
    output: ShuffleOutput,
    /// The stage's folder.
    dir: String,
    /// Sets of key columns each file's output also summarises (a join side
    /// whose keys filter a stage feeding its other side; see `keys`).
    summarise: Vec<KeySet>,
}

/// Ends a map stage.
pub type ShuffleWriterExec = WriterExec<ShuffleFiles>;

/// Folders a stage's shuffle files are spread over.
pub const SPREAD_PREFIXES: u32 = 256;

/// The folder (two hex digits) task `task`'s shuffle files go in: S3 serves
/// about 5,500 GETs a second per partition of its key space and splits a
/// busy prefix into partitions at characters keys differ in, so a stage's
/// files under 256 evenly used folders can be read up to 256 times that fast
/// once S3 has scaled (the scale model checks the rate per folder). A
/// multiplicative hash: consecutive tasks land far apart.
pub fn spread_prefix(task: u32) -> String {
    let hashed = task.wrapping_mul(0x9E37_79B9) >> 24;
    format!("{:02x}", hashed % SPREAD_PREFIXES)
}

impl ShuffleWriterExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, output: ShuffleOutput, dir: String) -> Self {
        Self::with_kind(
            input,
            ShuffleFiles {
                output,
                dir,
                summarise: vec![],
            },
        )
    }

    pub fn output(&self) -> &ShuffleOutput {
        &self.kind().output
    }

    /// The same writer, summarising the values of each set of `keys`
    /// (expressions over its input) it writes; none: not summarising.
    pub fn summarising(&self, keys: Vec<KeySet>) -> Self {
        let mut kind = self.kind().clone();
        kind.summarise = keys;
        Self::with_kind(self.input().clone(), kind)
    }

    /// The sets of key columns its files' outputs summarise.
    pub fn summarised(&self) -> &[KeySet] {
        &self.kind().summarise
    }
}

impl WriterKind for ShuffleFiles {
    const NAME: &'static str = "ShuffleWriterExec";

    fn dir(&self) -> &str {
        &self.dir
    }

    /// Under one of 256 folders picked by the task (see [`spread_prefix`]).
    fn object_name(&self, task: &TaskId) -> String {
        format!(
            "{}/task-{}-{}-attempt-{}.sqsh",
            spread_prefix(task.task),
            task.task,
            task.run_id,
            task.attempt
        )
    }

    async fn write(&self, call: WriteCall<'_>) -> Result<OutputFile> {
        self.write_file(call).await
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let hash = match &self.output {
            ShuffleOutput::Hash(exprs, _) => exprs.as_slice(),
            ShuffleOutput::Single => &[],
        };
        for e in hash
            .iter()
            .chain(self.summarise.iter().flat_map(|s| &s.keys))
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, ": {}", self.output)?;
        for set in &self.summarise {
            let keys: Vec<String> = set.keys.iter().map(|e| e.to_string()).collect();
            write!(f, ", summarising [{}]", keys.join(", "))?;
        }
        Ok(())
    }
}

impl ShuffleFiles {
    /// Runs input partition `partition` and writes its shuffle file.
    async fn write_file(&self, call: WriteCall<'_>) -> Result<OutputFile> {
        let Target { url, path, store } = call.target(self)?;
        let (input, metrics, partition, ctx, _) = call.into_parts();
        let bytes_written = MetricBuilder::new(metrics).counter("bytes_written", partition);
        let rows_written = MetricBuilder::new(metrics).output_rows(partition);
        let spilled_bytes = MetricBuilder::new(metrics).spilled_bytes(partition);
        let raw_bytes = MetricBuilder::new(metrics).counter(RAW_BYTES_METRIC, partition);
        // Hashing, encoding and compressing the rows (not the input's time),
        // as the thread's CPU time.
        let compute = MetricBuilder::new(metrics).elapsed_compute(partition);

        let n = self.output.partition_count();
        let schema = input.schema();
        let batch_size = ctx.session_config().batch_size();
        let mut buffers: Vec<PartitionBuffer> = (0..n)
            .map(|_| PartitionBuffer::new(schema.clone(), batch_size))
            .collect();
        let mut partitioner = match &self.output {
            ShuffleOutput::Hash(exprs, n) => Some(BatchPartitioner::try_new(
                Partitioning::Hash(exprs.clone(), *n),
                MetricBuilder::new(metrics).subset_time("repartition_time", partition),
                partition,
                input.output_partitioning().partition_count(),
            )?),
            ShuffleOutput::Single => None,
        };
        let reservation = MemoryConsumer::new(format!("ShuffleWriter[{partition}]"))
            .with_can_spill(true)
            .register(ctx.memory_pool());
        let spill_dir = ctx
            .session_config()
            .get_extension::<TaskAttempt>()
            .map(|t| t.spill_dir.clone())
            .unwrap_or_else(std::env::temp_dir);

        let codec = ctx
            .session_config()
            .get_extension::<TaskAttempt>()
            .map_or(ShuffleCodec::default(), |t| t.shuffle_codec);
        let mut ipc = Ipc::for_codec(codec)?;

        let mut keys = self.summariser(&schema)?;
        let mut stream = input.execute(partition, ctx.clone())?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let _cpu = ThreadCpuTimer::start(&compute);
            for (exprs, summariser) in keys.iter_mut() {
                summariser.update(&key_columns(exprs, &batch)?)?;
            }
            match partitioner.as_mut() {
                Some(p) => p.partition(batch, |i, part| buffers[i].push(part, ipc.as_mut()))?,
                None => buffers[0].push(batch, ipc.as_mut())?,
            }
            let held: usize = buffers.iter().map(PartitionBuffer::memory).sum();
            if reservation.try_resize(held).is_err() {
                for buffer in &mut buffers {
                    spilled_bytes.add(buffer.spill(&spill_dir)?);
                }
                reservation.resize(buffers.iter().map(PartitionBuffer::memory).sum());
            }
        }

        let mut sinks = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        let cpu = ThreadCpuTimer::start(&compute);
        for buffer in buffers {
            let (sink, count, raw) = buffer.finish(ipc.as_mut())?;
            sinks.push(sink);
            rows.push(count);
            raw_bytes.add(raw as usize);
        }

        drop(cpu);
        let (slots, offset) = upload(BufWriter::new(store, path), sinks, &rows).await?;
        bytes_written.add(offset as usize);
        rows_written.add(rows.iter().sum::<u64>() as usize);
        let keys = keys
            .into_iter()
            .map(|(_, summariser)| summariser.finish())
            .collect::<Result<Vec<_>>>()?;
        Ok(OutputFile {
            url,
            size: offset,
            partitions: slots,
            keys,
        })
    }

    /// Each set of keys to summarise with its summariser.
    fn summariser(&self, schema: &SchemaRef) -> Result<Vec<KeysSeen>> {
        self.summarise
            .iter()
            .map(|set| {
                let types = set
                    .keys
                    .iter()
                    .map(|e| e.data_type(schema))
                    .collect::<Result<Vec<_>>>()?;
                Ok((
                    set.keys.clone(),
                    KeySummarizer::new(&types, set.bloom_blocks)?,
                ))
            })
            .collect()
    }
}

/// A set of keys a writer summarises and what it has seen of them.
type KeysSeen = (Vec<Arc<dyn PhysicalExpr>>, KeySummarizer);

/// Writes the partitions' streams one after the other, then the footer
/// naming where each is; returns the slots and the file's size. Nothing
/// half-written is left behind: a multipart upload is aborted.
async fn upload(
    mut writer: BufWriter,
    sinks: Vec<Option<SpillSink>>,
    rows: &[u64],
) -> Result<(Vec<PartitionSlot>, u64)> {
    let mut slots = Vec::with_capacity(sinks.len());
    let mut offset = 0u64;
    let written = async {
        for (sink, rows) in sinks.into_iter().zip(rows) {
            let length = match sink {
                Some(sink) => sink.copy_into(&mut writer).await?,
                None => 0,
            };
            slots.push(PartitionSlot {
                offset,
                length,
                rows: *rows,
            });
            offset += length;
        }
        let footer = encode_footer(&slots);
        offset += footer.len() as u64;
        writer.write_all(&footer).await?;
        writer.shutdown().await?;
        Ok::<_, DataFusionError>(())
    };
    if let Err(e) = written.await {
        let _ = writer.abort().await;
        return Err(e);
    }
    Ok((slots, offset))
}

/// One output partition being written: small batches are coalesced, then appended
/// to an IPC stream whose bytes live in memory until spilled. With LZ4 the whole
/// stream is one LZ4 frame (not IPC's per-buffer compression, which starts a
/// frame for every buffer of every batch); with zstd it is IPC's own per-buffer
/// compression, every partition of a task sharing one zstd context (a context a
/// partition would hold half a MiB in each of 1,024 partitions); with none,
/// plain IPC.
struct PartitionBuffer {
    schema: SchemaRef,
    coalescer: BatchCoalescer,
    stream: Option<Encoder>,
    rows: u64,
    /// Arrow bytes of the rows before compression.
    raw_bytes: u64,
}

/// A partition's IPC stream as it is written.
enum Encoder {
    Lz4(Box<StreamWriter<FrameEncoder<SpillSink>>>),
    /// IPC messages, their buffers compressed with zstd or not at all,
    /// encoded with the task's [`Ipc`] context.
    Ipc {
        sink: SpillSink,
        dictionaries: DictionaryTracker,
    },
}

/// What the partitions of one task share to write IPC messages themselves
/// (zstd-compressed or plain): the options and one compression context.
/// None: LZ4 frames.
struct Ipc {
    options: IpcWriteOptions,
    context: IpcWriteContext,
}

/// The zstd level shuffle buffers are compressed at: level 1 compresses
/// TPC-H's shuffles about as well as 3, half again as fast.
const ZSTD_LEVEL: i32 = 1;

impl Ipc {
    fn for_codec(codec: ShuffleCodec) -> Result<Option<Self>> {
        let options = match codec {
            ShuffleCodec::Lz4 => return Ok(None),
            ShuffleCodec::None => IpcWriteOptions::default(),
            ShuffleCodec::Zstd => IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::ZSTD))?
                .try_with_compression_level(Some(ZSTD_LEVEL))?,
        };
        Ok(Some(Self {
            options,
            context: IpcWriteContext::default(),
        }))
    }
}

impl Encoder {
    fn start(schema: &SchemaRef, ipc: Option<&mut Ipc>) -> Result<Self> {
        let Some(ipc) = ipc else {
            let sink = FrameEncoder::new(SpillSink::default());
            return Ok(Encoder::Lz4(Box::new(StreamWriter::try_new(sink, schema)?)));
        };
        let mut dictionaries = DictionaryTracker::new(false);
        let mut sink = SpillSink::default();
        let message = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut dictionaries,
            &ipc.options,
        );
        write_message(&mut sink, message, &ipc.options)?;
        Ok(Encoder::Ipc { sink, dictionaries })
    }

    fn write(&mut self, batch: &RecordBatch, ipc: Option<&mut Ipc>) -> Result<()> {
        match (self, ipc) {
            (Encoder::Lz4(writer), _) => Ok(writer.write(batch)?),
            (Encoder::Ipc { sink, dictionaries }, Some(ipc)) => {
                let (dicts, message) = IpcDataGenerator::default().encode(
                    batch,
                    dictionaries,
                    &ipc.options,
                    &mut ipc.context,
                )?;
                for dict in dicts {
                    write_message(&mut *sink, dict, &ipc.options)?;
                }
                write_message(&mut *sink, message, &ipc.options)?;
                Ok(())
            }
            (Encoder::Ipc { .. }, None) => Err(DataFusionError::Internal(
                "an IPC shuffle partition written without its context".into(),
            )),
        }
    }

    fn sink(&self) -> &SpillSink {
        match self {
            Encoder::Lz4(writer) => writer.get_ref().get_ref(),
            Encoder::Ipc { sink, .. } => sink,
        }
    }

    fn sink_mut(&mut self) -> &mut SpillSink {
        match self {
            Encoder::Lz4(writer) => writer.get_mut().get_mut(),
            Encoder::Ipc { sink, .. } => sink,
        }
    }

    /// The stream's bytes, its end marked.
    fn finish(self) -> Result<SpillSink> {
        match self {
            Encoder::Lz4(mut writer) => {
                writer.finish()?;
                (*writer)
                    .into_inner()?
                    .finish()
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            }
            Encoder::Ipc { mut sink, .. } => {
                sink.write_all(&IPC_END)?;
                Ok(sink)
            }
        }
    }
}

impl PartitionBuffer {
    fn new(schema: SchemaRef, batch_size: usize) -> Self {
        Self {
            coalescer: BatchCoalescer::new(schema.clone(), batch_size),
            schema,
            stream: None,
            rows: 0,
            raw_bytes: 0,
        }
    }

    fn push(&mut self, batch: RecordBatch, ipc: Option<&mut Ipc>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.coalescer.push_batch(batch)?;
        self.drain(ipc)
    }

    fn drain(&mut self, mut ipc: Option<&mut Ipc>) -> Result<()> {
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.rows += batch.num_rows() as u64;
            self.raw_bytes += raw_size(&batch);
            let stream = match &mut self.stream {
                Some(s) => s,
                None => self
                    .stream
                    .insert(Encoder::start(&self.schema, ipc.as_deref_mut())?),
            };
            stream.write(&batch, ipc.as_deref_mut())?;
        }
        Ok(())
    }

    fn memory(&self) -> usize {
        self.stream.as_ref().map_or(0, |s| s.sink().mem.capacity())
    }

    /// Moves the encoded bytes to disk; returns how many.
    fn spill(&mut self, dir: &std::path::Path) -> Result<usize> {
        match &mut self.stream {
            Some(s) => s.sink_mut().spill(dir),
            None => Ok(0),
        }
    }

    /// The finished stream (None when the partition has no rows), its row count and
    /// its uncompressed Arrow size.
    fn finish(mut self, ipc: Option<&mut Ipc>) -> Result<(Option<SpillSink>, u64, u64)> {
        self.coalescer.finish_buffered_batch()?;
        self.drain(ipc)?;
        match self.stream {
            Some(stream) => Ok((Some(stream.finish()?), self.rows, self.raw_bytes)),
            None => Ok((None, 0, 0)),
        }
    }
}

/// Name of the metric counting the Arrow bytes a shuffle writer wrote, before
/// compression.
pub const RAW_BYTES_METRIC: &str = "raw_bytes_written";

/// Bytes of the Arrow buffers `batch` uses (its uncompressed IPC body, give or take
/// padding).
fn raw_size(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// Bytes of one IPC stream: a spilled prefix in a temp file, the rest in memory.
#[derive(Default)]
struct SpillSink {
    file: Option<std::fs::File>,
    spilled: u64,
    mem: Vec<u8>,
}

impl SpillSink {
    fn spill(&mut self, dir: &std::path::Path) -> Result<usize> {
        if self.mem.is_empty() {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(tempfile::tempfile_in(dir).map_err(|e| {
                DataFusionError::Execution(format!(
                    "cannot create a spill file in {}: {e}",
                    dir.display()
                ))
            })?),
        };
        file.write_all(&self.mem)?;
        let written = self.mem.len();
        self.spilled += written as u64;
        self.mem = Vec::new();
        Ok(written)
    }

    async fn copy_into(mut self, writer: &mut BufWriter) -> Result<u64> {
        if let Some(file) = &mut self.file {
            file.seek(SeekFrom::Start(0))?;
            let mut chunk = vec![0u8; 8 << 20];
            loop {
                let read = file.read(&mut chunk)?;
                if read == 0 {
                    break;
                }
                writer.write_all(&chunk[..read]).await?;
            }
        }
        let length = self.spilled + self.mem.len() as u64;
        writer.put(Bytes::from(self.mem)).await?;
        Ok(length)
    }
}

impl Write for SpillSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.mem.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stages_files_spread_evenly_over_the_prefixes() {
        let mut used = std::collections::HashMap::new();
        for task in 0..(SPREAD_PREFIXES * 16) {
            let prefix = spread_prefix(task);
            assert_eq!(prefix.len(), 2, "{prefix}");
            *used.entry(prefix).or_insert(0u32) += 1;
        }
        assert_eq!(used.len(), SPREAD_PREFIXES as usize);
        let (least, most) = (used.values().min().unwrap(), used.values().max().unwrap());
        assert!(*least >= 8 && *most <= 24, "{least}..{most} files a prefix");
        // Neighbouring tasks land in different folders.
        assert_ne!(spread_prefix(1), spread_prefix(2));
    }
}
