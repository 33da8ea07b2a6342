//! `squall serve` as a caller who should not be trusted would use it: a real
//! server on loopback, tried with each way a token holder could read or write
//! outside what the server allows, take another job's output, ask for
//! unbounded work, or leave work running after a cancel or a deadline. Each
//! gets a 4xx naming the problem, and the disk is checked for what must not be
//! there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use squall_engine::backend::{ExecutorBackend, InProcessBackend};
use squall_engine::{Engine, MANIFEST_NAME};
use squall_executor::{ExecutorContext, StoreRegistry, TaskResult, TaskSpec};
use squall_service::JobState;
use squall_service::api::{JobView, ResultPage};
use squall_tests::server::{Server, TOKEN};
use squall_tests::{files_under, local_engine, tpch_data};

/// A job on the TPC-H nation table at `data`.
fn nation_job(data: &Path, sql: &str) -> serde_json::Value {
    serde_json::json!({
        "sql": sql,
        "tables": [{"name": "nation", "url": format!("{}/nation/", data.display())}]
    })
}

fn detail(body: &serde_json::Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

/// Submits and returns the job id (202 expected).
async fn submit(server: &Server, job: &serde_json::Value) -> String {
    let (status, body) = server.post("/v1/jobs", job).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Waits until `check` holds of the job's view.
async fn wait_for(server: &Server, id: &str, check: impl Fn(&JobView) -> bool) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.get(&format!("/v1/jobs/{id}"), Some(TOKEN)).await;
        let view: JobView = serde_json::from_value(body).unwrap();
        if check(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "job {id}: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files anywhere under `dir` (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    if dir.exists() {
        files_under(dir)
    } else {
        vec![]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_stay_inside_the_allowed_prefixes() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let server_dir = root.join("server");
    let allowed = server_dir.join("tables");
    std::fs::create_dir_all(&allowed).unwrap();
    let secret = root.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let creds = secret.join("creds.csv");
    std::fs::write(&creds, "user,password\nroot,hunter2\n").unwrap();
    let elsewhere = root.join("elsewhere");
    let server = Server::start_with(
        local_engine(2, &server_dir.join("work")),
        &server_dir,
        |config| config.limits.max_table_files = 5,
    )
    .await;

    // A file the server user can read, outside what is allowed: as a catalog
    // table, as a job's table, by `..`, by an encoded `..`, by a link.
    let forbidden = |status: u16, body: &serde_json::Value, url: &str| {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["title"], "forbidden", "{body}");
        assert!(detail(body).contains(url), "should name {url}: {body}");
    };
    let creds_url = format!("file://{}", creds.display());
    let (status, body) = server
        .put(
            "/v1/tables/creds",
            &serde_json::json!({"url": creds.display().to_string(), "format": "csv"}),
        )
        .await;
    forbidden(status, &body, &creds_url);
    let job = serde_json::json!({"sql": "SELECT * FROM creds",
        "tables": [{"name": "creds", "url": creds_url, "format": "csv"}]});
    let (status, body) = server.post("/v1/jobs", &job).await;
    forbidden(status, &body, &creds_url);
    for sneaky in [
        format!("{}/../../secret/creds.csv", allowed.display()),
        format!(
            "file://{}/%2e%2e/%2e%2e/secret/creds.csv",
            allowed.display()
        ),
    ] {
        let (status, body) = server
            .put(
                "/v1/tables/creds",
                &serde_json::json!({"url": sneaky, "format": "csv"}),
            )
            .await;
        forbidden(status, &body, &creds_url);
    }
    std::os::unix::fs::symlink(&secret, allowed.join("door")).unwrap();
    let (status, body) = server
        .put(
            "/v1/tables/creds",
            &serde_json::json!({"url": format!("{}/door/creds.csv", allowed.display()), "format": "csv"}),
        )
        .await;
    forbidden(status, &body, &creds_url);
    // A link to the file inside an allowed folder: found by the listing, refused.
    let linked = allowed.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&creds, linked.join("creds.csv")).unwrap();
    let (status, body) = server
        .put(
            "/v1/tables/creds",
            &serde_json::json!({"url": format!("{}/", linked.display())}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("links to"), "{body}");
    // The server's own files, a relative path, memory://, another bucket,
    // DataFusion's URL tables.
    let (status, body) = server
        .put(
            "/v1/tables/db",
            &serde_json::json!({"url": server_dir.join("squall.db").display().to_string(), "format": "csv"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    for (url, status_expected, needle) in [
        ("data/tpch/nation/", 400, "relative path"),
        ("memory:///x/", 400, "memory://"),
        (
            "s3://someone-elses-bucket/data/",
            403,
            "s3://someone-elses-bucket/data/",
        ),
        (
            "http://169.254.169.254/latest/",
            400,
            "unsupported URL scheme",
        ),
    ] {
        let (status, body) = server
            .put("/v1/tables/t", &serde_json::json!({"url": url}))
            .await;
        assert_eq!(status, status_expected, "{url}: {body}");
        assert!(detail(&body).contains(needle), "{url}: {body}");
    }
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": format!("SELECT * FROM '{creds_url}'")}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A big folder is refused before it is walked.
    let started = Instant::now();
    let (status, body) = server
        .put("/v1/tables/x", &serde_json::json!({"url": "/usr/share/"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // An allowed folder with more files than the server lists: refused with the count.
    let many = allowed.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..6 {
        std::fs::write(many.join(format!("{i}.csv")), "a\n1\n").unwrap();
    }
    let (status, body) = server
        .put(
            "/v1/tables/many",
            &serde_json::json!({"url": format!("{}/", many.display())}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("more than 5 files"), "{body}");

    // Outputs: only under an allowed prefix or the server's results folder.
    for (output, status_expected) in [
        (format!("file://{}/out/", elsewhere.display()), 403),
        (format!("{}/out", elsewhere.display()), 403),
        ("out/".to_string(), 400),
        (format!("{}/../secret/out/", allowed.display()), 403),
        (format!("{}/work/x/", server_dir.display()), 403),
        (format!("{}/out/", server_dir.display()), 403),
    ] {
        let mut job = nation_job(&data, "SELECT count(*) AS n FROM nation");
        job["output"] = serde_json::json!(output);
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, status_expected, "{output}: {body}");
    }
    // Nothing was created outside the allowed prefixes.
    assert!(!elsewhere.exists());
    assert_eq!(files(&secret), vec![creds.clone()]);
    assert!(!server_dir.join("out").exists());

    // Allowed: a table and an output under the allowed prefix.
    let mut job = nation_job(&data, "SELECT count(*) AS n FROM nation");
    job["output"] = serde_json::json!(format!("{}/counted/", allowed.display()));
    let id = submit(&server, &job).await;
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, JobState::Succeeded, "{view:?}");
    assert!(allowed.join("counted").join(MANIFEST_NAME).exists());
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_belongs_to_one_job() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().canonicalize().unwrap();
    let out = server_dir.join("tables").join("out");
    let engine = local_engine(2, &server_dir.join("work"));
    let server = Server::start_with(engine, &server_dir, |c| c.max_running = 2).await;

    // A runs for a while; B names the same output while A holds it: 409 naming A.
    let mut slow = nation_job(
        &data,
        "SELECT n_regionkey, count(*) AS n FROM nation, generate_series(1, 200000) \
         GROUP BY n_regionkey ORDER BY n_regionkey",
    );
    slow["output"] = serde_json::json!(format!("{}/", out.display()));
    let a = submit(&server, &slow).await;
    let mut other = nation_job(&data, "SELECT n_name FROM nation");
    other["output"] = slow["output"].clone();
    let (status, body) = server.post("/v1/jobs", &other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["title"], "output in use");
    assert!(detail(&body).contains(&a), "{body}");
    let view = server.wait_final(&a).await;
    assert_eq!(view.state, JobState::Succeeded, "{view:?}");
    // Done, its manifest keeps the folder A's.
    let (status, body) = server.post("/v1/jobs", &other).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        detail(&body).contains("already holds a Squall result"),
        "{body}"
    );
    // Its result: five regions, 25 × 200000 rows counted, whatever else lands
    // in the folder (a reader takes the manifest's files only).
    let stray = out.join("part-00000-ffffffffffffffff-x-0.parquet");
    let first_file = files(&out)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::copy(&first_file, &stray).unwrap();
    let read_back = serde_json::json!({
        "sql": "SELECT count(*) AS regions, sum(n) AS n FROM counted",
        "tables": [{"name": "counted", "url": format!("{}/", out.display())}]
    });
    let id = submit(&server, &read_back).await;
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (_, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    let page: ResultPage = serde_json::from_value(body).unwrap();
    assert_eq!(page.rows[0]["regions"], 5, "{page:?}");
    assert_eq!(page.rows[0]["n"], 25 * 200_000, "{page:?}");

    // A job that fails leaves its output as it found it (free, empty).
    let failing_out = server_dir.join("tables").join("failing");
    let mut failing = nation_job(&data, "SELECT CAST(n_name AS INT) AS broken FROM nation");
    failing["output"] = serde_json::json!(format!("{}/", failing_out.display()));
    let id = submit(&server, &failing).await;
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, JobState::Failed, "{view:?}");
    assert_eq!(files(&failing_out), Vec::<PathBuf>::new());
    let mut fine = nation_job(&data, "SELECT n_name FROM nation");
    fine["output"] = failing["output"].clone();
    let id = submit(&server, &fine).await;
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_a_caller_sends_has_a_bound() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start_with(engine, dir.path(), |c| {
        c.max_running = 1;
        c.limits.max_queued = 2;
    })
    .await;
    for (options, named) in [
        (
            serde_json::json!({"max_concurrency": 1u64 << 61}),
            "options.max_concurrency 2305843009213693952 is over the limit of 2",
        ),
        (
            serde_json::json!({"shuffle_partitions": 1_000_000}),
            "options.shuffle_partitions 1000000 is over the limit of 256",
        ),
        (
            serde_json::json!({"deadline_seconds": 1_000_000_000}),
            "options.deadline_seconds 1000000000 is over the limit of 86400 seconds",
        ),
        (
            serde_json::json!({"scan_limit_bytes": u64::MAX}),
            "options.scan_limit_bytes 18446744073709551615 is over the limit",
        ),
        (
            serde_json::json!({"max_concurrency": 0}),
            "options.max_concurrency must be at least 1",
        ),
    ] {
        let mut job = nation_job(&data, "SELECT 1 AS one FROM nation");
        job["options"] = options.clone();
        let (status, body) = server.post("/v1/jobs", &job).await;
        assert_eq!(status, 400, "{options}: {body}");
        assert!(detail(&body).contains(named), "{options}: {body}");
    }
    // A schedule may not run every second, overlapping or not.
    let (status, body) = server
        .post(
            "/v1/schedules",
            &serde_json::json!({"cron": "* * * * * *", "overlap": "allow",
                                "job": {"sql": "SELECT 1 AS one"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("runs 1 s apart"), "{body}");
    assert!(detail(&body).contains("one run per 60 s"), "{body}");

    // The queue: one job runs, two wait, the fourth is told to come back later.
    let slow = nation_job(
        &data,
        "SELECT count(*) AS n FROM nation, generate_series(1, 20000000)",
    );
    let mut ids = vec![submit(&server, &slow).await];
    wait_for(&server, &ids[0], |v| v.state == JobState::Running).await;
    for _ in 0..2 {
        ids.push(submit(&server, &slow).await);
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.url))
        .bearer_auth(TOKEN)
        .json(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(detail(&body).contains("2 jobs are waiting"), "{body}");
    for id in &ids {
        let (status, _) = server.delete(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200);
    }

    // count(*) over a generated table plans and runs.
    let id = submit(
        &server,
        &serde_json::json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 10)"}),
    )
    .await;
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (_, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(body["rows"][0]["n"], 10, "{body}");

    // Retention: finished jobs past it are gone, with their default results.
    let results = dir.path().join("results").join(&id);
    assert!(!files(&results).is_empty());
    let deleted = server
        .service
        .expire_jobs(squall_service::now_ms() + 1)
        .await
        .unwrap();
    assert!(deleted >= 4, "{deleted}");
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), Some(TOKEN)).await.0,
        404
    );
    assert_eq!(files(&results), Vec::<PathBuf>::new());
    server.kill();
}

/// The in-process backend with its live-task counter in reach.
fn counted_engine(work: &Path) -> (Engine, Arc<InProcessBackend>) {
    let stores = Arc::new(StoreRegistry::new());
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let backend = Arc::new(InProcessBackend::new(ctx, 2).unwrap());
    let engine = Engine::with_backend(
        stores,
        backend.clone(),
        &format!("file://{}", work.display()),
    );
    (engine, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_deadlines_stop_every_task_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, backend) = counted_engine(&dir.path().join("work"));
    let server = Server::start_with(engine, dir.path(), |c| c.max_running = 1).await;
    // Minutes of work, were it left to run.
    let endless = serde_json::json!({
        "sql": "SELECT v % 7 AS k, count(*) AS n FROM \
                (SELECT value AS v FROM generate_series(1, 100000000000)) GROUP BY 1"
    });
    let id = submit(&server, &endless).await;
    wait_for(&server, &id, |v| v.stages.iter().any(|s| s.running > 0)).await;
    assert!(backend.running() > 0);
    // The answer to the cancel comes once the tasks have stopped.
    let (status, body) = server.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(backend.running(), 0, "tasks still running after the cancel");
    let leftovers = || {
        let mut all = files(&dir.path().join("work"));
        all.extend(files(&dir.path().join("results")));
        all
    };
    assert_eq!(leftovers(), Vec::<PathBuf>::new());

    // Past its deadline: failed, its tasks stopped, nothing written later.
    let mut timed = endless.clone();
    timed["options"] = serde_json::json!({"deadline_seconds": 1});
    let id = submit(&server, &timed).await;
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, JobState::Failed);
    assert!(
        view.error
            .as_deref()
            .unwrap_or_default()
            .contains("deadline of 1s"),
        "{view:?}"
    );
    assert_eq!(
        backend.running(),
        0,
        "tasks still running after the deadline"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backend.running(), 0);
    assert_eq!(leftovers(), Vec::<PathBuf>::new());

    // An operator that never awaits (a cross join feeding a count hands over
    // batch after batch), stopped by a server shutdown: the tasks end, the job
    // stays running in the store for the next server.
    let busy = serde_json::json!({
        "sql": "SELECT count(*) AS n FROM generate_series(1, 100000) a, \
                generate_series(1, 100000000) b"
    });
    let id = submit(&server, &busy).await;
    wait_for(&server, &id, |v| v.stages.iter().any(|s| s.running > 0)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    server.service.shutdown(Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.running(),
        0,
        "tasks still running after the shutdown"
    );
    let (_, body) = server.get(&format!("/v1/jobs/{id}"), Some(TOKEN)).await;
    assert_eq!(body["state"], "running", "{body}");
    server.kill();
}

/// A backend whose invocations panic inside the scheduler.
#[derive(Debug)]
struct Panicking;

#[async_trait]
impl ExecutorBackend for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    fn max_concurrency(&self) -> usize {
        2
    }
    async fn invoke(&self, _spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        panic!("a bug in the backend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_scheduler_fails_its_job_instead_of_leaving_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::with_backend(
        Arc::new(StoreRegistry::new()),
        Arc::new(Panicking),
        &format!("file://{}", dir.path().join("work").display()),
    );
    let server = Server::start(engine, dir.path(), 1).await;
    let id = submit(
        &server,
        &serde_json::json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 10)"}),
    )
    .await;
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, JobState::Failed);
    assert!(
        view.error
            .as_deref()
            .unwrap_or_default()
            .contains("panicked: a bug in the backend"),
        "{view:?}"
    );
    // The server goes on: its slot is free for the next job.
    let next = submit(
        &server,
        &serde_json::json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 10)"}),
    )
    .await;
    assert_eq!(server.wait_final(&next).await.state, JobState::Failed);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_exactly_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(local_engine(1, &dir.path().join("work")), dir.path(), 1).await;
    let get = |auth: &'static str| {
        let url = format!("{}/v1/jobs", server.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("Bearer test-token").await, 200);
    assert_eq!(get("bearer test-token").await, 200);
    assert_eq!(get("BEARER test-token").await, 200);
    assert_eq!(get("Bearer test-toke").await, 401);
    assert_eq!(get("Bearer test-token2").await, 401);
    assert_eq!(get("Basic test-token").await, 401);
    assert_eq!(get("test-token").await, 401);
    let shown = format!("{:?}", server.service);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("1 (hidden)"), "{shown}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_runs_fire_once_each_while_the_schedule_is_edited() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().canonicalize().unwrap();
    let runs_dir = server_dir.join("tables").join("nightly");
    let server = Server::start_with(
        local_engine(2, &server_dir.join("work")),
        &server_dir,
        |c| {
            c.max_running = 4;
            c.limits.min_cron_interval = Duration::from_secs(1);
        },
    )
    .await;
    let (status, body) = server
        .post(
            "/v1/schedules",
            &serde_json::json!({"cron": "* * * * * *", "overlap": "allow",
                "job": {"sql": "SELECT 1 AS one",
                        "output": format!("{}/", runs_dir.display())}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let schedule = body["id"].as_str().unwrap().to_string();
    // Edits while it fires: none may write back an old next run time.
    let until = Instant::now() + Duration::from_secs(4);
    let mut edits = 0;
    while Instant::now() < until {
        let (status, body) = server
            .patch(
                &format!("/v1/schedules/{schedule}"),
                &serde_json::json!({"name": format!("edit {edits}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        edits += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, _) = server
        .patch(
            &format!("/v1/schedules/{schedule}"),
            &serde_json::json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200);
    // Each run went to its own subfolder named by when it fell due: no due
    // time twice, and every finished run left its manifest there.
    let (_, body) = server
        .get(
            &format!("/v1/schedules/{schedule}/runs?limit=1000"),
            Some(TOKEN),
        )
        .await;
    let jobs = body["jobs"].as_array().unwrap().clone();
    assert!(jobs.len() >= 2, "{body}");
    for job in &jobs {
        server.wait_final(job["id"].as_str().unwrap()).await;
    }
    let mut due_times: Vec<String> = std::fs::read_dir(&runs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    due_times.sort();
    assert_eq!(due_times.len(), jobs.len(), "{due_times:?}");
    for folder in &due_times {
        assert!(
            runs_dir.join(folder).join(MANIFEST_NAME).exists(),
            "{folder}"
        );
    }
    let mut seconds: Vec<&str> = due_times.iter().map(|f| &f[..16]).collect();
    seconds.dedup();
    assert_eq!(
        seconds.len(),
        due_times.len(),
        "a run fired twice: {due_times:?}"
    );
    server.kill();
}
