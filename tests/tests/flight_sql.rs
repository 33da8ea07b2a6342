//! Arrow Flight SQL (`squall serve --flight-listen`) through a client nobody
//! here wrote: the ADBC Flight SQL driver from PyPI (`tests/emulators/install.sh
//! adbc`) connects with a token (a wrong one refused), lists the catalog,
//! runs TPC-H queries whose answers must equal the reference answers, and
//! cancels a long query — the job must end cancelled.
//! `cargo test -p squall-tests --features pypi`, as tests/run runs it.

use std::time::Duration;

use squall_tests::server::{Server, TOKEN};
use squall_tests::{compare, expected_answer, is_ordered, local_engine, tests_dir, tpch_data};
use squall_tools::tpch::{self, answers};

const QUERIES: [usize; 5] = [1, 3, 6, 10, 18];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_runs_tpch_through_flight_sql_and_cancels() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    for table in tpch::TABLES {
        let body = serde_json::json!({"url": format!("{}/{table}/", data.display())});
        let (status, answer) = server.put(&format!("/v1/tables/{table}"), &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let flight = server.start_flight().await;
    let out = dir.path().join("out");
    let queries = dir.path().join("queries");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&queries).unwrap();
    for q in QUERIES {
        let sql = tpch::query(q).unwrap();
        std::fs::write(queries.join(format!("q{q:02}.sql")), sql).unwrap();
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        tests_dir().join("flight/adbc_check.py").into(),
        format!("grpc://{flight}").into(),
        TOKEN.into(),
        queries.clone().into(),
        out.clone().into(),
    ];
    args.extend(QUERIES.iter().map(|q| q.to_string().into()));
    let stdout = tokio::task::spawn_blocking(move || {
        squall_tests::run_tool("adbc-driver-flightsql", "ADBC_VERSION", "adbc", args)
    })
    .await
    .unwrap();
    println!("{stdout}");
    for q in QUERIES {
        let got = answers::load(&out.join(format!("q{q:02}.csv"))).unwrap();
        compare(&expected_answer("0.01", q), &got, is_ordered(q))
            .unwrap_or_else(|e| panic!("Q{q} through Flight SQL: {e}"));
    }
    // The cancelled query's job ended cancelled, and nothing runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, cancelled) = server.get("/v1/jobs?state=cancelled", Some(TOKEN)).await;
        let (_, running) = server.get("/v1/jobs?state=running", Some(TOKEN)).await;
        if cancelled["jobs"].as_array().unwrap().len() == 1
            && running["jobs"].as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{cancelled} {running}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill();
}
