//! What a job cost: its task attempts' usage, priced.
//!
//! # What belongs here
//! [`Prices`] (a price table, us-east-1 list prices by default, overridable in
//! the config), [`Cost`] (sums of what a job or a stage used and its estimate
//! in dollars), and [`JobMeter`], which a running job's scheduler feeds with
//! every attempt's [`TaskUsage`] and which stops a job whose estimate passes
//! its limit.
//!
//! How usage becomes dollars:
//! - Lambda compute: per attempt, (billed duration + init time on a cold
//!   start) × the function's memory, at the GB-second price of its
//!   architecture. Every attempt counts: retries, backups and losers too.
//!   An attempt whose function never answered (crashed, timed out) is billed
//!   at the time the control plane waited for it and the largest memory the
//!   job's functions reported.
//! - Lambda requests: one per invocation (throttled invokes are not billed).
//! - S3 requests: PUT, COPY, POST and LIST at the PUT price; GET and HEAD at
//!   the GET price; DELETE free. Only requests to `s3://` stores are priced;
//!   the others (local disk, memory) are counted and shown, at no cost.
//! - Not priced: data transfer (free within a region), storage of the short
//!   lived work files, the control plane's own machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use squall_executor::{RequestCounter, RequestCounts, StoreRequests, TaskUsage};
use tokio::sync::watch;

use crate::error::{Result, SquallError};

/// List prices in US dollars. Defaults: us-east-1, first pricing tier,
/// December 2026 (aws.amazon.com/lambda/pricing, aws.amazon.com/s3/pricing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    /// Lambda compute per GB-second, x86_64 functions.
    pub lambda_gb_second_x86_64: f64,
    /// Lambda compute per GB-second, arm64 (Graviton) functions.
    pub lambda_gb_second_arm64: f64,
    /// Lambda requests, per million invocations.
    pub lambda_per_million_requests: f64,
    /// S3 Standard PUT, COPY, POST and LIST requests, per thousand.
    pub s3_put_per_thousand: f64,
    /// S3 Standard GET, HEAD and other reads, per thousand.
    pub s3_get_per_thousand: f64,
    /// One vCPU of the machine the control plane runs on, per hour: not
    /// billed to jobs, but what `--backend auto` weighs a stage kept on
    /// this machine's executors at (default: an m7i.large on demand,
    /// $0.1008 an hour for 2 vCPUs).
    pub local_vcpu_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            lambda_gb_second_x86_64: 0.000_016_666_7,
            lambda_gb_second_arm64: 0.000_013_333_4,
            lambda_per_million_requests: 0.20,
            s3_put_per_thousand: 0.005,
            s3_get_per_thousand: 0.000_4,
            local_vcpu_hour: 0.0504,
        }
    }
}

/// No price may be above this (a typo guard: $1,000 per unit).
const MAX_PRICE: f64 = 1000.0;

impl Prices {
    /// Refuses a price that is negative, not a number or absurdly high,
    /// naming it.
    pub fn validate(&self) -> Result<()> {
        let prices = [
            ("lambda_gb_second_x86_64", self.lambda_gb_second_x86_64),
            ("lambda_gb_second_arm64", self.lambda_gb_second_arm64),
            (
                "lambda_per_million_requests",
                self.lambda_per_million_requests,
            ),
            ("s3_put_per_thousand", self.s3_put_per_thousand),
            ("s3_get_per_thousand", self.s3_get_per_thousand),
            ("local_vcpu_hour", self.local_vcpu_hour),
        ];
        for (name, price) in prices {
            if !(0.0..=MAX_PRICE).contains(&price) {
                return Err(SquallError::InvalidArgument(format!(
                    "price {name} is {price}: it must be a number of dollars from 0 to {MAX_PRICE}"
                )));
            }
        }
        Ok(())
    }

    fn gb_second(&self, arch: &str) -> f64 {
        match arch {
            "aarch64" | "arm64" => self.lambda_gb_second_arm64,
            _ => self.lambda_gb_second_x86_64,
        }
    }
}

/// Requests of each kind, as the API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Requests {
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub list: u64,
    pub delete: u64,
    /// Reads sent a second time because the first was slow (hedged); each
    /// is also one of the GETs.
    #[serde(default)]
    pub hedged: u64,
}

impl From<RequestCounts> for Requests {
    fn from(c: RequestCounts) -> Self {
        Self {
            get: c.get,
            head: c.head,
            put: c.put,
            list: c.list,
            delete: c.delete,
            hedged: c.hedged,
        }
    }
}

impl From<Requests> for RequestCounts {
    fn from(r: Requests) -> Self {
        Self {
            get: r.get,
            head: r.head,
            put: r.put,
            list: r.list,
            delete: r.delete,
            hedged: r.hedged,
        }
    }
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.list + self.delete
    }
}

/// What a job, or one of its stages, used, and its estimate in dollars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cost {
    /// The estimate: Lambda compute + Lambda requests + S3 requests.
    pub usd: f64,
    pub lambda_compute_usd: f64,
    pub lambda_request_usd: f64,
    pub s3_request_usd: f64,
    /// Task attempts run (retries, backups and superseded copies included).
    pub attempts: u64,
    /// Lambda invocations billed.
    pub lambda_invocations: u64,
    /// Billed Lambda duration × memory, GB-seconds.
    pub lambda_gb_seconds: f64,
    /// Invocations that started a fresh function process.
    pub cold_starts: u64,
    /// Time executors spent on the attempts.
    pub task_seconds: f64,
    /// The part of `task_seconds` spent on this machine's in-process
    /// executors (the rest on Lambda).
    #[serde(default)]
    pub local_task_seconds: f64,
    /// Compute time DataFusion's operators measured in the attempts.
    pub cpu_seconds: f64,
    /// Bytes the winning attempts read from tables.
    pub bytes_scanned: u64,
    /// Object-store requests of every store.
    pub requests: Requests,
    /// The same by store kind (`s3`, `file`, `memory`); only `s3` is priced.
    pub requests_by_store: BTreeMap<String, Requests>,
}

impl Cost {
    /// Adds one attempt's usage. `wall` is how long the control plane waited
    /// for it; `fallback` the memory (MB) and architecture to bill an
    /// unreported attempt of a billing backend at.
    fn add_attempt(
        &mut self,
        usage: &TaskUsage,
        wall: Duration,
        billed_backend: bool,
        fallback: Option<&(u64, String)>,
        prices: &Prices,
    ) {
        self.attempts += 1;
        self.add_requests(&usage.requests);
        let seconds = if usage.reported {
            usage.duration_ms as f64 / 1000.0
        } else {
            wall.as_secs_f64()
        };
        self.task_seconds += seconds;
        self.cpu_seconds += usage.cpu_ms as f64 / 1000.0;
        let billed = match &usage.function {
            Some(f) => {
                self.cold_starts += u64::from(f.cold_start);
                Some((
                    (usage.duration_ms + f.init_ms) as f64 / 1000.0,
                    f.memory_mb,
                    f.arch.as_str(),
                ))
            }
            None if billed_backend && !usage.reported => Some((
                wall.as_secs_f64(),
                fallback.map_or(0, |f| f.0),
                fallback.map_or("x86_64", |f| f.1.as_str()),
            )),
            None => None,
        };
        if billed.is_none() {
            self.local_task_seconds += seconds;
        }
        if let Some((seconds, memory_mb, arch)) = billed {
            let gb_seconds = seconds * memory_mb as f64 / 1024.0;
            self.lambda_invocations += 1;
            self.lambda_gb_seconds += gb_seconds;
            self.lambda_compute_usd += gb_seconds * prices.gb_second(arch);
        }
        self.reprice(prices);
    }

    fn add_requests(&mut self, requests: &StoreRequests) {
        for (store, counts) in requests {
            let entry = self.requests_by_store.entry(store.clone()).or_default();
            let mut sum = RequestCounts::from(*entry);
            sum.add(counts);
            *entry = sum.into();
        }
        let mut all = RequestCounts::default();
        for r in self.requests_by_store.values() {
            all.add(&(*r).into());
        }
        self.requests = all.into();
    }

    /// Adds `other` (another stage's, or the control plane's) into this.
    pub fn add(&mut self, other: &Cost, prices: &Prices) {
        self.attempts += other.attempts;
        self.lambda_invocations += other.lambda_invocations;
        self.lambda_gb_seconds += other.lambda_gb_seconds;
        self.lambda_compute_usd += other.lambda_compute_usd;
        self.cold_starts += other.cold_starts;
        self.task_seconds += other.task_seconds;
        self.local_task_seconds += other.local_task_seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.bytes_scanned += other.bytes_scanned;
        let requests: StoreRequests = other
            .requests_by_store
            .iter()
            .map(|(k, r)| (k.clone(), (*r).into()))
            .collect();
        self.add_requests(&requests);
        self.reprice(prices);
    }

    /// Recomputes the request prices and the total from the counts.
    fn reprice(&mut self, prices: &Prices) {
        self.lambda_request_usd =
            self.lambda_invocations as f64 * prices.lambda_per_million_requests / 1e6;
        let s3 = ["s3", "s3a"]
            .iter()
            .filter_map(|k| self.requests_by_store.get(*k))
            .fold((0u64, 0u64), |(put, get), r| {
                (put + r.put + r.list, get + r.get + r.head)
            });
        self.s3_request_usd = s3.0 as f64 * prices.s3_put_per_thousand / 1000.0
            + s3.1 as f64 * prices.s3_get_per_thousand / 1000.0;
        self.usd = self.lambda_compute_usd + self.lambda_request_usd + self.s3_request_usd;
    }
}

/// A job's cost: the total, each stage's, and the control plane's own
/// requests (planning, commits, sweeps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCost {
    pub total: Cost,
    pub stages: BTreeMap<u32, Cost>,
    pub control_plane: Cost,
}

/// Follows one job's usage while it runs.
#[derive(Debug)]
pub struct JobMeter {
    prices: Prices,
    limit_usd: Option<f64>,
    control: Arc<RequestCounter>,
    state: Mutex<MeterState>,
    /// Set to the estimate once it passes the limit.
    over: watch::Sender<Option<f64>>,
}

#[derive(Debug, Default)]
struct MeterState {
    stages: BTreeMap<u32, Cost>,
    /// The largest memory (MB) a function of this job reported, and its
    /// architecture: what an unreported attempt is billed at.
    largest_function: Option<(u64, String)>,
    /// What earlier runs of the job used.
    carried: Option<JobCost>,
}

impl JobMeter {
    pub fn new(prices: Prices, limit_usd: Option<f64>) -> Arc<Self> {
        Arc::new(Self {
            prices,
            limit_usd,
            control: RequestCounter::new(),
            state: Mutex::default(),
            over: watch::channel(None).0,
        })
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    pub fn limit_usd(&self) -> Option<f64> {
        self.limit_usd
    }

    /// Counts the control plane's requests for this job.
    pub fn control_requests(&self) -> Arc<RequestCounter> {
        self.control.clone()
    }

    /// Takes in one attempt of a task of `stage`.
    pub fn attempt(&self, stage: u32, usage: &TaskUsage, wall: Duration, billed_backend: bool) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = &usage.function
                && state
                    .largest_function
                    .as_ref()
                    .is_none_or(|(mb, _)| f.memory_mb > *mb)
            {
                state.largest_function = Some((f.memory_mb, f.arch.clone()));
            }
            let fallback = state.largest_function.clone();
            state.stages.entry(stage).or_default().add_attempt(
                usage,
                wall,
                billed_backend,
                fallback.as_ref(),
                &self.prices,
            );
        }
        self.check_limit();
    }

    /// Takes in the table bytes a winning attempt of `stage` read.
    pub fn scanned(&self, stage: u32, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.stages.entry(stage).or_default().bytes_scanned += bytes;
    }

    /// Goes on from what earlier runs of the job used (a resumed job).
    pub fn carry(&self, earlier: &JobCost) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.carried = Some(earlier.clone());
    }

    /// The cost so far, earlier runs' included.
    pub fn report(&self) -> JobCost {
        self.report_with(true)
    }

    /// The cost of this run alone (without what [`carry`](Self::carry) was given).
    pub fn report_since_carried(&self) -> JobCost {
        self.report_with(false)
    }

    fn report_with(&self, carried: bool) -> JobCost {
        let mut control_plane = Cost::default();
        control_plane.add_requests(&self.control.snapshot());
        control_plane.reprice(&self.prices);
        let (mut stages, earlier) = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.stages.clone(), state.carried.clone())
        };
        if let Some(earlier) = earlier.filter(|_| carried) {
            control_plane.add(&earlier.control_plane, &self.prices);
            for (stage, cost) in &earlier.stages {
                stages.entry(*stage).or_default().add(cost, &self.prices);
            }
        }
        let mut total = control_plane.clone();
        for cost in stages.values() {
            total.add(cost, &self.prices);
        }
        JobCost {
            total,
            stages,
            control_plane,
        }
    }

    fn check_limit(&self) {
        let Some(limit) = self.limit_usd else { return };
        let spent = self.report().total.usd;
        if spent > limit && self.over.borrow().is_none() {
            self.over.send_replace(Some(spent));
        }
    }

    /// Returns the estimate once it has passed the limit (never without one).
    pub async fn exceeded(&self) -> f64 {
        let mut over = self.over.subscribe();
        let spent = match over.wait_for(Option::is_some).await {
            Ok(spent) => *spent,
            Err(_) => None,
        };
        match spent {
            Some(spent) => spent,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_executor::FunctionUsage;

    fn lambda(duration_ms: u64, memory_mb: u64, arch: &str, cold: Option<u64>) -> TaskUsage {
        TaskUsage {
            read_p95_ms: None,
            reported: true,
            requests: StoreRequests::from([(
                "s3".to_string(),
                RequestCounts {
                    hedged: 0,
                    get: 10,
                    head: 2,
                    put: 3,
                    list: 1,
                    delete: 4,
                },
            )]),
            duration_ms,
            cpu_ms: duration_ms / 2,
            function: Some(FunctionUsage {
                memory_mb,
                arch: arch.into(),
                cold_start: cold.is_some(),
                init_ms: cold.unwrap_or(0),
            }),
        }
    }

    /// Figures worked out by hand from the default price table.
    #[test]
    fn prices_lambda_and_s3_as_worked_by_hand() {
        let meter = JobMeter::new(Prices::default(), None);
        // 1,500 ms + 500 ms init at 2,048 MB x86: 2 s × 2 GB = 4 GB-s.
        meter.attempt(
            1,
            &lambda(1500, 2048, "x86_64", Some(500)),
            Duration::ZERO,
            true,
        );
        // 1,000 ms at 1,024 MB arm64: 1 GB-s.
        meter.attempt(
            2,
            &lambda(1000, 1024, "aarch64", None),
            Duration::ZERO,
            true,
        );
        // A crashed attempt, waited for 3 s: billed at the largest memory
        // seen (2,048 MB, x86): 6 GB-s.
        meter.attempt(2, &TaskUsage::default(), Duration::from_secs(3), true);
        meter.scanned(1, 1 << 30);
        let cost = meter.report();
        let total = &cost.total;
        assert_eq!(total.attempts, 3);
        assert_eq!(total.lambda_invocations, 3);
        assert_eq!(total.cold_starts, 1);
        assert!((total.lambda_gb_seconds - 11.0).abs() < 1e-9, "{total:?}");
        // 10 GB-s x86 × $0.0000166667 + 1 GB-s arm × $0.0000133334
        let compute = 10.0 * 0.000_016_666_7 + 0.000_013_333_4;
        assert!((total.lambda_compute_usd - compute).abs() < 1e-12);
        // 3 invocations × $0.20 / 1e6
        assert!((total.lambda_request_usd - 6e-7).abs() < 1e-15);
        // Two reported attempts: (3 PUT + 1 LIST) × 2 = 8 at $0.005/1000,
        // (10 GET + 2 HEAD) × 2 = 24 at $0.0004/1000; deletes free.
        let s3 = 8.0 * 0.005 / 1000.0 + 24.0 * 0.0004 / 1000.0;
        assert!((total.s3_request_usd - s3).abs() < 1e-15);
        assert!((total.usd - (compute + 6e-7 + s3)).abs() < 1e-12);
        assert_eq!(total.requests.delete, 8);
        assert_eq!(total.bytes_scanned, 1 << 30);
        assert!((total.task_seconds - 5.5).abs() < 1e-9);
        assert_eq!(cost.stages[&2].attempts, 2);
        assert_eq!(cost.stages[&1].lambda_invocations, 1);
    }

    #[test]
    fn in_process_attempts_cost_requests_only_and_local_requests_nothing() {
        let meter = JobMeter::new(Prices::default(), None);
        let mut usage = lambda(2000, 0, "x86_64", None);
        usage.function = None;
        usage.requests.insert(
            "file".into(),
            RequestCounts {
                get: 1000,
                ..RequestCounts::default()
            },
        );
        meter.attempt(1, &usage, Duration::from_secs(9), false);
        let total = meter.report().total;
        assert_eq!(total.lambda_invocations, 0);
        assert_eq!(total.lambda_compute_usd, 0.0);
        assert_eq!(total.requests.get, 1010);
        assert!((total.cpu_seconds - 1.0).abs() < 1e-9);
        // Only the s3 requests are priced.
        let s3 = 4.0 * 0.005 / 1000.0 + 12.0 * 0.0004 / 1000.0;
        assert!((total.usd - s3).abs() < 1e-15, "{total:?}");
    }

    #[tokio::test]
    async fn passing_the_limit_is_signalled() {
        let meter = JobMeter::new(Prices::default(), Some(0.0001));
        let waiting = {
            let meter = meter.clone();
            tokio::spawn(async move { meter.exceeded().await })
        };
        // 4 GB-s x86 ≈ $0.0000667: under.
        meter.attempt(1, &lambda(2000, 2048, "x86_64", None), Duration::ZERO, true);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        meter.attempt(1, &lambda(2000, 2048, "x86_64", None), Duration::ZERO, true);
        let spent = waiting.await.unwrap();
        assert!(spent > 0.0001, "{spent}");
    }

    #[test]
    fn bad_prices_are_named() {
        let prices = Prices {
            s3_get_per_thousand: -1.0,
            ..Prices::default()
        };
        let err = prices.validate().unwrap_err().to_string();
        assert!(err.contains("s3_get_per_thousand"), "{err}");
        let nan = Prices {
            lambda_gb_second_arm64: f64::NAN,
            ..Prices::default()
        };
        assert!(nan.validate().is_err());
        Prices::default().validate().unwrap();
    }
}
