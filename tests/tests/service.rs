//! `squall serve` over real HTTP on loopback: submit TPC-H queries and check the
//! answers, bearer auth, problem+json errors, admission control, and a server
//! "killed" mid-job whose successor finishes the job from its committed stages.

use std::sync::Arc;
use std::time::Duration;

use squall_engine::Engine;
use squall_service::JobState;
use squall_service::JobStore;
use squall_service::api::{JobList, JobView, ResultPage};
use squall_tests::server::{FirstAttemptFails, Hanging, Server, TOKEN, check_answer, tpch_job};
use squall_tests::{local_engine, tpch_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_in_order_under_admission_control_and_errors_are_problems() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 1).await;

    // Auth: no token, a wrong token → 401; /healthz is open.
    assert_eq!(server.get("/v1/jobs", None).await.0, 401);
    assert_eq!(server.get("/v1/jobs", Some("wrong")).await.0, 401);
    assert_eq!(server.get("/healthz", None).await.0, 200);

    // Bad input → 400 naming the problem; unknown id → 404.
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": "SELEC 1", "tables": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("SQL"), "{body}");
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": "SELECT * FROM nowhere"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("nowhere"),
        "{body}"
    );
    let (status, body) = server
        .post("/v1/jobs", &serde_json::json!({"sql": "DROP TABLE x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["title"], "rejected statement");
    let (status, _) = server
        .post("/v1/jobs", &serde_json::json!({"query": 1}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        server.get("/v1/jobs/0123456789abcdef", Some(TOKEN)).await.0,
        404
    );
    assert_eq!(server.get("/v1/jobs?state=bogus", Some(TOKEN)).await.0, 400);

    // Three jobs with one allowed to run: they run one after another, in order.
    let mut ids = Vec::new();
    for q in [1, 3, 6] {
        let (status, body) = server.post("/v1/jobs", &tpch_job(&data, q)).await;
        assert_eq!(status, 202, "{body}");
        ids.push((q, body["id"].as_str().unwrap().to_string()));
    }
    let mut most_running = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = server.get("/v1/jobs?state=running", Some(TOKEN)).await;
        let running: JobList = serde_json::from_value(body).unwrap();
        most_running = most_running.max(running.jobs.len());
        let (_, body) = server.get("/v1/jobs?state=succeeded", Some(TOKEN)).await;
        let done: JobList = serde_json::from_value(body).unwrap();
        if done.jobs.len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "jobs never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        most_running, 1,
        "admission control let {most_running} jobs run at once"
    );
    let mut previous_end = 0;
    for (q, id) in &ids {
        let view = server.wait_final(id).await;
        check_answer(&engine, &view, *q).await;
        let started = view.started_at_ms.unwrap();
        assert!(
            started >= previous_end,
            "Q{q} started before the previous job ended"
        );
        previous_end = view.finished_at_ms.unwrap();
    }
    // Per-stage progress of a finished job: every task done, tables scanned.
    let view = server.wait_final(&ids[0].1).await;
    assert!(!view.stages.is_empty());
    // A fused stage ran in another stage's tasks, none of its own.
    for stage in view.stages.iter().filter(|s| s.fused_into.is_none()) {
        assert_eq!((stage.done, stage.running), (stage.tasks, 0), "{stage:?}");
        assert!(stage.finished_at_ms >= stage.started_at_ms, "{stage:?}");
        assert!(stage.bytes_written > 0, "{stage:?}");
    }
    assert!(view.stages.iter().any(|s| s.bytes_scanned > 0));
    // The first job's rows over the API, a page at a time (Q1 has 4 rows).
    let (status, body) = server
        .get(
            &format!("/v1/jobs/{}/result?limit=3", ids[0].1),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let page: ResultPage = serde_json::from_value(body).unwrap();
    assert_eq!(
        (page.rows.len(), page.total, page.next_offset),
        (3, 4, Some(3))
    );
    assert_eq!(page.rows[0]["l_returnflag"], "A");
    assert!(!page.files.is_empty());
    let (_, body) = server
        .get(
            &format!("/v1/jobs/{}/result?offset=3&limit=3", ids[0].1),
            Some(TOKEN),
        )
        .await;
    let page: ResultPage = serde_json::from_value(body).unwrap();
    assert_eq!((page.rows.len(), page.next_offset), (1, None));
    assert_eq!(page.rows[0]["l_returnflag"], "R");
    // Cancelling a finished job is a conflict; an unknown one is not found.
    let (status, body) = server.delete(&format!("/v1/jobs/{}", ids[0].1)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(server.delete("/v1/jobs/0123456789abcdef").await.0, 404);
    // A body over the limit is refused as such.
    let huge = serde_json::json!({"sql": "x".repeat(2 * 1024 * 1024)});
    let (status, body) = server.post("/v1/jobs", &huge).await;
    assert_eq!(status, 413, "{body}");
    // Prometheus metrics, without a token: jobs by state, task counters.
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("squall_jobs{state=\"succeeded\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("squall_jobs{state=\"running\"} 0"),
        "{metrics}"
    );
    let tasks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("squall_tasks_succeeded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(tasks >= 3, "{metrics}");
    assert!(
        metrics.contains("squall_task_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("squall_bytes_scanned_total 0\n"),
        "{metrics}"
    );
    // Paging: one job per page, in submission order when asked.
    let (_, body) = server
        .get("/v1/jobs?limit=1&order=oldest", Some(TOKEN))
        .await;
    let page: JobList = serde_json::from_value(body).unwrap();
    assert_eq!(page.jobs[0].id, ids[0].1);
    let (_, body) = server
        .get(
            &format!("/v1/jobs?limit=1&order=oldest&after={}", page.next.unwrap()),
            Some(TOKEN),
        )
        .await;
    let page: JobList = serde_json::from_value(body).unwrap();
    assert_eq!(page.jobs[0].id, ids[1].1);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_the_job_on_restart() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let hanging = Hanging::engine(&engine);
    let first = Server::start(hanging, dir.path(), 2).await;
    let (status, body) = first.post("/v1/jobs", &tpch_job(&data, 3)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // Wait until stages 1 and 2 are committed (recorded in the store), then kill.
    let store = JobStore::open(&dir.path().join("squall.db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.committed_stages(&id).unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "stages never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    assert_eq!(store.job(&id).unwrap().unwrap().state, JobState::Running);
    drop(store);

    let second = Server::start(engine.clone(), dir.path(), 2).await;
    let view = second.wait_final(&id).await;
    check_answer(&engine, &view, 3).await;
    second.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_and_cleans_up() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let engine = local_engine(2, &work);
    let hanging = Hanging::engine(&engine);
    let server = Server::start(hanging, dir.path(), 1).await;
    let (_, body) = server.post("/v1/jobs", &tpch_job(&data, 3)).await;
    let running = body["id"].as_str().unwrap().to_string();
    let (_, body) = server.post("/v1/jobs", &tpch_job(&data, 3)).await;
    let queued = body["id"].as_str().unwrap().to_string();
    // Wait until the first job has committed its first two stages (their shuffle
    // files are on disk; the third stage hangs, so no task is still writing),
    // then cancel both.
    let store = JobStore::open(&dir.path().join("squall.db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.committed_stages(&running).unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!squall_tests::files_under(&work).is_empty());
    // Its progress while it runs: two stages done, tasks of a later one in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let view = loop {
        let (_, body) = server
            .get(&format!("/v1/jobs/{running}"), Some(TOKEN))
            .await;
        let view: JobView = serde_json::from_value(body).unwrap();
        if view.stages.iter().any(|s| s.running > 0) {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stage ever running: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view.state, JobState::Running);
    assert!(
        view.stages
            .iter()
            .filter(|s| s.done == s.tasks && s.finished_at_ms.is_some())
            .count()
            >= 2,
        "{:?}",
        view.stages
    );
    let (status, body) = server.delete(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    let (status, body) = server.delete(&format!("/v1/jobs/{running}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(
        squall_tests::files_under(&work),
        Vec::<std::path::PathBuf>::new()
    );
    let (status, body) = server
        .get(&format!("/v1/jobs/{running}/result"), Some(TOKEN))
        .await;
    assert_eq!(status, 409, "{body}");
    // Its slot is free again: a new job runs (and hangs in its later stages).
    let (_, body) = server.post("/v1/jobs", &tpch_job(&data, 6)).await;
    let next = body["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.get(&format!("/v1/jobs/{next}"), Some(TOKEN)).await;
        if body["state"] != "queued" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed slot was never used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_tables_show_their_schema_and_serve_jobs_by_name() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    let nation = format!("{}/nation/", data.display());
    let (status, body) = server
        .put("/v1/tables/nation", &serde_json::json!({"url": nation}))
        .await;
    assert_eq!(status, 200, "{body}");
    let columns: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
    );
    let (_, body) = server.get("/v1/tables", Some(TOKEN)).await;
    assert_eq!(body["tables"].as_array().unwrap().len(), 1);

    // A job names the table without a URL.
    let job = serde_json::json!({
        "sql": "SELECT count(*) AS n FROM nation",
        "tables": [{"name": "nation"}]
    });
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (_, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(body["rows"][0]["n"], 25);

    // Errors name the problem.
    let unknown =
        serde_json::json!({"sql": "SELECT 1 FROM region", "tables": [{"name": "region"}]});
    let (status, body) = server.post("/v1/jobs", &unknown).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("region"),
        "{body}"
    );
    let missing = format!("{}/no-such-table/", data.display());
    let (status, body) = server
        .put("/v1/tables/ghost", &serde_json::json!({"url": missing}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .put("/v1/tables/bad-name", &serde_json::json!({"url": nation}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("bad-name"),
        "{body}"
    );
    assert_eq!(server.get("/v1/tables/ghost", Some(TOKEN)).await.0, 404);
    // The schema is kept as read at PUT: showing tables reads no files.
    let copy = dir.path().join("tables").join("region-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for file in squall_tests::files_under(&data.join("region")) {
        std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
    }
    let (status, _) = server
        .put(
            "/v1/tables/region",
            &serde_json::json!({"url": format!("{}/", copy.display())}),
        )
        .await;
    assert_eq!(status, 200);
    std::fs::remove_dir_all(&copy).unwrap();
    let (status, body) = server.get("/v1/tables/region", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"][0]["name"], "r_regionkey", "{body}");
    assert_eq!(server.get("/v1/tables", Some(TOKEN)).await.0, 200);
    assert_eq!(server.delete("/v1/tables/nation").await.0, 204);
    assert_eq!(server.delete("/v1/tables/nation").await.0, 404);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_make_retries_safe_and_short_jobs_answer_at_once() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    let nation = format!("{}/nation/", data.display());
    let job = |sql: &str, extra: serde_json::Value| {
        let mut job = serde_json::json!({
            "sql": sql,
            "tables": [{"name": "nation", "url": nation}],
        });
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        job
    };
    let count = "SELECT count(*) AS n FROM nation";

    // A retried submission with its token is the first job, not a second.
    let token = serde_json::json!({"client_request_token": "nightly-2026-12-07"});
    let (status, first) = server.post("/v1/jobs", &job(count, token.clone())).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = server.post("/v1/jobs", &job(count, token.clone())).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"], "{again}");
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (status, later) = server.post("/v1/jobs", &job(count, token.clone())).await;
    assert_eq!(
        (status, later["id"].as_str()),
        (200, Some(id.as_str())),
        "{later}"
    );
    assert_eq!(later["state"], "succeeded", "{later}");
    let (_, list) = server.get("/v1/jobs", Some(TOKEN)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    // The same token for other SQL is refused; a malformed token too.
    let (status, body) = server
        .post("/v1/jobs", &job("SELECT 1 AS one FROM nation", token))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(&id), "{body}");
    let (status, body) = server
        .post(
            "/v1/jobs",
            &job(count, serde_json::json!({"client_request_token": "a b"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // wait_timeout: a short job is answered with its rows.
    let (status, body) = server
        .post(
            "/v1/jobs",
            &job(count, serde_json::json!({"wait_timeout": "30s"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "succeeded", "{body}");
    assert_eq!(body["result"]["rows"][0]["n"], 25, "{body}");
    for bad in ["51s", "10", "-1s"] {
        let (status, body) = server
            .post(
                "/v1/jobs",
                &job(count, serde_json::json!({"wait_timeout": bad})),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("wait_timeout"),
            "{body}"
        );
    }
    // Neither belongs in a schedule's job.
    let schedule = serde_json::json!({
        "cron": "0 2 * * *", "time_zone": "UTC",
        "job": job(count, serde_json::json!({"client_request_token": "x"})),
    });
    let (status, body) = server.post("/v1/schedules", &schedule).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("client_request_token"),
        "{body}"
    );
    server.kill();

    // A job that does not end in time is answered as queued or running (202).
    let hanging = Hanging::engine(&engine);
    let server = Server::start(hanging, dir.path(), 2).await;
    let sql = "SELECT n_regionkey, count(*) FROM nation GROUP BY 1 ORDER BY 1";
    let started = std::time::Instant::now();
    let (status, body) = server
        .post(
            "/v1/jobs",
            &job(sql, serde_json::json!({"wait_timeout": "1s"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(body.get("result").is_none(), "{body}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_as_objects_arrays_csv_and_arrow() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    // Two columns of one name, and an integer JavaScript cannot hold.
    let job = serde_json::json!({
        "sql": "SELECT a.n_nationkey, b.n_nationkey, CAST(9007199254740993 AS BIGINT) AS big, \
                a.n_name FROM nation a JOIN nation b ON a.n_nationkey = b.n_nationkey \
                ORDER BY 1",
        "tables": [{"name": "nation", "url": format!("{}/nation/", data.display())}],
    });
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let names = ["n_nationkey", "n_nationkey_2", "big", "n_name"];

    let (_, page) = server
        .get(&format!("/v1/jobs/{id}/result?limit=2"), Some(TOKEN))
        .await;
    let columns: Vec<&str> = page["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, names, "{page}");
    assert_eq!(page["rows"][1]["n_nationkey_2"], 1, "{page}");
    assert!(page.get("data").is_none(), "{page}");
    let (_, page) = server
        .get(
            &format!("/v1/jobs/{id}/result?limit=2&format=arrays"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        page["data"][0],
        serde_json::json!([0, 0, "9007199254740993", "ALGERIA"]),
        "{page}"
    );
    assert_eq!(page["rows"], serde_json::json!([]), "{page}");
    assert_eq!(page["next_offset"], 2, "{page}");

    let raw = async |query: &str| {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/jobs/{id}/result?{query}", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        (status, kind, response.bytes().await.unwrap())
    };
    let (status, kind, csv) = raw("format=csv").await;
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 26, "{csv}");
    assert_eq!(lines[0], names.join(","));
    assert_eq!(lines[1], "0,0,9007199254740993,ALGERIA");
    let (_, _, part) = raw("format=csv&offset=20&limit=3").await;
    let part = String::from_utf8(part.to_vec()).unwrap();
    let ids: Vec<&str> = part
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids, ["20", "21", "22"], "{part}");

    let (status, kind, arrow) = raw("format=arrow").await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "application/vnd.apache.arrow.stream")
    );
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
    let schema = reader.schema();
    let got: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(got, names);
    let batches: Vec<arrow::array::RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 25);
    let big = batches[0]
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(big.value(0), 9_007_199_254_740_993);
    // Past the end: a header or a schema alone.
    let (_, _, empty) = raw("format=csv&offset=25").await;
    assert_eq!(
        String::from_utf8(empty.to_vec()).unwrap().trim(),
        names.join(",")
    );
    for bad in ["format=xml", "format=csv&limit=0"] {
        let (status, _, body) = raw(bad).await;
        assert_eq!(status, 400, "{bad}: {body:?}");
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_and_csv_tables_through_the_api_and_the_catalog() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    // orders' files under shard=0/ ... shard=3/, one each.
    let lake = dir.path().join("tables").join("orders");
    let mut rows_per_shard = Vec::new();
    for (i, file) in squall_tests::files_under(&data.join("orders"))
        .iter()
        .enumerate()
    {
        let shard = lake.join(format!("shard={i}"));
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::copy(file, shard.join(file.file_name().unwrap())).unwrap();
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
                .unwrap();
        use parquet::file::reader::FileReader;
        rows_per_shard.push(reader.metadata().file_metadata().num_rows());
    }
    let url = format!("{}/", lake.display());
    let count = |tables: serde_json::Value| {
        serde_json::json!({
            "sql": "SELECT count(*) AS n, min(shard) AS s FROM orders WHERE shard = 2",
            "tables": tables,
        })
    };
    let answer = async |job: serde_json::Value| {
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let view = server.wait_final(&id).await;
        assert_eq!(view.state, JobState::Succeeded, "{view:?}");
        let (_, body) = server
            .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
            .await;
        body["rows"][0].clone()
    };
    // Inferred from the folders, and declared with a job's table.
    for partitions in [None, Some("shard:int")] {
        let row = answer(count(serde_json::json!([
            {"name": "orders", "url": url, "partitions": partitions}
        ])))
        .await;
        assert_eq!(row["n"], rows_per_shard[2], "{row}");
        assert_eq!(row["s"], 2, "{row}");
    }
    // Declared as text: the column is a string.
    let row = answer(count(serde_json::json!([
        {"name": "orders", "url": url, "partitions": "shard:string"}
    ])))
    .await;
    assert_eq!(row["s"], "2", "{row}");
    // A catalog table keeps its declared columns and shows them.
    let (status, body) = server
        .put(
            "/v1/tables/orders",
            &serde_json::json!({"url": url, "partitions": "shard:string"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partitions"], "shard:string", "{body}");
    let last = body["columns"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "shard", "{body}");
    let row = answer(count(serde_json::json!([{"name": "orders"}]))).await;
    assert_eq!(row["s"], "2", "{row}");
    // Bad declarations are refused, naming what is wrong.
    for (partitions, needle) in [
        ("shard:decimal", "unknown partition column type 'decimal'"),
        ("region", "partition column 'region' was declared"),
    ] {
        let job = count(serde_json::json!([
            {"name": "orders", "url": url, "partitions": partitions}
        ]));
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, 400, "{partitions}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{partitions}: {body}"
        );
    }

    // A CSV table in another dialect: semicolons, no header.
    let csv_dir = dir.path().join("tables").join("pets");
    std::fs::create_dir_all(&csv_dir).unwrap();
    std::fs::write(csv_dir.join("pets.csv"), "1;cat\n2;dog\n3;'owl; grey'\n").unwrap();
    let csv_url = format!("{}/", csv_dir.display());
    let pets = |csv: &str| {
        serde_json::json!({
            "sql": "SELECT column_2 AS name FROM pets WHERE column_1 = 3",
            "tables": [{"name": "pets", "url": csv_url, "csv": csv}],
        })
    };
    let row = answer(pets("delimiter=semicolon,header=false,quote='")).await;
    assert_eq!(row["name"], "owl; grey", "{row}");
    let (status, body) = server
        .put(
            "/v1/tables/pets",
            &serde_json::json!({"url": csv_url, "csv": "delimiter=;,header=false,quote='"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["csv"], "delimiter=;,header=false,quote='", "{body}");
    let by_name = serde_json::json!({
        "sql": "SELECT count(*) AS n FROM pets",
        "tables": [{"name": "pets"}],
    });
    assert_eq!(answer(by_name).await["n"], 3);
    let (status, body) = server.post("/v1/jobs", &pets("separator=;")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown CSV option 'separator'"),
        "{body}"
    );

    // A null marker: `NA` is NULL in a number column, through a job and the catalog.
    let scores_dir = dir.path().join("tables").join("scores");
    std::fs::create_dir_all(&scores_dir).unwrap();
    std::fs::write(
        scores_dir.join("s.csv"),
        "name;score\nann;7\nbob;NA\ncy;5\n",
    )
    .unwrap();
    let scores_url = format!("{}/", scores_dir.display());
    let scores = |table: serde_json::Value| {
        serde_json::json!({
            "sql": "SELECT count(score) AS c, sum(score) AS s, count(*) AS n FROM scores",
            "tables": [table],
        })
    };
    let marked =
        serde_json::json!({"name": "scores", "url": scores_url, "csv": "delimiter=;,null=NA"});
    let row = answer(scores(marked)).await;
    assert_eq!(
        (&row["c"], &row["s"], &row["n"]),
        (&2.into(), &12.into(), &3.into()),
        "{row}"
    );
    let (status, body) = server
        .put(
            "/v1/tables/scores",
            &serde_json::json!({"url": scores_url, "csv": "delimiter=;,null=NA"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let score = body["columns"].as_array().unwrap()[1].clone();
    assert_eq!(score["name"], "score", "{body}");
    assert_eq!(score["data_type"], "Int64", "{body}");
    let row = answer(scores(serde_json::json!({"name": "scores"}))).await;
    assert_eq!(row["s"], 12, "{row}");
    let empty = serde_json::json!({"name": "scores", "url": scores_url, "csv": "null="});
    let (status, body) = server.post("/v1/jobs", &scores(empty)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("null marker is empty"),
        "{body}"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_the_backend_cannot_reach_are_refused_at_submission() {
    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    use squall_engine::backend::{LambdaBackend, LambdaConfig};
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(squall_executor::StoreRegistry::new());
    let sdk = aws_sdk_lambda::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"));
    let config = LambdaConfig {
        // Nothing listens here: the job must be refused before any invocation.
        endpoint: Some("http://127.0.0.1:9".into()),
        ..LambdaConfig::new("squall-executor")
    };
    let backend =
        LambdaBackend::with_sdk_config(config, sdk, stores.clone(), "s3://b/work").unwrap();
    let engine = Engine::with_backend(stores, Arc::new(backend), "s3://b/work");
    let server = Server::start(engine, dir.path(), 1).await;
    let (status, body) = server.post("/v1/jobs", &tpch_job(&data, 6)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("cannot reach"),
        "{body}"
    );
    let (_, body) = server.get("/v1/jobs", Some(TOKEN)).await;
    assert_eq!(
        body["jobs"].as_array().unwrap().len(),
        0,
        "nothing was queued: {body}"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_limits_refuse_before_running_and_deadlines_stop_jobs() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let engine = local_engine(2, &work);
    let hanging = Hanging::engine(&engine);
    let server = Server::start(hanging, dir.path(), 2).await;

    // Q6 reads lineitem only: its files are the estimate.
    let lineitem: u64 = squall_tests::files_under(&data.join("lineitem"))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let mut job = tpch_job(&data, 6);
    job["options"] = serde_json::json!({"scan_limit_bytes": lineitem - 1});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["title"], "scan limit exceeded", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("({lineitem} bytes")), "{body}");
    let (_, list) = server.get("/v1/jobs", Some(TOKEN)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    // Exactly at the limit: it runs (stage 1 only, so the hanging backend answers).
    job["options"] = serde_json::json!({"scan_limit_bytes": lineitem});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");

    // A deadline stops a job that hangs, and its temporary files go.
    let mut job = tpch_job(&data, 3);
    job["options"] = serde_json::json!({"deadline_seconds": 2});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(view.state, JobState::Failed, "{view:?}");
    assert!(
        view.error.as_deref().unwrap().contains("deadline of 2s"),
        "{view:?}"
    );
    let took = view.finished_at_ms.unwrap() - view.started_at_ms.unwrap();
    assert!((2000..30_000).contains(&took), "{took} ms");
    // Only the stage-1 scan job's result and nothing of the stopped job remain.
    let left: Vec<_> = squall_tests::files_under(&work)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(view.id.as_str()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let mut job = tpch_job(&data, 6);
    job["options"] = serde_json::json!({"deadline_seconds": 0});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("deadline_seconds"),
        "{body}"
    );
    server.kill();
}

/// The OpenAPI document is the API's contract: a change to it is deliberate.
/// The approved document is `tests/snapshots/openapi.json`; after a deliberate
/// change regenerate it with `SQUALL_UPDATE_SNAPSHOTS=1 cargo test -p
/// squall-tests --test service openapi` and review the diff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(2, &dir.path().join("work")), dir.path(), 1).await;
    let (status, doc) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    let path = squall_tests::tests_dir().join("snapshots/openapi.json");
    if std::env::var_os("SQUALL_UPDATE_SNAPSHOTS").is_some() {
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let approved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no approved document at {} ({e}); run with SQUALL_UPDATE_SNAPSHOTS=1",
                path.display()
            )
        }))
        .unwrap();
    assert!(
        doc == approved,
        "the OpenAPI document differs from {}; if the change is deliberate, \
         run with SQUALL_UPDATE_SNAPSHOTS=1 and review the diff",
        path.display()
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(2, &dir.path().join("work")), dir.path(), 1).await;
    // Open, like /healthz.
    let (status, doc) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/attempts",
            "/v1/jobs/{id}/files/{index}",
            "/v1/jobs/{id}/plan",
            "/v1/jobs/{id}/result",
            "/v1/schedules",
            "/v1/schedules/{id}",
            "/v1/schedules/{id}/runs",
            "/v1/tables",
            "/v1/tables/{name}",
            "/v1/whoami",
        ]
    );
    // Every documented error is problem+json, and /v1 needs the bearer token.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (code, response) in operation["responses"].as_object().unwrap() {
                if code.starts_with('4') {
                    assert!(
                        response["content"]
                            .get("application/problem+json")
                            .is_some(),
                        "{method} {path} {code}"
                    );
                }
            }
            let open = operation["security"] == serde_json::json!([{}]);
            assert_eq!(open, !path.starts_with("/v1"), "{method} {path}");
        }
    }
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    // Malformed queries and unknown methods are problems too.
    let (status, body) = server.get("/v1/jobs?limit=0", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("limit 0"),
        "{body}"
    );
    let (status, _) = server.get("/v1/jobs?after=soon", Some(TOKEN)).await;
    assert_eq!(status, 400);
    let (status, _) = server.put("/v1/jobs", &serde_json::json!({})).await;
    assert_eq!(status, 405);
    // serde would take an array for a struct; the API refuses it.
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": "SELECT 1", "options": [null, null]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`options` is an array"),
        "{body}"
    );
    let (status, _) = server
        .post("/v1/jobs", &serde_json::json!(["SELECT 1"]))
        .await;
    assert_eq!(status, 400);
    let (status, body) = server
        .get("/v1/jobs/x/result?offset=9223372036854775808", Some(TOKEN))
        .await;
    assert_eq!(status, 400, "{body}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_attempts_are_stored_with_their_failures() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let flaky = FirstAttemptFails::engine(&engine, None);
    let server = Server::start(flaky, dir.path(), 1).await;
    let (status, body) = server.post("/v1/jobs", &tpch_job(&data, 6)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = server.wait_final(&id).await;
    check_answer(&engine, &view, 6).await;
    let stage1 = &view.stages[0];
    assert_eq!(
        (stage1.retried, stage1.failed),
        (stage1.tasks, 0),
        "{view:?}"
    );
    let tasks: usize = view.stages.iter().map(|s| s.tasks).sum();

    let (status, body) = server
        .get(&format!("/v1/jobs/{id}/attempts"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let attempts = body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), tasks + stage1.tasks, "{body}");
    let failed: Vec<_> = attempts
        .iter()
        .filter(|a| a["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), stage1.tasks);
    for a in &failed {
        assert_eq!(
            (a["stage"].as_u64(), a["attempt"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(a["message"], "injected: connection reset");
    }
    let (_, only_failed) = server
        .get(&format!("/v1/jobs/{id}/attempts?failed=true"), Some(TOKEN))
        .await;
    assert_eq!(
        only_failed["attempts"].as_array().unwrap().len(),
        failed.len()
    );
    let (status, _) = server.get("/v1/jobs/nope/attempts", Some(TOKEN)).await;
    assert_eq!(status, 404);
    server.kill();
}

/// `options.key_filters` reaches the planner; the job view counts what each
/// filter removed and the plan API shows each filter planned and applied.
/// `options.join_filters` reaches it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_are_asked_for_and_shown_through_the_api() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 1).await;
    let mut job = tpch_job(&data, 5);
    job["options"] = serde_json::json!({"key_filters": "always"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = server.wait_final(&id).await;
    check_answer(&engine, &view, 5).await;
    // Q5's nations are filtered by the region the query names (5 of 25 kept).
    let filtered: Vec<_> = view
        .stages
        .iter()
        .filter(|s| !s.key_filters.is_empty())
        .collect();
    assert!(!filtered.is_empty(), "{view:?}");
    assert!(
        filtered
            .iter()
            .all(|s| s.key_filters.iter().all(|f| f.filter.is_some() && f.waits))
    );
    assert!(
        filtered.iter().any(|s| s.key_filter_rows_removed >= 20),
        "{view:?}"
    );
    assert!(
        filtered.iter().any(|s| s.key_filter_bytes_saved > 0),
        "{view:?}"
    );
    let (status, plan) = server
        .get(&format!("/v1/jobs/{id}/plan"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{plan}");
    let planned: Vec<_> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["key_filters"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!planned.is_empty(), "{plan}");
    assert!(planned.iter().all(|f| f["filter"].is_string()), "{plan}");

    // Off: no filter anywhere; a value outside the three is refused.
    job["options"] = serde_json::json!({"key_filters": "off"});
    let (_, body) = server.post("/v1/jobs", &job).await;
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    check_answer(&engine, &view, 5).await;
    assert!(
        view.stages.iter().all(|s| s.key_filters.is_empty()),
        "{view:?}"
    );
    job["options"] = serde_json::json!({"key_filters": "sometimes"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 400, "{body}");

    // Joins' dynamic filters: in Q5's broadcast joins' probe scans by
    // default, nowhere with `join_filters: false` (Q5 has no TopK).
    for (options, expected) in [
        (serde_json::json!({}), true),
        (serde_json::json!({"join_filters": false}), false),
    ] {
        job["options"] = options;
        let (_, body) = server.post("/v1/jobs", &job).await;
        let id = body["id"].as_str().unwrap().to_string();
        let view = server.wait_final(&id).await;
        check_answer(&engine, &view, 5).await;
        let (_, plan) = server
            .get(&format!("/v1/jobs/{id}/plan"), Some(TOKEN))
            .await;
        let text = plan["text"].as_str().unwrap_or_default();
        assert_eq!(text.contains("DynamicFilter"), expected, "{text}");
    }
    job["options"] = serde_json::json!({"join_filters": "yes"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 400, "{body}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_pages_across_files_cover_every_row_once() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(2, &dir.path().join("work")), dir.path(), 1).await;
    let job = serde_json::json!({
        "sql": "SELECT l_orderkey, l_linenumber FROM lineitem",
        "tables": [{"name": "lineitem", "url": format!("{}/lineitem/", data.display())}],
    });
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(view.state, JobState::Succeeded, "{view:?}");
    let total = view.rows.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    let mut files = None;
    loop {
        let (status, body) = server
            .get(
                &format!("/v1/jobs/{}/result?offset={offset}&limit=7001", view.id),
                Some(TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let page: ResultPage = serde_json::from_value(body).unwrap();
        files.get_or_insert(page.files.len());
        for row in &page.rows {
            let key = (row["l_orderkey"].as_i64(), row["l_linenumber"].as_i64());
            assert!(seen.insert(key), "row {key:?} twice");
        }
        offset += page.rows.len() as u64;
        match page.next_offset {
            Some(next) => assert_eq!(next, offset),
            None => break,
        }
    }
    assert!(files > Some(1), "the result should span several files");
    assert_eq!((seen.len() as u64, offset), (total, total));
    assert_eq!(total, 60_175, "TPC-H SF 0.01 lineitem rows");

    // Each result file downloads whole, as Parquet, with the token only.
    let files = files.unwrap();
    let client = reqwest::Client::new();
    let mut rows = 0;
    for index in 0..files {
        let url = format!("{}/v1/jobs/{}/files/{index}", server.url, view.id);
        let response = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.apache.parquet"
        );
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        let anonymous = client.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
    }
    assert_eq!(rows as u64, total);
    for bad in [
        files.to_string(),
        "-1".into(),
        "x".into(),
        "99999999999999999999999".into(),
    ] {
        let (status, body) = server
            .get(&format!("/v1/jobs/{}/files/{bad}", view.id), Some(TOKEN))
            .await;
        assert!(status == 404 || status == 400, "{bad}: {status} {body}");
        assert!(body["detail"].as_str().unwrap().contains(&bad), "{body}");
    }
    server.kill();
}

/// The in-process backend, counting the tasks of each stage in flight.
#[derive(Debug)]
struct CountingStages {
    inner: Arc<dyn squall_engine::ExecutorBackend>,
    in_flight: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
    most: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
}

#[async_trait::async_trait]
impl squall_engine::ExecutorBackend for CountingStages {
    fn name(&self) -> &str {
        "counting"
    }
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }
    async fn invoke(
        &self,
        spec: squall_executor::TaskSpec,
    ) -> squall_engine::Result<squall_executor::TaskResult> {
        let stage = spec.id.stage_id;
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            let now = in_flight.entry(stage).or_default();
            *now += 1;
            let mut most = self.most.lock().unwrap();
            let top = most.entry(stage).or_default();
            *top = (*top).max(*now);
        }
        // Long enough for a stage's tasks to overlap if they may.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let result = self.inner.invoke(spec).await;
        *self.in_flight.lock().unwrap().entry(stage).or_default() -= 1;
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_concurrency_cap_holds_in_the_service() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let local = local_engine(4, &dir.path().join("work"));
    let counting = Arc::new(CountingStages {
        inner: local.backend.clone(),
        in_flight: Default::default(),
        most: Default::default(),
    });
    let engine = Engine {
        backend: counting.clone(),
        ..local
    };
    let server = Server::start_with(engine.clone(), dir.path(), |c| {
        c.max_stage_concurrency = Some(2);
    })
    .await;
    let (status, body) = server.post("/v1/jobs", &tpch_job(&data, 3)).await;
    assert_eq!(status, 202, "{body}");
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    check_answer(&engine, &view, 3).await;
    let most = counting.most.lock().unwrap().clone();
    assert!(!most.is_empty());
    assert!(
        most.values().all(|n| *n <= 2),
        "a stage ran more than 2 tasks at once: {most:?}"
    );
    assert!(
        most.values().any(|n| *n == 2),
        "the cap was never reached: {most:?}"
    );
    server.kill();
}

/// The in-process backend; the first attempt of task 0 of stage `stage` runs,
/// then holds its answer for ten minutes.
#[derive(Debug)]
struct Straggles {
    inner: Arc<dyn squall_engine::backend::ExecutorBackend>,
    stage: u32,
}

#[async_trait::async_trait]
impl squall_engine::backend::ExecutorBackend for Straggles {
    fn name(&self) -> &str {
        "straggles"
    }
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }
    async fn invoke(
        &self,
        spec: squall_executor::TaskSpec,
    ) -> squall_engine::Result<squall_executor::TaskResult> {
        let straggles = (spec.id.stage_id, spec.id.task, spec.id.attempt) == (self.stage, 0, 0);
        let answer = self.inner.invoke(spec).await;
        if straggles {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
        answer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_counted_in_the_job_view_attempts_and_metrics() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let sql = "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY o_orderpriority";
    let tables = vec![squall_engine::TableSpec::new(
        "orders",
        format!("file://{}/orders/", data.display()),
    )];
    let plan = squall_engine::PlanOptions {
        shuffle_partitions: 4,
        ..Default::default()
    };
    let planned = squall_engine::plan_job(
        sql,
        &tables,
        &plan,
        engine.stores.clone(),
        "memory:///w",
        "memory:///w/r",
    )
    .await
    .unwrap();
    let last = planned.dag.final_stage();
    let straggling = Engine {
        backend: Arc::new(Straggles {
            inner: engine.backend.clone(),
            stage: last.id,
        }),
        ..engine.clone()
    };
    let server = Server::start(straggling, dir.path(), 1).await;
    let job = serde_json::json!({
        "sql": sql,
        "tables": [{"name": "orders", "url": format!("{}/orders/", data.display())}],
        "options": {"shuffle_partitions": 4},
    });
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = tokio::time::timeout(std::time::Duration::from_secs(120), server.wait_final(&id))
        .await
        .expect("the backup should end the job long before the straggler");
    assert_eq!(view.state, JobState::Succeeded, "{view:?}");
    let stage = view.stages.iter().find(|s| s.stage == last.id).unwrap();
    assert_eq!((stage.backups, stage.backup_wins), (1, 1), "{view:?}");
    assert_eq!((stage.done, stage.running), (stage.tasks, 0), "{view:?}");
    // The four shuffle partitions, read by as many tasks as their size asks.
    assert_eq!(stage.partitions, 4, "{view:?}");
    assert!(stage.tasks <= 4, "{view:?}");

    let (status, body) = server
        .get(&format!("/v1/jobs/{id}/attempts"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let outcomes: Vec<(u64, u64, String)> = body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["stage"].as_u64() == Some(u64::from(last.id)) && a["task"] == 0)
        .map(|a| {
            (
                a["task"].as_u64().unwrap(),
                a["attempt"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&(0, 0, "superseded".into()))
            && outcomes.contains(&(0, 1, "succeeded".into())),
        "{outcomes:?}"
    );
    // Each attempt has its start and end; the backup is marked.
    let attempts: squall_service::api::AttemptList = serde_json::from_value(body.clone()).unwrap();
    for a in &attempts.attempts {
        let (start, end) = (a.started_at_ms.unwrap(), a.ended_at_ms.unwrap());
        assert!(start <= end && end <= view.finished_at_ms.unwrap(), "{a:?}");
        assert!(start >= view.started_at_ms.unwrap(), "{a:?}");
        let is_backup = a.stage == last.id && a.task == 0 && a.attempt == 1;
        assert_eq!(a.backup, is_backup, "{a:?}");
    }
    // The plan the job ran: every stage, with its inputs, and the text.
    let (status, plan) = server
        .get(&format!("/v1/jobs/{id}/plan"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{plan}");
    let plan: squall_service::api::PlanView = serde_json::from_value(plan).unwrap();
    let ids: Vec<u32> = plan.stages.iter().map(|s| s.stage).collect();
    let viewed: Vec<u32> = view.stages.iter().map(|s| s.stage).collect();
    assert_eq!(ids, viewed);
    assert!(plan.planned);
    assert_eq!(plan.stages.last().unwrap().output, "result");
    assert!(
        plan.stages.iter().skip(1).all(|s| !s.inputs.is_empty()),
        "{plan:?}"
    );
    assert!(plan.text.contains("stage 1"), "{}", plan.text);

    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("squall_task_backups_total 1"), "{metrics}");
    assert!(
        metrics.contains("squall_task_backup_wins_total 1"),
        "{metrics}"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_filter_listings_and_jobs_show_what_they_cost() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 2).await;
    let mut ids = Vec::new();
    for (team, q) in [("red", 6), ("blue", 1), ("red", 14)] {
        let mut job = tpch_job(&data, q);
        job["labels"] = serde_json::json!({"team": team, "owner": "ana"});
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let view = server.wait_final(id).await;
        assert_eq!(view.state, JobState::Succeeded, "{view:?}");
        assert_eq!(view.labels.get("owner").map(String::as_str), Some("ana"));
        // In-process on local files: requests and CPU, no dollars.
        let cost = view.cost.as_ref().expect("a finished job's cost");
        assert!(cost.requests.get > 0 && cost.requests.put > 0, "{cost:?}");
        assert_eq!(cost.lambda_invocations, 0);
        assert_eq!(cost.usd, 0.0);
        assert!(cost.bytes_scanned > 0);
        let stages = view.stages.iter().filter_map(|s| s.cost.as_ref());
        let stage_gets: u64 = stages.map(|c| c.requests.get).sum();
        assert!(
            stage_gets > 0 && stage_gets <= cost.requests.get,
            "{view:?}"
        );
    }
    let (status, red) = server.get("/v1/jobs?label=team:red", Some(TOKEN)).await;
    assert_eq!(status, 200, "{red}");
    let red: JobList = serde_json::from_value(red).unwrap();
    let red_ids: Vec<&str> = red.jobs.iter().map(|j| j.id.as_str()).collect();
    // Newest first unless asked otherwise.
    assert_eq!(red_ids, [ids[2].as_str(), ids[0].as_str()]);
    let (_, oldest) = server
        .get("/v1/jobs?label=team:red&order=oldest", Some(TOKEN))
        .await;
    let oldest: JobList = serde_json::from_value(oldest).unwrap();
    let oldest_ids: Vec<&str> = oldest.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(oldest_ids, [ids[0].as_str(), ids[2].as_str()]);
    let (status, bad) = server.get("/v1/jobs?order=latest", Some(TOKEN)).await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().contains("\"latest\""),
        "{bad}"
    );
    let (_, red_failed) = server
        .get("/v1/jobs?label=team:red&state=failed", Some(TOKEN))
        .await;
    assert!(red_failed["jobs"].as_array().unwrap().is_empty());
    let (_, paged) = server
        .get("/v1/jobs?label=owner:ana&limit=2", Some(TOKEN))
        .await;
    assert_eq!(paged["jobs"].as_array().unwrap().len(), 2, "{paged}");
    assert!(paged["next"].is_number(), "{paged}");
    // The next page goes on down to the first job, then ends.
    let (_, rest) = server
        .get(
            &format!("/v1/jobs?label=owner:ana&limit=2&after={}", paged["next"]),
            Some(TOKEN),
        )
        .await;
    assert_eq!(rest["jobs"][0]["id"], ids[0].as_str(), "{rest}");
    assert!(rest["next"].is_null(), "{rest}");

    // Bad labels, filters and limits are refused, naming what is wrong.
    for (labels, options, needle) in [
        (
            serde_json::json!({"Team": "x"}),
            serde_json::json!({}),
            "label key 'Team'",
        ),
        (
            serde_json::json!({"": "x"}),
            serde_json::json!({}),
            "label key ''",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({"cost_limit_usd": -1}),
            "options.cost_limit_usd",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({"cost_limit_usd": 1e12}),
            "options.cost_limit_usd",
        ),
    ] {
        let mut job = tpch_job(&data, 6);
        job["labels"] = labels;
        job["options"] = options;
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(needle), "{body}");
    }
    let (status, body) = server.get("/v1/jobs?label=team", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/v1/jobs?label=Te%20am:x", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");

    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gets = metrics
        .lines()
        .find(|l| l.starts_with("squall_object_store_requests_total{kind=\"get\",store=\"file\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let counted: u64 = gets.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted > 0, "{gets}");
    assert!(
        metrics.contains("squall_cost_usd_total{part=\"s3_requests\"} 0"),
        "{metrics}"
    );
    server.kill();
}

/// A scrape's value of the sample `name` (with its labels, as printed).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_level_metrics_count_jobs_by_outcome_and_have_what_the_rules_use() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    // Stages after the second never answer: Q3 hangs, Q6 runs.
    let hanging = Hanging::engine(&engine);
    let server = Server::start(hanging, dir.path(), 1).await;
    let submit = |job: serde_json::Value| {
        let server = &server;
        async move {
            let (status, body) = server.post("/v1/jobs", &job).await;
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let ok = submit(tpch_job(&data, 6)).await;
    assert_eq!(server.wait_final(&ok).await.state, JobState::Succeeded);
    let mut bad = tpch_job(&data, 6);
    bad["sql"] = "SELECT CAST(l_shipmode AS INT) AS m FROM lineitem".into();
    let bad = submit(bad).await;
    assert_eq!(server.wait_final(&bad).await.state, JobState::Failed);
    // One job hangs running; the next waits in the queue; both are cancelled.
    let hung = submit(tpch_job(&data, 3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = server.get(&format!("/v1/jobs/{hung}"), Some(TOKEN)).await;
        if view["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued = submit(tpch_job(&data, 6)).await;
    let (status, plan) = server
        .get(&format!("/v1/jobs/{queued}/plan"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["planned"], false, "{plan}");
    assert!(plan["stages"].as_array().unwrap().is_empty(), "{plan}");
    for id in [&queued, &hung] {
        let (status, body) = server.delete(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "cancelled", "{body}");
    }
    // A submission refused (M10 counts it) and one that is not JSON.
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": "SELECT * FROM nowhere"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post("/v1/jobs", &serde_json::json!([1, 2])).await;
    assert_eq!(status, 400, "{body}");

    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| sample(&metrics, name).unwrap_or_else(|| panic!("{name}: {metrics}"));
    assert_eq!(
        value("squall_jobs_ended_total{outcome=\"succeeded\",principal=\"admin\"}"),
        1.0
    );
    assert_eq!(
        value("squall_jobs_ended_total{outcome=\"failed\",principal=\"admin\"}"),
        1.0
    );
    assert_eq!(
        value("squall_jobs_ended_total{outcome=\"cancelled\",principal=\"admin\"}"),
        2.0
    );
    // The queued job never ran: a queue time, no run time.
    assert_eq!(
        value("squall_job_queue_seconds_count{outcome=\"cancelled\"}"),
        2.0
    );
    assert_eq!(
        value("squall_job_duration_seconds_count{outcome=\"cancelled\"}"),
        1.0
    );
    assert_eq!(
        value("squall_job_duration_seconds_count{outcome=\"succeeded\"}"),
        1.0
    );
    let attempts = value("squall_task_attempts_total");
    let succeeded = value("squall_tasks_succeeded_total");
    assert!(
        attempts > succeeded,
        "the hung and failed attempts count too"
    );
    assert!(value("squall_task_duration_seconds_count{stage_kind=\"scan\"}") > 0.0);
    assert!(value("squall_task_duration_seconds_count{stage_kind=\"final\"}") > 0.0);
    assert!(value("squall_bytes_shuffled_total") > 0.0);
    // M10: submissions by answer; M12: the newest job event is recent.
    assert_eq!(
        value("squall_job_submissions_total{outcome=\"accepted\"}"),
        4.0
    );
    assert_eq!(
        value("squall_job_submissions_total{outcome=\"refused\"}"),
        2.0
    );
    assert_eq!(
        value("squall_job_submissions_total{outcome=\"throttled\"}"),
        0.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let newest = value("squall_last_job_event_timestamp_seconds");
    assert!(newest <= now && now - newest < 600.0, "{newest} vs {now}");

    // Every metric the recording and alerting rules name is in the scrape.
    let rules = std::fs::read_to_string(
        squall_tests::tests_dir().join("../infra/prometheus/squall-rules.yml"),
    )
    .unwrap();
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("squall_"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 12, "{named:?}");
    for name in named {
        assert!(
            exported(&metrics, name),
            "the rules use {name}, which /metrics does not have: {metrics}"
        );
    }

    // The Grafana dashboard's queries name only metrics in the scrape and
    // series the rules record.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            squall_tests::tests_dir().join("../infra/grafana/squall-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let recorded: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{dashboard}");
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let words = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("squall"));
            for word in words {
                if word.contains(':') {
                    assert!(
                        recorded.contains(&word),
                        "{}: {word} is not recorded",
                        panel["title"]
                    );
                } else {
                    assert!(
                        exported(&metrics, word),
                        "{}: {word} is not in /metrics",
                        panel["title"]
                    );
                }
            }
        }
    }
    server.kill();
}

/// Whether the scrape `metrics` has the family of series `name` (a
/// histogram's `_bucket`, `_count` and `_sum` are its family's).
fn exported(metrics: &str, name: &str) -> bool {
    let family = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    metrics.contains(&format!("# TYPE {family} "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_and_holds_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(2, &dir.path().join("work")), dir.path(), 1).await;
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let response = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = response.text().await.unwrap();
        assert!(!body.contains(TOKEN), "{path} holds the token");
    }
    let page = client
        .get(&server.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No inline script: everything the page runs is /console/app.js.
    assert!(
        page.contains(r#"<script src="/console/app.js" defer></script>"#),
        "{page}"
    );
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    let (status, body) = server.get("/console/secrets.txt", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["title"], "not found");
    server.kill();
}

/// A job asking for the two-level exchange: its answer is right, the job view
/// shows how each reduce stage read its inputs and the combine steps as
/// stages of their own, and the plan API shows the steps where they ran; a
/// mode the server does not know is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_level_exchange_is_shown_in_the_job_view_and_the_plan() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start(engine.clone(), dir.path(), 1).await;
    let mut job = tpch_job(&data, 3);
    job["options"] = serde_json::json!({"shuffle_partitions": 4, "exchange": "two-level"});
    let (status, body) = server.post("/v1/jobs", &job).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = server.wait_final(&id).await;
    check_answer(&engine, &view, 3).await;
    let exchanges: Vec<_> = view.stages.iter().flat_map(|s| &s.exchanges).collect();
    let combined: Vec<_> = exchanges.iter().filter(|e| e.mode == "two-level").collect();
    assert!(!combined.is_empty(), "{view:?}");
    for exchange in &combined {
        let step = exchange
            .combine_stage
            .expect("a two-level exchange has a step");
        let shown = view.stages.iter().find(|s| s.stage == step).unwrap();
        assert_eq!(shown.combines, Some(exchange.input), "{shown:?}");
        assert_eq!(shown.tasks, exchange.combiners, "{shown:?}");
        assert_eq!(shown.done, shown.tasks, "{shown:?}");
        assert!(exchange.requests_two_level > 0 && !exchange.reason.is_empty());
    }
    let (status, plan) = server
        .get(&format!("/v1/jobs/{id}/plan"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{plan}");
    let plan: squall_service::api::PlanView = serde_json::from_value(plan).unwrap();
    for exchange in &combined {
        let step = exchange.combine_stage.unwrap();
        let at = plan.stages.iter().position(|s| s.stage == step).unwrap();
        assert_eq!(plan.stages[at].kind, exchange.step, "{plan:?}");
        assert!(["combine", "merge"].contains(&exchange.step.as_str()));
        assert_eq!(plan.stages[at].inputs, vec![exchange.input]);
        let reader = plan
            .stages
            .iter()
            .position(|s| s.inputs.contains(&step))
            .unwrap();
        assert!(reader > at, "the step comes before its reader: {plan:?}");
        assert!(!plan.stages[reader].exchanges.is_empty(), "{plan:?}");
    }

    let mut bad = tpch_job(&data, 3);
    bad["options"] = serde_json::json!({"exchange": "sideways"});
    let (status, body) = server.post("/v1/jobs", &bad).await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.to_string().contains("sideways"), "{body}");
    server.kill();
}
