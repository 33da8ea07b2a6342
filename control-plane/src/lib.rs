//! Squall's control plane: SQL to a stage DAG, the scheduler that runs it on an
//! executor backend, and the pieces the `squall` binary is built from.
//!
//! # What belongs here
//! Planning (`planner`), tables (`tables`), scheduling and commit (`scheduler`),
//! a job's output folder (`output`), which URLs a shared server's callers may
//! name (`access`), backends (`backend`), the job entry point (`engine`), the
//! service's pieces (`service`) and TPC-H helpers (`tpch`).
//! Anything one task needs to run lives in `squall-executor` instead.

pub mod access;
pub mod backend;
pub mod bench;
pub mod commit;
pub mod engine;
pub mod error;
pub mod planner;
pub mod scheduler;
pub mod service;
pub mod tables;
pub mod tpch;
pub mod urls;

pub use access::{Access, AccessPolicy};
pub use backend::{ExecutorBackend, InProcessBackend};
pub use commit::{CLAIM_NAME, MANIFEST_NAME, Manifest, StageJournal};
pub use engine::{Engine, JobRequest, JobResult, JobRun, Stop, read_result};
pub use error::{Result, SquallError};
pub use planner::{PlanCaches, PlanOptions, StageDag, plan_job, plan_job_with};
pub use scheduler::{JobEvent, ProgressSink, TaskOptions};
pub use tables::{TableFormat, TableSpec};
