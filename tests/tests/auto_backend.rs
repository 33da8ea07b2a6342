//! `--backend auto` against a scripted Invoke API that runs the real handler
//! (`squall_tests::fake_lambda`): stages placed by size run on "Lambda" and
//! the others in-process, in one job, with the reference answers, each
//! attempt billed where it ran and nothing left in the bucket; small jobs
//! placed by prediction never invoke; a stage whose local executors are
//! busy overflows some tasks to Lambda; and the service's job view and plan
//! say where each stage ran and why.
//!
//! The same through `cargo lambda watch` and LocalStack is in
//! `emulated_aws.rs`.

use std::sync::Arc;
use std::time::Duration;

use squall_engine::backend::{AutoBackend, BurstPolicy, InProcessBackend, Place};
use squall_engine::platform::Platform;
use squall_engine::{Engine, JobRequest, JobResult, PlanOptions};
use squall_executor::{ExecutorContext, StoreRegistry};
use squall_tests::fake_lambda::{FakeLambda, Reply, bucket_with_tpch, lambda_backend, leftovers};
use squall_tests::server::{Server, TOKEN};
use squall_tests::{compare, expected_answer, is_ordered, render};
use squall_tools::tpch;

const BUCKET: &str = "s3://squall-auto-test";

/// An auto engine: `local` in-process executors and the fake function,
/// placed by `policy`, Lambda counted on for `lambda_slots` at once.
fn auto_engine(
    stores: &Arc<StoreRegistry>,
    fake: &FakeLambda,
    local: usize,
    lambda_slots: usize,
    policy: BurstPolicy,
) -> Engine {
    let work = format!("{BUCKET}/work");
    let lambda = lambda_backend(fake.config(), stores, &work);
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let local = InProcessBackend::new(ctx, local).unwrap();
    let backend = AutoBackend::new(local, Arc::new(lambda), policy).with_lambda_slots(lambda_slots);
    Engine::with_backend(stores.clone(), Arc::new(backend), &work)
}

/// Placed against the emulated function's latencies, `burst_above` bytes.
fn policy(burst_above: Option<u64>) -> BurstPolicy {
    BurstPolicy {
        burst_above,
        lambda: Platform::emulated_lambda(),
        ..BurstPolicy::new(2048)
    }
}

fn request(q: usize) -> JobRequest {
    let mut request = JobRequest::new(
        tpch::query(q).unwrap(),
        tpch::table_specs(&format!("{BUCKET}/tpch/")),
    );
    request.plan = PlanOptions {
        shuffle_partitions: 3,
        ..PlanOptions::default()
    };
    request
}

/// The requests `result`'s job made of stores of `kind` (`s3`, `file`).
fn requests(result: &JobResult, kind: &str) -> squall_engine::cost::Requests {
    result
        .cost
        .total
        .requests_by_store
        .get(kind)
        .copied()
        .unwrap_or_default()
}

async fn answer(engine: &Engine, q: usize) -> JobResult {
    let result = engine
        .run(&request(q), None)
        .await
        .unwrap_or_else(|e| panic!("Q{q} failed: {e}"));
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", q), &rows, is_ordered(q))
        .unwrap_or_else(|e| panic!("Q{q}: {e}"));
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stages_burst_small_ones_stay_and_every_answer_is_right() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    // lineitem's and orders' scans read more than 256 KiB of columns at SF
    // 0.01; nation's, region's and the reduce stages' reads are smaller.
    let engine = auto_engine(&stores, &fake, 2, 4, policy(Some(256 << 10)));
    let (mut burst, mut stayed, mut invocations) = (0, 0, 0);
    for q in 1..=22 {
        let result = answer(&engine, q).await;
        // A fused stage runs in another's tasks: it is not placed.
        for stage in result.stages.iter().filter(|s| s.fused_into.is_none()) {
            let placement = stage.placement.as_ref().expect("every stage is placed");
            assert!(
                placement.local.is_some() && placement.lambda.is_some(),
                "auto placed stage {} with no prediction",
                stage.stage
            );
            match placement.place {
                Place::Lambda => {
                    burst += 1;
                    assert_eq!(
                        (stage.lambda_tasks as usize, stage.local_tasks),
                        (stage.tasks, 0),
                        "Q{q} stage {}: {placement:?}",
                        stage.stage
                    );
                    assert!(placement.reason.contains(">= --burst-above"));
                }
                Place::Local => {
                    stayed += 1;
                    assert_eq!(
                        (stage.local_tasks as usize, stage.lambda_tasks),
                        (stage.tasks, 0),
                        "Q{q} stage {}: {placement:?}",
                        stage.stage
                    );
                    assert!(placement.reason.contains("< --burst-above"));
                }
            }
        }
        // Billed where they ran: one invocation per Lambda attempt, the
        // in-process attempts' time apart.
        let cost = &result.cost.total;
        let lambda_tasks: u32 = result.stages.iter().map(|s| s.lambda_tasks).sum();
        assert!(
            cost.lambda_invocations >= u64::from(lambda_tasks),
            "Q{q}: {cost:?}"
        );
        invocations += cost.lambda_invocations;
        assert!(
            cost.local_task_seconds > 0.0,
            "Q{q}: the final stage ran here"
        );
        assert!(cost.local_task_seconds <= cost.task_seconds);
        if q == 1 {
            // Q1: lineitem's scan bursts, the final stage stays.
            let scan = &result.stages[0];
            assert_eq!(scan.placement.as_ref().unwrap().place, Place::Lambda);
            assert!(cost.lambda_gb_seconds > 0.0 && cost.lambda_compute_usd > 0.0);
            let last = result.stages.last().unwrap();
            assert_eq!(last.placement.as_ref().unwrap().place, Place::Local);
        }
        assert_eq!(leftovers(&memory).await, Vec::<String>::new(), "Q{q}");
    }
    assert!(
        burst >= 11 && stayed >= 22,
        "{burst} burst, {stayed} stayed"
    );
    // Every invocation the function saw was billed to a job.
    assert_eq!(fake.calls().len() as u64, invocations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_jobs_placed_by_prediction_never_invoke() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let engine = auto_engine(&stores, &fake, 2, 4, policy(None));
    for q in [1, 3, 5, 9, 18] {
        let result = answer(&engine, q).await;
        // A fused stage runs in another's tasks: it is not placed.
        for stage in result.stages.iter().filter(|s| s.fused_into.is_none()) {
            let placement = stage.placement.as_ref().unwrap();
            assert_eq!(placement.label(), "local", "Q{q}: {placement:?}");
            assert!(
                placement.reason.contains("stays here"),
                "{}",
                placement.reason
            );
        }
        assert_eq!(result.cost.total.lambda_invocations, 0);
    }
    assert!(
        fake.calls().is_empty(),
        "{} invocations",
        fake.calls().len()
    );
    assert!(leftovers(&memory).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_local_pool_overflows_some_tasks_to_lambda() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    // One slow executor (10 kB a second, as the placement sees it, and an
    // invocation as slow but for its start) and two invocations at once:
    // lineitem's scan is split three ways.
    let slow = BurstPolicy {
        local_bytes_per_second: 10e3,
        ..policy(None)
    };
    let engine = auto_engine(&stores, &fake, 1, 2, slow);
    let mut request = request(1);
    request.plan.min_scan_tasks = Some(8);
    // Each task once: the invocations counted below are the overflow's.
    request.tasks.speculation = squall_engine::scheduler::Speculation::disabled();
    let result = engine.run(&request, None).await.expect("Q1");
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", 1), &rows, is_ordered(1)).expect("Q1's answer");
    let scan = result
        .stages
        .iter()
        .find(|s| s.tasks >= 3)
        .unwrap_or_else(|| panic!("lineitem's scan in tasks: {:#?}", result.stages));
    let placement = scan.placement.as_ref().unwrap();
    assert_eq!(placement.label(), "split", "{placement:?}");
    let burst = placement.burst_tasks;
    assert!((1..scan.tasks).contains(&burst), "{placement:?}");
    assert!(
        placement.reason.contains("overflow"),
        "{}",
        placement.reason
    );
    // Only tasks that found the one executor busy went, at most `burst`.
    let lambda = scan.lambda_tasks as usize;
    assert!(
        (1..=burst).contains(&lambda) && scan.local_tasks >= 1,
        "{lambda} on Lambda, {} here, {burst} allowed",
        scan.local_tasks
    );
    let invoked = fake
        .calls()
        .iter()
        .filter(|c| c.id.stage_id == scan.stage)
        .count();
    assert_eq!(invoked, lambda);
    assert!(leftovers(&memory).await.is_empty());
}

/// A server over `engine` whose callers read the bucket's TPC-H tables and
/// write under its results folder (`BUCKET/results`).
async fn bucket_server(engine: &Engine, dir: &std::path::Path) -> Server {
    let results = format!("{BUCKET}/results");
    Server::start_with(engine.clone(), dir, |config| {
        config.results_root = results.clone();
        config.access = Arc::new(
            squall_engine::AccessPolicy::new(
                &[format!("{BUCKET}/tpch/")],
                std::slice::from_ref(&results),
                std::slice::from_ref(&engine.work_root),
            )
            .unwrap(),
        );
    })
    .await
}

/// A submission of TPC-H query `q` over the bucket's tables.
fn bucket_job(q: usize) -> serde_json::Value {
    let tables: Vec<_> = tpch::TABLES
        .iter()
        .map(|t| serde_json::json!({"name": t, "url": format!("{BUCKET}/tpch/{t}/")}))
        .collect();
    serde_json::json!({"sql": tpch::query(q).unwrap(), "tables": tables})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_view_and_plan_say_where_each_stage_ran_and_why() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let engine = auto_engine(&stores, &fake, 2, 4, policy(Some(256 << 10)));
    let dir = tempfile::tempdir().unwrap();
    let server = bucket_server(&engine, dir.path()).await;
    let job = bucket_job(1);
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, squall_service::JobState::Succeeded, "{view:?}");
    let places: Vec<(String, usize, usize)> = view
        .stages
        .iter()
        .filter(|s| s.fused_into.is_none())
        .map(|s| {
            let placement = s.placement.as_ref().expect("placed");
            assert!(!placement.reason.is_empty());
            assert!(placement.local_seconds.is_some() && placement.lambda_seconds.is_some());
            (placement.place.clone(), s.local_tasks, s.lambda_tasks)
        })
        .collect();
    assert_eq!(
        places.first().map(|p| p.0.as_str()),
        Some("lambda"),
        "{places:?}"
    );
    assert_eq!(
        places.last().map(|p| p.0.as_str()),
        Some("local"),
        "{places:?}"
    );
    let first = &view.stages[0];
    assert_eq!((first.lambda_tasks, first.local_tasks), (first.tasks, 0));
    let cost = view.cost.expect("cost");
    assert!(cost.local_task_seconds > 0.0 && cost.lambda_invocations > 0);
    // The plan API and each attempt say so too.
    let (status, plan) = server
        .get(&format!("/v1/jobs/{id}/plan"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{plan}");
    let placed: Vec<&str> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["placement"]["place"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(placed.first(), Some(&"lambda"), "{plan}");
    assert_eq!(placed.last(), Some(&"local"), "{plan}");
    let (status, attempts) = server
        .get(&format!("/v1/jobs/{id}/attempts"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = attempts["attempts"].as_array().unwrap();
    assert!(
        attempts.iter().any(|a| a["place"] == "lambda"),
        "{attempts:?}"
    );
    assert!(
        attempts.iter().any(|a| a["place"] == "local"),
        "{attempts:?}"
    );
    // A job asking for one place gets it; a bad place is refused.
    let mut asked = job.clone();
    asked["options"] = serde_json::json!({"placement": "local"});
    let (status, body) = server.post("/v1/jobs", &asked).await;
    assert_eq!(status, 202, "{body}");
    let local = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(
        local.state,
        squall_service::JobState::Succeeded,
        "{local:?}"
    );
    assert!(
        local.stages.iter().all(|s| s.lambda_tasks == 0
            && (s.fused_into.is_some()
                || s.placement.as_ref().is_some_and(|p| p.place == "local"))),
        "{:?}",
        local.stages
    );
    asked["options"] = serde_json::json!({"placement": "everywhere"});
    let (status, body) = server.post("/v1/jobs", &asked).await;
    assert_eq!(status, 400, "{body}");
    // And /metrics counts executor time and stages by place.
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "squall_stages_placed_total{place=\"lambda\"}",
        "squall_stages_placed_total{place=\"local\"}",
        "squall_executor_seconds_total{place=\"lambda\"}",
        "squall_executor_seconds_total{place=\"local\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left: Vec<_> = leftovers(&memory)
        .await
        .into_iter()
        .filter(|p| !p.starts_with("results/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_may_ask_for_one_place_where_the_backend_has_it() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let engine = auto_engine(&stores, &fake, 2, 4, policy(None));
    for place in [Place::Lambda, Place::Local] {
        let mut asked = request(3);
        asked.tasks.place = Some(place);
        let result = engine.run(&asked, None).await.expect("Q3");
        let rows = render(result.batches.as_deref().unwrap_or_default());
        compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).expect("Q3's answer");
        // A fused stage runs in another's tasks: it is not placed.
        for stage in result.stages.iter().filter(|s| s.fused_into.is_none()) {
            let placement = stage.placement.as_ref().unwrap();
            assert_eq!(placement.place, place);
            assert!(
                placement.reason.contains("the job asked"),
                "{}",
                placement.reason
            );
            let (here, there) = (stage.local_tasks as usize, stage.lambda_tasks as usize);
            match place {
                Place::Lambda => assert_eq!((here, there), (0, stage.tasks)),
                Place::Local => assert_eq!((here, there), (stage.tasks, 0)),
            }
        }
    }
    assert!(leftovers(&memory).await.is_empty());
    // A backend of one place refuses the other before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let local = squall_tests::local_engine(2, &dir.path().join("work"));
    let mut asked = JobRequest::new(
        tpch::query(6).unwrap(),
        squall_tests::tpch_tables(&squall_tests::tpch_data("0.01").await),
    );
    asked.tasks.place = Some(Place::Lambda);
    let refused = local.run(&asked, None).await.expect_err("no Lambda here");
    assert!(
        refused.to_string().contains("cannot run tasks there"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_stays_here_keeps_its_files_on_local_disk() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let local = tempfile::tempdir().unwrap();
    let local_root = format!("file://{}", local.path().display());
    let with_local = |policy| Engine {
        local_work_root: Some(local_root.clone()),
        ..auto_engine(&stores, &fake, 2, 4, policy)
    };
    // By prediction SF 0.01 stays here: nothing written to the bucket.
    let engine = with_local(policy(None));
    let result = answer(&engine, 5).await;
    let s3 = requests(&result, "s3");
    assert_eq!(s3.put, 0, "{:?}", result.cost.total.requests_by_store);
    assert!(s3.get > 0, "the tables are read from the bucket");
    let file = requests(&result, "file");
    assert!(file.put > 0, "shuffle files on local disk");
    // A fused stage runs in another's tasks: it is not placed.
    for stage in result.stages.iter().filter(|s| s.fused_into.is_none()) {
        let placement = stage.placement.as_ref().unwrap();
        assert_eq!(placement.place, Place::Local);
        assert!(
            placement.reason.contains("whole job stays here"),
            "{}",
            placement.reason
        );
    }
    assert!(fake.calls().is_empty());
    // Past --burst-above the job is planned in the bucket and bursts.
    let engine = with_local(policy(Some(256 << 10)));
    let result = answer(&engine, 5).await;
    let s3 = requests(&result, "s3");
    assert!(s3.put > 0 && !fake.calls().is_empty());
    assert!(leftovers(&memory).await.is_empty());
    let left = squall_tests::files_under(local.path());
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_lambda_refuses_a_job_asking_for_it() {
    let data = squall_tests::tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = squall_tests::local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine, dir.path(), 1).await;
    let mut job = squall_tests::server::tpch_job(&data, 6);
    job["options"] = serde_json::json!({"placement": "lambda"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot run tasks there"),
        "{body}"
    );
    // Its own place is fine.
    job["options"] = serde_json::json!({"placement": "local"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(view.state, squall_service::JobState::Succeeded, "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keeps_the_result_of_a_job_that_stays_here_on_its_disk() {
    let (stores, memory) = bucket_with_tpch(BUCKET).await;
    let fake = FakeLambda::start(stores.clone(), |_, _| Reply::Run).await;
    let local = tempfile::tempdir().unwrap();
    let engine = Engine {
        local_work_root: Some(format!("file://{}", local.path().display())),
        ..auto_engine(&stores, &fake, 2, 4, policy(None))
    };
    let dir = tempfile::tempdir().unwrap();
    let server = bucket_server(&engine, dir.path()).await;
    let submit = |placement: &str| {
        let mut job = bucket_job(6);
        job["options"] = serde_json::json!({"placement": placement});
        job
    };
    let results = format!("{BUCKET}/results");
    let mut ids = Vec::new();
    for (placement, on_disk) in [("auto", true), ("local", true), ("lambda", false)] {
        let (status, body) = server.post("/v1/jobs", &submit(placement)).await;
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let view = server.wait_final(&id).await;
        squall_tests::server::check_answer(&engine, &view, 6).await;
        let manifest = view.manifest_url.clone().unwrap();
        let in_bucket: Vec<_> = leftovers(&memory)
            .await
            .into_iter()
            .filter(|p| p.starts_with(&format!("results/{id}/")))
            .collect();
        if on_disk {
            // Nothing of the job in the bucket: its result is on this disk,
            // where only the server reads it.
            assert!(
                manifest.starts_with(&format!("file://{}/results/{id}/", local.path().display())),
                "{placement}: {manifest}"
            );
            assert!(in_bucket.is_empty(), "{placement}: {in_bucket:?}");
        } else {
            assert!(
                manifest.starts_with(&format!("{results}/{id}/")),
                "{manifest}"
            );
            assert!(!in_bucket.is_empty());
        }
        // Read through the API all the same.
        let (status, page) = server
            .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 1, "{page}");
        ids.push(id);
    }
    // Expired jobs take their results with them, wherever they were.
    let deleted = server
        .service
        .expire_jobs(squall_service::now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(deleted, ids.len());
    let left = squall_tests::files_under(local.path());
    assert!(left.is_empty(), "{left:?}");
    assert!(leftovers(&memory).await.is_empty());
}
