//! `--backend auto` and fan-out in the scale model: a job at scale replayed
//! in-process only, on Lambda only, and placed stage by stage as the
//! engine's placement ([`squall_engine::backend::placement::decide`]) would
//! place it; and how soon a wide stage has every task running when its
//! workers come from several functions, pre-warmed or not.

use squall_engine::backend::placement::{Capacity, decide};
use squall_engine::backend::{BurstPolicy, Place, Placement, StageOutlook};
use squall_engine::cost::Prices;
use squall_engine::scheduler::StageKind;

use crate::replay::{Pool, Replay, Run, replays_on, simulate_on};
use crate::simulate::{Platform, ScaledStage};

/// Where the model's job runs.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// This machine's executors (the in-process platform).
    pub local_workers: usize,
    /// Invocations in flight at once, and the function's platform (its
    /// memory, and `functions` copies).
    pub lambda_workers: usize,
    pub lambda: Platform,
    /// Environments pinged while the job is planned.
    pub prewarm: usize,
}

/// One way of running the job, its median replay over the seeds, and what it
/// costs: AWS's bill (Lambda, S3 requests) and this machine's share.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub replay: Replay,
    pub aws_usd: f64,
    pub local_usd: f64,
}

impl Outcome {
    pub fn usd(&self) -> f64 {
        self.aws_usd + self.local_usd
    }
}

/// A job at scale three ways.
#[derive(Debug, Clone)]
pub struct Compared {
    pub local: Outcome,
    pub lambda: Outcome,
    pub auto: Outcome,
    /// Where auto placed each stage.
    pub placements: Vec<(u32, Placement)>,
}

/// Where `policy` places each of `stages` (their bytes as the scheduler
/// would see them when each is ready), with `fleet`'s capacity. The model
/// runs a stage on one pool: a split stage runs where most of its tasks go.
pub fn auto_places(
    stages: &[ScaledStage],
    policy: &BurstPolicy,
    fleet: &Fleet,
    prices: &Prices,
) -> Vec<(u32, Placement)> {
    stages
        .iter()
        .map(|stage| {
            let t = stage.tasks as f64;
            let outlook = StageOutlook {
                tasks: stage.tasks,
                scan_bytes: (stage.bytes_scanned * t) as u64,
                shuffle_bytes: (stage.bytes_in * t) as u64,
                spent_usd: 0.0,
                limit_usd: None,
                prices: prices.clone(),
            };
            let capacity = Capacity {
                local_free: fleet.local_workers,
                lambda_concurrency: fleet.lambda_workers,
                lambda_warm: fleet.prewarm,
            };
            (stage.id, decide(policy, &outlook, capacity))
        })
        .collect()
}

/// The pool a placed stage runs on: 0 this machine, 1 Lambda.
fn pool_of(placement: &Placement, tasks: usize) -> usize {
    match placement.place {
        Place::Lambda => 1,
        Place::Local if placement.burst_tasks * 2 > tasks => 1,
        Place::Local => 0,
    }
}

/// The job `local_stages` (cut for this machine) in-process, and
/// `lambda_stages` (cut for Lambda, as auto plans too) on Lambda only and
/// placed by `policy`: medians of `runs` replays, with backups.
pub fn compare(
    local_stages: &[ScaledStage],
    lambda_stages: &[ScaledStage],
    policy: &BurstPolicy,
    fleet: &Fleet,
    prices: &Prices,
    overhead_seconds: f64,
    runs: usize,
) -> Compared {
    let here = Platform::in_process();
    let local_pool = Pool {
        platform: &here,
        workers: fleet.local_workers,
        warm: 0,
        prewarmed: 0,
    };
    let lambda_pool = Pool {
        platform: &fleet.lambda,
        workers: fleet.lambda_workers,
        warm: 0,
        prewarmed: fleet.prewarm.min(fleet.lambda_workers),
    };
    let pools = [local_pool, lambda_pool];
    let median = |stages: &[ScaledStage], pools: &[Pool], pool: &dyn Fn(&ScaledStage) -> usize| {
        median_of(stages, pools, pool, prices, overhead_seconds, runs)
    };
    let local = median(local_stages, &pools[..1], &|_| 0);
    let lambda = median(lambda_stages, &pools[1..], &|_| 0);
    // As the engine does: a job whose scans together stay here runs wholly
    // here, planned as the in-process one is (its files on local disk).
    if kept_here(lambda_stages, policy, fleet, prices) {
        let kept = Placement {
            reason: "the whole job stays here".into(),
            ..Placement::only(Place::Local, 0)
        };
        return Compared {
            auto: local.clone(),
            local,
            lambda,
            placements: local_stages.iter().map(|s| (s.id, kept.clone())).collect(),
        };
    }
    let placements = auto_places(lambda_stages, policy, fleet, prices);
    let placed = |stage: &ScaledStage| {
        placements
            .iter()
            .find(|(id, _)| *id == stage.id)
            .map_or(0, |(_, p)| pool_of(p, stage.tasks))
    };
    Compared {
        auto: median(lambda_stages, &pools, &placed),
        local,
        lambda,
        placements,
    }
}

/// Whether the engine keeps the whole job here: its scans' bytes together,
/// as one stage of its widest stage's tasks, placed here.
fn kept_here(stages: &[ScaledStage], policy: &BurstPolicy, fleet: &Fleet, prices: &Prices) -> bool {
    let job = ScaledStage {
        tasks: stages.iter().map(|s| s.tasks).max().unwrap_or(1),
        bytes_scanned: stages
            .iter()
            .map(|s| s.bytes_scanned * s.tasks as f64)
            .sum::<f64>()
            / stages.iter().map(|s| s.tasks).max().unwrap_or(1).max(1) as f64,
        bytes_in: 0.0,
        ..stages[0].clone()
    };
    let placed = auto_places(std::slice::from_ref(&job), policy, fleet, prices);
    placed.iter().all(|(_, p)| p.label() == "local")
}

/// The median of `runs` replays (with backups) of `stages` on `pools`.
fn median_of(
    stages: &[ScaledStage],
    pools: &[Pool],
    pool: &dyn Fn(&ScaledStage) -> usize,
    prices: &Prices,
    overhead_seconds: f64,
    runs: usize,
) -> Outcome {
    let run = Run {
        backups: true,
        prices,
        overhead_seconds,
        seed: 0,
    };
    outcome(replays_on(stages, pools, pool, &run, runs).0, prices)
}

/// A replay's bill: S3's requests whatever ran them (the tables and
/// shuffles are in S3 at scale), Lambda's time and invocations, and this
/// machine's executor-seconds at `local_vcpu_hour`.
fn outcome(replay: Replay, prices: &Prices) -> Outcome {
    let s3 = replay.requests.put as f64 * prices.s3_put_per_thousand / 1000.0
        + replay.requests.get as f64 * prices.s3_get_per_thousand / 1000.0;
    let aws_usd = if replay.lambda_attempts > 0 {
        replay.usd
    } else {
        s3
    };
    let local_usd = replay.local_seconds * prices.local_vcpu_hour / 3600.0;
    Outcome {
        replay,
        aws_usd,
        local_usd,
    }
}

/// One stage of `tasks` tasks of `seconds` each, nothing read: how soon
/// every task is running on `workers` workers of `lambda`, `prewarm` of
/// them pinged while the job was planned (the replay's `last_start`).
pub fn fan_out(
    tasks: usize,
    seconds: f64,
    lambda: &Platform,
    prewarm: usize,
    prices: &Prices,
) -> Replay {
    let stage = ScaledStage {
        id: 1,
        kind: StageKind::Scan,
        inputs: vec![],
        tasks,
        bytes_scanned: 0.0,
        bytes_in: 0.0,
        bytes_out: 0.0,
        gets: 1.0,
        shuffle_gets: 0.0,
        compute_seconds: seconds,
        combinable: vec![],
        whole: vec![],
        mergeable: vec![],
    };
    let pool = Pool {
        platform: lambda,
        workers: tasks,
        warm: 0,
        prewarmed: prewarm.min(tasks),
    };
    let run = Run {
        backups: false,
        prices,
        overhead_seconds: 0.0,
        seed: 1,
    };
    simulate_on(&[stage], &[pool], |_| 0, &run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::fixtures::q1_like;
    use crate::simulate::scale;

    #[test]
    fn ten_thousand_tasks_run_within_seconds_over_ten_functions_and_not_over_one() {
        let prices = Prices::default();
        let one = fan_out(10_000, 5.0, &Platform::lambda(2048), 0, &prices);
        assert!(one.last_start >= 90.0, "{}", one.last_start);
        let ten = Platform {
            functions: 10,
            ..Platform::lambda(2048)
        };
        let spread = fan_out(10_000, 5.0, &ten, 0, &prices);
        assert!(spread.last_start < 10.0, "{}", spread.last_start);
        // Pre-warmed: no cold start left in the stage, the pings billed.
        let warm = fan_out(10_000, 5.0, &ten, 10_000, &prices);
        assert!(warm.last_start < 1.0, "{}", warm.last_start);
        assert!(warm.seconds < spread.seconds);
        assert_eq!(warm.lambda_attempts, 20_000);
        // From one function a pre-warm gets only its first wave warm.
        let one_warm = fan_out(10_000, 5.0, &Platform::lambda(2048), 10_000, &prices);
        assert!(one_warm.last_start >= 90.0, "{}", one_warm.last_start);
        assert_eq!(one_warm.lambda_attempts, 11_000);
    }

    #[test]
    fn auto_keeps_a_small_job_here_and_bursts_a_large_one() {
        let prices = Prices::default();
        let fleet = Fleet {
            local_workers: 2,
            lambda_workers: 1000,
            lambda: Platform::lambda(4096),
            prewarm: 0,
        };
        let policy = BurstPolicy::new(4096);
        let small = scale(&q1_like(), 0.01, 1000, &fleet.lambda).unwrap();
        let places = auto_places(&small, &policy, &fleet, &prices);
        assert!(
            places.iter().all(|(_, p)| p.place == Place::Local),
            "{places:?}"
        );
        let local = scale(&q1_like(), 1000.0, 2, &Platform::in_process()).unwrap();
        let lambda = scale(&q1_like(), 1000.0, 1000, &fleet.lambda).unwrap();
        let compared = compare(&local, &lambda, &policy, &fleet, &prices, 0.1, 3);
        assert_eq!(compared.placements[0].1.place, Place::Lambda);
        // At a thousand times: Lambda and auto far sooner than two cores,
        // auto within 10 % of Lambda.
        assert!(compared.lambda.replay.seconds * 10.0 < compared.local.replay.seconds);
        assert!(compared.auto.replay.seconds <= compared.lambda.replay.seconds * 1.1);
        assert!(compared.local.local_usd > 0.0 && compared.local.replay.lambda_attempts == 0);
        assert!(compared.auto.aws_usd > 0.0);
    }
}
