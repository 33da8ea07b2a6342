//! An engine keeps Parquet footers and file statistics between jobs (planner and
//! executors). Those caches must never change an answer: a rewritten file is read
//! again, and a file added to a table is seen by the next job.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use squall_control_plane::{JobRequest, TableSpec};
use squall_tests::{local_engine, run_rendered};

fn write_parquet(path: &Path, values: impl IntoIterator<Item = i64>) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let column = Int64Array::from_iter_values(values);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test]
async fn rewritten_and_added_files_are_read_again() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let table = data.path().join("t");
    std::fs::create_dir_all(&table).unwrap();
    write_parquet(&table.join("a.parquet"), 1..=10);

    let engine = local_engine(2, work.path());
    let request = JobRequest::new(
        "SELECT sum(x) AS s, count(*) AS n, max(x) AS m FROM t WHERE x > 0",
        vec![TableSpec::new("t", format!("{}/", table.display()))],
    );
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows, vec![vec!["s", "n", "m"], vec!["55", "10", "10"]]);

    // Same path, new contents (and so a new size): the cached footer must not be used.
    write_parquet(&table.join("a.parquet"), 1..=1000);
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["500500", "1000", "1000"]);

    // A new file in the table's folder: listings are not cached.
    write_parquet(&table.join("b.parquet"), [5000]);
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["505500", "1001", "5000"]);
}
