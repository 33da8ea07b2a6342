//! The task protocol: what the control plane sends an executor (`TaskSpec`) and what
//! comes back (`TaskResult`).
//!
//! # What belongs here
//! Plain serde types only. Both ends check [`WIRE_VERSION`]; anything that changes the
//! meaning of a field bumps it. Credentials never travel in a spec: executors take
//! them from their own environment.

use serde::{Deserialize, Serialize};

use crate::hedge::Hedging;
use crate::stores::local_scheme;
use crate::usage::TaskUsage;

/// Version of the TaskSpec/TaskResult encoding. Checked on both ends.
/// 4: `TaskId::run_id`, which names every object an attempt writes.
/// 5: `TaskSpec::partition` and slices of several partitions
/// (`StageInput::slice`), for reduce tasks that read a range of partitions.
/// 6: `TaskResult::usage` (requests, time, the function's memory), what a
/// job's cost is reckoned from.
/// 7: `TaskAction::Combine`, the combine step of a two-level exchange, and
/// `TaskSpec::hedging`.
/// 8: `TaskSpec::shuffle_codec`: shuffle partitions compressed with zstd,
/// which an executor of 7 could not read.
/// 9: `OutputFile::keys`, key summaries for filters across stages.
/// 10: `ShuffleCodec::None`, plain IPC shuffle partitions.
pub const WIRE_VERSION: u32 = 10;

/// Identity of one attempt of one task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    pub job_id: String,
    /// One run of the job: a resumed job runs again under a new run id, so its
    /// attempts never write an object a straggler of an earlier run also writes.
    pub run_id: String,
    pub stage_id: u32,
    /// Index of the task in its stage; it is also the plan partition the task runs.
    pub task: u32,
    /// 0 for the first attempt.
    pub attempt: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} run {} stage {} task {} attempt {}",
            self.job_id, self.run_id, self.stage_id, self.task, self.attempt
        )
    }
}

/// What an executor does with a spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// Run the stage plan's partition and write its output.
    #[default]
    Run,
    /// Check the spec and answer at once, with no output: measures the round trip
    /// of the task protocol through a backend (`squall bench tasks`).
    Ping,
    /// Read the one input's files whole and write them as one shuffle file
    /// of the same partitions, where the plan (a shuffle writer over
    /// nothing) names it: the combine step of a two-level exchange.
    Combine,
}

/// Everything one task needs. Executors keep no state between tasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSpec {
    pub wire_version: u32,
    pub id: TaskId,
    #[serde(default)]
    pub action: TaskAction,
    /// The stage plan as datafusion-proto bytes (encoded with `SquallCodec`).
    #[serde(with = "base64_bytes")]
    pub plan: Vec<u8>,
    /// The plan partition to run; None: `id.task`. A reduce task that reads a
    /// range of shuffle partitions runs the first of them, its readers
    /// returning the whole range (see [`StageInput::slice`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Committed outputs of the stages this stage reads, by stage id.
    pub inputs: Vec<StageInput>,
    /// Bytes the task may hold in DataFusion's memory pool before spilling or failing.
    pub memory_limit_bytes: u64,
    /// DataFusion session options (`datafusion.execution.batch_size` = `8192`, ...).
    #[serde(default)]
    pub session_options: Vec<(String, String)>,
    /// When slow ranged reads are sent again (default: never).
    #[serde(default)]
    pub hedging: Hedging,
    /// How the shuffle partitions the task writes are compressed.
    #[serde(default)]
    pub shuffle_codec: ShuffleCodec,
    /// The W3C `traceparent` of the attempt that sent the task, when spans
    /// are exported (see [`crate::telemetry`]): the executor's spans join the
    /// job's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
}

impl TaskSpec {
    /// A ping as task `id` (see [`TaskAction::Ping`]): answered at once,
    /// nothing read or written, a 1 MiB pool.
    pub fn ping(id: TaskId) -> Self {
        Self {
            wire_version: WIRE_VERSION,
            id,
            action: TaskAction::Ping,
            plan: vec![],
            partition: None,
            inputs: vec![],
            memory_limit_bytes: 1 << 20,
            session_options: vec![],
            hedging: Hedging::default(),
            shuffle_codec: ShuffleCodec::default(),
            trace_context: None,
        }
    }
}

/// How shuffle partitions are compressed. Readers tell the two apart by a
/// partition's first bytes, so files of either can be read together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShuffleCodec {
    /// An LZ4 frame around each partition's Arrow IPC stream: fast to
    /// write and read, a third of the bytes.
    #[default]
    Lz4,
    /// Plain Arrow IPC: for shuffles on local disk or in memory, where the
    /// bytes cost less than compressing them.
    None,
    /// Arrow IPC's own compression of each buffer with zstd (level 1): less
    /// than half the bytes of LZ4 on TPC-H's shuffles (0.46× over the 22
    /// queries at SF 1) for about 7% more task time, for shuffles that
    /// cross a network (an object store).
    Zstd,
}

/// Bytes of table columns a job reads at most for its shuffle files on this
/// machine to be written plain: a shuffle holds a few times that at most, which
/// the page cache keeps, and compressing it cost TPC-H's queries at SF 1 (up to
/// 115 MiB read) 4 % of their time (BENCHMARKS.md). Larger jobs compress with
/// LZ4, so that a shuffle of hundreds of GiB still fits on the disk.
pub const PLAIN_SHUFFLE_READ_BYTES: u64 = 256 << 20;

impl ShuffleCodec {
    /// The codec for shuffle files under `folder`: zstd where they cross a
    /// network (an object store's URL), LZ4 on local disk or in memory.
    pub fn for_folder(folder: &str) -> Self {
        if Self::is_local(folder) {
            ShuffleCodec::Lz4
        } else {
            ShuffleCodec::Zstd
        }
    }

    /// The codec for the shuffle files under `folder` of a job that reads
    /// `read_bytes` of table columns: as [`Self::for_folder`], but plain IPC
    /// on this machine for a job reading at most [`PLAIN_SHUFFLE_READ_BYTES`].
    pub fn for_job(folder: &str, read_bytes: u64) -> Self {
        match Self::for_folder(folder) {
            ShuffleCodec::Lz4 if read_bytes <= PLAIN_SHUFFLE_READ_BYTES => ShuffleCodec::None,
            codec => codec,
        }
    }

    fn is_local(folder: &str) -> bool {
        local_scheme(folder.split_once("://").map_or("file", |(s, _)| s))
    }
}

impl std::str::FromStr for ShuffleCodec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lz4" => Ok(ShuffleCodec::Lz4),
            "zstd" => Ok(ShuffleCodec::Zstd),
            "none" => Ok(ShuffleCodec::None),
            other => Err(format!(
                "unknown shuffle codec '{other}': expected lz4, zstd or none"
            )),
        }
    }
}

impl std::fmt::Display for ShuffleCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShuffleCodec::Lz4 => "lz4",
            ShuffleCodec::Zstd => "zstd",
            ShuffleCodec::None => "none",
        })
    }
}

/// The committed outputs of one input stage: one entry per producer task, in task order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageInput {
    pub stage_id: u32,
    pub producers: Vec<OutputFile>,
    /// `Some(s)`: cut down to what a task reading reader partitions
    /// `s.start..s.end` needs — each producer's partitions in that range
    /// (partitioned readers), or the producers in that range (readers by
    /// producer). The task's reader partition `s.start` then returns the whole
    /// range. `None`: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<Slice>,
}

/// A range of reader partitions, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub start: u32,
    pub end: u32,
}

impl Slice {
    /// The one partition `p`.
    pub fn one(p: u32) -> Self {
        Self {
            start: p,
            end: p.saturating_add(1),
        }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl StageInput {
    /// The part of this input a reader of `mode` needs for reader partitions
    /// `slice`.
    pub fn sliced(&self, slice: Slice, by_producer: bool) -> StageInput {
        let producers = if by_producer {
            let end = slice.range().end.min(self.producers.len());
            let start = slice.range().start.min(end);
            self.producers[start..end].to_vec()
        } else {
            self.producers
                .iter()
                .map(|f| {
                    let end = slice.range().end.min(f.partitions.len());
                    let start = slice.range().start.min(end);
                    OutputFile {
                        url: f.url.clone(),
                        keys: vec![],
                        size: f.size,
                        partitions: f.partitions[start..end].to_vec(),
                    }
                })
                .collect()
        };
        StageInput {
            stage_id: self.stage_id,
            producers,
            slice: Some(slice),
        }
    }
}

/// One object written by a task attempt, with the index of its partitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Full URL of the object (`s3://bucket/key`, `file:///path`, `memory:///key`).
    pub url: String,
    /// Size of the whole object in bytes.
    pub size: u64,
    pub partitions: Vec<PartitionSlot>,
    /// What a writer asked to summarise sets of keys saw of each (see
    /// [`crate::keys`]); the control plane takes them out when the stage
    /// commits, so readers are never handed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySummary>,
}

/// The join keys one shuffle writer wrote (rows whose keys are all non-null):
/// cheap to merge with its siblings' into a filter for the join's other side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeySummary {
    /// Rows with every key non-null.
    pub rows: u64,
    /// Per key column, the smallest and largest value; None where the type
    /// has no order worth filtering on, or no rows were seen.
    pub bounds: Vec<Option<KeyBounds>>,
    /// The distinct keys' hashes, little-endian u64s (see `keys::hash_rows`);
    /// empty when they were too many to list and `bloom` holds them.
    #[serde(with = "base64_bytes", default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<u8>,
    /// A Bloom filter's blocks (see `keys::Bloom`), when the keys were too many to list.
    #[serde(with = "base64_bytes", default, skip_serializing_if = "Vec::is_empty")]
    pub bloom: Vec<u8>,
}

/// A key column's smallest and largest value, as datafusion-proto `ScalarValue`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyBounds {
    #[serde(with = "base64_bytes")]
    pub min: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub max: Vec<u8>,
}

/// Where one output partition lies in a shuffle file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSlot {
    pub offset: u64,
    pub length: u64,
    pub rows: u64,
}

/// What came back from one task attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskResult {
    pub wire_version: u32,
    pub id: TaskId,
    pub outcome: TaskOutcome,
    /// What the attempt used, succeeded or failed.
    #[serde(default)]
    pub usage: TaskUsage,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskOutcome {
    Succeeded {
        output: OutputFile,
        metrics: TaskMetrics,
    },
    Failed(TaskFailure),
}

/// A task that ran and failed. `retryable` says whether another attempt can help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub message: String,
    pub retryable: bool,
}

/// Broad cause of a task failure, as the control plane needs it to decide what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The spec's wire version is not the executor's.
    WireVersion,
    /// The plan bytes could not be decoded.
    PlanDecode,
    /// Reading or writing the object store failed.
    Storage,
    /// An input object is missing.
    NotFound,
    /// The task ran out of memory under its limit.
    ResourcesExhausted,
    /// The query failed while running (bad cast, division by zero, ...).
    Execution,
    /// An internal error in Squall or DataFusion.
    Internal,
}

/// Counters of one task attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Rows read from tables and shuffle inputs.
    pub rows_in: u64,
    /// Bytes read from the object store (table scans and shuffle reads).
    pub bytes_in: u64,
    /// The part of `bytes_in` read from tables (the rest is shuffle input).
    #[serde(default)]
    pub bytes_scanned: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    /// Arrow bytes of the output before compression (shuffle writers).
    #[serde(default)]
    pub raw_bytes_out: u64,
    pub elapsed_ms: u64,
    pub peak_memory_bytes: u64,
    /// Bytes operators wrote to local disk because the memory limit was reached.
    #[serde(default)]
    pub spilled_bytes: u64,
    /// CPU microseconds by operator name (see [`crate::run::cpu_by_operator`]),
    /// and the task's own steps outside operators (`(plan decode)`, …).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cpu_us: std::collections::BTreeMap<String, u64>,
    /// Rows and bytes each operator produced, by operator name (DataFusion's
    /// `output_rows` and `output_bytes`, where the operator keeps them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub operator_output: std::collections::BTreeMap<String, (u64, u64)>,
    /// Rows that filters built from another stage's join keys removed before
    /// they were written (see [`crate::keys::KeyFilterExec`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_filter_rows_removed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() {
        let spec = TaskSpec {
            wire_version: WIRE_VERSION,
            id: TaskId {
                job_id: "j".into(),
                run_id: "r".into(),
                stage_id: 2,
                task: 3,
                attempt: 1,
            },
            action: TaskAction::Run,
            plan: vec![0, 1, 2, 255],
            partition: Some(3),
            inputs: vec![StageInput {
                slice: None,
                stage_id: 1,
                producers: vec![OutputFile {
                    url: "memory:///x".into(),
                    keys: vec![],
                    size: 10,
                    partitions: vec![PartitionSlot {
                        offset: 0,
                        length: 10,
                        rows: 4,
                    }],
                }],
            }],
            memory_limit_bytes: 1 << 30,
            session_options: vec![("datafusion.execution.batch_size".into(), "1024".into())],
            hedging: Default::default(),
            shuffle_codec: Default::default(),
            trace_context: None,
        };
        let text = serde_json::to_string(&spec).unwrap();
        let back: TaskSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.plan, spec.plan);
        assert_eq!(back.inputs, spec.inputs);
        assert_eq!(back.id, spec.id);
    }

    #[test]
    fn outcome_is_tagged() {
        let failed = TaskOutcome::Failed(TaskFailure {
            kind: FailureKind::Storage,
            message: "boom".into(),
            retryable: true,
        });
        let text = serde_json::to_string(&failed).unwrap();
        assert!(text.contains("\"status\":\"failed\""), "{text}");
    }

    #[test]
    fn shuffles_over_a_network_are_compressed_harder() {
        for (folder, codec) in [
            ("s3://bucket/work", ShuffleCodec::Zstd),
            ("S3://bucket/work", ShuffleCodec::Zstd),
            ("gs://bucket/work", ShuffleCodec::Zstd),
            ("file:///tmp/work", ShuffleCodec::Lz4),
            ("memory:///work", ShuffleCodec::Lz4),
            ("/tmp/work", ShuffleCodec::Lz4),
        ] {
            assert_eq!(ShuffleCodec::for_folder(folder), codec, "{folder}");
        }
        assert_eq!("ZSTD".parse::<ShuffleCodec>(), Ok(ShuffleCodec::Zstd));
        assert_eq!("lz4".parse::<ShuffleCodec>(), Ok(ShuffleCodec::Lz4));
        assert_eq!("None".parse::<ShuffleCodec>(), Ok(ShuffleCodec::None));
        let refused = "gzip".parse::<ShuffleCodec>().unwrap_err();
        assert!(refused.contains("'gzip'") && refused.contains("lz4, zstd or none"));
        // Small jobs on this machine write plain IPC; large ones and those
        // over a network compress.
        let small = PLAIN_SHUFFLE_READ_BYTES;
        assert_eq!(
            ShuffleCodec::for_job("/tmp/work", small),
            ShuffleCodec::None
        );
        assert_eq!(ShuffleCodec::for_job("memory:///w", 0), ShuffleCodec::None);
        assert_eq!(
            ShuffleCodec::for_job("/tmp/work", small + 1),
            ShuffleCodec::Lz4
        );
        assert_eq!(ShuffleCodec::for_job("s3://b/w", 0), ShuffleCodec::Zstd);
        // A spec that does not say is LZ4, as an executor of version 7 wrote.
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "wire_version": WIRE_VERSION,
            "id": {"job_id": "j", "run_id": "r", "stage_id": 1, "task": 0, "attempt": 0},
            "plan": "",
            "inputs": [],
            "memory_limit_bytes": 1,
        }))
        .unwrap();
        assert_eq!(spec.shuffle_codec, ShuffleCodec::Lz4);
    }
}
