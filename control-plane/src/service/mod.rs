//! `squall serve`: the control plane as a long-running service.
//!
//! # What belongs here
//! What only the service needs: the durable job store (`store`); later the HTTP
//! API, admission control and the cron triggers. Planning and running a job stay
//! in `engine`, shared with `squall run`.

pub mod store;

pub use store::{CatalogTable, JobRecord, JobState, JobStore, NewJob, StoreError};
