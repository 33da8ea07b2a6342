//! Seeded fault plans: which task attempts straggle, crash or fail, for the
//! fault and straggler harness (`squall bench faults`) and tests.
//!
//! # What belongs here
//! The plan and its draw only. It is the same for every backend: the
//! in-process backend's fault wrapper (control plane) applies it around an
//! invocation, and the fault-injection build of `squall-lambda` applies it
//! inside the function (`lambda::faults`). The draw depends on the seed and the
//! attempt's identity alone, so a run with the same seed and job ids meets the
//! same faults.

use serde::{Deserialize, Serialize};

use crate::protocol::TaskId;

/// Fractions of attempts that meet each fault. The fractions are exclusive
/// slices of one draw, so they must add up to at most 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FaultPlan {
    pub seed: u64,
    /// Attempts that take `slowdown` times as long as they would.
    pub stragglers: f64,
    pub slowdown: f64,
    /// Attempts whose executor dies after writing its output: the answer is lost.
    pub crash: f64,
    /// Attempts that fail at once with a retryable storage error.
    pub fail: f64,
}

/// What one attempt meets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Runs, then waits `factor − 1` times its own duration before answering.
    Straggle {
        factor: f64,
    },
    /// Runs and writes its output, then its executor dies.
    Crash,
    /// Fails before running, retryably.
    Fail,
}

impl FaultPlan {
    /// Checks the fractions and the slowdown, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("stragglers", self.stragglers),
            ("crash", self.crash),
            ("fail", self.fail),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("--{name} must be between 0 and 1, not {value}"));
            }
        }
        if self.stragglers + self.crash + self.fail > 1.0 {
            return Err(format!(
                "--stragglers, --crash and --fail add up to {}, more than 1",
                self.stragglers + self.crash + self.fail
            ));
        }
        if !(1.0..=1000.0).contains(&self.slowdown) {
            return Err(format!(
                "--slowdown must be between 1 and 1000, not {}",
                self.slowdown
            ));
        }
        Ok(())
    }

    /// The fault attempt `id` meets.
    pub fn draw(&self, id: &TaskId) -> Fault {
        let u = unit(self.seed, id);
        if u < self.crash {
            Fault::Crash
        } else if u < self.crash + self.fail {
            Fault::Fail
        } else if u < self.crash + self.fail + self.stragglers {
            Fault::Straggle {
                factor: self.slowdown,
            }
        } else {
            Fault::None
        }
    }
}

/// A number in [0, 1) from the seed and the attempt's identity (FNV-1a, then
/// SplitMix64's finaliser to spread it).
fn unit(seed: u64, id: &TaskId) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(id.job_id.as_bytes());
    eat(&id.stage_id.to_le_bytes());
    eat(&id.task.to_le_bytes());
    eat(&id.attempt.to_le_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(job: &str, stage: u32, task: u32, attempt: u32) -> TaskId {
        TaskId {
            job_id: job.into(),
            run_id: "r".into(),
            stage_id: stage,
            task,
            attempt,
        }
    }

    #[test]
    fn the_draw_hits_each_fraction_and_repeats_for_the_same_seed() {
        let plan = FaultPlan {
            seed: 7,
            stragglers: 0.05,
            slowdown: 10.0,
            crash: 0.1,
            fail: 0.02,
        };
        let n = 20_000;
        let (mut s, mut c, mut f) = (0, 0, 0);
        for t in 0..n {
            match plan.draw(&id("job", 1 + t % 5, t, 0)) {
                Fault::Straggle { factor } => {
                    assert_eq!(factor, 10.0);
                    s += 1
                }
                Fault::Crash => c += 1,
                Fault::Fail => f += 1,
                Fault::None => {}
            }
        }
        let near = |count: u32, fraction: f64| {
            let got = count as f64 / n as f64;
            (got - fraction).abs() < 0.01
        };
        assert!(near(s, 0.05), "{s} stragglers of {n}");
        assert!(near(c, 0.1), "{c} crashes of {n}");
        assert!(near(f, 0.02), "{f} failures of {n}");
        let again = id("job", 2, 17, 1);
        assert_eq!(plan.draw(&again), plan.draw(&again));
        // Another seed, another pattern.
        let other = FaultPlan { seed: 8, ..plan };
        let differs =
            (0..200).any(|t| plan.draw(&id("j", 1, t, 0)) != other.draw(&id("j", 1, t, 0)));
        assert!(differs);
    }

    #[test]
    fn bad_plans_are_named() {
        let ok = FaultPlan {
            slowdown: 10.0,
            ..FaultPlan::default()
        };
        assert!(ok.validate().is_ok());
        let e = FaultPlan { crash: 1.5, ..ok }.validate().unwrap_err();
        assert!(e.contains("--crash"), "{e}");
        let e = FaultPlan {
            crash: 0.6,
            stragglers: 0.6,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("add up"), "{e}");
        let e = FaultPlan {
            slowdown: 0.5,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("--slowdown"), "{e}");
        assert_eq!(FaultPlan::default().draw(&id("j", 1, 1, 0)), Fault::None);
    }
}
