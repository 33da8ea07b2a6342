//! Squall on emulated AWS, no Docker: S3 from LocalStack in host mode, the Lambda
//! Invoke API from `cargo lambda watch` running this workspace's `squall-lambda`
//! binary. Start them with `tests/emulators/start.sh` and source the env file it
//! names (tests/run does both); these tests fail, naming the variable, when they
//! are not running. Built only with `--features emulators`.
//!
//! - all 22 TPC-H queries at SF 0.01 through `--backend lambda`, with tables,
//!   shuffle files and results in the emulated bucket, nothing left behind,
//!   every stage a join's keys can filter filtered;
//! - the shared object-store suite on the emulated S3;
//! - the LocalStack init hook's bucket and function exist.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use squall_engine::backend::{
    AutoBackend, BurstPolicy, ExecutorBackend, InProcessBackend, LambdaBackend, LambdaConfig, Place,
};
use squall_engine::planner::KeyFilterMode;
use squall_engine::platform::Platform;
use squall_engine::scheduler::{Coalescing, Exchange, ExchangeMode};
use squall_engine::{Engine, JobRequest, MANIFEST_NAME, PlanOptions};
use squall_executor::{ExecutorContext, StoreRegistry};
use squall_tests::store_suite::{Capabilities, run_all};
use squall_tests::{
    TEST_PARTS, compare, expected_answer, is_ordered, render, render_with_header, run_rendered,
};
use squall_tools::tpch;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the emulators with tests/emulators/start.sh and source the env file it prints (tests/run does this)")
    })
}

fn bucket_url() -> String {
    format!("s3://{}", var("SQUALL_TEST_BUCKET"))
}

/// A fresh prefix per test run, so runs never see each other's objects.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}

async fn keys_under(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let found: Vec<_> = store
        .list(Some(&Path::from(prefix)))
        .try_collect()
        .await
        .expect("list the emulated bucket");
    found.into_iter().map(|m| m.location.to_string()).collect()
}

/// One test's corner of the emulated bucket: TPC-H SF 0.01 uploaded under a
/// fresh prefix, and an engine whose tasks are invocations of the emulated
/// function, its work folder under the same prefix.
struct EmulatedRun {
    stores: Arc<StoreRegistry>,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// The prefix everything of this run is under.
    run: String,
    tables: Vec<squall_engine::TableSpec>,
    engine: Engine,
}

impl EmulatedRun {
    async fn start(name: &str, concurrency: usize, timeout: Duration) -> Self {
        Self::start_placed(name, concurrency, timeout, None).await
    }

    /// [`start`](Self::start), with `--backend auto` placing stages by
    /// `policy` (two in-process executors beside the function) when given.
    async fn start_placed(
        name: &str,
        concurrency: usize,
        timeout: Duration,
        policy: Option<BurstPolicy>,
    ) -> Self {
        let stores = Arc::new(StoreRegistry::new());
        let bucket = bucket_url();
        let (store, _) = stores.resolve(&format!("{bucket}/")).expect("S3 store");
        let run = unique(name);
        let tables = format!("{bucket}/{run}/tpch");
        tpch::generate(&stores, 0.01, &tables, TEST_PARTS, |_| {})
            .await
            .expect("upload TPC-H SF 0.01 to the emulated bucket");
        let work = format!("{bucket}/{run}/work");
        let config = LambdaConfig {
            endpoint: Some(var("SQUALL_TEST_LAMBDA_ENDPOINT")),
            max_concurrency: concurrency,
            invocation_timeout: timeout,
            ..LambdaConfig::new(var("SQUALL_TEST_LAMBDA_FUNCTION"))
        };
        let backend = LambdaBackend::connect(config, stores.clone(), &work)
            .await
            .expect("Lambda backend");
        let backend: Arc<dyn ExecutorBackend> = match policy {
            None => Arc::new(backend),
            Some(policy) => {
                let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
                let local = InProcessBackend::new(ctx, 2).expect("in-process executors");
                Arc::new(AutoBackend::new(local, Arc::new(backend), policy).with_lambda_slots(2))
            }
        };
        let engine = Engine::with_backend(stores.clone(), backend, &work);
        Self {
            tables: tpch::table_specs(&format!("{tables}/")),
            stores,
            store,
            bucket,
            run,
            engine,
        }
    }

    /// Objects left in the run's work folder.
    /// What is left under the run's work folder once the invocations a job
    /// could not stop (losing backups) have ended and the engine has swept
    /// again: it waits up to 30 s for the folder to empty.
    async fn work_left(&self) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = keys_under(&self.store, &format!("{}/work", self.run)).await;
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes everything the run put in the bucket.
    async fn clean_up(&self) {
        for key in keys_under(&self.store, &self.run).await {
            self.store.delete(&Path::from(key)).await.expect("delete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_through_lambda_and_s3_emulators() {
    let concurrency: usize = var("SQUALL_TEST_LAMBDA_CONCURRENCY")
        .parse()
        .expect("number");
    let emulated = EmulatedRun::start("tpch-run", concurrency, Duration::from_secs(300)).await;
    let EmulatedRun {
        stores,
        store,
        bucket,
        run,
        engine,
        ..
    } = &emulated;
    let specs = emulated.tables.clone();
    let mut failures = Vec::new();
    let mut key_filters = 0;
    for q in 1..=22 {
        let mut request = JobRequest::new(tpch::query(q).unwrap(), specs.clone());
        // Every stage a join's keys can filter waits for them: the summaries
        // come back in the function's results and the filters go out in its
        // plans.
        request.plan = PlanOptions {
            shuffle_partitions: 4,
            key_filters: KeyFilterMode::Always,
            ..PlanOptions::default()
        };
        // Odd queries keep their result in the bucket (Parquet + manifest), even
        // ones return rows; either way the result files are written by the function.
        let rows = if q % 2 == 1 {
            let output = format!("{bucket}/{run}/results/q{q:02}");
            request.output = Some(output.clone());
            match engine.run(&request, None).await {
                Ok(result) => {
                    key_filters += result
                        .stages
                        .iter()
                        .map(|s| s.key_filters.len())
                        .sum::<usize>();
                    let manifest = format!("{run}/results/q{q:02}/{MANIFEST_NAME}");
                    assert_eq!(
                        result.manifest_url.as_deref(),
                        Some(format!("{bucket}/{manifest}").as_str())
                    );
                    assert!(
                        keys_under(store, &format!("{run}/results/q{q:02}"))
                            .await
                            .contains(&manifest)
                    );
                    let batches = squall_engine::read_result(stores, &result.files)
                        .await
                        .expect("read the result back");
                    Ok(render_with_header(&batches, &result.schema))
                }
                Err(e) => Err(e.to_string()),
            }
        } else {
            run_rendered(engine, &request).await
        };
        match rows {
            Ok(rows) => {
                if let Err(e) = compare(&expected_answer("0.01", q), &rows, is_ordered(q)) {
                    failures.push(format!("Q{q}: {e}"));
                }
            }
            Err(e) => failures.push(format!("Q{q} failed: {e}")),
        }
        let left = emulated.work_left().await;
        if !left.is_empty() {
            failures.push(format!(
                "Q{q} left {} objects, e.g. {}",
                left.len(),
                left[0]
            ));
        }
    }
    emulated.clean_up().await;
    assert!(key_filters > 0, "no key filter applied in the odd queries");
    assert!(
        failures.is_empty(),
        "{} of 22 queries wrong through the Lambda emulator:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `--backend auto` through the emulators: stages reading at least 256 KiB
/// (lineitem's and orders' scans at SF 0.01) run on the emulated function,
/// the others in-process, in the same jobs; all 22 answers are right, the
/// job's cost bills each attempt where it ran, and the work folder is empty
/// after each query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_places_stages_in_process_and_on_the_emulated_function() {
    let policy = BurstPolicy {
        burst_above: Some(256 << 10),
        lambda: Platform::emulated_lambda(),
        ..BurstPolicy::new(2048)
    };
    let emulated =
        EmulatedRun::start_placed("auto-run", 4, Duration::from_secs(300), Some(policy)).await;
    let mut failures = Vec::new();
    let (mut on_lambda, mut here) = (0u32, 0u32);
    for q in 1..=22 {
        let mut request = JobRequest::new(tpch::query(q).unwrap(), emulated.tables.clone());
        request.plan = PlanOptions {
            shuffle_partitions: 4,
            ..PlanOptions::default()
        };
        match emulated.engine.run(&request, None).await {
            Ok(result) => {
                let rows = render(result.batches.as_deref().unwrap_or_default());
                if let Err(e) = compare(&expected_answer("0.01", q), &rows, is_ordered(q)) {
                    failures.push(format!("Q{q}: {e}"));
                }
                for stage in &result.stages {
                    let place = stage.placement.as_ref().map(|p| p.place);
                    let ran_as_placed = match place {
                        Some(Place::Lambda) => stage.local_tasks == 0,
                        Some(Place::Local) => stage.lambda_tasks == 0,
                        // Fused: run by another stage's tasks.
                        None => stage.fused_into.is_some(),
                    };
                    if !ran_as_placed {
                        failures.push(format!("Q{q} stage {}: {stage:?}", stage.stage));
                    }
                    on_lambda += stage.lambda_tasks;
                    here += stage.local_tasks;
                }
                let cost = &result.cost.total;
                let burst: u32 = result.stages.iter().map(|s| s.lambda_tasks).sum();
                if cost.lambda_invocations < u64::from(burst) || cost.local_task_seconds <= 0.0 {
                    failures.push(format!("Q{q} billed {cost:?} for {burst} tasks on Lambda"));
                }
            }
            Err(e) => failures.push(format!("Q{q} failed: {e}")),
        }
        let left = emulated.work_left().await;
        if !left.is_empty() {
            failures.push(format!(
                "Q{q} left {} objects, e.g. {}",
                left.len(),
                left[0]
            ));
        }
    }
    emulated.clean_up().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        on_lambda >= 22 && here >= 22,
        "{on_lambda} tasks on the function, {here} in-process"
    );
}

/// The two-level exchange through the emulators: TPC-H Q12 read direct and
/// two-level with the same plan (both join sides shuffled, one reduce task a
/// partition): the function runs the combine steps against LocalStack's S3,
/// both answers are right, two-level makes fewer GETs, and nothing is left in
/// the work folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_level_exchange_through_the_emulators() {
    let emulated = EmulatedRun::start("exchange-run", 4, Duration::from_secs(300)).await;
    let mut gets = Vec::new();
    for mode in [ExchangeMode::Direct, ExchangeMode::TwoLevel] {
        let mut request = JobRequest::new(tpch::query(12).unwrap(), emulated.tables.clone());
        request.plan = PlanOptions {
            shuffle_partitions: 16,
            broadcast_rows: 100,
            broadcast_bytes: 4 << 10,
            // Both sides stay shuffled whatever the lineitem side commits.
            late_broadcast: None,
            ..PlanOptions::default()
        };
        request.tasks.coalescing = Coalescing::disabled();
        // The reduce stage under the final merge runs its own 16 tasks,
        // which read the join's files two-level.
        request.tasks.fuse_max_bytes = 0;
        request.tasks.exchange = Exchange {
            mode,
            ..Exchange::default()
        };
        let result = emulated.engine.run(&request, None).await.expect("Q12");
        let rows = render(result.batches.as_deref().unwrap_or_default());
        compare(&expected_answer("0.01", 12), &rows, is_ordered(12)).expect("Q12's answer");
        let combined = result
            .stages
            .iter()
            .flat_map(|s| &s.exchanges)
            .filter(|e| e.two_level)
            .count();
        assert_eq!(
            combined > 0,
            mode == ExchangeMode::TwoLevel,
            "{mode}: {combined} combined"
        );
        gets.push(result.cost.total.requests.get);
        let left = emulated.work_left().await;
        assert!(left.is_empty(), "{mode} left {left:?}");
    }
    emulated.clean_up().await;
    eprintln!(
        "Q12 through the emulators: {} GETs direct, {} two-level",
        gets[0], gets[1]
    );
    assert!(
        gets[1] < gets[0],
        "GETs direct {}, two-level {}",
        gets[0],
        gets[1]
    );
}

/// The function crashes (the `fault-injection` build does on request): one
/// attempt panics in the handler, which the runtime reports and `cargo lambda
/// watch` answers as a 500 with the error body; another kills the process, which
/// the emulator never answers, so the invocation timeout ends that attempt. Both
/// tasks are retried and the answer is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_function_is_retried_through_the_emulator() {
    let emulated = EmulatedRun::start("crash-run", 4, Duration::from_secs(20)).await;
    let mut request = JobRequest::new(tpch::query(3).unwrap(), emulated.tables.clone());
    // Scans cut a task per executor, as small as they are (on Lambda a scan
    // task is otherwise 64 MiB at least: this one would have one task).
    request.plan.min_scan_task_bytes = Some(0);
    // Stage 1 task 1 panics and stage 2 task 0 exits on its first attempt.
    request.tasks.session_options = vec![
        (
            squall_executor::lambda::faults::PANIC_AT.into(),
            "1:1".into(),
        ),
        (
            squall_executor::lambda::faults::EXIT_AT.into(),
            "2:0".into(),
        ),
    ];
    let result = emulated
        .engine
        .run(&request, None)
        .await
        .expect("Q3 survives the crashes");
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).expect("Q3 answer");
    let attempts: u32 = result.stages.iter().map(|s| s.attempts).sum();
    let tasks: usize = result.stages.iter().map(|s| s.tasks).sum();
    // Backup copies are attempts too: of a straggler (the machine busy), or
    // of the attempt that exited and is not answered until its timeout —
    // a backup that wins is then its retry.
    let backups: u32 = result.stages.iter().map(|s| s.backups).sum();
    let (least, most) = (tasks + 2, tasks + 2 + backups as usize);
    assert!(
        (least..=most).contains(&(attempts as usize)),
        "two crashed attempts, each retried once: {attempts} attempts of {tasks} tasks, {backups} backups"
    );
    // The real function reports its memory (cargo lambda's default) and
    // fresh processes; every invocation is billed, the crashed ones at the
    // time they were waited for.
    let cost = &result.cost.total;
    assert_eq!(cost.lambda_invocations, u64::from(attempts), "{cost:#?}");
    assert!(cost.cold_starts >= 1, "{cost:#?}");
    assert!(
        cost.lambda_gb_seconds > 0.0 && cost.lambda_compute_usd > 0.0,
        "{cost:#?}"
    );
    assert!(cost.requests_by_store["s3"].put > 0, "{cost:#?}");
    assert!(cost.s3_request_usd > 0.0, "{cost:#?}");
    assert!(emulated.work_left().await.is_empty());
    emulated.clean_up().await;
}

/// A seeded fault plan, sent to the function as a session option (the
/// `fault-injection` build draws each attempt's fault from it): a fifth of the
/// attempts fail at once and a fifth straggle 30×. The job's id is fixed, so
/// the draw is the same on every run: attempts that fail are retried, a
/// straggler is overtaken by a backup invocation, and the answer is right with
/// nothing left in the work folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_plan_is_survived_through_the_emulator() {
    use squall_engine::engine::JobRun;
    use squall_executor::{Fault, FaultPlan, TaskId};

    let emulated = EmulatedRun::start("fault-plan", 4, Duration::from_secs(60)).await;
    let plan = FaultPlan {
        seed: 11,
        stragglers: 0.2,
        slowdown: 30.0,
        crash: 0.0,
        fail: 0.2,
    };
    let mut request = JobRequest::new(tpch::query(3).unwrap(), emulated.tables.clone());
    // The tasks the seed's draw was chosen for: scans cut a task per
    // executor, however small.
    request.plan.min_scan_task_bytes = Some(0);
    request.tasks.session_options = vec![(
        squall_executor::lambda::faults::PLAN.into(),
        serde_json::to_string(&plan).unwrap(),
    )];
    let job_id = "00000000fa017000";
    let run = JobRun {
        job_id: Some(job_id.into()),
        ..JobRun::default()
    };
    let result = emulated
        .engine
        .run_as(&request, run)
        .await
        .expect("Q3 survives the fault plan");
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).expect("Q3 answer");

    // What the plan drew for the first attempt of every task that ran.
    let first = |stage: u32, task: u32| {
        plan.draw(&TaskId {
            job_id: job_id.into(),
            run_id: String::new(),
            stage_id: stage,
            task,
            attempt: 0,
        })
    };
    let drawn: Vec<Fault> = result
        .stages
        .iter()
        .flat_map(|s| (0..s.tasks as u32).map(move |t| first(s.stage, t)))
        .collect();
    let failed_first = drawn.iter().filter(|f| **f == Fault::Fail).count();
    assert!(failed_first > 0, "the seed makes some first attempt fail");
    let attempts: u32 = result.stages.iter().map(|s| s.attempts).sum();
    let tasks: usize = result.stages.iter().map(|s| s.tasks).sum();
    assert!(
        attempts as usize >= tasks + failed_first,
        "{attempts} attempts for {tasks} tasks, {failed_first} of whose first attempts failed"
    );
    let backups: u32 = result.stages.iter().map(|s| s.backups).sum();
    let wins: u32 = result.stages.iter().map(|s| s.backup_wins).sum();
    assert!(
        drawn.iter().any(|f| matches!(f, Fault::Straggle { .. })),
        "the seed makes some first attempt straggle"
    );
    assert!(
        backups >= 1 && wins >= 1,
        "a straggler 30× slower is overtaken by a backup ({backups} backups, {wins} won)"
    );
    assert!(emulated.work_left().await.is_empty());
    emulated.clean_up().await;
}

#[tokio::test]
async fn emulated_s3_passes_the_object_store_suite() {
    let stores = StoreRegistry::new();
    let (store, _) = stores
        .resolve(&format!("{}/", bucket_url()))
        .expect("S3 store");
    run_all(
        store.as_ref(),
        &unique("suite"),
        Capabilities {
            conditional_update: true,
        },
    )
    .await;
}

#[tokio::test]
async fn the_init_hook_created_the_bucket_and_the_function() {
    let endpoint = var("AWS_ENDPOINT_URL");
    let function = var("SQUALL_TEST_LOCALSTACK_FUNCTION");
    let config = aws_sdk_lambda::config::Builder::new()
        .http_client(squall_engine::backend::lambda::https_client())
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(var("AWS_REGION")))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .build();
    let client = aws_sdk_lambda::Client::from_conf(config);
    let found = client
        .get_function()
        .function_name(&function)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetFunction {function}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(e)
            )
        });
    let configuration = found.configuration().expect("configuration");
    assert_eq!(configuration.handler(), Some("bootstrap"));
    assert_eq!(
        configuration.runtime().map(|r| r.as_str()),
        Some("provided.al2023")
    );
    assert_eq!(configuration.timeout(), Some(900));
    // The bucket exists: the hook put the function's code in it.
    let stores = StoreRegistry::new();
    let (store, _) = stores
        .resolve(&format!("{}/", bucket_url()))
        .expect("S3 store");
    assert!(
        !keys_under(&store, "_squall/deploy").await.is_empty(),
        "no deployed code in the bucket"
    );
}
