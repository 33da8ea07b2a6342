//! What follows a failed attempt: a larger memory pool, another attempt, or the
//! end of the task. A pure function of the failure, the attempt's pool and the
//! task's failures so far, so that every case is tested without a backend.

use squall_executor::{FailureKind, TaskFailure};

use super::options::TaskOptions;

/// What the scheduler does after an attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The attempt ran out of memory and a larger pool is allowed: try again
    /// with this pool, not counted against `max_attempts`.
    LargerPool(u64),
    /// Try again with the same pool.
    Again,
    /// The task fails; `out_of_memory` when it ran out of memory at the
    /// largest pool it may have.
    GiveUp { out_of_memory: bool },
}

/// After `failure` of an attempt that ran with a pool of `pool` bytes, when
/// `failed_before` attempts of the task failed before it (attempts that only
/// led to a larger pool do not count).
pub fn after_failure(
    failure: &TaskFailure,
    pool: u64,
    failed_before: u32,
    options: &TaskOptions,
) -> Retry {
    let out_of_memory = failure.kind == FailureKind::ResourcesExhausted;
    let larger = pool.saturating_mul(2).min(options.max_memory_limit_bytes);
    if out_of_memory && larger > pool {
        return Retry::LargerPool(larger);
    }
    if !failure.retryable || failed_before.saturating_add(1) >= options.max_attempts {
        return Retry::GiveUp { out_of_memory };
    }
    Retry::Again
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn failure(kind: FailureKind, retryable: bool) -> TaskFailure {
        TaskFailure {
            kind,
            message: "boom".into(),
            retryable,
        }
    }

    fn options(max_attempts: u32, memory: u64, max_memory: u64) -> TaskOptions {
        TaskOptions {
            max_attempts,
            memory_limit_bytes: memory,
            max_memory_limit_bytes: max_memory,
            ..TaskOptions::default()
        }
    }

    #[test]
    fn a_retryable_failure_is_tried_until_the_attempts_run_out() {
        let options = options(3, GIB, GIB);
        let lost = failure(FailureKind::Internal, true);
        assert_eq!(after_failure(&lost, GIB, 0, &options), Retry::Again);
        assert_eq!(after_failure(&lost, GIB, 1, &options), Retry::Again);
        assert_eq!(
            after_failure(&lost, GIB, 2, &options),
            Retry::GiveUp {
                out_of_memory: false
            }
        );
    }

    #[test]
    fn a_failure_that_cannot_go_away_ends_the_task_at_once() {
        let options = options(5, GIB, 4 * GIB);
        let bad_plan = failure(FailureKind::PlanDecode, false);
        assert_eq!(
            after_failure(&bad_plan, GIB, 0, &options),
            Retry::GiveUp {
                out_of_memory: false
            }
        );
    }

    #[test]
    fn one_attempt_allowed_means_no_retry() {
        let options = options(1, GIB, GIB);
        let lost = failure(FailureKind::Internal, true);
        assert_eq!(
            after_failure(&lost, GIB, 0, &options),
            Retry::GiveUp {
                out_of_memory: false
            }
        );
    }

    #[test]
    fn out_of_memory_doubles_the_pool_up_to_the_cap_without_counting() {
        let options = options(1, GIB, 3 * GIB);
        let oom = failure(FailureKind::ResourcesExhausted, true);
        // Escalations do not use up the single attempt.
        assert_eq!(
            after_failure(&oom, GIB, 0, &options),
            Retry::LargerPool(2 * GIB)
        );
        // The last step stops at the cap, not at twice the pool.
        assert_eq!(
            after_failure(&oom, 2 * GIB, 0, &options),
            Retry::LargerPool(3 * GIB)
        );
        // At the cap: an ordinary failure, here the last attempt.
        assert_eq!(
            after_failure(&oom, 3 * GIB, 0, &options),
            Retry::GiveUp {
                out_of_memory: true
            }
        );
    }

    #[test]
    fn out_of_memory_at_the_cap_is_retried_like_any_failure_while_attempts_remain() {
        let options = options(2, 4 * GIB, 4 * GIB);
        let oom = failure(FailureKind::ResourcesExhausted, true);
        assert_eq!(after_failure(&oom, 4 * GIB, 0, &options), Retry::Again);
        assert_eq!(
            after_failure(&oom, 4 * GIB, 1, &options),
            Retry::GiveUp {
                out_of_memory: true
            }
        );
    }

    #[test]
    fn a_pool_near_the_top_of_u64_does_not_overflow() {
        let options = options(2, u64::MAX / 2 + 1, u64::MAX);
        let oom = failure(FailureKind::ResourcesExhausted, true);
        assert_eq!(
            after_failure(&oom, u64::MAX / 2 + 1, 0, &options),
            Retry::LargerPool(u64::MAX)
        );
        assert_eq!(after_failure(&oom, u64::MAX, 0, &options), Retry::Again);
    }
}
