//! The web console in a real browser: `tests/console/drive.py` drives headless
//! Chromium (Debian's chromium and chromium-driver, Selenium from PyPI, both
//! from `tests/emulators/install.sh browser`) against a real server whose
//! backend fails the first attempt of one task, so the timeline has a
//! failed-then-retried bar, and whose shuffles are read two-level, so the
//! stage graph has combine steps. The screenshots go to
//! `$CARGO_TARGET_TMPDIR/console`. `cargo test -p squall-tests --features browser`.

use std::path::PathBuf;

use squall_engine::scheduler::ExchangeMode;
use squall_tests::server::{FirstAttemptFails, Server, TOKEN};
use squall_tests::{local_engine, tests_dir, tpch_data};
use squall_tools::tpch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_job_its_stages_attempts_and_result() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    // Shuffles read through combine steps, so the graph shows them.
    let server = Server::start_with(
        FirstAttemptFails::engine(&engine, Some(0)),
        dir.path(),
        |config| {
            config.max_running = 2;
            config.exchange = ExchangeMode::TwoLevel;
        },
    )
    .await;
    for table in tpch::TABLES {
        let body = serde_json::json!({"url": format!("{}/{table}/", data.display())});
        let (status, answer) = server.put(&format!("/v1/tables/{table}"), &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let schedule = serde_json::json!({
        "name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin", "enabled": false,
        "job": {"sql": "SELECT count(*) AS n FROM nation", "tables": [{"name": "nation"}]},
    });
    let (status, answer) = server.post("/v1/schedules", &schedule).await;
    assert_eq!(status, 201, "{answer}");
    // More jobs than the jobs page shows (25) before the one the browser
    // submits, which must still head the list.
    for _ in 0..30 {
        let small = serde_json::json!({"sql": "SELECT 1 AS one"});
        let (status, answer) = server.post("/v1/jobs", &small).await;
        assert_eq!(status, 202, "{answer}");
    }

    let sql = dir.path().join("q05.sql");
    std::fs::write(&sql, tpch::query(5).unwrap()).unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    let url = server.url.clone();
    let drive = tests_dir().join("console/drive.py");
    let expected = tests_dir().join("tpch/answers/sf0.01/q05.csv");
    let args: Vec<std::ffi::OsString> = vec![
        drive.into(),
        "--url".into(),
        url.into(),
        "--token".into(),
        TOKEN.into(),
        "--sql-file".into(),
        sql.into(),
        "--expected".into(),
        expected.into(),
        "--out".into(),
        out.into(),
    ];
    let stdout = tokio::task::spawn_blocking(move || {
        squall_tests::run_tool("selenium", "SELENIUM_VERSION", "browser", args)
    })
    .await
    .unwrap();
    println!("{stdout}");
    for shot in ["jobs.png", "job-page.png", "job-page-narrow.png"] {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("console")
            .join(shot);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", path.display());
    }
    server.kill();
}
