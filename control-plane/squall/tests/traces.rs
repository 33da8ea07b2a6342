//! Traces and JSON logs of the `squall` binary, received the way a collector
//! receives them: an OTLP/gRPC trace service (the protocol's own messages,
//! from `opentelemetry-proto`) on loopback, named by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`.

mod otlp;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use otlp::{Receiver, Span, assert_task_steps, attribute, hex, receiver, squall, text};

/// `squall tpch` at SF 0.01 in two parts.
fn generate_tpch(out: &Path) {
    let done = squall(
        &[
            "tpch",
            "--scale",
            "0.01",
            "--parts",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("SQUALL_LOG", "off")],
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
}

/// TPC-H Q3 run twice by `squall bench faults`, clean and with a third of
/// its attempts failed (and retried): every span of a job is in the job's
/// trace, each under the span that started it — job, stage, attempt, then
/// the executor's task, decode and execute — with the ids of its stage, task
/// and attempt; and the JSON log lines name the same ids, the retried
/// attempts' lines attempt 1 or later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_one_trace_of_its_stages_attempts_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tpch");
    generate_tpch(&data);
    let spans = Receiver::default();
    let endpoint = receiver(spans.clone(), "127.0.0.1:0").await;
    let answers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tpch/answers");
    let data = data.to_str().unwrap().to_string();
    let answers = answers.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        squall(
            &[
                "--log-format",
                "json",
                "bench",
                "faults",
                "--data",
                &data,
                "--queries",
                "3",
                "--executors",
                "2",
                "--fail",
                "0.3",
                "--answers",
                &answers,
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", "squall-test"),
                (
                    "SQUALL_LOG",
                    "warn,squall_engine=debug,squall_executor=debug",
                ),
            ],
        )
    })
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));

    // The log: JSON, a line each.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finished: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "task finished")
        .collect();
    assert!(!finished.is_empty(), "{stderr}");
    for line in &finished {
        for key in ["job", "stage", "task", "attempt"] {
            assert!(!line[key].is_null(), "no {key}: {line}");
        }
        assert_eq!(line["span"], "attempt", "{line}");
    }
    let failed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "attempt failed")
        .collect();
    assert!(!failed.is_empty(), "no attempt failed: {stderr}");
    let retried = finished
        .iter()
        .filter(|l| l["attempt"].as_u64().unwrap() >= 1)
        .count();
    assert!(retried > 0, "no retried attempt finished: {stderr}");
    // Lines the executor logs inside its task name the attempt too.
    let steps: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "task steps (cumulative)")
        .collect();
    assert!(
        steps.iter().any(|l| l["attempt"].as_u64() >= Some(1)),
        "{stderr}"
    );

    // The traces.
    let received = spans.0.lock().unwrap().clone();
    assert!(received.iter().all(|(service, _)| service == "squall-test"));
    let spans: Vec<Span> = received.into_iter().map(|(_, s)| s).collect();
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let parent = |span: &Span| by_id.get(&span.parent_span_id).copied();
    let jobs: Vec<&Span> = named("job").collect();
    assert_eq!(jobs.len(), 2, "a clean and a faulted run");
    let traces: BTreeSet<Vec<u8>> = jobs.iter().map(|j| j.trace_id.clone()).collect();
    assert_eq!(traces.len(), 2, "one trace a job");
    for job in &jobs {
        assert!(
            job.parent_span_id.is_empty(),
            "a job's span is its trace's root"
        );
        let job_id = attribute(job, "job").unwrap();
        let in_trace: Vec<&Span> = spans
            .iter()
            .filter(|s| s.trace_id == job.trace_id)
            .collect();
        // Every span of the trace leads up to the job's.
        for span in &in_trace {
            let mut at = *span;
            let mut hops = 0;
            while let Some(up) = parent(at) {
                at = up;
                hops += 1;
                assert!(hops < 20);
            }
            assert_eq!(
                at.span_id, job.span_id,
                "{} is not under the job",
                span.name
            );
        }
        let stages: BTreeSet<String> = in_trace
            .iter()
            .filter(|s| s.name == "stage")
            .map(|s| {
                assert_eq!(attribute(s, "job").as_deref(), Some(job_id.as_str()));
                attribute(s, "stage").unwrap()
            })
            .collect();
        assert!(stages.len() >= 3, "Q3 runs in stages: {stages:?}");
        let attempts: Vec<&&Span> = in_trace.iter().filter(|s| s.name == "attempt").collect();
        for attempt in &attempts {
            let stage = parent(attempt).expect("an attempt's stage");
            assert_eq!(stage.name, "stage");
            assert_eq!(attribute(attempt, "stage"), attribute(stage, "stage"));
        }
        // Each executor task is the child of the attempt it ran, ids alike.
        let tasks: Vec<&&Span> = in_trace.iter().filter(|s| s.name == "task").collect();
        assert!(!tasks.is_empty());
        for task in &tasks {
            let attempt = parent(task).expect("a task's attempt");
            assert_eq!(attempt.name, "attempt", "{}", hex(&task.span_id));
            for key in ["job", "stage", "task", "attempt"] {
                assert_eq!(attribute(task, key), attribute(attempt, key), "{key}");
            }
            assert_task_steps(in_trace.iter().copied(), task);
        }
        // Every stage had its attempts, every attempt that ran its task.
        let attempted: BTreeSet<String> = attempts
            .iter()
            .map(|a| attribute(a, "stage").unwrap())
            .collect();
        assert_eq!(attempted, stages);
    }
    // The faulted run's retries are attempts 1 and later, each with its task.
    let retried: Vec<&Span> = named("task")
        .filter(|s| attribute(s, "attempt").is_some_and(|a| a != "0"))
        .collect();
    assert!(!retried.is_empty(), "no retried attempt ran");
}

/// `squall serve` exporting spans: a job's view names its trace, linked by
/// the server's `--trace-url` template, and that trace is the one whose root
/// is the job's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_job_names_its_trace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tpch");
    generate_tpch(&data);
    let spans = Receiver::default();
    let endpoint = receiver(spans.clone(), "127.0.0.1:0").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    // A template that is not an http(s) URL with {trace_id} is refused.
    let refused = squall(
        &[
            "serve",
            "--trace-url",
            "ftp://traces.example/",
            "--token",
            "t",
            "--data-dir",
            dir.path().join("refused").to_str().unwrap(),
        ],
        &[("SQUALL_LOG", "off")],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--trace-url must be"),
        "{}",
        text(&refused.stderr)
    );
    let server = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("server"))
        .args(["--token", "t", "--executors", "2", "--allow"])
        .arg(&data)
        .args(["--trace-url", "https://traces.example/trace/{trace_id}"])
        .env("SQUALL_LOG", "off")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(server);
    let client = |args: &[&str]| {
        let out = squall(
            args,
            &[
                ("SQUALL_LOG", "off"),
                ("SQUALL_SERVER", &url),
                ("SQUALL_TOKEN", "t"),
            ],
        );
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "squall serve never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let lineitem = format!("lineitem={}", data.join("lineitem").display());
    let id = client(&[
        "submit",
        "--sql",
        "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag",
        "--table",
        &lineitem,
    ])
    .trim()
    .to_string();
    let view = loop {
        let view = client(&["job", &id]);
        if view.contains("succeeded") {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let shown = view
        .lines()
        .find_map(|l| l.strip_prefix("trace"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no trace line: {view}"))
        .to_string();
    // The job's span reaches the receiver within the exporter's delay.
    let job_span = loop {
        let received = spans.0.lock().unwrap().clone();
        let found = received
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "job" && attribute(s, "job").as_deref() == Some(id.as_str()));
        if let Some(span) = found {
            break span;
        }
        assert!(std::time::Instant::now() < deadline, "no span of job {id}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        shown,
        format!("https://traces.example/trace/{}", hex(&job_span.trace_id))
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
