//! An engine keeps Parquet footers and file statistics between jobs (planner and
//! executors). Those caches must never change an answer: a rewritten file is read
//! again, and a file added to a table is seen by the next job.

use squall_engine::{JobRequest, TableSpec};
use squall_tests::{local_engine, run_rendered, write_int_parquet};

fn values(range: impl IntoIterator<Item = i64>) -> Vec<Vec<Option<i64>>> {
    vec![range.into_iter().map(Some).collect()]
}

#[tokio::test]
async fn rewritten_and_added_files_are_read_again() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let table = data.path().join("t");
    std::fs::create_dir_all(&table).unwrap();
    write_int_parquet(&table.join("a.parquet"), &["x"], values(1..=10));

    let engine = local_engine(2, work.path());
    let request = JobRequest::new(
        "SELECT sum(x) AS s, count(*) AS n, max(x) AS m FROM t WHERE x > 0",
        vec![TableSpec::new("t", format!("{}/", table.display()))],
    );
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows, vec![vec!["s", "n", "m"], vec!["55", "10", "10"]]);

    // Same path, new contents (and so a new size): the cached footer must not be used.
    write_int_parquet(&table.join("a.parquet"), &["x"], values(1..=1000));
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["500500", "1000", "1000"]);

    // A new file in the table's folder: listings are not cached.
    write_int_parquet(&table.join("b.parquet"), &["x"], values([5000]));
    let rows = run_rendered(&engine, &request).await.unwrap();
    assert_eq!(rows[1], vec!["505500", "1001", "5000"]);
}
