//! Squall's engine: SQL to a stage DAG, the scheduler that runs it on an
//! executor backend, and one job from request to result. It builds no web
//! server, job store or command line: `squall-service` (`squall serve`),
//! `squall-tools` (TPC-H, benches, the scale model) and the `squall` binary
//! sit on top of it.
//!
//! # What belongs here
//! In layers, each importing only from those below it (`tests/tests/layers.rs`
//! checks it, in every crate of the workspace):
//! - `error` (the engine's error type);
//! - `urls` (locations as URLs), `access` (which URLs a shared server's callers
//!   may name), `commit` (the commit protocol: attempt names, output claims,
//!   manifests, deletes, sweeps), `cost` (a job's usage, priced), `formats`
//!   (file formats, compression, CSV options), `hive` (partition folders);
//! - `tables` (table specs, listing, registering), `platform` (where tasks
//!   run, by latencies, scaling rate, bandwidth and billing);
//! - `planner` (SQL to stage DAG) and `backend` (where tasks run);
//! - `scheduler` (runs a DAG on a backend);
//! - `engine` (one job from request to result: the entry points).
//!
//! Anything one task needs to run lives in `squall-executor` instead. This file
//! only declares and re-exports.

pub mod access;
pub mod backend;
pub mod commit;
pub mod cost;
pub mod csv_nulls;
pub mod engine;
pub mod error;
pub mod formats;
pub mod hive;
pub mod planner;
pub mod platform;
pub mod scheduler;
pub mod tables;
pub mod urls;

pub use access::{Access, AccessPolicy};
pub use backend::{ExecutorBackend, InProcessBackend};
pub use commit::{CLAIM_NAME, MANIFEST_NAME, Manifest, StageJournal};
pub use cost::{Cost, JobCost, JobMeter, Prices};
pub use engine::{Engine, JobRequest, JobResult, JobRun, Stop, read_result};
pub use error::{Result, SquallError};
pub use planner::{PlanCaches, PlanOptions, StageDag, plan_job, plan_job_within};
pub use scheduler::{JobEvent, ProgressSink, TaskOptions};
pub use tables::{TableFormat, TableSpec};
