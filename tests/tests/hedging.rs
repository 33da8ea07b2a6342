//! Hedged reads: a store whose first answer to a seeded fraction of the
//! ranged reads of shuffle files and tables never comes. With hedging the
//! job finishes with the right answer, each stalled read sent again once and
//! counted in the job's cost; without it the same job cannot finish.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use squall_engine::scheduler::{Coalescing, Speculation};
use squall_engine::{Engine, JobRequest, PlanOptions, TableSpec};
use squall_executor::{Hedging, StoreRegistry};
use squall_tests::stores::StallingStore;
use squall_tests::{compare, expected_answer, is_ordered, load_tpch, render};
use squall_tools::tpch::{self, TABLES};

/// An engine over a store holding the SF 0.01 tables whose reads of paths
/// containing `stall` stall (about one in ten, seeded), and TPC-H Q`q`.
async fn stalling(q: usize, stall: &str) -> (Arc<StallingStore>, Engine, JobRequest) {
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    load_tpch(memory.as_ref(), "0.01").await;
    let store = StallingStore::new(memory, 23, 100, stall);
    let stores = Arc::new(StoreRegistry::new());
    stores.register("memory:///", store.clone()).unwrap();
    let engine = Engine::embedded_with(stores, Some(3), "memory:///work").unwrap();
    let tables = TABLES
        .iter()
        .map(|t| TableSpec::new(*t, format!("memory:///tpch/{t}/")))
        .collect();
    let mut request = JobRequest::new(tpch::query(q).unwrap(), tables);
    request.plan = PlanOptions {
        shuffle_partitions: 8,
        broadcast_rows: 100,
        broadcast_bytes: 4 << 10,
        // Every join shuffled and every stage its own tasks: the shuffle
        // reads the seed stalls are those of the plan as planned.
        late_broadcast: None,
        ..PlanOptions::default()
    };
    request.tasks.fuse_max_bytes = 0;
    request.tasks.coalescing = Coalescing::disabled();
    // No backup copies: a backup re-reading a stalled range would look like
    // a hedge to the store.
    request.tasks.speculation = Speculation::disabled();
    // Quick to hedge: the stalls are forever, the store's answers instant.
    request.tasks.hedging = Hedging {
        floor_ms: 20,
        first_ms: 100,
        min_samples: 8,
        ..Hedging::on()
    };
    (store, engine, request)
}

async fn check_hedged(q: usize, stall: &str) {
    let (store, engine, request) = stalling(q, stall).await;
    let result = tokio::time::timeout(Duration::from_secs(300), engine.run(&request, None))
        .await
        .expect("hedged reads finish the job")
        .unwrap();
    let rows = render(result.batches.as_deref().unwrap_or_default());
    compare(&expected_answer("0.01", q), &rows, is_ordered(q)).unwrap();
    let stalled = store.stalled() as u64;
    let again = store.asked_again() as u64;
    let hedged = result.cost.total.requests.hedged;
    eprintln!(
        "Q{q}, stalls in {stall}: {stalled} reads stalled, {again} asked for again, {hedged} hedged"
    );
    assert!(stalled > 0, "the seed stalled nothing: pick another");
    // The job finished: every stalled read it needed was sent again (a
    // read it gave up, a join's probe once its build side was empty, needs
    // none). Each read asked for again is a hedge (and others may have
    // been hedged, slow under load); every hedge is a GET.
    assert!(again > 0, "no stalled read was asked for again");
    assert!(
        hedged >= again,
        "{hedged} hedged for {again} stalled reads asked again"
    );
    assert!(hedged <= result.cost.total.requests.get);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_shuffle_reads_are_hedged() {
    check_hedged(12, ".sqsh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_table_reads_are_hedged() {
    check_hedged(3, ".parquet").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hedging_a_stalled_read_holds_the_job() {
    let (store, engine, mut request) = stalling(12, ".sqsh").await;
    request.tasks.hedging = Hedging::off();
    let run = tokio::time::timeout(Duration::from_secs(5), engine.run(&request, None)).await;
    assert!(
        run.is_err(),
        "the job finished although a read never answered"
    );
    assert!(store.stalled() > 0);
}
