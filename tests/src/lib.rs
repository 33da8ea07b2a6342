//! Shared helpers for the end-to-end tests: cached TPC-H data, the reference
//! answers, a comparison that follows `tpch/README.md`, and object stores that
//! count or fail requests.

pub mod fake_lambda;
pub mod server;
pub mod store_suite;
pub mod stores;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use squall_engine::{Engine, JobRequest, TableSpec};
use squall_executor::StoreRegistry;
use squall_tools::tpch;
pub use squall_tools::tpch::answers::{self, compare, is_ordered, render};

/// Copies the local TPC-H tables of `scale` into `store` under `tpch/`.
pub async fn load_tpch(store: &dyn object_store::ObjectStore, scale: &str) {
    use object_store::ObjectStoreExt;
    let data = tpch_data(scale).await;
    for file in files_under(&data) {
        let rel = file
            .strip_prefix(&data)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let bytes = std::fs::read(&file).unwrap();
        store
            .put(
                &object_store::path::Path::from(format!("tpch/{rel}")),
                bytes.into(),
            )
            .await
            .unwrap();
    }
}

/// Files per table in test data: enough that every scan stage has several tasks.
pub const TEST_PARTS: usize = 4;

/// The repository's `tests/` folder.
/// The Python of the venv `tests/emulators/install.sh` makes for a PyPI tool:
/// `$SQUALL_CACHE/tools/{tool}-{version}/bin/python`, the version read from
/// the script's `{version_var}=` line.
pub fn tool_python(tool: &str, version_var: &str) -> PathBuf {
    let install = std::fs::read_to_string(tests_dir().join("emulators/install.sh")).unwrap();
    let prefix = format!("{version_var}=");
    let version = install
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{version_var} in install.sh"));
    let cache = std::env::var_os("SQUALL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/squall"));
    cache.join(format!("tools/{tool}-{version}/bin/python"))
}

/// Runs a PyPI tool's Python ([`tool_python`]) with `args` and returns its
/// standard output; it must succeed (a failure shows both streams). A tool
/// that is not installed names `tests/emulators/install.sh {component}`.
pub fn run_tool(
    tool: &str,
    version_var: &str,
    component: &str,
    args: Vec<std::ffi::OsString>,
) -> String {
    let python = tool_python(tool, version_var);
    let output = std::process::Command::new(&python)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run tests/emulators/install.sh {component}",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

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
    let dir = tests_dir().join("tpch/answers");
    let path = answers::answer_path(&dir, scale, q);
    answers::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// What is wrong with a run of TPC-H query `q` at `scale`: its rows against
/// the reference answer (or its error), and any file it left under `work`.
pub fn tpch_run_failures(
    scale: &str,
    q: usize,
    result: &Result<squall_engine::JobResult, String>,
    work: &Path,
) -> Vec<String> {
    let mut failures = Vec::new();
    match result {
        Ok(result) => {
            let rows = render(result.batches.as_deref().unwrap_or_default());
            if let Err(e) = compare(&expected_answer(scale, q), &rows, is_ordered(q)) {
                failures.push(format!("Q{q}: {e}"));
            }
        }
        Err(e) => failures.push(format!("Q{q} failed: {e}")),
    }
    let left = files_under(work);
    if !left.is_empty() {
        failures.push(format!(
            "Q{q} left {} files, e.g. {:?}",
            left.len(),
            left[0]
        ));
    }
    failures
}

/// Single-node DataFusion with `tables` (Parquet) registered: the
/// independent answers edge-case tests compare with.
pub async fn single_node(tables: &[TableSpec]) -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    for t in tables {
        ctx.register_parquet(&t.name, &t.url, Default::default())
            .await
            .expect("register a table");
    }
    ctx
}

/// Runs one query on `engine` and returns its rendered rows.
pub async fn run_rendered(
    engine: &Engine,
    request: &JobRequest,
) -> Result<Vec<Vec<String>>, String> {
    let result = engine.run(request, None).await.map_err(|e| e.to_string())?;
    Ok(render_with_header(
        result.batches.as_deref().unwrap_or_default(),
        &result.schema,
    ))
}

/// [`render`]ed rows; for an empty result, the header row alone (as the
/// reference answers have it).
pub fn render_with_header(
    batches: &[arrow::array::RecordBatch],
    schema: &arrow::datatypes::Schema,
) -> Vec<Vec<String>> {
    let mut rows = render(batches);
    if rows.is_empty() {
        rows.push(schema.fields().iter().map(|f| f.name().clone()).collect());
    }
    rows
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

/// Writes one Parquet file of nullable Int64 columns, `columns[i]` named `names[i]`.
pub fn write_int_parquet(path: &Path, names: &[&str], columns: Vec<Vec<Option<i64>>>) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(Int64Array::from(c)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("batch");
    let file = std::fs::File::create(path).expect("create parquet file");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close parquet file");
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
