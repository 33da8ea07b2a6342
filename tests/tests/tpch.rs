//! All 22 TPC-H queries against the reference answers, at SF 0.01 and 0.1, with
//! four files per table: at shuffle widths 1, 4 and 7 with one reduce task per
//! partition (the static plan), and at widths 7 and 32 with reduce tasks sized
//! to the shuffle (coalescing, with a small target so that tasks read uneven
//! ranges of partitions, joins shuffling both sides and the larger partitions
//! of their probe sides split by producer); and through the two-level exchange
//! (every shuffle that can be read through a combine step is, and sorted runs
//! are merged in groups first), with and without coalescing. Each job must also leave nothing behind in its work
//! folder.

use squall_engine::scheduler::{Coalescing, Exchange, ExchangeMode};
use squall_engine::{JobRequest, PlanOptions};
use squall_executor::ShuffleCodec;
use squall_tests::{
    compare, expected_answer, is_ordered, local_engine, render, tpch_data, tpch_run_failures,
    tpch_tables,
};

async fn check_all(scale: &str, width: usize) {
    let runs = check_with(scale, width, Coalescing::disabled(), false).await;
    assert_eq!((runs.coalesced, runs.split), (0, 0), "coalescing was off");
    assert_eq!(runs.two_level, 0, "small shuffles are read direct");
}

/// Two-level wherever it can be, combiners of `g` files and at most `bytes`
/// (in ranges of partitions where the group's files hold more).
fn two_level(g: usize, bytes: u64) -> Exchange {
    Exchange {
        mode: ExchangeMode::TwoLevel,
        group_files: g,
        group_bytes: bytes,
        ..Exchange::default()
    }
}

/// What the 22 jobs did.
struct Runs {
    /// Stages that ran fewer tasks than partitions.
    coalesced: usize,
    /// Tasks that read a piece of a split partition.
    split: u32,
    /// Shuffle inputs read through a combine step.
    two_level: usize,
    /// Of those, inputs with more combiners than groups of producers (some
    /// combiner took a range of partitions).
    ranged: usize,
    /// Sorted runs merged in groups before the stage's own merge.
    merged: usize,
    /// Steps over a step's files (a second or third level).
    deeper: usize,
    /// Of those, merges of merged runs.
    deeper_merged: usize,
}

/// Coalescing with targets small enough that SF 0.01–0.1 shuffles are cut into
/// several uneven ranges, and a skew bar low enough that the larger partitions
/// of splittable inputs are split by producer.
fn small_targets() -> Coalescing {
    Coalescing {
        enabled: true,
        target_bytes: 256 << 10,
        min_bytes: 16 << 10,
        skew_factor: 1.0,
        skew_min_bytes: 32 << 10,
        piece_bytes: Some(16 << 10),
        // Reads of a few KiB each: the small data sets' shuffles are spread
        // as if reads were free.
        min_read_bytes: 0,
    }
}

/// Checks every query, read direct.
///
/// `shuffle_joins`: joins shuffle both sides (no build side is broadcast), so
/// that their probe sides can be split.
async fn check_with(
    scale: &str,
    width: usize,
    coalescing: Coalescing,
    shuffle_joins: bool,
) -> Runs {
    let exchange = Exchange::default();
    check_exchange(
        scale,
        width,
        coalescing,
        shuffle_joins,
        exchange,
        ShuffleCodec::Lz4,
    )
    .await
}

/// Checks every query with the exchange policy `exchange`, shuffle files
/// compressed with `codec`.
async fn check_exchange(
    scale: &str,
    width: usize,
    coalescing: Coalescing,
    shuffle_joins: bool,
    exchange: Exchange,
    codec: ShuffleCodec,
) -> Runs {
    let data = tpch_data(scale).await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(4, work.path());
    let mut failures = Vec::new();
    let mut coalesced = 0;
    let mut split = 0;
    let mut two_level = 0;
    let mut ranged = 0;
    let mut merged = 0;
    let mut deeper = 0;
    let mut deeper_merged = 0;
    for q in 1..=22 {
        let sql = squall_tools::tpch::query(q).unwrap();
        let mut request = JobRequest::new(sql, tpch_tables(&data));
        request.plan = PlanOptions {
            shuffle_partitions: width,
            ..PlanOptions::default()
        };
        if shuffle_joins {
            // The plan runs as planned: every join shuffled, none made a
            // broadcast join late, every stage its own tasks (the coalesced
            // stages and merges counted below are of such runs; fusing is
            // checked in fused_stages.rs, late broadcasts in late_broadcast.rs).
            request.plan.broadcast_rows = 100;
            request.plan.broadcast_bytes = 4 << 10;
            request.plan.late_broadcast = None;
            request.tasks.fuse_max_bytes = 0;
        }
        request.tasks.coalescing = coalescing.clone();
        request.tasks.exchange = exchange.clone();
        request.tasks.shuffle_codec = Some(codec);
        let result = engine.run(&request, None).await.map_err(|e| e.to_string());
        if let Ok(result) = &result {
            let combined = result
                .stages
                .iter()
                .flat_map(|s| &s.exchanges)
                .filter(|e| e.two_level);
            let groups = |e: &&squall_engine::scheduler::ExchangeChoice| {
                e.producers.div_ceil(exchange.group_files)
            };
            two_level += combined.clone().count();
            merged += combined.clone().filter(|e| e.merge).count();
            let last = result.dag.stages.iter().map(|s| s.id).max().unwrap_or(0);
            deeper += combined.clone().filter(|e| e.input > last).count();
            deeper_merged += combined
                .clone()
                .filter(|e| e.merge && e.input > last)
                .count();
            ranged += combined
                .filter(|e| !e.merge && e.combiners > groups(e))
                .count();
            coalesced += result
                .stages
                .iter()
                .filter(|s| s.tasks < s.partitions)
                .count();
            split += result.stages.iter().map(|s| s.split_tasks).sum::<u32>();
        }
        failures.extend(tpch_run_failures(scale, q, &result, work.path()));
    }
    assert!(
        failures.is_empty(),
        "SF {scale}, shuffle width {width}, {coalescing:?}, shuffled joins {shuffle_joins}, {:?}: {} of 22 queries wrong:\n{}",
        exchange.mode,
        failures.len(),
        failures.join("\n")
    );
    Runs {
        coalesced,
        split,
        two_level,
        ranged,
        merged,
        deeper,
        deeper_merged,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width1() {
    check_all("0.01", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width4() {
    check_all("0.01", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width7() {
    check_all("0.01", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width1() {
    check_all("0.1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width4() {
    check_all("0.1", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width7() {
    check_all("0.1", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width7_coalesced() {
    let runs = check_with("0.01", 7, small_targets(), true).await;
    assert!(runs.coalesced > 0, "no stage was coalesced");
    assert!(runs.split > 0, "no partition was split");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width32_coalesced() {
    let runs = check_with("0.1", 32, small_targets(), true).await;
    assert!(
        runs.coalesced >= 22,
        "only {} stages coalesced",
        runs.coalesced
    );
    assert!(runs.split > 0, "no partition was split");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width32_coalesced_by_default() {
    check_with("0.1", 32, Coalescing::default(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf001_width7_two_level() {
    let runs = check_exchange(
        "0.01",
        7,
        Coalescing::disabled(),
        true,
        two_level(2, 256 << 20),
        ShuffleCodec::Lz4,
    )
    .await;
    assert!(
        runs.two_level >= 22,
        "only {} inputs combined",
        runs.two_level
    );
    // The ordered queries' final merges read sorted runs merged in pairs.
    assert!(runs.merged >= 5, "only {} merges in groups", runs.merged);
    // Pairs of pairs: combine steps over combined files, and merges of
    // merged runs (7 runs merged into 4, those into 2).
    assert!(runs.deeper >= 10, "only {} deeper levels", runs.deeper);
    assert!(
        runs.deeper_merged >= 5,
        "only {} merges of merged runs",
        runs.deeper_merged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_width32_two_level_coalesced() {
    // Combiners of at most 64 KiB: most take a range of partitions; the
    // shuffle files zstd-compressed, as on an object store, so that ranges
    // of them are copied into combined files and read back.
    let exchange = two_level(3, 64 << 10);
    let codec = ShuffleCodec::Zstd;
    let runs = check_exchange("0.1", 32, small_targets(), true, exchange, codec).await;
    assert!(
        runs.two_level >= 22,
        "only {} inputs combined",
        runs.two_level
    );
    assert!(
        runs.ranged >= 10,
        "only {} inputs combined in ranges of partitions",
        runs.ranged
    );
    assert!(runs.coalesced > 0, "no stage was coalesced");
    assert!(runs.split > 0, "no partition was split");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_shuffles_are_smaller_and_give_the_same_answers() {
    // Q9 and Q18 at SF 0.1 shuffle lineitem's keys and prices: the bytes
    // every stage writes, compressed with LZ4 and with zstd.
    let data = tpch_data("0.1").await;
    let work = tempfile::tempdir().unwrap();
    let engine = local_engine(2, work.path());
    for q in [9, 18] {
        let mut written = Vec::new();
        for codec in [ShuffleCodec::Lz4, ShuffleCodec::Zstd] {
            let sql = squall_tools::tpch::query(q).unwrap();
            let mut request = JobRequest::new(sql, tpch_tables(&data));
            request.plan.broadcast_rows = 100;
            request.plan.broadcast_bytes = 4 << 10;
            request.tasks.shuffle_codec = Some(codec);
            // The same tasks either way, whatever the bytes.
            request.tasks.coalescing = Coalescing::disabled();
            let result = engine.run(&request, None).await.unwrap();
            let rows = render(result.batches.as_deref().unwrap_or_default());
            compare(&expected_answer("0.1", q), &rows, is_ordered(q))
                .unwrap_or_else(|e| panic!("Q{q} with {codec}: {e}"));
            let shuffled = |s: &squall_engine::scheduler::StageStats| {
                (s.raw_bytes_out > 0).then_some((s.bytes_out, s.raw_bytes_out))
            };
            let (bytes, raw) = result
                .stages
                .iter()
                .filter_map(shuffled)
                .fold((0, 0), |(b, r), (sb, sr)| (b + sb, r + sr));
            written.push((bytes, raw));
        }
        let ((lz4, lz4_raw), (zstd, zstd_raw)) = (written[0], written[1]);
        // The same rows, in fewer bytes.
        assert_eq!(lz4_raw, zstd_raw, "Q{q}");
        assert!(
            (zstd as f64) < 0.8 * lz4 as f64,
            "Q{q}: zstd wrote {zstd} bytes, LZ4 {lz4}"
        );
    }
}

/// Where a job's CPU went is reported by stage and operator, as
/// `squall bench tpch --operators` prints it beside single-node DataFusion's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_reports_its_cpu_by_operator() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, dir.path());
    let mut request = JobRequest::new(squall_tools::tpch::query(5).unwrap(), tpch_tables(&data));
    request.plan = PlanOptions {
        shuffle_partitions: 2,
        ..PlanOptions::default()
    };
    let result = engine.run(&request, None).await.expect("Q5");
    // A fused stage runs no task of its own: its CPU is its reader's.
    for stage in result.stages.iter().filter(|s| s.fused_into.is_none()) {
        for step in ["(task context)", "(plan decode)"] {
            assert!(
                stage.cpu_us.contains_key(step),
                "stage {}: {:?}",
                stage.stage,
                stage.cpu_us
            );
        }
    }
    let all: Vec<&String> = result.stages.iter().flat_map(|s| s.cpu_us.keys()).collect();
    for operator in [
        "HashJoinExec",
        "ShuffleWriterExec",
        "ShuffleReaderExec",
        "DataSourceExec",
    ] {
        assert!(
            all.iter().any(|name| *name == operator),
            "{operator} missing: {all:?}"
        );
    }
    let busy: u64 = result.stages.iter().flat_map(|s| s.cpu_us.values()).sum();
    assert!(busy > 0);
    // Single-node DataFusion's plan, by the same names.
    let root = url::Url::from_directory_path(&data).unwrap();
    let ctx = squall_tools::tpch::single_node_context(root.as_str(), 2)
        .await
        .unwrap();
    let (batches, operators) =
        squall_tools::tpch::single_node_profile(&ctx, squall_tools::tpch::query(5).unwrap())
            .await
            .unwrap();
    assert!(!batches.is_empty());
    assert!(
        operators.get("HashJoinExec").is_some_and(|us| *us > 0),
        "{operators:?}"
    );
}
