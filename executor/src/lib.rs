//! Squall's executor: everything one task needs, and nothing about scheduling.
//!
//! # What belongs here
//! The task protocol (`protocol`), Squall's plan nodes (the writer that ends every
//! stage, `writer`, in its two kinds, shuffle and result files; the shuffle reader)
//! and their datafusion-proto codec, the shuffle file format, object-store
//! resolution, stopping a task (`stop`), and `run_task`. The in-process backend and the Lambda handler both
//! call [`run_task`]; neither adds logic of its own.

pub mod bounds;
pub mod codec;
pub mod combine;
pub mod compressed;
pub mod context;
pub mod faults;
pub mod hedge;
pub mod keys;
pub mod lambda;
pub mod partitions;
pub mod protocol;
pub mod result_writer;
pub mod root;
pub mod run;
pub mod shuffle;
pub mod stop;
pub mod stores;
pub mod telemetry;
pub mod usage;
pub mod writer;

pub use bounds::{ValueCaps, bounded_functions, human_bytes};
pub use codec::{SquallCodec, decode_plan, encode_plan};
pub use context::{
    ExecutorContext, METADATA_CACHE_BYTES, TaskAttempt, new_metadata_cache, squall_session_config,
    task_cache_config,
};
pub use faults::{Fault, FaultPlan};
pub use hedge::Hedging;
pub use keys::{KeyFilter, KeyFilterExec};
pub use partitions::{narrow, one_to_one, regrouped, scan_config};
pub use protocol::*;
pub use result_writer::{ResultWriterExec, is_result_file_of, result_file_name};
pub use root::stage_writer;
pub use run::{run_task, run_task_stoppable};
pub use shuffle::{ReadMode, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec};
pub use stop::StopFlag;
pub use stores::{ObjectUrl, StoreRegistry};
pub use usage::{
    CountingStore, FunctionUsage, RequestCounter, RequestCounts, StoreRequests, TaskUsage,
    add_requests,
};
pub use writer::{StageWriter, WriterExec};
