//! Shared helpers for the end-to-end tests: cached TPC-H data, the reference
//! answers, a comparison that follows `tpch/README.md`, and object stores that
//! count or fail requests.

pub mod stores;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use squall_control_plane::tpch;
use squall_control_plane::{Engine, JobRequest, TableSpec};
use squall_executor::StoreRegistry;

/// Files per table in test data: enough that every scan stage has several tasks.
pub const TEST_PARTS: usize = 4;

/// The repository's `tests/` folder.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where generated test data is kept between runs: `SQUALL_TEST_DATA`, or a folder
/// under the system temp dir.
pub fn data_root() -> PathBuf {
    std::env::var_os("SQUALL_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("squall-test-data"))
}

/// TPC-H at `scale` with [`TEST_PARTS`] files per table, generated once and reused.
/// Generation writes to a private folder and renames it into place, so concurrent
/// test processes never see half-written data.
pub async fn tpch_data(scale: &str) -> PathBuf {
    let dir = data_root().join(format!("tpch-sf{scale}-p{TEST_PARTS}"));
    if tpch::local_data_present(&dir) {
        return dir;
    }
    std::fs::create_dir_all(data_root()).expect("create test data root");
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(data_root())
        .expect("staging dir");
    let sf: f64 = scale.parse().expect("scale is a number");
    tpch::generate(
        &StoreRegistry::new(),
        sf,
        &staging.path().to_string_lossy(),
        TEST_PARTS,
        |_| {},
    )
    .await
    .expect("generate TPC-H data");
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another process won the race; its copy is complete.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(
        tpch::local_data_present(&dir),
        "no TPC-H data at {}",
        dir.display()
    );
    dir
}

/// The eight TPC-H tables under a local folder.
pub fn tpch_tables(dir: &Path) -> Vec<TableSpec> {
    tpch::table_specs(&format!("{}/", dir.display()))
}

/// The reference answer of query `q` at `scale`: header, then rows; empty is NULL.
pub fn expected_answer(scale: &str, q: usize) -> Vec<Vec<String>> {
    let path = tests_dir().join(format!("tpch/answers/sf{scale}/q{q:02}.csv"));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'|')
        .has_headers(false)
        .from_path(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("bad CSV in {}: {e}", path.display()))
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Renders batches as a header row and text rows (NULL as the empty string, dates
/// as ISO `YYYY-MM-DD`, decimals at their scale).
pub fn render(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    if let Some(first) = batches.first() {
        rows.push(
            first
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        );
    }
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

/// Compares a result with a reference answer as `tpch/README.md` says: numbers with
/// a relative tolerance of 1e-6, strings after trimming trailing spaces, rows in
/// order when `ordered`. A number we print with fewer fractional digits than the
/// reference also matches when it is within one unit of its last digit: DataFusion
/// computes `avg` of a decimal as a decimal with 4 more digits of scale
/// (truncated), where DuckDB prints a double.
/// Header names are not compared (DuckDB and DataFusion name expressions apart).
pub fn compare(expected: &[Vec<String>], got: &[Vec<String>], ordered: bool) -> Result<(), String> {
    let (Some(exp_header), Some(got_header)) = (expected.first(), got.first()) else {
        if expected.len() <= 1 && got.len() <= 1 {
            return Ok(());
        }
        return Err(format!(
            "expected {} rows, got {}",
            expected.len().saturating_sub(1),
            got.len().saturating_sub(1)
        ));
    };
    if exp_header.len() != got_header.len() {
        return Err(format!(
            "expected {} columns {exp_header:?}, got {} {got_header:?}",
            exp_header.len(),
            got_header.len()
        ));
    }
    let mut exp: Vec<&Vec<String>> = expected[1..].iter().collect();
    let mut act: Vec<&Vec<String>> = got[1..].iter().collect();
    if exp.len() != act.len() {
        return Err(format!("expected {} rows, got {}", exp.len(), act.len()));
    }
    if !ordered {
        exp.sort();
        act.sort();
    }
    for (i, (e, a)) in exp.iter().zip(&act).enumerate() {
        if let Some(col) = e.iter().zip(a.iter()).position(|(x, y)| !same_value(x, y)) {
            return Err(format!(
                "row {i}, column '{}': expected {:?}, got {:?}\n  expected row {e:?}\n  got row      {a:?}",
                exp_header[col], e[col], a[col]
            ));
        }
    }
    Ok(())
}

fn same_value(expected: &str, got: &str) -> bool {
    let (e, g) = (expected.trim_end(), got.trim_end());
    if e == g {
        return true;
    }
    let (Ok(x), Ok(y)) = (e.parse::<f64>(), g.parse::<f64>()) else {
        return false;
    };
    let diff = (x - y).abs();
    let relative = 1e-6 * x.abs().max(y.abs());
    // A value printed with fewer fractional digits than the reference may be off
    // by one unit of its last digit (truncated decimal arithmetic).
    let digits = |s: &str| s.split_once('.').map_or(0, |(_, frac)| frac.len());
    let coarser = digits(g) < digits(e);
    let last_digit = 10f64.powi(-(digits(g) as i32));
    diff <= relative || (coarser && diff <= last_digit * 1.000_001)
}

/// Whether TPC-H query `q` orders its result.
pub fn is_ordered(q: usize) -> bool {
    tpch::query(q)
        .map(|sql| sql.to_ascii_lowercase().contains("order by"))
        .unwrap_or(false)
}

/// Runs one query on `engine` and returns its rendered rows.
pub async fn run_rendered(
    engine: &Engine,
    request: &JobRequest,
) -> Result<Vec<Vec<String>>, String> {
    let result = engine.run(request, None).await.map_err(|e| e.to_string())?;
    let batches = result.batches.unwrap_or_default();
    let mut rows = render(&batches);
    if rows.is_empty() {
        rows.push(
            result
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        );
    }
    Ok(rows)
}

/// An embedded engine whose temporary objects go to a fresh local folder.
pub fn local_engine(executors: usize, work: &Path) -> Engine {
    Engine::embedded_with(
        Arc::new(StoreRegistry::new()),
        Some(executors),
        &format!("file://{}", work.display()),
    )
    .expect("engine")
}

/// Files left under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
