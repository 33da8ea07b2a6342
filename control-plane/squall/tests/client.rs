//! The CLI client against a real `squall serve`, as the README walks through it:
//! catalog tables, `submit --watch` with TPC-H Q3's answer checked, `jobs`,
//! `job`, `result`, `cancel`, a one-second schedule, and the errors a user meets
//! (unknown id, finished job, wrong token, no server).

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use squall_tools::tpch::{self, answers};

const TOKEN: &str = "cli-token";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// `squall ARGS` against `server` with the token in the environment.
fn squall(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(args)
        .env("SQUALL_LOG", "off")
        .env("SQUALL_SERVER", server)
        .env("SQUALL_TOKEN", TOKEN)
        .output()
        .expect("run squall")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn failed(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "should name '{needle}': {stderr}");
}

struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path, extra: &[&str]) -> ServerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(["--token", TOKEN, "--executors", "2"])
        .args(extra)
        .env("SQUALL_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start squall serve");
    let server = ServerProcess {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "squall serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn the_cli_client_submits_watches_and_schedules_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tpch");
    let generated = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["tpch", "--scale", "0.01", "--parts", "2", "--out"])
        .arg(&data)
        .env("SQUALL_LOG", "off")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let allow = data.display().to_string();
    // One-second runs need the minimum interval lowered.
    let server = start_server(
        &dir.path().join("server"),
        &["--allow", &allow, "--min-cron-interval", "1s"],
    );
    let url = server.url.as_str();

    // One server per data dir: a second one stops at once, naming the first.
    let second = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t",
            "--data-dir",
        ])
        .arg(dir.path().join("server"))
        .env("SQUALL_LOG", "off")
        .output()
        .unwrap();
    failed(
        &second,
        1,
        &format!("in use by another squall serve (pid {})", server.child.id()),
    );

    // Catalog tables: their schema comes back.
    for table in ["customer", "orders", "lineitem"] {
        let shown = ok(squall(
            url,
            &[
                "tables",
                "put",
                table,
                &format!("{}/{table}/", data.display()),
            ],
        ));
        assert!(shown.contains(&format!("table   {table}")), "{shown}");
        assert!(
            shown.contains("Int64") || shown.contains("Int32"),
            "{shown}"
        );
    }
    let listed = ok(squall(url, &["tables", "list"]));
    assert_eq!(listed.lines().count(), 4, "header + 3 tables: {listed}");

    // Q3 by catalog names, followed to the end; its answer is right.
    let out = squall(
        url,
        &[
            "submit",
            "--sql",
            tpch::query(3).unwrap(),
            "--table",
            "customer",
            "--table",
            "orders",
            "--table",
            "lineitem",
            "--watch",
            "--format",
            "csv",
        ],
    );
    let csv_text = ok(out);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_text.as_bytes());
    let got: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let answers_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tpch/answers");
    let expected = answers::load(&answers::answer_path(&answers_dir, "0.01", 3)).unwrap();
    answers::compare(&expected, &got, true).unwrap_or_else(|e| panic!("Q3: {e}\n{csv_text}"));

    // The job in listings and in detail.
    let jobs = ok(squall(url, &["jobs", "--state", "succeeded"]));
    let id = jobs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a job line")
        .to_string();
    assert!(jobs.contains("succeeded"), "{jobs}");
    let shown = ok(squall(url, &["job", &id]));
    assert!(shown.contains("state      succeeded"), "{shown}");
    assert!(shown.contains("rows       10"), "{shown}");
    assert!(shown.contains("STAGE"), "{shown}");
    // Where each stage ran: a local server places every stage here (the
    // sort under the final merge runs in the final stage's task).
    assert!(shown.contains("PLACED"), "{shown}");
    let placed: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("STAGE"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !placed.is_empty()
            && placed
                .iter()
                .all(|l| l.contains(" local ") || l.contains(" in stage ")),
        "{shown}"
    );
    let watched = ok(squall(url, &["job", &id, "--watch"]));
    assert!(watched.contains("state      succeeded"), "{watched}");
    let first = ok(squall(
        url,
        &["result", &id, "--format", "csv", "--limit", "3"],
    ));
    assert_eq!(first.lines().count(), 4, "header + 3 rows: {first}");
    assert_eq!(first.lines().next(), csv_text.lines().next());
    let table = ok(squall(url, &["result", &id]));
    assert!(table.contains("| l_orderkey"), "{table}");

    // Errors a user meets.
    failed(&squall(url, &["cancel", &id]), 2, "only queued and running");
    failed(&squall(url, &["job", "nope"]), 2, "no job 'nope'");
    failed(
        &squall(url, &["submit", "--sql", "SELECT * FROM nowhere"]),
        2,
        "nowhere",
    );
    failed(
        &squall(url, &["jobs", "--token", "wrong"]),
        2,
        "unauthorized",
    );
    failed(
        &squall("http://127.0.0.1:9", &["jobs"]),
        1,
        "cannot reach the Squall server",
    );

    // A one-second schedule: its runs succeed; disabled, it says so.
    let created = ok(squall(
        url,
        &[
            "schedules",
            "create",
            "--cron",
            "* * * * * *",
            "--name",
            "count",
            "--sql",
            "SELECT count(*) AS n FROM lineitem",
            "--table",
            "lineitem",
        ],
    ));
    let schedule = created
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("schedule id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = ok(squall(url, &["schedules", "runs", &schedule]));
        if runs.contains("succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "no run succeeded: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let disabled = ok(squall(url, &["schedules", "disable", &schedule]));
    assert!(disabled.contains("enabled    no"), "{disabled}");
    assert!(ok(squall(url, &["schedules", "list"])).contains("count"));
    ok(squall(url, &["schedules", "delete", &schedule]));
    failed(
        &squall(url, &["schedules", "show", &schedule]),
        2,
        "no schedule",
    );
    failed(
        &squall(
            url,
            &[
                "schedules",
                "create",
                "--cron",
                "0 2 * *",
                "--sql",
                "SELECT 1",
            ],
        ),
        2,
        "is invalid",
    );
}
