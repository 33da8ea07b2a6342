//! What a job cost: the requests it records equal those an independent
//! counting store saw (in-process, and through the Lambda backend with the
//! real handler behind a scripted Invoke API); Lambda attempts are billed,
//! crashed ones included; a cost limit stops a job and sweeps its objects.

use std::sync::Arc;

use object_store::memory::InMemory;
use squall_engine::cost::Requests;
use squall_engine::{Engine, JobRequest, JobRun, PlanOptions, SquallError};
use squall_executor::StoreRegistry;
use squall_tests::fake_lambda::{FAKE_MEMORY_MB, FakeLambda, Reply, lambda_engine, leftovers};
use squall_tests::stores::{Op, RecordingStore};
use squall_tests::{TEST_PARTS, compare, expected_answer, is_ordered, render_with_header};
use squall_tools::tpch;

const BUCKET: &str = "s3://squall-cost-test";

/// What the recording store saw, by kind (a copy counts as a PUT, as S3 bills it).
fn seen(store: &RecordingStore) -> Requests {
    let mut counts = Requests::default();
    for request in store.requests() {
        match request.op {
            Op::Get(_) => counts.get += 1,
            Op::Head => counts.head += 1,
            Op::Put | Op::PutMultipart | Op::Copy => counts.put += 1,
            Op::List => counts.list += 1,
            Op::Delete => counts.delete += 1,
        }
    }
    counts
}

/// A registry whose `url` is an in-memory store behind a recording store,
/// holding TPC-H SF 0.01 under `tpch/`; the log is cleared after loading.
async fn recorded_tpch(url: &str) -> (Arc<StoreRegistry>, Arc<RecordingStore>, Arc<InMemory>) {
    let stores = Arc::new(StoreRegistry::new());
    let memory = Arc::new(InMemory::new());
    let recording = RecordingStore::new(memory.clone());
    stores.register(url, recording.clone()).unwrap();
    tpch::generate(&stores, 0.01, &format!("{url}/tpch"), TEST_PARTS, |_| {})
        .await
        .unwrap();
    recording.clear();
    (stores, recording, memory)
}

fn q3(url: &str) -> JobRequest {
    let mut request = JobRequest::new(
        tpch::query(3).unwrap(),
        tpch::table_specs(&format!("{url}/tpch/")),
    );
    request.plan = PlanOptions {
        shuffle_partitions: 3,
        ..PlanOptions::default()
    };
    request
}

fn check_q3(result: &squall_engine::JobResult) {
    let rows = render_with_header(
        result.batches.as_deref().unwrap_or_default(),
        &result.schema,
    );
    compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_request_counts_match_a_counting_store() {
    let url = "memory://cost";
    let (stores, recording, _) = recorded_tpch(url).await;
    let engine = Engine::embedded_with(stores, Some(3), &format!("{url}/work")).unwrap();
    let result = engine.run(&q3(url), None).await.unwrap();
    check_q3(&result);
    let cost = &result.cost;
    let total = &cost.total;
    // Every request the job made went through its counted stores.
    assert_eq!(total.requests, seen(&recording), "{cost:#?}");
    assert!(total.requests.get > 0 && total.requests.put > 0 && total.requests.delete > 0);
    assert_eq!(
        total.requests_by_store.keys().collect::<Vec<_>>(),
        ["memory"]
    );
    // In-process: no Lambda, and memory:// requests are not priced.
    assert_eq!(total.lambda_invocations, 0);
    assert_eq!(total.usd, 0.0);
    // One attempt per task, each stage's share adding up to the total.
    let tasks: usize = result.stages.iter().map(|s| s.tasks).sum();
    assert_eq!(total.attempts as usize, tasks);
    let mut summed = cost.control_plane.requests.total();
    for stage in cost.stages.values() {
        summed += stage.requests.total();
    }
    assert_eq!(summed, total.requests.total());
    let scanned: u64 = result.stages.iter().map(|s| s.bytes_scanned).sum();
    assert_eq!(total.bytes_scanned, scanned);
    assert!(scanned > 0);
    // The control plane lists the tables and reads footers while planning.
    assert!(cost.control_plane.requests.list > 0, "{cost:#?}");
}

fn engine_on(fake: &FakeLambda, stores: &Arc<StoreRegistry>) -> Engine {
    lambda_engine(fake.config(), stores, &format!("{BUCKET}/work"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lambda_attempts_are_billed_and_their_requests_counted_where_made() {
    let (stores, recording, memory) = recorded_tpch(BUCKET).await;
    // One result comes back through the bucket: a PUT by the function, a GET
    // and a DELETE by the backend.
    let fake = FakeLambda::start(stores.clone(), |id, _| match (id.stage_id, id.task) {
        (2, 0) => Reply::RunResultInBucket,
        _ => Reply::Run,
    })
    .await;
    let engine = engine_on(&fake, &stores);
    let started = std::time::Instant::now();
    let result = engine.run(&q3(BUCKET), None).await.unwrap();
    check_q3(&result);
    let total = &result.cost.total;
    assert_eq!(total.requests, seen(&recording), "{total:#?}");
    // Every invocation the function saw is billed.
    let calls = fake.calls();
    assert_eq!(total.lambda_invocations as usize, calls.len(), "{total:#?}");
    assert_eq!(total.attempts as usize, calls.len());
    // One process behind the fake: its first invocation was the cold start.
    assert_eq!(total.cold_starts, 1);
    // Billed at the fake's memory: (durations + the cold start's init) × 2 GB.
    let gb = FAKE_MEMORY_MB as f64 / 1024.0;
    let init = total.lambda_gb_seconds / gb - total.task_seconds;
    assert!(
        init >= -1e-9 && init <= started.elapsed().as_secs_f64(),
        "{total:#?}"
    );
    let prices = &engine.prices;
    if std::env::consts::ARCH != "aarch64" {
        let compute = total.lambda_gb_seconds * prices.lambda_gb_second_x86_64;
        assert!((total.lambda_compute_usd - compute).abs() < 1e-12);
    }
    let invocations = calls.len() as f64 * prices.lambda_per_million_requests / 1e6;
    assert!((total.lambda_request_usd - invocations).abs() < 1e-15);
    // The bucket is s3://: its requests are priced.
    let r = &total.requests;
    let s3 = (r.put + r.list) as f64 * prices.s3_put_per_thousand / 1000.0
        + (r.get + r.head) as f64 * prices.s3_get_per_thousand / 1000.0;
    assert!(s3 > 0.0);
    assert!((total.s3_request_usd - s3).abs() < 1e-15, "{total:#?}");
    assert!((total.usd - (total.lambda_compute_usd + total.lambda_request_usd + s3)).abs() < 1e-12);
    assert!(leftovers(&memory).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_invocation_is_billed_at_the_time_it_was_waited_for() {
    let (stores, _, _) = recorded_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |id, _| {
        match (id.stage_id, id.task, id.attempt) {
            (1, 0, 0) => Reply::CrashAfterRunning,
            _ => Reply::Run,
        }
    })
    .await;
    let engine = engine_on(&fake, &stores);
    let result = engine.run(&q3(BUCKET), None).await.unwrap();
    check_q3(&result);
    let calls = fake.calls();
    let stage1 = &result.cost.stages[&1];
    let total = &result.cost.total;
    assert_eq!(total.lambda_invocations as usize, calls.len(), "{total:#?}");
    let tasks: usize = result.stages.iter().map(|s| s.tasks).sum();
    assert_eq!(calls.len(), tasks + 1);
    // Stage 1 holds the crashed attempt and its retry.
    let stage1_tasks = result.stages.iter().find(|s| s.stage == 1).unwrap().tasks;
    assert_eq!(stage1.lambda_invocations as usize, stage1_tasks + 1);
    assert_eq!(stage1.attempts as usize, stage1_tasks + 1);
}

/// In-process, so that stopped tasks stop at once (a Lambda invocation
/// cannot be stopped: its late write waits for the work prefix's lifecycle
/// rule). The bucket is `s3://`, so its requests are priced: a PUT is
/// $0.000005, and a few attempts pass the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cost_limit_stops_the_job_and_leaves_nothing() {
    let (stores, _, memory) = recorded_tpch(BUCKET).await;
    let engine = Engine::embedded_with(stores, Some(2), &format!("{BUCKET}/work")).unwrap();
    let unlimited = engine.run(&q3(BUCKET), None).await.unwrap();
    let full = unlimited.cost.total.clone();
    assert!(full.usd > 0.000_015, "{full:#?}");
    assert!(leftovers(&memory).await.is_empty());

    let mut request = q3(BUCKET);
    request.cost_limit_usd = Some(0.000_015);
    let meter = engine.meter(&request);
    let run = JobRun {
        meter: Some(meter.clone()),
        ..JobRun::default()
    };
    let err = engine.run_as(&request, run).await.unwrap_err();
    match &err {
        SquallError::CostLimitExceeded {
            limit_usd,
            spent_usd,
        } => {
            assert_eq!(*limit_usd, 0.000_015);
            assert!(*spent_usd > *limit_usd, "{err}");
        }
        other => panic!("expected the cost limit, got {other}"),
    }
    assert!(err.to_string().contains("cost limit of $0.000015"), "{err}");
    let report = meter.report();
    assert!(report.total.usd > 0.000_015, "{report:#?}");
    // Stopped early: fewer attempts than the whole job runs.
    assert!(
        report.total.attempts < full.attempts,
        "{report:#?} vs {full:#?}"
    );
    assert!(leftovers(&memory).await.is_empty());
}
