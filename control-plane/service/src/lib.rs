//! `squall serve`: the control plane as a long-running service.
//!
//! # What belongs here
//! What only the service needs, in three layers:
//! - the HTTP API's bodies and the states they name (`api`), with the cron and
//!   limit rules (`cron`, `limits`), which depend on nothing else here;
//! - the durable job store (`store`);
//! - the service itself, answering with domain errors (`errors`): its state and
//!   job views (`core`), running jobs (`dispatch`), taking them in
//!   (`submission`), the catalog (`catalog`), schedules and their timetable
//!   (`schedules`, `timetable`), result pages (`results`), deleting old jobs
//!   (`retention`), recording commits (`journal`), progress and metrics;
//! - on top, the HTTP layer (`http`: router, extractors, problem+json, one
//!   handler file per resource, the OpenAPI document) and a typed client of it
//!   (`client`).
//!
//! Planning and running a job stay in `squall-engine`, shared with `squall run`.
//! This file only declares and re-exports.

pub mod api;
pub mod catalog;
pub mod client;
pub mod core;
pub mod cron;
pub mod dispatch;
pub mod errors;
pub mod flight;
pub mod http;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod principals;
mod progress;
pub mod results;
pub mod retention;
pub mod schedules;
pub mod store;
pub mod submission;
pub mod timetable;

pub use self::core::{DEFAULT_RETENTION, Service, ServiceConfig};
pub use api::{AttemptRecord, JobState, MissedRunPolicy, OverlapPolicy};
pub use errors::ServiceError;
pub use http::{ApiDoc, MAX_BODY_BYTES, router, serve};
pub use journal::StoreJournal;
pub use limits::{HttpLimits, Limits};
pub use principals::{LimitOverrides, Principal, Principals, Role, Secret};
pub use store::{CatalogTable, JobRecord, JobStore, NewJob, ScheduleRecord, StoreError, now_ms};
