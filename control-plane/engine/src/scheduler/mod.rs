//! Runs a stage DAG on a backend.
//!
//! A stage starts when every stage it reads has committed. Each task is tried up to
//! `max_attempts` times while its failures are retryable, following the commit
//! protocol (see `commit`): the first successful attempt of a task wins and failed
//! attempts' objects are deleted. A task that runs out of memory is tried again
//! with a pool twice as large, up to `max_memory_limit_bytes`. A task that
//! straggles gets one backup copy ([`speculation`]); whichever copy succeeds
//! first wins, and the other is stopped and its object deleted. On a failure that
//! cannot be retried, no new task starts, running ones are waited for, and
//! everything the job wrote is removed.
//!
//! # In pieces
//! Lowest first: how tasks run ([`options`]), what watchers are told
//! ([`events`]), the retry decision ([`retry`], pure), reduce sizing
//! ([`coalesce`]), the two-level exchange's policy ([`exchange`]), backups
//! ([`speculation`]) and which small stages run inside their reader's task
//! ([`fusion`]); what a job's run shares
//! ([`context`]); a stage's tasks ([`tasks`]); one copy of a task, attempt after
//! attempt ([`attempt`]); one stage ([`stage`]); a reduce stage's combine
//! steps ([`combine`]); the job ([`job`]). This file
//! only declares and re-exports.

mod attempt;
pub mod coalesce;
mod combine;
mod context;
mod events;
pub mod exchange;
pub mod fusion;
mod job;
mod options;
pub mod retry;
pub mod speculation;
mod stage;
mod tasks;

pub use coalesce::{Coalescing, Share};
pub use combine::{combinable, mergeable};
pub use context::Scheduler;
pub use events::{JobEvent, KeyFilterApplied, ProgressSink, StageKind, StageStats};
pub use exchange::{Exchange, ExchangeChoice, ExchangeMode, Pricing};
pub use job::DagOutcome;
pub use options::{FUSE_MAX_BYTES, TaskOptions};
pub use speculation::Speculation;
