//! `squall serve` under requests meant to take it down or to starve other
//! callers: a real server on loopback (the same accept loop, router and
//! service `squall serve` runs), tried with values whose size the query picks,
//! expressions too deep to recurse through, half-sent requests and floods,
//! pages and results too large to hold, outputs over other data, tokens of
//! other principals. Each refusal is a 4xx naming the limit; after each test
//! the server still answers `/healthz` and a TPC-H query correctly.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use squall_engine::planner::pool::PlanningLimits;
use squall_engine::{Engine, MANIFEST_NAME};
use squall_service::api::{JobView, ResultPage};
use squall_service::core::MetricsAccess;
use squall_service::{HttpLimits, JobState, Principal, Role, Secret};
use squall_tests::server::{Server, TOKEN, check_answer, tpch_job};
use squall_tests::{files_under, local_engine, tpch_data};

fn detail(body: &serde_json::Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

/// `/healthz` answers and TPC-H Q1 runs to the right answer.
async fn still_serves(server: &Server, engine: &Engine, data: &Path) {
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);
    let (status, body) = server.post("/v1/jobs", &tpch_job(data, 1)).await;
    assert_eq!(status, 202, "{body}");
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    check_answer(engine, &view, 1).await;
}

fn job(sql: &str) -> serde_json::Value {
    serde_json::json!({ "sql": sql })
}

/// Submits `sql`; expects `status` with `needles` in the detail.
async fn refused(server: &Server, sql: &str, status: u16, needles: &[&str]) {
    let (got, body) = server.post("/v1/jobs", &job(sql)).await;
    let shown: String = sql.chars().take(80).collect();
    assert_eq!(got, status, "{shown}: {body}");
    for needle in needles {
        assert!(detail(&body).contains(needle), "{shown}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_expressions_a_query_sizes_are_bounded_at_submission() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start_with(engine.clone(), dir.path(), |c| {
        c.max_running = 2;
        c.limits.max_sql_bytes = 1 << 20;
    })
    .await;
    // Each of these, planned unbounded, aborted the process (an allocation
    // of 10^15 bytes, or 40 GB from twenty at once).
    refused(
        &server,
        "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 1000000000000000))",
        400,
        &["repeat would build a value of 1.0 PB", "per value"],
    )
    .await;
    let flood = job("SELECT length(repeat('x', 2000000000)) AS n");
    let floods = (0..20).map(|_| server.post("/v1/jobs", &flood));
    let started = Instant::now();
    for (status, body) in futures::future::join_all(floods).await {
        assert_eq!(status, 400, "{body}");
        assert!(
            detail(&body).contains("repeat would build a value of 2.0 GB"),
            "{body}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for (sql, needle) in [
        ("SELECT lpad('x', 1000000000) AS s", "lpad would build"),
        (
            "SELECT array_repeat('x', 1000000000) AS a",
            "array_repeat would build",
        ),
        (
            "SELECT cardinality(range(1, 5000000000)) AS n",
            "range would build",
        ),
        (
            "SELECT cardinality(generate_series(1, 5000000000)) AS n",
            "generate_series would build",
        ),
        (
            "SELECT length(replace(repeat('x', 60000), '', repeat('y', 2000))) AS n",
            "replace would build",
        ),
        (
            "SELECT arrow_cast(NULL, 'FixedSizeBinary(2000000000)') AS x FROM generate_series(1, 3)",
            "FixedSizeBinary(2000000000)",
        ),
    ] {
        refused(&server, sql, 400, &[needle]).await;
    }
    // What is only known in an executor: a value that fits one row but not
    // every row of a batch, a quadratic comparison of values too large to
    // fold. The job fails there, naming the function and the cap.
    for (sql, needles) in [
        (
            "SELECT max(length(repeat(CAST(value % 2 AS VARCHAR), 100000))) AS n \
             FROM generate_series(1, 100000)",
            ["repeat would build", "per batch"],
        ),
        (
            "SELECT levenshtein(repeat('a', 1000000), repeat('b', 1000000)) AS d",
            ["levenshtein would take", "steps for one batch"],
        ),
    ] {
        let (status, body) = server.post("/v1/jobs", &job(sql)).await;
        assert_eq!(status, 202, "{body}");
        let view = server.wait_final(body["id"].as_str().unwrap()).await;
        assert_eq!(view.state, JobState::Failed, "{view:?}");
        let error = view.error.clone().unwrap_or_default();
        for needle in needles {
            assert!(error.contains(needle), "{error}");
        }
    }

    // Chains the SQL parser does not count as nesting: 200,000 terms and a
    // WHERE of 60,000 ORs overflowed a worker's stack.
    let plus = format!("SELECT {} AS n", vec!["1"; 200_000].join("+"));
    refused(&server, &plus, 400, &["nested more than 256 levels deep"]).await;
    let ors = (0..60_000)
        .map(|i| format!("value = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let ors = format!("SELECT count(*) AS n FROM generate_series(1, 10) WHERE {ors}");
    refused(&server, &ors, 400, &["levels deep"]).await;
    let unions = vec!["SELECT 1 AS n"; 600].join(" UNION ALL ");
    refused(&server, &unions, 400, &["600 SELECTs", "500 per statement"]).await;
    // Deep but within the bound: planned on a thread with room, and it runs.
    let sum = format!("SELECT {} AS n", vec!["value"; 120].join(" + "));
    let (status, body) = server
        .post(
            "/v1/jobs",
            &job(&format!("{sum} FROM generate_series(1, 3) ORDER BY n")),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (_, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(body["rows"][2]["n"], 360, "{body}");
    still_serves(&server, &engine, &data).await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_past_its_time_is_refused_and_its_text_bounded_by_default() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"))
        .with_planning(PlanningLimits {
            time: Duration::from_millis(1),
            concurrency: 1,
            queue: 4,
        })
        .unwrap();
    let server = Server::start(engine, dir.path(), 1).await;
    let (status, body) = server.post("/v1/jobs", &tpch_job(&data, 9)).await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("took longer than 0.001 s"), "{body}");
    // The default cap on SQL text: 256 KiB.
    let plus = format!("SELECT {} AS n", vec!["1"; 200_000].join("+"));
    refused(&server, &plus, 400, &["over the limit of 262144 bytes"]).await;
    server.kill();
}

/// A connection that sent `head` and nothing more.
fn half_sent(addr: &str, head: &[u8]) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(head).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Whether the server closed `stream` (rather than the read timing out).
fn closed_by_server(mut stream: std::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (408, or a close after it), then the close.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_floods_cannot_hold_the_server() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start_with(engine.clone(), dir.path(), |c| {
        c.http = HttpLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(60),
            max_connections: 16,
        };
    })
    .await;
    let addr = server.url.trim_start_matches("http://").to_string();
    // Twice as many half-sent heads as the server takes connections, no token.
    let flood: Vec<_> = (0..32)
        .map(|_| half_sent(&addr, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    // /healthz gets through once the first ones time out, within seconds.
    let started = Instant::now();
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Every half-sent request was closed by the server.
    let closed = tokio::task::spawn_blocking(move || {
        flood
            .into_iter()
            .filter(|s| closed_by_server(s.try_clone().unwrap()))
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 32, "half-sent requests left open");
    // An idle keep-alive connection is closed too.
    let idle = half_sent(&addr, b"");
    assert!(
        tokio::task::spawn_blocking(move || closed_by_server(idle))
            .await
            .unwrap()
    );
    // A body that stops arriving: 408 within the body timeout.
    let mut slow = half_sent(
        &addr,
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sql\": "
        )
        .as_bytes(),
    );
    let answer = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = slow.read_to_string(&mut text);
        text
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    // /v1 answers are not cached.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/jobs", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    still_serves(&server, &engine, &data).await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_results_and_executors_stay_within_their_memory() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start_with(engine.clone(), dir.path(), |c| {
        c.limits.max_page_bytes = 1 << 20;
        c.limits.max_result_bytes = Some(200 << 10);
    })
    .await;
    // 60 rows of 50 KB: a page holds what fits in 1 MiB, and says where the rest starts.
    // (Distinct digests: a Parquet file of them does not compress away.)
    let wide = "SELECT n, string_agg(md5(CAST(n * 100000 + i AS VARCHAR)), '') AS s FROM \
                (SELECT a.value AS n, b.value AS i FROM generate_series(1, 60) a, \
                 generate_series(1, 1500) b) GROUP BY n ORDER BY n";
    let (status, body) = server.post("/v1/jobs", &job(wide)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // Over 200 KiB of result files: the job fails, naming the limit.
    let view = server.wait_final(&id).await;
    assert_eq!(view.state, JobState::Failed, "{view:?}");
    let error = view.error.clone().unwrap_or_default();
    assert!(
        error.contains("limit of 204.8 KB (204800 bytes) for one job's result files"),
        "{error}"
    );
    assert_eq!(
        files_under_or_none(&dir.path().join("results").join(&id)),
        0
    );
    server.kill();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(engine.clone(), dir.path(), |c| {
        c.limits.max_page_bytes = 1 << 20;
    })
    .await;
    let (_, body) = server.post("/v1/jobs", &job(wide)).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let mut offset = 0;
    let mut seen = 0;
    while let (200, body) = server
        .get(
            &format!("/v1/jobs/{id}/result?offset={offset}&limit=10000"),
            Some(TOKEN),
        )
        .await
    {
        let page: ResultPage = serde_json::from_value(body).unwrap();
        let bytes = serde_json::to_vec(&page.rows).unwrap().len();
        assert!(bytes <= 1 << 20, "a page of {bytes} bytes");
        assert!(
            page.rows.len() < 60 && !page.rows.is_empty(),
            "{}",
            page.rows.len()
        );
        assert_eq!(page.rows[0]["n"], offset + 1);
        seen += page.rows.len() as u64;
        match page.next_offset {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(seen, 60);
    // A single row over the page's bytes: 422, pointing at the files.
    let huge = "SELECT repeat('x', 2000000) AS s";
    let (_, body) = server.post("/v1/jobs", &job(huge)).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (status, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        detail(&body).contains("page limit of 1048576 bytes"),
        "{body}"
    );
    server.kill();

    // In-process executors within a memory budget: a task whose pool does
    // not fit is refused, naming the budget; those that fit run.
    let dir = tempfile::tempdir().unwrap();
    let mut budgeted = Engine::embedded_within(2, 1 << 30).unwrap();
    budgeted.work_root = format!("file://{}", dir.path().join("work").display());
    let server = Server::start_with(budgeted.clone(), dir.path(), |c| {
        c.task_memory = 2 << 30;
        c.task_memory_max = 2 << 30;
    })
    .await;
    let (_, body) = server.post("/v1/jobs", &tpch_job(&data, 6)).await;
    let view = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(view.state, JobState::Failed, "{view:?}");
    assert!(
        view.error
            .clone()
            .unwrap_or_default()
            .contains("over the 1024 MiB the in-process executors share"),
        "{view:?}"
    );
    server.kill();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(budgeted.clone(), dir.path(), |c| {
        c.task_memory = 256 << 20;
        c.task_memory_max = 1 << 30;
    })
    .await;
    still_serves(&server, &budgeted, &data).await;
    server.kill();
}

fn files_under_or_none(dir: &Path) -> usize {
    if dir.exists() {
        files_under(dir).len()
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_never_take_a_table_and_names_are_bounded() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let engine = local_engine(2, &root.join("work"));
    let server = Server::start(engine.clone(), &root, 2).await;
    // A CSV table in an allowed folder, and a job whose output is that folder.
    let table = root.join("tables").join("events");
    std::fs::create_dir_all(&table).unwrap();
    std::fs::write(table.join("events.csv"), "id,kind\n1,a\n2,b\n").unwrap();
    let (status, body) = server
        .put(
            "/v1/tables/events",
            &serde_json::json!({"url": format!("{}/", table.display())}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut taking = job("SELECT 1 AS one");
    taking["output"] = serde_json::json!(format!("{}/", table.display()));
    let (status, body) = server.post("/v1/jobs", &taking).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["title"], "output not empty");
    assert!(detail(&body).contains("events.csv"), "{body}");
    assert!(!table.join(MANIFEST_NAME).exists());
    assert!(!table.join("_squall_claim.json").exists());
    // The table still reads.
    let (status, body) = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"sql": "SELECT count(*) AS n FROM events", "tables": [{"name": "events"}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    // Table names: `[A-Za-z_][A-Za-z0-9_]*`, at most 128.
    for name in ["a=b", "x:csv", "1t", &"t".repeat(129)] {
        let body = serde_json::json!({"sql": "SELECT 1",
            "tables": [{"name": name, "url": format!("{}/nation/", data.display())}]});
        let (status, answer) = server.post("/v1/jobs", &body).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(detail(&answer).contains("table name"), "{name}: {answer}");
    }
    let (status, body) = server
        .put(
            &format!("/v1/tables/{}", "t".repeat(129)),
            &serde_json::json!({"url": format!("{}/nation/", data.display())}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    still_serves(&server, &engine, &data).await;
    server.kill();
}

/// Requests with one principal's token.
struct As<'a>(&'a Server, &'static str);

impl As<'_> {
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.0.send_as(self.1, Method::GET, path, None).await
    }
    async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.0.send_as(self.1, Method::DELETE, path, None).await
    }
    async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.0.send_as(self.1, Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.0.send_as(self.1, Method::PUT, path, Some(body)).await
    }
}

/// A principal of `role` known by `token`.
fn principal(name: &str, role: Role, token: &str) -> Principal {
    Principal::new(name, role, vec![Secret::Token(token.into())]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_see_their_own_and_share_the_queue_fairly() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let engine = local_engine(2, &root.join("work"));
    let mut alice = principal("alice", Role::User, "alice-token");
    alice.max_queued = Some(3);
    alice.max_schedules = Some(1);
    alice.default_labels.insert("team".into(), "a".into());
    // Bob may read only his own folder.
    let mut bob = principal("bob", Role::User, "bob-token");
    bob.access = Some(Arc::new(
        squall_engine::AccessPolicy::new(
            &[root.join("tables").join("bob").display().to_string()],
            &[format!("file://{}", root.join("results").display())],
            &[root.join("work").display().to_string()],
        )
        .unwrap(),
    ));
    let server = Server::start_with(engine.clone(), &root, |c| {
        c.max_running = 1;
        c.principals.push(alice);
        c.principals.push(bob);
        c.metrics = MetricsAccess::Token("scraper".into());
    })
    .await;
    let alice = As(&server, "alice-token");
    let bob = As(&server, "bob-token");
    let (status, me) = alice.get("/v1/whoami").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("user"))
    );

    // Fairness: alice's first job holds the one slot for its deadline (4 s);
    // she queues three more (her share), then bob one after them.
    let slow = |n: u64| {
        job(&format!(
            "SELECT count(*) AS n FROM generate_series(1, {n}) a, generate_series(1, 30) b"
        ))
    };
    let mut holding = slow(1_000_000_000);
    holding["options"] = serde_json::json!({"deadline_seconds": 4});
    let (status, body) = alice.post("/v1/jobs", &holding).await;
    assert_eq!(status, 202, "{body}");
    let first = body["id"].as_str().unwrap().to_string();
    let mut alices = vec![first.clone()];
    for _ in 0..3 {
        let (status, body) = alice.post("/v1/jobs", &slow(100_000)).await;
        assert_eq!(status, 202, "{body}");
        alices.push(body["id"].as_str().unwrap().to_string());
    }
    let (status, body) = alice.post("/v1/jobs", &slow(10)).await;
    assert_eq!(status, 429, "{body}");
    assert!(detail(&body).contains("alice has 3 jobs waiting"), "{body}");
    let (status, body) = bob.post("/v1/jobs", &slow(100_000)).await;
    assert_eq!(status, 202, "{body}");
    let bobs = body["id"].as_str().unwrap().to_string();
    // Each sees only its own; another's job is not found, not forbidden.
    let (_, list) = bob.get("/v1/jobs").await;
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bobs.as_str()]);
    let (status, _) = bob.get(&format!("/v1/jobs/{first}")).await;
    assert_eq!(status, 404);
    let (status, _) = bob.delete(&format!("/v1/jobs/{first}")).await;
    assert_eq!(status, 404);
    let (_, list) = server.get("/v1/jobs?limit=100", Some(TOKEN)).await;
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        alices.len() + 1,
        "the admin sees all"
    );
    let (_, view) = alice.get(&format!("/v1/jobs/{first}")).await;
    assert_eq!(
        (view["principal"].as_str(), view["labels"]["team"].as_str()),
        (Some("alice"), Some("a"))
    );
    assert_eq!(view["labels"]["principal"], "alice", "{view}");
    // Jobs are labelled with their principal (an admin lists by it); a
    // caller cannot claim another's.
    let (_, listed) = server
        .get("/v1/jobs?label=principal:bob", Some(TOKEN))
        .await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    let mut claiming = slow(10);
    claiming["labels"] = serde_json::json!({"principal": "alice"});
    let (status, body) = bob.post("/v1/jobs", &claiming).await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("set by the server"), "{body}");
    // Bob's job starts right after alice's running one, before her queued ones.
    let mut views = Vec::new();
    for id in alices.iter().chain([&bobs]) {
        views.push(server.wait_final(id).await);
    }
    let started = |v: &JobView| v.started_at_ms.unwrap_or(i64::MAX);
    let bob_view = views.last().unwrap();
    let before_bob = views[..views.len() - 1]
        .iter()
        .filter(|v| started(v) < started(bob_view))
        .count();
    assert_eq!(before_bob, 1, "bob waited behind alice's queue: {views:?}");

    // Schedules: a user's own, up to its cap; tables: anyone reads, the
    // owner (or an admin) changes.
    let schedule = serde_json::json!({"cron": "0 3 * * *", "enabled": false, "job": {"sql": "SELECT 1 AS one"}});
    let (status, created) = alice.post("/v1/schedules", &schedule).await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = alice.post("/v1/schedules", &schedule).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        detail(&body).contains("schedules of principal 'alice': at most 1 are kept"),
        "{body}"
    );
    let (_, list) = bob.get("/v1/schedules").await;
    assert!(list["schedules"].as_array().unwrap().is_empty(), "{list}");
    let schedule_id = created["id"].as_str().unwrap();
    let (status, _) = bob.delete(&format!("/v1/schedules/{schedule_id}")).await;
    assert_eq!(status, 404);
    let nation = serde_json::json!({"url": format!("{}/nation/", data.display())});
    let (status, body) = alice.put("/v1/tables/nation", &nation).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.put("/v1/tables/nation", &nation).await;
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("alice's"), "{body}");
    // Bob's prefixes are his own: the TPC-H data others read is not.
    let (status, body) = bob.post("/v1/jobs", &tpch_job(&data, 6)).await;
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("outside the prefixes"), "{body}");
    let (status, _) = bob.get("/v1/tables/nation").await;
    assert_eq!(status, 200);
    let (status, _) = server.delete("/v1/tables/nation").await;
    assert_eq!(status, 204);
    // Metrics need the scraper's token; they count jobs by principal.
    let (status, _) = server.get("/metrics", None).await;
    assert_eq!(status, 401);
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth("scraper")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("squall_jobs_ended_total{outcome=\"succeeded\",principal=\"bob\"} 1"),
        "{metrics}"
    );
    still_serves(&server, &engine, &data).await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_commit_never_leaves_a_cancelled_job_with_a_result() {
    use squall_executor::StoreRegistry;
    use squall_tests::stores::RecordingStore;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let stores = Arc::new(StoreRegistry::new());
    let recording = RecordingStore::new(Arc::new(object_store::local::LocalFileSystem::new()));
    stores.register("file:///", recording.clone()).unwrap();
    let engine =
        Engine::embedded_with(stores, Some(2), &format!("file://{}/work", root.display())).unwrap();
    let server = Server::start(engine, &root, 1).await;
    let out = root.join("tables").join("held");
    let mut held = job("SELECT 1 AS one");
    held["output"] = serde_json::json!(format!("{}/", out.display()));
    // The job's manifest is written, and the cancel lands before the job ends.
    let hold = recording.hold_put(MANIFEST_NAME);
    let (status, body) = server.post("/v1/jobs", &held).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    tokio::time::timeout(Duration::from_secs(60), hold.reached.notified())
        .await
        .expect("the manifest was never written");
    assert!(out.join(MANIFEST_NAME).exists());
    let (status, body) = server.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    hold.release.notify_one();
    let view = server.wait_final(&id).await;
    // Cancelled, and then nothing of it is left as a result.
    assert_eq!(view.state, JobState::Cancelled, "{view:?}");
    assert_eq!(
        (view.rows, view.manifest_url.clone()),
        (None, None),
        "{view:?}"
    );
    assert_eq!(files_under_or_none(&out), 0, "{:?}", files_under(&out));
    let (status, _) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(status, 409);
    // The folder is free for the next job.
    let (status, body) = server.post("/v1/jobs", &held).await;
    assert_eq!(status, 202, "{body}");
    let again = server.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(again.state, JobState::Succeeded, "{again:?}");
    server.kill();
}

/// A caller's S3 URL is checked as the object store will read it: a
/// percent-encoded name of the server's work folder is the work folder
/// (LocalStack S3; `tests/run` starts it).
#[cfg(feature = "emulators")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_are_checked_as_the_store_reads_them() {
    use object_store::ObjectStoreExt;
    use squall_executor::StoreRegistry;
    let bucket = std::env::var("SQUALL_TEST_BUCKET")
        .expect("SQUALL_TEST_BUCKET: start the emulators (tests/emulators/start.sh)");
    let prefix = format!(
        "hostile-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let root = format!("s3://{bucket}/{prefix}");
    let work = format!("{root}/squall-work");
    let stores = Arc::new(StoreRegistry::new());
    let engine = Engine::embedded_with(stores.clone(), Some(2), &work).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = format!("file://{}", dir.path().join("results").display());
    let server = Server::start_with(engine, dir.path(), |c| {
        c.access = Arc::new(
            squall_engine::AccessPolicy::new(
                &[format!("{root}/")],
                &[results],
                &[dir.path().display().to_string(), work.clone()],
            )
            .unwrap(),
        );
    })
    .await;
    for name in [
        "squall-work",
        "squall-wor%6B",
        "squall-wor%6b",
        "%73quall-work",
    ] {
        let mut writes = job("SELECT 1 AS one");
        writes["output"] = serde_json::json!(format!("{root}/{name}/evil/"));
        let (status, body) = server.post("/v1/jobs", &writes).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert!(
            detail(&body).contains(&format!("{root}/squall-work/evil/")),
            "{body}"
        );
        let reads = serde_json::json!({"sql": "SELECT count(*) AS n FROM t",
            "tables": [{"name": "t", "url": format!("{root}/{name}/"), "format": "csv"}]});
        let (status, body) = server.post("/v1/jobs", &reads).await;
        assert_eq!(status, 403, "{name}: {body}");
    }
    // Nothing landed under the work folder.
    let (store, path) = stores.resolve(&format!("{work}/")).unwrap();
    let found: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&path)))
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    // A key that needs encoding is read where it is.
    let (store, path) = stores.resolve(&format!("{root}/data x/t.csv")).unwrap();
    store
        .put(&path, "k\n1\n2\n".to_string().into_bytes().into())
        .await
        .unwrap();
    let reads = serde_json::json!({"sql": "SELECT count(*) AS n FROM t",
        "tables": [{"name": "t", "url": format!("{root}/data%20x/"), "format": "csv"}]});
    let (status, body) = server.post("/v1/jobs", &reads).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.wait_final(&id).await.state, JobState::Succeeded);
    let (_, body) = server
        .get(&format!("/v1/jobs/{id}/result"), Some(TOKEN))
        .await;
    assert_eq!(body["rows"][0]["n"], 2, "{body}");
    server.kill();
}
