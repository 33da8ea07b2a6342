//! The Lambda backend against a scripted Invoke API (`squall_tests::fake_lambda`)
//! that runs the real handler: throttling and Lambda-side 5xx are retried with
//! backoff inside one attempt; crashed functions (both error shapes) and timeouts
//! fail the attempt and the task is retried; a malformed invocation or an unknown
//! function fails the job at once; oversized specs and results travel through the
//! bucket; concurrency caps hold. Every job must still give the reference answer
//! and leave nothing in the bucket but its tables.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStore;
use squall_engine::backend::LambdaConfig;
use squall_engine::{Engine, JobRequest, PlanOptions, TaskOptions};
use squall_executor::{StoreRegistry, TaskId};
use squall_tests::fake_lambda::{FakeLambda, Reply, bucket_with_tpch, lambda_engine, leftovers};
use squall_tests::{compare, expected_answer, is_ordered, run_rendered};
use squall_tools::tpch;

const BUCKET: &str = "s3://squall-lambda-test";

fn engine(config: LambdaConfig, stores: &Arc<StoreRegistry>) -> Engine {
    lambda_engine(config, stores, &format!("{BUCKET}/work"))
}

fn request(q: usize) -> JobRequest {
    let mut request = JobRequest::new(
        tpch::query(q).unwrap(),
        tpch::table_specs(&format!("{BUCKET}/tpch/")),
    );
    request.plan = PlanOptions {
        shuffle_partitions: 3,
        // Scans cut into three tasks however small (on Lambda a scan task
        // is otherwise 64 MiB at least): the invocations counted below.
        min_scan_task_bytes: Some(0),
        ..PlanOptions::default()
    };
    // Three reduce tasks, each reading one partition: the slices checked below.
    request.tasks.coalescing = squall_engine::scheduler::Coalescing::disabled();
    request
}

/// Runs TPC-H `q` and checks it against the reference answer.
async fn check_query(engine: &Engine, request: &JobRequest, q: usize) {
    let rows = run_rendered(engine, request)
        .await
        .unwrap_or_else(|e| panic!("Q{q} failed: {e}"));
    compare(&expected_answer("0.01", q), &rows, is_ordered(q))
        .unwrap_or_else(|e| panic!("Q{q}: {e}"));
}

fn first_attempt_of(id: &TaskId, stage: u32, task: u32) -> bool {
    id.stage_id == stage && id.task == task && id.attempt == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_lambda_errors_are_retried_within_the_attempt() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    // Every second invocation among the first 40 is throttled; the 7th is a 500;
    // the 4th leaves an object nobody knows of, which the job's sweep must remove.
    let fake = FakeLambda::start(stores.clone(), |_, n| match n {
        7 => Reply::ServiceError,
        4 => Reply::RunAndLeaveStray,
        n if n < 40 && n % 2 == 1 => Reply::Throttle,
        _ => Reply::Run,
    })
    .await;
    let engine = engine(fake.config(), &stores);
    // Every stage its own tasks: the reduce stage under the final merge is
    // the one whose tasks read slices.
    let mut q3 = request(3);
    q3.tasks.fuse_max_bytes = 0;
    check_query(&engine, &q3, 3).await;
    let calls = fake.calls();
    let throttled = calls.iter().filter(|c| c.reply == Reply::Throttle).count();
    assert!(throttled >= 10, "only {throttled} throttled invocations");
    // Throttles never reached the function, so no task needed a second attempt.
    assert!(
        calls.iter().all(|c| c.id.attempt == 0),
        "a throttled task was retried as a new attempt"
    );
    assert!(calls.iter().all(|c| c.function == "squall-executor"));
    // Reduce tasks get their own slice of each shuffle, not every producer's every
    // partition: one slot per producer.
    let sliced: Vec<_> = calls
        .iter()
        .flat_map(|c| c.inputs.iter().map(move |i| (c.id.task, *i)))
        .filter(|(_, (_, slice, _))| slice.is_some())
        .collect();
    assert!(!sliced.is_empty(), "no task got a sliced input");
    for (task, (stage, slice, slots)) in sliced {
        assert_eq!(slice, Some(task), "input stage {stage}");
        assert!(slots <= 4, "task {task} got {slots} slots of stage {stage}");
    }
    assert!(calls.iter().all(|c| c.qualifier.is_none()));
    assert_eq!(leftovers(&memory).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_functions_and_timeouts_are_retried_and_leave_nothing() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |id, _| {
        if first_attempt_of(id, 1, 0) {
            Reply::CrashAfterRunning
        } else if first_attempt_of(id, 2, 1) {
            Reply::CrashEmulatorStyle
        } else if first_attempt_of(id, 3, 0) {
            Reply::Slow(Duration::from_secs(5))
        } else {
            Reply::Run
        }
    })
    .await;
    let engine = engine(
        LambdaConfig {
            invocation_timeout: Duration::from_secs(2),
            ..fake.config()
        },
        &stores,
    );
    let req = request(5);
    let rows = run_rendered(&engine, &req).await.expect("Q5 runs");
    compare(&expected_answer("0.01", 5), &rows, is_ordered(5)).expect("Q5 answer");
    let calls = fake.calls();
    for (stage, task) in [(1, 0), (2, 1), (3, 0)] {
        let attempts: Vec<u32> = calls
            .iter()
            .filter(|c| c.id.stage_id == stage && c.id.task == task)
            .map(|c| c.id.attempt)
            .collect();
        assert_eq!(attempts.len(), 2, "stage {stage} task {task}: {attempts:?}");
    }
    // The crashed attempt had written its output; it was deleted. The timed-out
    // one was still sleeping when the job ended; give it time to write, which it
    // must not be able to make part of the result, then check nothing else is left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let left = leftovers(&memory).await;
    assert!(
        left.iter()
            .all(|p| p.contains("/stage-3/00/task-0-") && p.ends_with("-attempt-0.sqsh")),
        "left behind: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_invocation_fails_the_job_once_and_cleans_up() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |id, _| {
        if id.stage_id == 1 && id.task == 1 {
            Reply::InvalidInvocation
        } else {
            Reply::Run
        }
    })
    .await;
    let engine = engine(fake.config(), &stores);
    let err = engine.run(&request(3), None).await.unwrap_err().to_string();
    assert!(err.contains("Squall.InvalidInvocation"), "{err}");
    assert!(err.contains("stage 1 task 1"), "{err}");
    let tries = fake
        .calls()
        .iter()
        .filter(|c| c.id.stage_id == 1 && c.id.task == 1)
        .count();
    assert_eq!(tries, 1, "a malformed invocation was retried");
    assert_eq!(leftovers(&memory).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_function_is_named_and_not_retried() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::NoSuchFunction).await;
    let engine = engine(
        LambdaConfig {
            qualifier: Some("live".into()),
            ..fake.config()
        },
        &stores,
    );
    let err = engine.run(&request(1), None).await.unwrap_err().to_string();
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    assert!(err.contains("squall-executor"), "{err}");
    let calls = fake.calls();
    assert!(
        calls.iter().all(|c| c.id.attempt == 0),
        "retried: {calls:?}"
    );
    assert!(calls.iter().all(|c| c.qualifier.as_deref() == Some("live")));
    assert_eq!(leftovers(&memory).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_specs_and_results_travel_through_the_bucket() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |id, _| {
        if id.task % 2 == 0 {
            Reply::RunResultInBucket
        } else {
            Reply::Run
        }
    })
    .await;
    // Every spec is "too large".
    let engine = engine(
        LambdaConfig {
            max_inline_spec_bytes: 0,
            ..fake.config()
        },
        &stores,
    );
    check_query(&engine, &request(10), 10).await;
    let calls = fake.calls();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c.spec_in_bucket));
    assert!(calls.iter().any(|c| c.reply == Reply::RunResultInBucket));
    assert_eq!(leftovers(&memory).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_url_other_than_the_one_sent_is_refused_and_left_alone() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let victim: &'static str =
        Box::leak(format!("{BUCKET}/tpch/region/region.1.parquet").into_boxed_str());
    let fake = FakeLambda::start(stores.clone(), move |_, _| Reply::ResultElsewhere(victim)).await;
    let engine = engine(fake.config(), &stores);
    let err = run_rendered(&engine, &request(6)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("answered with result URL {victim}, not the one")),
        "{err}"
    );
    // Not retried (the answer cannot be trusted), and the object is still there.
    assert!(
        fake.calls().iter().all(|c| c.id.attempt == 0),
        "{:?}",
        fake.calls()
    );
    let objects: Vec<_> = memory.list(None).try_collect().await.unwrap();
    assert!(
        objects
            .iter()
            .any(|o| o.location.as_ref() == "tpch/region/region.1.parquet"),
        "the object the function named was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_caps_hold_per_backend_and_per_stage() {
    let (stores, _memory) = bucket_with_tpch(BUCKET).await;
    // Slow invocations, so that tasks pile up against the caps.
    let fake = FakeLambda::start(stores.clone(), |_, _| {
        Reply::Slow(Duration::from_millis(20))
    })
    .await;
    let engine = engine(
        LambdaConfig {
            max_concurrency: 3,
            ..fake.config()
        },
        &stores,
    );
    let mut req = request(9);
    req.tasks = TaskOptions {
        max_stage_concurrency: Some(2),
        ..TaskOptions::default()
    };
    check_query(&engine, &req, 9).await;
    let calls = fake.calls();
    let most = calls.iter().map(|c| c.in_flight).max().unwrap_or(0);
    let most_in_stage = calls.iter().map(|c| c.stage_in_flight).max().unwrap_or(0);
    assert!(most <= 3, "{most} invocations in flight, cap 3");
    assert_eq!(most_in_stage, 2, "per-stage cap 2 not reached or exceeded");
    // Q9's scan stages are independent: with a stage cap of 2 and a backend cap
    // of 3, more than one stage ran at once.
    assert_eq!(most, 3, "the backend cap was never reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_spread_over_functions_within_their_scaling_budgets() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| {
        Reply::Slow(Duration::from_millis(20))
    })
    .await;
    // One function that may gain two environments (then one per 5 s): six
    // in flight allowed, two at most run, the others reuse them.
    let one = engine(
        LambdaConfig {
            max_concurrency: 6,
            new_environments_per_10s: 2,
            ..fake.config()
        },
        &stores,
    );
    check_query(&one, &request(9), 9).await;
    let calls = fake.calls();
    let most = calls.iter().map(|c| c.in_flight).max().unwrap_or(0);
    assert!(
        most <= 2,
        "{most} in flight on one function of two environments"
    );
    assert!(calls.iter().all(|c| c.function == "squall-executor"));
    // Three such functions: invocations go to all three, up to six at once.
    let three = engine(
        LambdaConfig {
            max_concurrency: 6,
            new_environments_per_10s: 2,
            function_count: 3,
            ..fake.config()
        },
        &stores,
    );
    let before = calls.len();
    check_query(&three, &request(9), 9).await;
    let calls = &fake.calls()[before..];
    let mut names: Vec<&str> = calls.iter().map(|c| c.function.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        ["squall-executor", "squall-executor-2", "squall-executor-3"]
    );
    let most = calls.iter().map(|c| c.in_flight).max().unwrap_or(0);
    assert!(
        (3..=6).contains(&most),
        "{most} in flight over three functions"
    );
    assert!(leftovers(&memory).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_pings_environments_while_the_job_is_planned_and_bills_them() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let engine = engine(fake.config(), &stores);
    let mut req = request(6);
    req.tasks.prewarm = 4;
    let result = engine.run(&req, None).await.expect("Q6");
    let rows = squall_tests::render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", 6), &rows, is_ordered(6)).expect("Q6's answer");
    let calls = fake.calls();
    let pings: Vec<_> = calls.iter().filter(|c| c.id.stage_id == 0).collect();
    assert_eq!(pings.len(), 4, "{calls:?}");
    // Sent together, before any task of the job.
    let first_task = calls.iter().position(|c| c.id.stage_id != 0).unwrap();
    assert!(calls[..first_task].iter().all(|c| c.id.stage_id == 0));
    assert_eq!(first_task, 4);
    let billed = &result.cost.stages[&0];
    assert_eq!(billed.lambda_invocations, 4);
    assert!(result.cost.total.lambda_invocations >= 4 + 2);
    assert!(leftovers(&memory).await.is_empty());
    // More than the backend runs at once is refused before anything runs.
    req.tasks.prewarm = 5;
    let refused = engine
        .run(&req, None)
        .await
        .expect_err("4 in flight at most");
    assert!(refused.to_string().contains("pre-warming 5"), "{refused}");
    assert_eq!(fake.calls().len(), calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_halves_the_invocations_in_flight_and_success_grows_them_back() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    // A function limited to 3 concurrent executions: more are throttled (429).
    // Each runs for at least 50 ms, so that a stage's 12 tasks overlap.
    let fake = FakeLambda::start_with_load(stores.clone(), |_, _, in_flight| {
        if in_flight > 3 {
            Reply::Throttle
        } else {
            Reply::Slow(Duration::from_millis(50))
        }
    })
    .await;
    let engine = engine(
        LambdaConfig {
            max_concurrency: 12,
            ..fake.config()
        },
        &stores,
    );
    let mut request = request(3);
    request.plan.shuffle_partitions = 12;
    check_query(&engine, &request, 3).await;

    let calls = fake.calls();
    let throttled = calls.iter().filter(|c| c.reply == Reply::Throttle).count();
    let flow = engine
        .backend
        .flow()
        .expect("the Lambda backend reports its flow");
    assert_eq!(flow.throttles, throttled as u64, "{flow:?}");
    assert!(flow.decreases >= 1, "{flow:?}");
    // The limit came down from 12 to about the function's 3...
    assert!(flow.lowest <= 3, "{flow:?}");
    // ...and successes grew it again.
    assert!(flow.limit > flow.lowest, "{flow:?}");
    assert_eq!(flow.in_flight, 0);
    let ran = calls.len() - throttled;
    eprintln!("{ran} invocations ran, {throttled} throttled: {flow:?}");
    // Never more in flight than the limit allowed: at most 12 at first.
    assert!(calls.iter().all(|c| c.in_flight <= 12), "{calls:?}");
    // Against a fixed 12 in flight, most invocations would be throttled; with
    // the limit near the function's, few are.
    assert!(
        throttled < ran,
        "{throttled} throttled for {ran} that ran: {flow:?}"
    );
    assert!(
        calls.iter().all(|c| c.id.attempt == 0),
        "no attempt lost to a 429"
    );
    assert!(leftovers(&memory).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_retried_with_a_larger_pool_invokes_the_larger_qualifier() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let engine = engine(
        LambdaConfig {
            qualifier: Some("small".into()),
            memory_qualifiers: vec![(128 << 10, "medium".into()), (1 << 20, "large".into())],
            ..fake.config()
        },
        &stores,
    );
    // A hash join's build side cannot spill: 64 KiB is too little for it.
    let mut request = JobRequest::new(
        "SELECT count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey",
        tpch::table_specs(&format!("{BUCKET}/tpch/")),
    );
    request.tasks = TaskOptions {
        memory_limit_bytes: 64 << 10,
        max_memory_limit_bytes: 64 << 20,
        ..TaskOptions::default()
    };
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["60175".to_string()]);
    let calls = fake.calls();
    // First attempts go to the configured qualifier; a task that ran out of
    // memory went on with 128 KiB ("medium"), then 256 KiB and up ("large"
    // from 1 MiB).
    assert!(
        calls
            .iter()
            .filter(|c| c.id.attempt == 0)
            .all(|c| c.qualifier.as_deref() == Some("small")),
        "{calls:?}"
    );
    let by_attempt = |a: u32| {
        calls
            .iter()
            .filter(|c| c.id.attempt == a)
            .filter_map(|c| c.qualifier.clone())
            .collect::<Vec<_>>()
    };
    assert!(by_attempt(1).iter().all(|q| q == "medium"), "{calls:?}");
    assert!(
        !by_attempt(1).is_empty(),
        "no task ran out of memory: {calls:?}"
    );
    let larger: Vec<String> = calls
        .iter()
        .filter(|c| c.id.attempt >= 4)
        .filter_map(|c| c.qualifier.clone())
        .collect();
    assert!(larger.iter().all(|q| q == "large"), "{calls:?}");
    assert!(leftovers(&memory).await.is_empty());
}
