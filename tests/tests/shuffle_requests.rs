//! Counts object-store requests during a job: each map task writes its shuffle
//! output with one PUT, and each reducer task reads from each producer with at most
//! one GET (ranged, many producers at once).

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use squall_engine::planner::StageOutput;
use squall_engine::scheduler::{Exchange, ExchangeMode};
use squall_engine::{Engine, JobRequest, PlanOptions};
use squall_executor::StoreRegistry;
use squall_tests::stores::{Op, RecordingStore};
use squall_tests::{compare, expected_answer, is_ordered, load_tpch, render};
use squall_tools::tpch::{self, TABLES};

fn stage_of(path: &str) -> Option<u32> {
    path.split('/')
        .find_map(|part| part.strip_prefix("stage-"))
        .and_then(|id| id.parse().ok())
}

/// An engine over a recording in-memory store holding the SF 0.01 tables,
/// and a request for TPC-H query `q` at shuffle width `width`.
async fn recorded(q: usize, width: usize) -> (Arc<RecordingStore>, Engine, JobRequest) {
    let recording = RecordingStore::new(Arc::new(InMemory::new()));
    load_tpch(recording.as_ref(), "0.01").await;
    recording.clear();
    let stores = Arc::new(StoreRegistry::new());
    stores.register("memory:///", recording.clone()).unwrap();
    let engine = Engine::embedded_with(stores, Some(3), "memory:///work").unwrap();
    let tables = TABLES
        .iter()
        .map(|t| squall_engine::TableSpec::new(*t, format!("memory:///tpch/{t}/")))
        .collect();
    let mut request = JobRequest::new(tpch::query(q).unwrap(), tables);
    // The DAG runs as planned, every stage its own tasks: the requests
    // counted here are those of the stages the plan shows.
    request.plan = PlanOptions {
        shuffle_partitions: width,
        late_broadcast: None,
        ..PlanOptions::default()
    };
    request.tasks.fuse_max_bytes = 0;
    (recording, engine, request)
}

/// The objects left under `work/`.
async fn left_in_work(recording: &RecordingStore) -> Vec<object_store::ObjectMeta> {
    use futures::TryStreamExt;
    recording
        .list(Some(&ObjectPath::from("work")))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
}

async fn check_query(q: usize, width: usize) {
    let (recording, engine, mut request) = recorded(q, width).await;
    // One reduce task per partition: the counts below are for the static plan.
    request.tasks.coalescing = squall_engine::scheduler::Coalescing::disabled();
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", q), &rows, is_ordered(q)).unwrap();

    let dag = &result.dag;
    let map_tasks: usize = dag
        .stages
        .iter()
        .filter(|s| s.output != StageOutput::Result)
        .map(|s| s.tasks)
        .sum();
    assert!(
        dag.stages.len() >= 3,
        "Q{q} should shuffle: {}",
        dag.display(&[])
    );

    let requests = recording.requests();
    let shuffle: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with(".sqsh"))
        .collect();
    let mut puts: HashMap<&str, usize> = HashMap::new();
    let mut gets: HashMap<&str, usize> = HashMap::new();
    for r in &shuffle {
        match &r.op {
            Op::Put | Op::PutMultipart => *puts.entry(&r.path).or_default() += 1,
            Op::Get(range) => {
                assert!(
                    range.is_some(),
                    "reducers read ranges, not whole files: {r:?}"
                );
                *gets.entry(&r.path).or_default() += 1
            }
            Op::Delete => {}
            other => panic!("unexpected {other:?} of shuffle file {}", r.path),
        }
    }
    // Planning lists each table once; DataFusion scans that same listing.
    let mut lists: HashMap<&str, usize> = HashMap::new();
    for r in requests.iter().filter(|r| matches!(r.op, Op::List)) {
        *lists.entry(&r.path).or_default() += 1;
    }
    assert!(
        lists.keys().any(|p| p.starts_with("tpch/")),
        "no table listed"
    );
    for (path, n) in &lists {
        assert!(
            *n == 1 || !path.starts_with("tpch/"),
            "{path} listed {n} times"
        );
    }
    assert_eq!(puts.len(), map_tasks, "one shuffle object per map task");
    for (path, n) in &puts {
        assert_eq!(*n, 1, "{path} written with {n} requests");
    }
    // Consumers of each stage: every task of every stage that reads it.
    let mut consumers: HashMap<u32, usize> = HashMap::new();
    for stage in &dag.stages {
        for input in &stage.inputs {
            *consumers.entry(*input).or_default() += stage.tasks;
        }
    }
    let mut total_gets = 0;
    for (path, n) in &gets {
        let stage = stage_of(path).unwrap_or_else(|| panic!("no stage in {path}"));
        let limit = consumers.get(&stage).copied().unwrap_or(0);
        assert!(
            *n <= limit,
            "{path}: {n} GETs but stage {stage} has only {limit} consumer tasks"
        );
        total_gets += n;
    }
    assert!(total_gets > 0, "Q{q} read no shuffle data");
    eprintln!(
        "Q{q} width {width}: {map_tasks} map tasks, {} shuffle PUTs, {total_gets} shuffle GETs over {} files",
        puts.len(),
        gets.len()
    );
    // Nothing of the job is left in the store but the tables.
    let left = left_in_work(&recording).await;
    assert!(
        left.is_empty(),
        "job left {} objects, e.g. {:?}",
        left.len(),
        left.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q3_shuffle_requests() {
    check_query(3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q5_shuffle_requests() {
    check_query(5, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q18_shuffle_requests() {
    check_query(18, 4).await;
}

/// Q22's anti join gathers a hash-shuffled stage by producer: still one GET per
/// producer file for each consumer task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q22_shuffle_requests() {
    check_query(22, 4).await;
}

/// Shuffle GETs of one run of TPC-H query `q` at width `width`: of the
/// producers' files, of the combined files, and the producers' files read.
async fn shuffle_gets(q: usize, width: usize, exchange: Exchange) -> (usize, usize, usize) {
    let (recording, engine, mut request) = recorded(q, width).await;
    request.tasks.coalescing = squall_engine::scheduler::Coalescing::disabled();
    request.tasks.exchange = exchange;
    // The join shuffles both sides, as at scale.
    request.plan.broadcast_rows = 100;
    request.plan.broadcast_bytes = 4 << 10;
    let result = engine.run(&request, None).await.unwrap();
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", q), &rows, is_ordered(q)).unwrap();
    let (mut producers, mut combined) = (0, 0);
    let mut files = std::collections::HashSet::new();
    for r in recording.requests() {
        if let Op::Get(range) = &r.op
            && r.path.ends_with(".sqsh")
        {
            assert!(range.is_some(), "shuffle files are read in ranges: {r:?}");
            if r.path.contains("/combined") {
                combined += 1;
            } else {
                producers += 1;
                files.insert(r.path.clone());
            }
        }
    }
    let left = left_in_work(&recording).await;
    assert!(
        left.is_empty(),
        "Q{q} left {} objects: {:?}",
        left.len(),
        left.first()
    );
    (producers, combined, files.len())
}

/// The two-level exchange: the combiners read each producer's file once, as
/// one range; reduce tasks read ranges of the combined files; the GETs fall
/// from producers × reduce tasks to about producers + reduce tasks ×
/// combiners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q12_two_level_exchange_reads_fewer_ranges() {
    let (direct, combined, _) = shuffle_gets(12, 16, Exchange::direct()).await;
    assert_eq!(combined, 0);
    let two_level = Exchange {
        mode: ExchangeMode::TwoLevel,
        group_files: 4,
        ..Exchange::default()
    };
    let (producers, combined, files) = shuffle_gets(12, 16, two_level).await;
    let total = producers + combined;
    eprintln!(
        "Q12 width 16: {direct} shuffle GETs direct, {total} two-level \
         ({producers} of {files} producers' files, {combined} of combined files)"
    );
    assert!(combined > 0, "no combined file was read");
    // Each producer's file is read once: by its combiner, or (a merge's
    // input, read by producer) by its one reader.
    assert_eq!(producers, files, "a producer's file was read twice");
    assert!(
        total * 2 <= direct,
        "two-level made {total} GETs, direct {direct}"
    );
}

/// Reduce tasks read each producer's file with a request of its own: where
/// the shuffle is in an object store, a small shuffle is spread over fewer
/// tasks, so that each read still carries `min_read_bytes` (a local file's
/// read costs no request, so there the executors' parallelism stands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_tasks_follow_the_requests_they_make() {
    use squall_engine::scheduler::Coalescing;
    // Targets small enough that SF 0.01's shuffles would be spread over
    // all 32 executors were reads free.
    let sizing = |min_read_bytes| Coalescing {
        target_bytes: 1 << 20,
        min_bytes: 1 << 10,
        min_read_bytes,
        ..Coalescing::default()
    };
    let reduce_tasks = |result: &squall_engine::JobResult| -> usize {
        // Stages reading partition ranges of shuffles (what coalescing sizes).
        let reduces: Vec<u32> = result
            .dag
            .stages
            .iter()
            .filter(|s| !s.sliced_scans && !s.sliced_inputs.is_empty())
            .map(|s| s.id)
            .collect();
        assert!(!reduces.is_empty());
        result
            .stages
            .iter()
            .filter(|s| reduces.contains(&s.stage))
            .map(|s| s.tasks)
            .sum()
    };
    let run = |min_read_bytes, work: String| async move {
        let (_, engine, mut request) = recorded(3, 64).await;
        let engine = Engine::embedded_with(engine.stores.clone(), Some(32), &work).unwrap();
        request.tasks.coalescing = sizing(min_read_bytes);
        let result = engine.run(&request, None).await.unwrap();
        let rows = render(result.batches.as_deref().unwrap_or_default());
        compare(&expected_answer("0.01", 3), &rows, is_ordered(3)).unwrap();
        reduce_tasks(&result)
    };
    let memory = "memory:///work".to_string();
    let free = run(0, memory.clone()).await;
    let priced = run(64 << 10, memory).await;
    eprintln!(
        "Q3 at SF 0.01 on 32 executors: {free} reduce tasks with free reads, {priced} with reads of 64 KiB at least"
    );
    assert!(
        priced * 2 <= free,
        "{priced} reduce tasks, {free} with free reads"
    );
    // A local work folder: its reads are free whatever the setting.
    let local = tempfile::tempdir().unwrap();
    let url = squall_engine::tables::to_url(&local.path().to_string_lossy()).unwrap();
    let on_disk = run(64 << 10, url.to_string()).await;
    assert_eq!(on_disk, free, "a local shuffle's reads cost no request");
}
