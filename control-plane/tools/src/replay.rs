//! The scale model's replay: stages at scale (see [`crate::simulate`]) run
//! on a [`Platform`]'s workers — cold starts within the platform's scaling
//! rate, requests and their stalls, hedged reads, backup tasks, S3's rate per
//! prefix — and billed.

use std::collections::HashMap;

use squall_engine::cost::{Prices, Requests};

use crate::simulate::{Platform, ScaledStage};

/// One replay's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub seconds: f64,
    pub attempts: u64,
    pub backups: u64,
    pub gb_seconds: f64,
    pub requests: Requests,
    pub usd: f64,
    /// The most shuffle GETs per second any one key prefix took, its stage
    /// and whether S3's rate per prefix held the stage back.
    pub prefix_rate: f64,
    pub prefix_stage: u32,
    pub prefix_throttled: bool,
    /// Workers started by the end (warm for a query run right after).
    pub warm_workers: usize,
    /// Attempts on a billed platform (Lambda invocations, pre-warm pings
    /// included), and the seconds the others' attempts took (this machine's).
    pub lambda_attempts: u64,
    pub local_seconds: f64,
    /// When the last first attempt's handler started running (its invoke
    /// and any cold start done), from the first stage's start.
    pub last_start: f64,
}

/// GETs a second S3 serves per partitioned key prefix.
pub const S3_GETS_PER_PREFIX: f64 = 5_500.0;

/// Prefixes a stage's shuffle files are spread over (see the executor's
/// `shuffle::writer::spread_prefix`).
pub const SHUFFLE_PREFIXES: f64 = 256.0;

/// Time of one attempt of a task of `stage`, billed and not (the invoke),
/// the reads it hedged, and when its handler started (invoke and cold
/// start).
fn attempt(
    stage: &ScaledStage,
    platform: &Platform,
    cold: bool,
    rng: &mut fastrand::Rng,
) -> (f64, f64, u64, f64) {
    let invoke = platform.invoke.draw(rng);
    let init = if cold {
        platform.cold_start.draw(rng)
    } else {
        0.0
    };
    // Requests go out `request_concurrency` at a time; a stall holds its wave.
    let waves = (stage.gets / platform.request_concurrency).ceil().max(1.0) as usize;
    let mut requests = 0.0;
    let mut hedged = 0;
    for _ in 0..waves.min(10_000) {
        let mut wave = platform.request.draw(rng);
        let in_wave = stage.gets.min(platform.request_concurrency);
        if platform.stall_probability > 0.0
            && rng.f64() < 1.0 - (1.0 - platform.stall_probability).powf(in_wave)
        {
            let (lo, hi) = platform.stall_seconds;
            let stalled = wave + lo + rng.f64() * (hi - lo);
            wave = match platform.hedge_after {
                // Sent again when it is late; the copy rarely stalls too.
                Some(after) if stalled > after => {
                    hedged += 1;
                    stalled.min(after + platform.request.draw(rng))
                }
                _ => stalled,
            };
        }
        requests += wave;
    }
    let moved = stage.bytes_scanned + stage.bytes_in + stage.bytes_out;
    let transfer = platform.bandwidth.map_or(0.0, |b| moved / b);
    // The write's own round trip.
    let put = platform.request.draw(rng);
    let compute = stage.compute_seconds * platform.cpu_factor;
    let billed = init + requests + transfer + put + compute;
    (invoke + billed, billed, hedged, invoke + init)
}

/// Replays the stages on `workers` workers of `platform`, the first `warm`
/// of them already started (a query run right after another on the same
/// function), with backup tasks (Squall's defaults: after 75 % of a stage,
/// a task running over twice the median and 200 ms gets one copy) or
/// without.
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    stages: &[ScaledStage],
    platform: &Platform,
    workers: usize,
    warm: usize,
    backups: bool,
    prices: &Prices,
    overhead_seconds: f64,
    seed: u64,
) -> Replay {
    let pool = Pool {
        platform,
        workers,
        warm,
        prewarmed: 0,
    };
    let run = Run {
        backups,
        prices,
        overhead_seconds,
        seed,
    };
    simulate_on(stages, &[pool], |_| 0, &run)
}

/// Workers of one platform a replay runs stages on.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    pub platform: &'a Platform,
    pub workers: usize,
    /// Workers already started by an earlier query (no cold start, no bill).
    pub warm: usize,
    /// Workers pinged while the job was planned (`--prewarm`): those of the
    /// platform's first scaling wave are warm at the start, each billed a
    /// cold start and counted against the scaling rate.
    pub prewarmed: usize,
}

/// How a replay runs: backups or not, the price table, the time before the
/// first stage (planning), the seed of its draws.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub backups: bool,
    pub prices: &'a Prices,
    pub overhead_seconds: f64,
    pub seed: u64,
}

/// One pool's workers as a replay goes.
struct Workers {
    /// When each worker is next free (times are never negative, so their
    /// bits order as they do), and whether it has run anything yet.
    free: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    warm: Vec<bool>,
    started_fresh: usize,
    billed_seconds: f64,
    attempts: u64,
}

impl Workers {
    fn new(pool: &Pool) -> Self {
        let workers = pool.workers.max(1);
        // Pings sent as planning starts are held to the scaling rate too:
        // the first wave's are warm when the job starts, the others would
        // start no sooner than the job's own tasks do.
        let pinged = pool.prewarmed.min(pool.platform.scaling_per_10s());
        let started = pool.warm + pinged;
        Self {
            free: (0..workers)
                .map(|w| std::cmp::Reverse((0f64.to_bits(), w)))
                .collect(),
            warm: (0..workers).map(|w| w < started).collect(),
            started_fresh: pinged,
            billed_seconds: pinged as f64 * pool.platform.cold_start.median,
            attempts: pinged as u64,
        }
    }
}

/// Replays the stages each on the pool `pool_of` picks: the stages of one
/// pool share its workers, a stage starts when its inputs have ended.
pub fn simulate_on(
    stages: &[ScaledStage],
    pools: &[Pool],
    pool_of: impl Fn(&ScaledStage) -> usize,
    run: &Run,
) -> Replay {
    let mut workers: Vec<Workers> = pools.iter().map(Workers::new).collect();
    // How long the job's first attempts took: what a stage of one task is
    // compared with for a backup, as the scheduler does.
    let mut job_durations: Vec<f64> = Vec::new();
    let mut done: HashMap<u32, f64> = HashMap::new();
    let mut replay = Replay::default();
    for stage in stages {
        let index = pool_of(stage).min(pools.len() - 1);
        let (pool, on) = (&pools[index], &mut workers[index]);
        let platform = pool.platform;
        let ready = stage
            .inputs
            .iter()
            .filter_map(|i| done.get(i))
            .fold(0.0, |a: f64, b| a.max(*b));
        let mut spans: Vec<(f64, f64)> = Vec::with_capacity(stage.tasks);
        for task in 0..stage.tasks {
            let mut rng = attempt_rng(run.seed, stage.id, task, 0);
            let Some(std::cmp::Reverse((bits, slot))) = on.free.pop() else {
                break;
            };
            let mut start = f64::from_bits(bits).max(ready);
            let cold = !on.warm[slot];
            if cold {
                // Lambda starts at most so many fresh environments per 10 s
                // for each function.
                let wave = on.started_fresh / platform.scaling_per_10s().max(1);
                start = start.max(wave as f64 * 10.0);
                on.started_fresh += 1;
                on.warm[slot] = true;
            }
            let (took, billed, hedged, startup) = attempt(stage, platform, cold, &mut rng);
            on.billed_seconds += billed;
            on.attempts += 1;
            replay.attempts += 1;
            replay.requests.hedged += hedged;
            replay.last_start = replay.last_start.max(start + startup);
            on.free
                .push(std::cmp::Reverse(((start + took).to_bits(), slot)));
            spans.push((start, start + took));
        }
        let mut durations: Vec<f64> = spans.iter().map(|(s, e)| e - s).collect();
        durations.sort_by(f64::total_cmp);
        let single = stage.tasks == 1;
        if single {
            job_durations.sort_by(f64::total_cmp);
        }
        let compared = if single { &job_durations } else { &durations };
        if run.backups && !compared.is_empty() {
            let before = replay.attempts;
            on.billed_seconds +=
                back_up(stage, platform, run.seed, &mut spans, compared, &mut replay);
            on.attempts += replay.attempts - before;
        }
        job_durations.extend(durations);
        let end = spans.iter().fold(ready, |a, (_, e)| a.max(*e));
        let end = per_prefix(stage, platform, ready, end, &mut replay);
        done.insert(stage.id, end);
        let t = stage.tasks as u64;
        replay.requests.get += (stage.gets * stage.tasks as f64).round() as u64;
        replay.requests.put += t;
    }
    replay.requests.get += replay.requests.hedged;
    replay.seconds = run.overhead_seconds + done.values().fold(0.0, |a: f64, b| a.max(*b));
    replay.warm_workers = workers
        .iter()
        .map(|w| w.warm.iter().filter(|w| **w).count())
        .sum();
    price(&mut replay, pools, &workers, run.prices);
    replay
}

/// The end of `stage` (ready at `ready`, its tasks done at `end`) under S3's
/// rate per key prefix: its shuffle reads go to its inputs' folders, each
/// spread over [`SHUFFLE_PREFIXES`]; where they would pass
/// [`S3_GETS_PER_PREFIX`], the stage takes as long as the rate allows.
/// Notes the busiest prefix in `replay`. Only for a platform with request
/// latencies (S3's); the in-process backend has no such limit.
fn per_prefix(
    stage: &ScaledStage,
    platform: &Platform,
    ready: f64,
    end: f64,
    replay: &mut Replay,
) -> f64 {
    if platform.request.median <= 0.0 || stage.inputs.is_empty() {
        return end;
    }
    let gets = stage.shuffle_gets * stage.tasks as f64;
    let prefixes = SHUFFLE_PREFIXES * stage.inputs.len() as f64;
    let fastest = gets / (S3_GETS_PER_PREFIX * prefixes);
    let took = (end - ready).max(1e-9);
    let rate = gets / took / prefixes;
    if rate > replay.prefix_rate {
        replay.prefix_rate = rate;
        replay.prefix_stage = stage.id;
    }
    if fastest > took {
        replay.prefix_throttled = true;
        ready + fastest
    } else {
        end
    }
}

/// Each attempt draws from a stream of its own, so that a replay with backups
/// sees the same first attempts as one without.
fn attempt_rng(seed: u64, stage: u32, task: usize, copy: u64) -> fastrand::Rng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(stage) << 40)
        .wrapping_add((task as u64) << 2)
        .wrapping_add(copy);
    fastrand::Rng::with_seed(mix)
}

/// Backup copies of a stage's stragglers, started as the scheduler starts
/// them (`compared`: the sorted durations a task is compared with); a task
/// ends when its first copy does. Returns the seconds the backups bill.
fn back_up(
    stage: &ScaledStage,
    platform: &Platform,
    seed: u64,
    spans: &mut [(f64, f64)],
    compared: &[f64],
    replay: &mut Replay,
) -> f64 {
    let single = stage.tasks == 1;
    let mut billed_seconds = 0.0;
    let median = compared[compared.len() / 2];
    let mut ends: Vec<f64> = spans.iter().map(|(_, e)| *e).collect();
    ends.sort_by(f64::total_cmp);
    let at_75 = if single {
        0.0
    } else {
        ends[(ends.len() * 3 / 4).min(ends.len() - 1)]
    };
    for (task, span) in spans.iter_mut().enumerate() {
        let due = span.0 + (2.0 * median).max(0.2);
        let backup_at = due.max(at_75);
        if span.1 > backup_at {
            let mut rng = attempt_rng(seed, stage.id, task, 1);
            let (took, billed, hedged, _) = attempt(stage, platform, false, &mut rng);
            billed_seconds += billed;
            replay.attempts += 1;
            replay.backups += 1;
            replay.requests.hedged += hedged;
            // The loser is not stopped (Lambda cannot be): billed whole.
            span.1 = span.1.min(backup_at + took);
        }
    }
    billed_seconds
}

/// The replay's GB-seconds and dollars: each pool of a platform with a
/// memory size (Lambda) bills its workers' time and invocations, and S3's
/// requests are priced where any does; the other pools' time is this
/// machine's (`local_seconds`), not billed.
fn price(replay: &mut Replay, pools: &[Pool], workers: &[Workers], prices: &Prices) {
    let mut billed = false;
    for (pool, on) in pools.iter().zip(workers) {
        match pool.platform.memory_mb {
            Some(mb) => {
                billed = true;
                let gb_seconds = on.billed_seconds * mb as f64 / 1024.0;
                replay.gb_seconds += gb_seconds;
                replay.lambda_attempts += on.attempts;
                replay.usd += gb_seconds * pool.platform.gb_second_usd(prices)
                    + on.attempts as f64 * prices.lambda_per_million_requests / 1e6;
            }
            None => replay.local_seconds += on.billed_seconds,
        }
    }
    if billed {
        replay.usd += replay.requests.put as f64 * prices.s3_put_per_thousand / 1000.0
            + replay.requests.get as f64 * prices.s3_get_per_thousand / 1000.0;
    }
}

/// Median and 90th percentile of `runs` replays with seeds `0..runs`.
#[allow(clippy::too_many_arguments)]
pub fn replays(
    stages: &[ScaledStage],
    platform: &Platform,
    workers: usize,
    warm: usize,
    backups: bool,
    prices: &Prices,
    overhead_seconds: f64,
    runs: usize,
) -> (Replay, f64) {
    let pool = Pool {
        platform,
        workers,
        warm,
        prewarmed: 0,
    };
    let run = Run {
        backups,
        prices,
        overhead_seconds,
        seed: 0,
    };
    replays_on(stages, &[pool], &|_| 0, &run, runs)
}

/// [`replays`] of stages on `pools` (see [`simulate_on`]), `run.seed`
/// ignored: seeds `0..runs`.
pub fn replays_on(
    stages: &[ScaledStage],
    pools: &[Pool],
    pool_of: &dyn Fn(&ScaledStage) -> usize,
    run: &Run,
    runs: usize,
) -> (Replay, f64) {
    let mut all: Vec<Replay> = (0..runs.max(1) as u64)
        .map(|seed| simulate_on(stages, pools, pool_of, &Run { seed, ..*run }))
        .collect();
    all.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let p90 = all[(all.len() * 9 / 10).min(all.len() - 1)].seconds;
    (all.swap_remove(all.len() / 2), p90)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::fixtures::q1_like;
    use crate::simulate::scale;
    use squall_engine::scheduler::StageKind;

    #[test]
    fn in_process_replay_is_list_scheduling_of_the_measured_times() {
        let profile = q1_like();
        let scaled = scale(&profile, 1.0, 2, &Platform::in_process()).unwrap();
        let on = |workers| {
            simulate(
                &scaled,
                &Platform::in_process(),
                workers,
                0,
                false,
                &Prices::default(),
                0.0,
                1,
            )
        };
        let replay = on(2);
        // Two scan tasks side by side, then the merge.
        let want = scaled[0].compute_seconds + scaled[1].compute_seconds;
        assert!((replay.seconds - want).abs() < 1e-9, "{replay:?}");
        assert_eq!(replay.usd, 0.0);
        // One worker: the scans one after the other.
        let one = on(1);
        assert!(
            (one.seconds - (2.0 * scaled[0].compute_seconds + scaled[1].compute_seconds)).abs()
                < 1e-9
        );
    }

    #[test]
    fn lambda_replays_bill_every_attempt_and_backups_cut_the_tail() {
        let mut profile = q1_like();
        let scaled = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        // The scans alone, with stalls common: backups have tails to cut.
        profile.stages.truncate(1);
        let scans = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let mut platform = Platform::lambda(2048);
        platform.stall_probability = 0.01;
        platform.hedge_after = None;
        let prices = Prices::default();
        let (slow, _) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        let (hedged, _) = replays(&scans, &platform, 1000, 0, true, &prices, 0.0, 9);
        assert!(hedged.backups > 0);
        assert!(hedged.seconds < slow.seconds, "{hedged:?} vs {slow:?}");
        assert!(hedged.gb_seconds > slow.gb_seconds, "backups are billed");
        let platform = Platform::lambda(2048);
        let prices = Prices::default();
        let (without, _) = replays(&scaled, &platform, 1000, 0, false, &prices, 0.0, 9);
        assert_eq!(without.attempts, 1564);
        assert_eq!(without.requests.put, 1564);
        assert!(without.usd > 0.0 && without.gb_seconds > 0.0);
        // 1,563 tasks on 1,000 workers: two waves of scans.
        assert!(without.seconds > 2.0 * scaled[0].compute_seconds);
    }

    #[test]
    fn workers_kept_warm_from_a_query_before_bill_no_cold_starts() {
        let scaled = scale(&q1_like(), 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let platform = Platform::lambda(2048);
        let prices = Prices::default();
        let cold = simulate(&scaled, &platform, 1000, 0, false, &prices, 0.0, 3);
        assert_eq!(cold.warm_workers, 1000, "every worker ran a task");
        let warm = simulate(&scaled, &platform, 1000, 1000, false, &prices, 0.0, 3);
        assert!(warm.gb_seconds < cold.gb_seconds, "{warm:?} vs {cold:?}");
        assert!(warm.seconds <= cold.seconds);
        // A cold start is ~0.25 s of 2 GB on each of 1,000 workers.
        let saved = cold.gb_seconds - warm.gb_seconds;
        assert!((250.0..1000.0).contains(&saved), "{saved} GB-s");
    }

    #[test]
    fn hedged_reads_cut_stalls_without_backups_and_are_billed() {
        let mut profile = q1_like();
        profile.stages.truncate(1);
        let scans = scale(&profile, 1000.0, 1000, &Platform::lambda(2048)).unwrap();
        let prices = Prices::default();
        let mut platform = Platform::lambda(2048);
        platform.stall_probability = 0.01;
        let (hedged, p90_hedged) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        platform.hedge_after = None;
        let (stalled, p90_stalled) = replays(&scans, &platform, 1000, 0, false, &prices, 0.0, 9);
        assert!(hedged.requests.hedged > 0 && stalled.requests.hedged == 0);
        assert_eq!(
            hedged.requests.get,
            stalled.requests.get + hedged.requests.hedged,
            "a hedge is one more GET"
        );
        assert!(
            hedged.seconds < stalled.seconds,
            "{hedged:?} vs {stalled:?}"
        );
        assert!(p90_hedged < p90_stalled);
    }

    #[test]
    fn a_stage_reading_faster_than_its_prefixes_allow_is_held_to_their_rate() {
        // 10,000 tasks reading 10,000 producers each: 10^8 GETs over 256
        // prefixes at 5,500 a second each, at least 71 s.
        let stage = ScaledStage {
            id: 2,
            kind: StageKind::Reduce,
            inputs: vec![1],
            tasks: 10_000,
            bytes_scanned: 0.0,
            bytes_in: 0.0,
            bytes_out: 0.0,
            gets: 10_000.0,
            shuffle_gets: 10_000.0,
            compute_seconds: 0.0,
            combinable: vec![1],
            whole: vec![],
            mergeable: vec![],
        };
        let mut replay = Replay::default();
        let platform = Platform::lambda(2048);
        let end = per_prefix(&stage, &platform, 10.0, 20.0, &mut replay);
        let fastest = 1e8 / (S3_GETS_PER_PREFIX * SHUFFLE_PREFIXES);
        assert!((end - (10.0 + fastest)).abs() < 1e-6, "{end}");
        assert!(replay.prefix_throttled && replay.prefix_stage == 2);
        assert!(replay.prefix_rate > S3_GETS_PER_PREFIX);
        // In-process: no such limit.
        let mut local = Replay::default();
        assert_eq!(
            per_prefix(&stage, &Platform::in_process(), 10.0, 20.0, &mut local),
            20.0
        );
    }
}
