//! Backup tasks (speculative execution): when a running attempt gets a second
//! copy. A pure policy over durations, so that it is tested without a clock;
//! the scheduler's stage loop asks it every [`Speculation::interval`].
//!
//! The rule is Spark's (`TaskSetManager::checkSpeculatableTasks`), with the
//! defaults `../shared/ADAPTIVE.md` recommends for Lambda, where an idle slot
//! costs nothing and a backup only spends invocations: once a
//! [`Speculation::quantile`] of the stage's tasks have succeeded, a task whose
//! only running attempt is older than [`Speculation::multiplier`] times the
//! median successful attempt, and older than [`Speculation::min_runtime`], gets
//! one backup; a task never gets more than one, and a stage no more than
//! [`Speculation::max_fraction`] of its task count (at least one).
//!
//! A stage of one task has no siblings to compare with (Spark needs an absolute
//! `task.duration.threshold` for it): its median is that of every task the
//! job has finished so far, in any stage.

use std::time::Duration;

/// When a straggling attempt gets a backup copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Speculation {
    pub enabled: bool,
    /// Fraction of a stage's tasks that must have succeeded first.
    pub quantile: f64,
    /// A running attempt is a straggler past this multiple of the median
    /// duration of the stage's successful attempts...
    pub multiplier: f64,
    /// ...and past this age, whatever the median.
    pub min_runtime: Duration,
    /// Backups one stage may start, as a fraction of its tasks (at least one).
    pub max_fraction: f64,
    /// How often a stage's running attempts are looked at.
    pub interval: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.75,
            multiplier: 2.0,
            min_runtime: DEFAULT_MIN_RUNTIME,
            max_fraction: 0.1,
            interval: Duration::from_millis(100),
        }
    }
}

/// The default [`Speculation::min_runtime`]. Spark's is 100 ms; ADAPTIVE.md
/// suggests 2 s against Lambda's invocation tail. Measured with `squall bench
/// faults` (TPC-H SF 1 in-process, 5 % of attempts 10× slower, 3 iterations;
/// BENCHMARKS.md): total time faulted/clean 1.40 at 500 ms, 1.21 at 200 ms,
/// 1.23 at 100 ms, against 1.46 with no backups. On Lambda, where a task
/// rarely takes under a second, raise it with `--backup-after`.
pub const DEFAULT_MIN_RUNTIME: Duration = Duration::from_millis(200);

impl Speculation {
    /// Off: no backup is ever started.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.quantile > 0.0 && self.quantile <= 1.0) {
            return Err(format!(
                "the backup quantile must be in (0, 1], not {}",
                self.quantile
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier <= 1000.0) {
            return Err(format!(
                "the backup multiplier must be between 1 and 1000, not {}",
                self.multiplier
            ));
        }
        if !(self.max_fraction > 0.0 && self.max_fraction <= 1.0) {
            return Err(format!(
                "the backup fraction must be in (0, 1], not {}",
                self.max_fraction
            ));
        }
        if self.interval.is_zero() {
            return Err("the backup check interval must be positive".into());
        }
        Ok(())
    }

    /// Backups a stage of `tasks` tasks may start in all.
    pub fn budget(&self, tasks: usize) -> usize {
        ((tasks as f64 * self.max_fraction).floor() as usize).max(1)
    }

    /// The age past which a running attempt is a straggler, once enough of
    /// the stage's `tasks` have succeeded in the durations `succeeded`; None
    /// while too few have. For a stage of one task, `succeeded` are the
    /// durations of the job's tasks so far.
    pub fn threshold(&self, tasks: usize, succeeded: &[Duration]) -> Option<Duration> {
        if !self.enabled || tasks == 0 || succeeded.is_empty() {
            return None;
        }
        let needed = ((tasks as f64 * self.quantile).floor() as usize).max(1);
        if tasks > 1 && succeeded.len() < needed {
            return None;
        }
        let mut sorted = succeeded.to_vec();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        Some(median.mul_f64(self.multiplier).max(self.min_runtime))
    }

    /// The tasks to back up now, oldest first: of `running` (task, age of its
    /// one running attempt), those past the threshold, within what is left of
    /// the stage's budget after `started` backups.
    pub fn pick(
        &self,
        tasks: usize,
        succeeded: &[Duration],
        running: &[(u32, Duration)],
        started: usize,
    ) -> Vec<u32> {
        let Some(threshold) = self.threshold(tasks, succeeded) else {
            return vec![];
        };
        let left = self.budget(tasks).saturating_sub(started);
        let mut late: Vec<(u32, Duration)> = running
            .iter()
            .copied()
            .filter(|(_, age)| *age > threshold)
            .collect();
        late.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        late.into_iter().take(left).map(|(task, _)| task).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> Speculation {
        Speculation {
            min_runtime: ms(100),
            ..Speculation::default()
        }
    }

    #[test]
    fn no_backup_before_the_quantile_has_succeeded() {
        let p = policy();
        let six: Vec<Duration> = (0..6).map(|_| ms(200)).collect();
        // 10 tasks: 7 (0.75 × 10, rounded down as Spark does) must have succeeded.
        assert_eq!(p.threshold(10, &six), None);
        assert_eq!(p.pick(10, &six, &[(9, ms(10_000))], 0), Vec::<u32>::new());
        let seven: Vec<Duration> = (0..7).map(|_| ms(200)).collect();
        assert_eq!(p.threshold(10, &seven), Some(ms(400)));
        assert_eq!(p.pick(10, &seven, &[(9, ms(10_000))], 0), vec![9]);
    }

    #[test]
    fn the_threshold_is_the_median_times_the_multiplier_or_the_floor() {
        let p = policy();
        let durations = [ms(10), ms(20), ms(300), ms(30)];
        // Median of 10, 20, 30, 300 (upper): 30 → 60, below the 100 ms floor.
        assert_eq!(p.threshold(4, &durations), Some(ms(100)));
        let slow = [ms(500), ms(700), ms(600)];
        assert_eq!(p.threshold(4, &slow), Some(ms(1200)));
    }

    #[test]
    fn only_stragglers_get_backups_oldest_first_within_the_budget() {
        let p = policy();
        let succeeded: Vec<Duration> = (0..90).map(|_| ms(100)).collect();
        let running = [(90, ms(150)), (91, ms(900)), (92, ms(5000)), (93, ms(201))];
        // Threshold 200 ms; budget 10 % of 100 = 10.
        assert_eq!(p.pick(100, &succeeded, &running, 0), vec![92, 91, 93]);
        assert_eq!(p.pick(100, &succeeded, &running, 8), vec![92, 91]);
        assert_eq!(p.pick(100, &succeeded, &running, 10), Vec::<u32>::new());
    }

    #[test]
    fn a_small_stage_still_gets_one_backup_and_one_task_stages_use_the_jobs_tasks() {
        let p = policy();
        assert_eq!(p.budget(3), 1);
        assert_eq!(p.pick(2, &[ms(100)], &[(1, ms(1000))], 0), vec![1]);
        assert_eq!(
            p.pick(2, &[ms(100)], &[(1, ms(1000))], 1),
            Vec::<u32>::new()
        );
        // One task: compared with the job's earlier tasks, if there are any.
        assert_eq!(p.threshold(1, &[]), None);
        assert_eq!(p.threshold(1, &[ms(100), ms(300), ms(200)]), Some(ms(400)));
        assert_eq!(p.pick(1, &[ms(100)], &[(0, ms(150))], 0), Vec::<u32>::new());
        assert_eq!(p.pick(1, &[ms(100)], &[(0, ms(250))], 0), vec![0]);
    }

    #[test]
    fn disabled_never_picks_and_bad_settings_are_named() {
        let off = Speculation::disabled();
        let succeeded: Vec<Duration> = (0..10).map(|_| ms(1)).collect();
        assert!(off.pick(10, &succeeded, &[(3, ms(60_000))], 0).is_empty());
        let bad = Speculation {
            quantile: 1.5,
            ..Speculation::default()
        };
        assert!(bad.validate().unwrap_err().contains("quantile"));
        let bad = Speculation {
            multiplier: f64::NAN,
            ..Speculation::default()
        };
        assert!(bad.validate().unwrap_err().contains("multiplier"));
        assert!(Speculation::default().validate().is_ok());
    }
}
