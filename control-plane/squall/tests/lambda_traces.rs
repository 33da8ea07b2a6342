//! A job on `--backend lambda` through the emulated function (`cargo lambda
//! watch` running `squall-lambda`, started by tests/emulators/start.sh with
//! its spans going to `SQUALL_TEST_OTLP_ENDPOINT`): the function's spans join
//! the job's trace under the attempts that invoked it. Built with
//! `--features squall/emulator-tests`, as tests/run does.

mod otlp;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use otlp::{Receiver, Span, assert_task_steps, attribute, receiver, squall, text};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start tests/emulators/start.sh and source its env file")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_on_the_emulated_function_join_the_jobs_trace() {
    let endpoint = var("SQUALL_TEST_OTLP_ENDPOINT");
    let address = endpoint.trim_start_matches("http://").to_string();
    let spans = Receiver::default();
    receiver(spans.clone(), &address).await;
    let unique = format!(
        "traces-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let root = format!("s3://{}/{unique}", var("SQUALL_TEST_BUCKET"));
    let tables = format!("{root}/tpch");
    let quiet = [("SQUALL_LOG", "off")];
    let generated = tokio::task::spawn_blocking({
        let tables = tables.clone();
        move || {
            squall(
                &["tpch", "--scale", "0.01", "--parts", "2", "--out", &tables],
                &quiet,
            )
        }
    })
    .await
    .unwrap();
    assert!(generated.status.success(), "{}", text(&generated.stderr));

    let sql = "SELECT o_orderpriority, count(*) AS n FROM orders JOIN lineitem \
               ON l_orderkey = o_orderkey WHERE l_commitdate < l_receiptdate \
               GROUP BY o_orderpriority ORDER BY o_orderpriority";
    let args: Vec<String> = [
        "run",
        "--backend",
        "lambda",
        "--function",
        &var("SQUALL_TEST_LAMBDA_FUNCTION"),
        "--lambda-endpoint",
        &var("SQUALL_TEST_LAMBDA_ENDPOINT"),
        "--work-dir",
        &format!("{root}/work"),
        "--table",
        &format!("orders={tables}/orders/"),
        "--table",
        &format!("lineitem={tables}/lineitem/"),
        "--sql",
        sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ran = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        squall(
            &args,
            &[
                ("SQUALL_LOG", "off"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", "squall-control"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert!(
        text(&ran.stdout).contains("1-URGENT"),
        "{}",
        text(&ran.stdout)
    );

    // The control plane exported its spans as it ended; each invocation
    // exports its own before it answers. Wait for every attempt's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (control, function) = loop {
        let received = spans.0.lock().unwrap().clone();
        let (control, function): (Vec<_>, Vec<_>) = received
            .into_iter()
            .partition(|(service, _)| service == "squall-control");
        let control: Vec<Span> = control.into_iter().map(|(_, s)| s).collect();
        let function: Vec<(String, Span)> = function;
        let attempts = control.iter().filter(|s| s.name == "attempt").count();
        let invocations = function
            .iter()
            .filter(|(_, s)| s.name == "invocation")
            .count();
        if attempts > 0 && invocations >= attempts {
            break (control, function);
        }
        assert!(
            Instant::now() < deadline,
            "{attempts} attempts, {invocations} invocations received"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        function
            .iter()
            .all(|(service, _)| service == "squall-executor"),
        "the function names itself"
    );
    let function: Vec<Span> = function.into_iter().map(|(_, s)| s).collect();
    let jobs: Vec<&Span> = control.iter().filter(|s| s.name == "job").collect();
    assert_eq!(jobs.len(), 1);
    let trace = &jobs[0].trace_id;
    let all: Vec<&Span> = control.iter().chain(&function).collect();
    assert!(all.iter().all(|s| &s.trace_id == trace), "one trace");
    let by_id: HashMap<&[u8], &Span> = all.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    let parent = |s: &Span| by_id.get(s.parent_span_id.as_slice()).copied();
    let ids = |s: &Span| {
        ["job", "stage", "task", "attempt"].map(|key| attribute(s, key).unwrap_or_default())
    };
    let mut stages = BTreeSet::new();
    for invocation in function.iter().filter(|s| s.name == "invocation") {
        let attempt = parent(invocation).expect("an invocation's attempt");
        assert_eq!(attempt.name, "attempt");
        assert_eq!(ids(invocation), ids(attempt));
        assert_eq!(attribute(attempt, "place").as_deref(), Some("Lambda"));
        assert!(attribute(invocation, "cold_start").is_some());
        let stage = parent(attempt).expect("an attempt's stage");
        assert_eq!(stage.name, "stage");
        assert_eq!(parent(stage).map(|j| j.name.as_str()), Some("job"));
        stages.insert(attribute(stage, "stage").unwrap());
        // The invocation ran its task, which decoded and executed it.
        let task = function
            .iter()
            .find(|s| s.parent_span_id == invocation.span_id && s.name == "task")
            .expect("the invocation's task");
        assert_eq!(ids(task), ids(invocation));
        assert_task_steps(function.iter(), task);
        // The control plane's side of the call: its invoke span.
        assert!(
            control
                .iter()
                .any(|s| s.name == "invoke" && s.parent_span_id == attempt.span_id),
            "no invoke span under the attempt"
        );
    }
    let planned: BTreeSet<String> = control
        .iter()
        .filter(|s| s.name == "stage")
        .map(|s| attribute(s, "stage").unwrap())
        .collect();
    assert_eq!(stages, planned, "every stage ran on the function");
    assert!(planned.len() >= 2);
}
