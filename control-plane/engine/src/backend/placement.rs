//! Where a stage's tasks run when a job may use both this machine's
//! executors and Lambda (`--backend auto`): the prediction each way from
//! what the scheduler knows when the stage is ready, and the choice.
//!
//! A stage of `n` tasks working through `W` bytes (its scans' column bytes as
//! the planner weighed them, plus the shuffle bytes its tasks read) is
//! predicted three ways, tasks taken as equal shares of `W`:
//! - **local**: `ceil(n / slots)` waves of `W/n ÷ rate` on the free local
//!   executors;
//! - **Lambda**: a cold start (unless enough environments answered lately),
//!   then `ceil(n / concurrency)` waves of one invocation plus a few
//!   requests plus `W/n ÷ (rate ÷ cpu factor, at most the bandwidth)`;
//! - **split**: the local executors keep the tasks they can finish while
//!   Lambda runs one wave, Lambda takes the rest (tasks overflow from a busy
//!   local pool).
//!
//! Each is priced: Lambda by GB-seconds and requests (the job's price table),
//! local by the executors' share of the machine (`Prices::local_vcpu_hour`).
//! A choice that would take the job past its cost limit is not made. Then
//! `Prefer::Time` takes the soonest (leaving this machine only for a gain of
//! at least [`MIN_GAIN`]), `Prefer::Cost` the cheapest. `burst_above` instead
//! decides by size alone: stages reading at least that many bytes run on
//! Lambda, the others here.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::cost::Prices;
use crate::platform::Platform;

/// Bytes one of this machine's executors works through a second: column
/// bytes of Parquet scanned, or shuffle bytes read, with the operators over
/// them. Measured: TPC-H Q1 at SF 1 reads 59 MB of `lineitem`'s columns in
/// 0.6 CPU-seconds (`squall run --show-cost`, release build, 2 cores).
pub const LOCAL_BYTES_PER_SECOND: f64 = 100e6;

/// What a task costs beyond its bytes on this machine (spec encoding, plan
/// decoding, files opened), seconds.
const LOCAL_TASK_SECONDS: f64 = 0.005;

/// Requests a task makes beyond its reads' bandwidth (a footer, the shuffle
/// file's PUT, an index): each one round trip.
const TASK_ROUND_TRIPS: f64 = 4.0;

/// A stage leaves this machine for a predicted time this much shorter only
/// (the prediction is rough, and this machine is already paid for).
pub const MIN_GAIN: f64 = 0.25;

/// Where an attempt ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Place {
    /// This machine's in-process executors.
    Local,
    /// A Lambda invocation.
    Lambda,
}

impl Place {
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Local => "local",
            Place::Lambda => "lambda",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Place::Local => "in-process",
            Place::Lambda => "on Lambda",
        }
    }
}

/// What an auto placement favours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// The place predicted to finish the stage sooner, within the cost limit.
    #[default]
    Time,
    /// The place predicted to cost less.
    Cost,
}

/// How an auto backend places stages.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstPolicy {
    /// Stages reading at least this many bytes run on Lambda, the others
    /// here; None: decided by predicted time and cost.
    pub burst_above: Option<u64>,
    pub prefer: Prefer,
    /// Bytes one local executor works through a second.
    pub local_bytes_per_second: f64,
    /// The Lambda side: its latencies, bandwidth, memory and speed.
    pub lambda: Platform,
}

impl BurstPolicy {
    /// Decided by prediction, for time, against AWS Lambda with functions
    /// of `memory_mb`.
    pub fn new(memory_mb: u64) -> Self {
        Self {
            burst_above: None,
            prefer: Prefer::Time,
            local_bytes_per_second: LOCAL_BYTES_PER_SECOND,
            lambda: Platform::lambda(memory_mb),
        }
    }
}

/// What the scheduler knows of a stage when it is ready to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOutlook {
    pub tasks: usize,
    /// Bytes of table columns its scans read (the planner's weights).
    pub scan_bytes: u64,
    /// Bytes of committed shuffle files its tasks read, together.
    pub shuffle_bytes: u64,
    /// What the job has cost so far, and its limit.
    pub spent_usd: f64,
    pub limit_usd: Option<f64>,
    pub prices: Prices,
}

impl StageOutlook {
    pub fn bytes(&self) -> u64 {
        self.scan_bytes.saturating_add(self.shuffle_bytes)
    }
}

/// What an auto backend has free when a stage is placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Local executors not running a task now (at least 1 is assumed: busy
    /// ones free up).
    pub local_free: usize,
    /// Invocations that may be in flight at once.
    pub lambda_concurrency: usize,
    /// Environments that answered lately and are likely still warm.
    pub lambda_warm: usize,
}

/// One way of running a stage, predicted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Predicted {
    pub seconds: f64,
    pub usd: f64,
}

/// Where a stage runs, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placement {
    /// Where its tasks go first.
    pub place: Place,
    /// Tasks that go to Lambda: all for `lambda`, none or an overflow for
    /// `local` (taken by tasks that find every local executor busy).
    pub burst_tasks: usize,
    /// The predictions it was chosen from (None where there was no choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Predicted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<Predicted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Predicted>,
    pub reason: String,
}

impl Placement {
    /// A backend with one place: no choice made.
    pub fn only(place: Place, tasks: usize) -> Self {
        Self {
            place,
            burst_tasks: if place == Place::Lambda { tasks } else { 0 },
            local: None,
            lambda: None,
            split: None,
            reason: format!("the backend runs every task {}", place.describe()),
        }
    }

    /// Every task at `place`, because the job asked for it.
    pub fn asked(place: Place, tasks: usize) -> Self {
        Self {
            reason: format!("the job asked for every task {}", place.describe()),
            ..Self::only(place, tasks)
        }
    }

    /// `local`, `lambda`, or `split` (local with an overflow to Lambda).
    pub fn label(&self) -> &'static str {
        match (self.place, self.burst_tasks) {
            (Place::Lambda, _) => "lambda",
            (Place::Local, 0) => "local",
            (Place::Local, _) => "split",
        }
    }
}

/// A stage's placement while its tasks run: how many of them may still go
/// to Lambda.
#[derive(Debug)]
pub struct Placed {
    pub placement: Placement,
    burst_left: AtomicUsize,
}

impl Placed {
    pub fn new(placement: Placement) -> Self {
        Self {
            burst_left: AtomicUsize::new(placement.burst_tasks),
            placement,
        }
    }

    /// Takes one of the stage's tasks for Lambda, if any are left.
    pub fn take_burst(&self) -> bool {
        self.burst_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Places a stage (see the module's documentation).
pub fn decide(policy: &BurstPolicy, outlook: &StageOutlook, capacity: Capacity) -> Placement {
    let n = outlook.tasks.max(1);
    let bytes = outlook.bytes();
    let model = Model::new(policy, outlook, capacity);
    let local = model.local_share(n);
    let lambda = model.lambda(n);
    let (split_tasks, split) = model.split(n);
    let within = |p: &Predicted, local_part: &Predicted| match outlook.limit_usd {
        // The machine's share is not billed to the job: only Lambda's part counts.
        Some(limit) => outlook.spent_usd + (p.usd - local_part.usd).max(0.0) <= limit,
        None => true,
    };
    let mut placement = Placement {
        place: Place::Local,
        burst_tasks: 0,
        local: Some(local),
        lambda: Some(lambda),
        split: (split_tasks > 0).then_some(split),
        reason: String::new(),
    };
    let lambda_ok = within(&lambda, &Predicted::default());
    if let Some(threshold) = policy.burst_above {
        if bytes < threshold {
            placement.reason = format!(
                "reads {} < --burst-above {}",
                show_bytes(bytes),
                show_bytes(threshold)
            );
        } else if !lambda_ok {
            placement.reason = over_limit(&lambda, outlook);
        } else {
            placement.place = Place::Lambda;
            placement.burst_tasks = n;
            placement.reason = format!(
                "reads {} >= --burst-above {}",
                show_bytes(bytes),
                show_bytes(threshold)
            );
        }
        return placement;
    }
    let local_share = model.local_share(n - split_tasks);
    let split_ok = split_tasks > 0 && within(&split, &local_share);
    // Time: the soonest, leaving here only for a gain; cost: the cheapest.
    let key = |p: &Predicted| match policy.prefer {
        Prefer::Time => p.seconds,
        Prefer::Cost => p.usd,
    };
    let worth = |p: &Predicted| {
        policy.prefer == Prefer::Cost || p.seconds <= local.seconds * (1.0 - MIN_GAIN)
    };
    let mut best = (Place::Local, 0, local);
    for (ok, place, burst, p) in [
        (lambda_ok, Place::Lambda, n, lambda),
        (split_ok, Place::Local, split_tasks, split),
    ] {
        if ok && worth(&p) && key(&p) < key(&best.2) {
            best = (place, burst, p);
        }
    }
    let (place, burst, chosen) = best;
    placement.place = place;
    placement.burst_tasks = burst;
    placement.reason = reason(policy.prefer, place, burst, &chosen, &local, &lambda);
    if place == Place::Local && burst == 0 && !lambda_ok && lambda.seconds < local.seconds {
        placement.reason = over_limit(&lambda, outlook);
    }
    placement
}

fn reason(
    prefer: Prefer,
    place: Place,
    burst: usize,
    chosen: &Predicted,
    local: &Predicted,
    lambda: &Predicted,
) -> String {
    let times = format!(
        "predicted {} here, {} on Lambda",
        show_seconds(local.seconds),
        show_seconds(lambda.seconds)
    );
    match (prefer, place, burst) {
        (Prefer::Time, Place::Local, 0) => format!("{times}: stays here"),
        (Prefer::Time, Place::Lambda, _) => format!("{times}: sooner on Lambda"),
        (Prefer::Time, Place::Local, k) => format!(
            "{times}; {k} tasks overflow to Lambda: {} together",
            show_seconds(chosen.seconds)
        ),
        (Prefer::Cost, _, _) => format!(
            "{times}; cheapest {}: ${:.6}",
            match (place, burst) {
                (Place::Lambda, _) => "on Lambda".to_string(),
                (Place::Local, 0) => "here".to_string(),
                (Place::Local, k) => format!("with {k} tasks on Lambda"),
            },
            chosen.usd
        ),
    }
}

fn over_limit(lambda: &Predicted, outlook: &StageOutlook) -> String {
    format!(
        "Lambda's predicted ${:.6} would take the job past its cost limit of ${:.6} \
         (${:.6} spent): stays here",
        lambda.usd,
        outlook.limit_usd.unwrap_or_default(),
        outlook.spent_usd
    )
}

/// The prediction's terms for one stage.
struct Model<'a> {
    policy: &'a BurstPolicy,
    prices: &'a Prices,
    capacity: Capacity,
    /// Bytes of one task.
    task_bytes: f64,
}

impl<'a> Model<'a> {
    fn new(policy: &'a BurstPolicy, outlook: &'a StageOutlook, capacity: Capacity) -> Self {
        Self {
            policy,
            prices: &outlook.prices,
            capacity,
            task_bytes: outlook.bytes() as f64 / outlook.tasks.max(1) as f64,
        }
    }

    /// One task on a local executor, seconds.
    fn local_task(&self) -> f64 {
        LOCAL_TASK_SECONDS + self.task_bytes / self.policy.local_bytes_per_second.max(1.0)
    }

    /// One task's invocation, warm, seconds.
    fn lambda_task(&self) -> f64 {
        let platform = &self.policy.lambda;
        let mut rate = self.policy.local_bytes_per_second.max(1.0) / platform.cpu_factor.max(1e-3);
        if let Some(bandwidth) = platform.bandwidth {
            rate = rate.min(bandwidth);
        }
        platform.invoke.median + TASK_ROUND_TRIPS * platform.request.median + self.task_bytes / rate
    }

    fn local_slots(&self) -> usize {
        self.capacity.local_free.max(1)
    }

    /// What `tasks` tasks cost on this machine's executors.
    fn local_share(&self, tasks: usize) -> Predicted {
        let task = self.local_task();
        let vcpu_second = self.prices.local_vcpu_hour / 3600.0;
        Predicted {
            seconds: tasks.div_ceil(self.local_slots()) as f64 * task,
            usd: tasks as f64 * task * vcpu_second,
        }
    }

    /// `tasks` tasks on Lambda: time to the last one's end, and their bill.
    fn lambda(&self, tasks: usize) -> Predicted {
        let platform = &self.policy.lambda;
        let task = self.lambda_task();
        let cold = tasks.saturating_sub(self.capacity.lambda_warm);
        let cold_seconds = if cold > 0 {
            platform.cold_start.median
        } else {
            0.0
        };
        let waves = tasks.div_ceil(self.capacity.lambda_concurrency.max(1)) as f64;
        let gb = platform.memory_mb.unwrap_or(0) as f64 / 1024.0;
        let gb_seconds = gb * (tasks as f64 * task + cold as f64 * platform.cold_start.median);
        Predicted {
            seconds: cold_seconds + waves * task,
            usd: gb_seconds * platform.gb_second_usd(self.prices)
                + tasks as f64 * self.prices.lambda_per_million_requests / 1e6,
        }
    }

    /// The best split: the local executors keep `w` waves of tasks and
    /// Lambda takes the rest, for the `w` that ends soonest (ties: more
    /// kept here). (Tasks to Lambda, the prediction; no tasks where every
    /// task fits the free executors at once.)
    fn split(&self, tasks: usize) -> (usize, Predicted) {
        let slots = self.local_slots();
        let mut best = (0, Predicted::default());
        if tasks <= slots {
            return best;
        }
        for waves in 1..tasks.div_ceil(slots) {
            let kept = slots.saturating_mul(waves).min(tasks);
            let here = self.local_share(kept);
            let there = self.lambda(tasks - kept);
            let both = Predicted {
                seconds: here.seconds.max(there.seconds),
                usd: here.usd + there.usd,
            };
            if best.0 == 0 || both.seconds <= best.1.seconds {
                best = (tasks - kept, both);
            }
        }
        best
    }
}

fn show_seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

fn show_bytes(b: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlook(tasks: usize, bytes: u64) -> StageOutlook {
        StageOutlook {
            tasks,
            scan_bytes: bytes,
            ..Default::default()
        }
    }

    const HERE: Capacity = Capacity {
        local_free: 2,
        lambda_concurrency: 1000,
        lambda_warm: 0,
    };

    #[test]
    fn a_small_stage_stays_and_a_large_one_bursts() {
        let policy = BurstPolicy::new(4096);
        // 20 MB over 4 tasks: 0.1 s here, a cold start alone is 0.25 s.
        let small = decide(&policy, &outlook(4, 20_000_000), HERE);
        assert_eq!(
            (small.place, small.burst_tasks),
            (Place::Local, 0),
            "{small:?}"
        );
        assert!(small.reason.contains("stays here"), "{}", small.reason);
        // 100 GB over 800 tasks: 500 s here on two executors, a few on Lambda.
        let large = decide(&policy, &outlook(800, 100_000_000_000), HERE);
        assert_eq!(large.place, Place::Lambda, "{large:?}");
        assert_eq!(large.burst_tasks, 800);
        let (here, there) = (large.local.unwrap(), large.lambda.unwrap());
        assert!(here.seconds > 400.0 && there.seconds < 5.0, "{large:?}");
        assert!(there.usd > 0.0);
    }

    #[test]
    fn a_stage_of_a_few_more_tasks_than_lambda_runs_at_once_is_split() {
        let policy = BurstPolicy::new(4096);
        // 12 tasks of 100 MB: 6 waves of 1 s here; Lambda's one wave ~1.4 s
        // with its cold start.
        let stage = decide(&policy, &outlook(12, 1_200_000_000), HERE);
        assert_eq!(stage.place, Place::Lambda, "{stage:?}");
        // Ten at once on Lambda: two waves there, or one with the local
        // executors keeping two tasks.
        let capped = Capacity {
            lambda_concurrency: 10,
            ..HERE
        };
        let stage = decide(&policy, &outlook(12, 1_200_000_000), capped);
        assert_eq!(stage.label(), "split", "{stage:?}");
        assert_eq!(stage.burst_tasks, 10);
        assert!(stage.reason.contains("overflow"), "{}", stage.reason);
        let split = stage.split.unwrap();
        assert!(split.seconds < stage.lambda.unwrap().seconds);
        assert!(split.seconds < stage.local.unwrap().seconds);
    }

    #[test]
    fn the_cost_limit_and_the_preference_keep_stages_here() {
        let policy = BurstPolicy::new(4096);
        let mut limited = outlook(800, 100_000_000_000);
        limited.limit_usd = Some(0.000_001);
        let stage = decide(&policy, &limited, HERE);
        assert_eq!((stage.place, stage.burst_tasks), (Place::Local, 0));
        assert!(stage.reason.contains("cost limit"), "{}", stage.reason);
        let cheap = BurstPolicy {
            prefer: Prefer::Cost,
            ..policy
        };
        let stage = decide(&cheap, &outlook(800, 100_000_000_000), HERE);
        assert_eq!(stage.label(), "local", "{stage:?}");
        assert!(stage.local.unwrap().usd < stage.lambda.unwrap().usd);
    }

    #[test]
    fn burst_above_decides_by_size_alone() {
        let policy = BurstPolicy {
            burst_above: Some(1 << 20),
            ..BurstPolicy::new(4096)
        };
        let small = decide(&policy, &outlook(4, 1000), HERE);
        assert_eq!(small.label(), "local");
        assert!(
            small.reason.contains("< --burst-above 1.0 MiB"),
            "{}",
            small.reason
        );
        let large = decide(&policy, &outlook(4, 2 << 20), HERE);
        assert_eq!((large.label(), large.burst_tasks), ("lambda", 4));
    }

    #[test]
    fn warm_environments_skip_the_cold_start() {
        let policy = BurstPolicy::new(4096);
        let cold = decide(&policy, &outlook(100, 10_000_000_000), HERE);
        let warm = decide(
            &policy,
            &outlook(100, 10_000_000_000),
            Capacity {
                lambda_warm: 100,
                ..HERE
            },
        );
        let gap = cold.lambda.unwrap().seconds - warm.lambda.unwrap().seconds;
        assert!(
            (gap - policy.lambda.cold_start.median).abs() < 1e-9,
            "{gap}"
        );
        assert!(cold.lambda.unwrap().usd > warm.lambda.unwrap().usd);
    }
}
