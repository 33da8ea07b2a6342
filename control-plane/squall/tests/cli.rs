//! The `squall` binary as a user meets it: what goes to stdout, what to stderr, and
//! exit codes (0 success, 2 bad input, 1 internal failure).

use std::path::Path;
use std::process::{Command, Output};

fn squall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(args)
        .env("SQUALL_LOG", "off")
        .output()
        .expect("run squall")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// A small CSV table: id, name, score.
fn people(dir: &Path) -> String {
    let file = dir.join("people.csv");
    std::fs::write(&file, "id,name,score\n1,ada,3.5\n2,bob,1.25\n3,cy,2.0\n").unwrap();
    format!("people={}", file.display())
}

/// `squall run --table people=... --sql SQL`, over a fresh copy of the people table.
fn run_on_people(sql: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    squall(&["run", "--table", &people(dir.path()), "--sql", sql])
}

/// `squall tpch --scale SCALE --parts 2 --out DIR`, which must succeed.
fn generate_tpch(scale: &str, out: &Path) {
    let done = squall(&[
        "tpch",
        "--scale",
        scale,
        "--parts",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(done.status.success(), "{}", text(&done.stderr));
}

/// Asserts a failed run: exit code, one line on stderr naming the problem, nothing on stdout.
fn assert_user_error(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should name '{needle}': {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn csv_output_is_header_then_rows_and_stderr_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let out = squall(&[
        "run",
        "--table",
        &table,
        "--sql",
        "SELECT name, score FROM people WHERE id > 1 ORDER BY id",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "name,score\nbob,1.25\ncy,2.0\n");
    assert!(
        out.stderr.is_empty(),
        "no progress when stderr is not a terminal: {}",
        text(&out.stderr)
    );
}

#[test]
fn json_output_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let out = squall(&[
        "run",
        "--table",
        &table,
        "--sql",
        "SELECT id, name FROM people ORDER BY id DESC",
        "--format",
        "json",
        "--executors",
        "2",
        "--shuffle-partitions",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], 3);
    assert_eq!(lines[2]["name"], "ada");
}

#[test]
fn table_output_is_a_pretty_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let out = squall(&[
        "run",
        "--table",
        &table,
        "--sql",
        "SELECT count(*) AS n FROM people",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| n |"), "{stdout}");
    assert!(stdout.contains("| 3 |"), "{stdout}");
}

#[test]
fn sql_file_and_explicit_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("people.txt");
    std::fs::write(&data, "id,name\n7,zed\n").unwrap();
    let sql = dir.path().join("q.sql");
    std::fs::write(&sql, "SELECT name FROM p").unwrap();
    let out = squall(&[
        "run",
        "--table",
        &format!("p:csv={}", data.display()),
        "--sql-file",
        sql.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "name\nzed\n");
    // Without the format, the extension does not say.
    let out = squall(&[
        "run",
        "--table",
        &format!("p={}", data.display()),
        "--sql",
        "SELECT 1 FROM p",
    ]);
    assert_user_error(&out, "format");
}

#[test]
fn output_url_keeps_result_and_manifest_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let result = dir.path().join("result");
    let args = [
        "run",
        "--table",
        &table,
        "--sql",
        "SELECT * FROM people",
        "--format",
        "csv",
        "--output",
        result.to_str().unwrap(),
    ];
    let out = squall(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 4);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(result.join("_squall_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rows"], 3);
    for file in manifest["files"].as_array().unwrap() {
        let url = file["url"].as_str().unwrap();
        let path = url.strip_prefix("file://").unwrap();
        assert!(Path::new(path).exists(), "{url}");
    }
    let again = squall(&args);
    assert_user_error(&again, "already holds");
}

#[test]
fn syntax_error() {
    let out = run_on_people("SELEC name FROM people");
    assert_user_error(&out, "SELEC");
}

#[test]
fn unknown_table() {
    let out = run_on_people("SELECT * FROM nowhere");
    assert_user_error(&out, "nowhere");
}

#[test]
fn unknown_column() {
    let out = run_on_people("SELECT shoe_size FROM people");
    assert_user_error(&out, "shoe_size");
}

#[test]
fn missing_file() {
    let out = squall(&[
        "run",
        "--table",
        "t=/no/such/dir/t.parquet",
        "--sql",
        "SELECT * FROM t",
    ]);
    assert_user_error(&out, "/no/such/dir");
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.parquet");
    std::fs::write(&file, b"this is not parquet at all").unwrap();
    let out = squall(&[
        "run",
        "--table",
        &format!("b={}", file.display()),
        "--sql",
        "SELECT * FROM b",
    ]);
    assert_user_error(&out, "broken.parquet");
}

#[test]
fn missing_sql_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = squall(&[
        "run",
        "--table",
        &people(dir.path()),
        "--sql-file",
        "/no/such/query.sql",
    ]);
    assert_user_error(&out, "/no/such/query.sql");
}

#[test]
fn bad_table_argument() {
    let out = squall(&["run", "--table", "no_equals_sign", "--sql", "SELECT 1"]);
    assert_user_error(&out, "no_equals_sign");
    let out = squall(&["run", "--table", "t:xml=/tmp/x", "--sql", "SELECT 1"]);
    assert_user_error(&out, "xml");
}

#[test]
fn statements_other_than_queries_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    for (sql, kind) in [
        ("CREATE TABLE x AS SELECT 1", "CREATE TABLE"),
        ("INSERT INTO people VALUES (4, 'dee', 1.0)", "INSERT"),
        ("DROP TABLE people", "DROP TABLE"),
        ("COPY people TO '/tmp/squall-copy-test.csv'", "COPY"),
        (
            "CREATE EXTERNAL TABLE y STORED AS CSV LOCATION '/tmp/y.csv'",
            "CREATE EXTERNAL TABLE",
        ),
        ("DELETE FROM people", "DELETE"),
    ] {
        let out = squall(&["run", "--table", &table, "--sql", sql]);
        assert_user_error(&out, "rejected");
        assert!(
            text(&out.stderr).contains(kind),
            "{sql}: {}",
            text(&out.stderr)
        );
    }
    assert!(!Path::new("/tmp/squall-copy-test.csv").exists());
}

#[test]
fn runtime_error_in_a_task_is_the_users() {
    let out = run_on_people("SELECT CAST(name AS INT) FROM people");
    assert_user_error(&out, "cast");
}

#[test]
fn plan_prints_stages() {
    let dir = tempfile::tempdir().unwrap();
    let out = squall(&[
        "plan",
        "--table",
        &people(dir.path()),
        "--sql",
        "SELECT name, count(*) FROM people GROUP BY name ORDER BY name",
        "--shuffle-partitions",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Stage 1 ["), "{stdout}");
    assert!(stdout.contains("ShuffleWriterExec: hash("), "{stdout}");
    assert!(stdout.contains("ResultWriterExec"), "{stdout}");
}

#[test]
fn tpch_generates_parts_and_rejects_bad_scale() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tpch");
    generate_tpch("0.001", &out_dir);
    for table in ["lineitem", "orders", "nation", "region"] {
        let files = std::fs::read_dir(out_dir.join(table)).unwrap().count();
        assert_eq!(files, 2, "{table}");
    }
    let count = squall(&[
        "run",
        "--table",
        &format!("nation={}", out_dir.join("nation").display()),
        "--sql",
        "SELECT count(*) AS n FROM nation",
        "--format",
        "csv",
    ]);
    assert_eq!(text(&count.stdout), "n\n25\n", "{}", text(&count.stderr));
    let bad = squall(&["tpch", "--scale", "0", "--out", out_dir.to_str().unwrap()]);
    assert_user_error(&bad, "scale");
}

#[test]
fn bench_tpch_checks_answers_and_bench_tasks_reports_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tpch");
    generate_tpch("0.01", &data);
    let answers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tpch/answers");
    let out = squall(&[
        "bench",
        "tpch",
        "--data",
        data.to_str().unwrap(),
        "--queries",
        "1,6,13",
        "--iterations",
        "1",
        "--answers",
        answers.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| Q")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows.iter().all(|r| r.ends_with("| ok |")), "{stdout}");
    assert!(
        stdout.contains("geometric mean of squall/datafusion"),
        "{stdout}"
    );

    // A wrong reference answer makes the benchmark fail.
    let wrong = dir.path().join("answers");
    std::fs::create_dir_all(wrong.join("sf0.01")).unwrap();
    std::fs::write(wrong.join("sf0.01/q06.csv"), "revenue\n1.0\n").unwrap();
    let out = squall(&[
        "bench",
        "tpch",
        "--data",
        data.to_str().unwrap(),
        "--queries",
        "6",
        "--iterations",
        "1",
        "--answers",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("WRONG (squall, datafusion)"),
        "{}",
        text(&out.stdout)
    );

    let out = squall(&["bench", "tasks", "--count", "2000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("tasks/s"),
        "{}",
        text(&out.stdout)
    );
}

/// `squall run` with `--backend lambda` and the given extra flags, over the people
/// table, with an AWS region but no Lambda anywhere: each case must be refused
/// before anything is invoked.
fn run_lambda(dir: &Path, extra: &[&str]) -> Output {
    let table = people(dir);
    let mut args = vec!["run", "--table", &table, "--sql", "SELECT 1"];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(&args)
        .env("SQUALL_LOG", "off")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run squall")
}

#[test]
fn lambda_backend_flags_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_lambda(dir.path(), &["--backend", "lambda"]);
    assert_user_error(&out, "--backend lambda needs --function");
    let out = run_lambda(dir.path(), &["--backend", "lambda", "--function", "f"]);
    assert_user_error(&out, "needs --work-dir s3://");
    let out = run_lambda(
        dir.path(),
        &["--backend", "lambda", "--function", "f", "--executors", "2"],
    );
    assert_user_error(&out, "--executors applies to --backend local");
    // Tables on the control plane's disk are out of the function's reach.
    let out = run_lambda(
        dir.path(),
        &[
            "--backend",
            "lambda",
            "--function",
            "f",
            "--work-dir",
            "s3://bucket/work",
        ],
    );
    assert_user_error(&out, "table 'people' is at file://");
    let out = run_lambda(
        dir.path(),
        &[
            "--backend",
            "lambda",
            "--function",
            "f",
            "--work-dir",
            "s3://bucket/work",
            "--invocation-timeout",
            "901",
        ],
    );
    assert_user_error(&out, "between 1 s and 900 s");
    let out = run_lambda(dir.path(), &["--function", "f"]);
    assert_user_error(&out, "--function applies to --backend lambda only");
    let out = run_lambda(dir.path(), &["--max-concurrency", "3"]);
    assert_user_error(&out, "--max-concurrency applies to --backend lambda only");
}

#[test]
fn serve_needs_a_token_and_answers_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = squall(&["serve", "--data-dir", data.to_str().unwrap()]);
    assert_user_error(&out, "at least one API token");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(&data)
        .args(["--token", "t0k"])
        .env("SQUALL_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start squall serve");
    let request = |path: &str, token: Option<&str>| -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&listen).ok()?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let health = loop {
        if let Some(answer) = request("/healthz", None) {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "squall serve never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let unauthorized = request("/v1/jobs", None).unwrap_or_default();
    let listed = request("/v1/jobs", Some("t0k")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(unauthorized.starts_with("HTTP/1.1 401"), "{unauthorized}");
    assert!(
        unauthorized.contains("application/problem+json"),
        "{unauthorized}"
    );
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(listed.contains("\"jobs\":[]"), "{listed}");
    assert!(data.join("squall.db").exists());
}

#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..20_000).map(|i| format!("{i},n{i},1.0\n")).collect();
    let file = dir.path().join("many.csv");
    std::fs::write(&file, format!("id,name,score\n{rows}")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["run", "--format", "csv", "--sql", "SELECT * FROM many"])
        .arg("--table")
        .arg(format!("many={}", file.display()))
        .env("SQUALL_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then hang up, as `| head -c1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    // Neither a panic nor an error line: the pipe closing is not a failure.
    assert_eq!(stderr, "", "{stderr}");
}

#[test]
fn serve_reads_a_strict_config_file_under_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("squall.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nmax_runing = 3\n").unwrap();
    let out = squall(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--token",
        "t",
    ]);
    assert_user_error(&out, "line 2, column 1: unknown field `max_runing`");
    std::fs::write(&config, "[backend]\nkind = \"lambda\"\n").unwrap();
    let out = squall(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--token",
        "t",
    ]);
    assert_user_error(&out, "--data-dir");
    std::fs::write(&config, "data_dir = \"x\"\n[backend]\nkind = \"lambda\"\n").unwrap();
    let out = squall(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--token",
        "t",
    ]);
    assert_user_error(&out, "--backend lambda needs --function");
    // Limits that contradict each other, and principals, are checked before
    // anything starts.
    for (file, needle) in [
        (
            "data_dir = \"x\"\n[limits]\nmax_planning_time = \"300s\"\n",
            "--max-planning-time (300 s) must be shorter than --request-timeout (120 s)",
        ),
        (
            "data_dir = \"x\"\n[limits]\nserver_memory = \"1GiB\"\ntask_memory_max = \"2GiB\"\n",
            "must fit in --server-memory",
        ),
        (
            "data_dir = \"x\"\n[[principals]]\nname = \"alice\"\ntoken = \"t\"\n",
            "belongs to another principal",
        ),
        (
            "data_dir = \"x\"\n[[principals]]\nname = \"Alice!\"\ntoken = \"u\"\n",
            "principal name 'Alice!'",
        ),
        (
            "data_dir = \"x\"\n[[principals]]\nname = \"a\"\ntoken = \"u\"\nrole = \"root\"\n",
            "unknown variant `root`",
        ),
    ] {
        std::fs::write(&config, file).unwrap();
        let out = squall(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--token",
            "t",
        ]);
        assert_user_error(&out, needle);
    }

    // Tokens from the file and from a flag; data dir from the environment; the
    // listen address of the file loses to the flag.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let alice_hash: String = squall_service::principals::sha256("alice-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ntokens = [\"from-file\"]\nmax_running = 2\n\
             [[principals]]\nname = \"alice\"\ntoken_sha256 = \"{alice_hash}\"\n\
             [backend]\nexecutors = 2\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            "from-flag",
        ])
        .env("SQUALL_DATA_DIR", &data)
        .env("SQUALL_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answer = |path: &str, token: &str| -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    };
    let status = |token: &str| -> Option<String> {
        answer("/v1/jobs", token).and_then(|a| a.lines().next().map(str::to_string))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let from_file = loop {
        if let Some(line) = status("from-file") {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let from_flag = status("from-flag").unwrap_or_default();
    let other = status("other").unwrap_or_default();
    let alice = answer("/v1/whoami", "alice-token").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(from_file.contains("200"), "{from_file}");
    assert!(from_flag.contains("200"), "{from_flag}");
    assert!(other.contains("401"), "{other}");
    assert!(
        alice.contains("\"name\":\"alice\",\"role\":\"user\""),
        "{alice}"
    );
    assert!(data.join("squall.db").exists());
}

#[test]
fn show_cost_prints_what_the_job_used() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let out = squall(&[
        "run",
        "--table",
        &table,
        "--sql",
        "SELECT count(*) AS n FROM people",
        "--format",
        "csv",
        "--show-cost",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n3\n");
    let stderr = text(&out.stderr);
    // Local files: requests and CPU, no dollars.
    assert!(stderr.starts_with("cost: $0.000000 ("), "{stderr}");
    let gets: u64 = stderr
        .split(" GET")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(gets > 0, "{stderr}");
    assert!(stderr.contains("CPU-s)"), "{stderr}");
    let refused = squall(&["run", "--sql", "SELECT 1", "--cost-limit", "0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("not a positive amount of US dollars"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn simulate_predicts_at_scale_and_refuses_bad_numbers() {
    let dir = tempfile::tempdir().unwrap();
    generate_tpch("0.01", dir.path());
    let table = format!("lineitem={}", dir.path().join("lineitem").display());
    let sql = "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag";
    let out = squall(&[
        "simulate",
        "--table",
        &table,
        "--sql",
        sql,
        "--scale-factor",
        "10000",
        "--workers",
        "1000",
        "--runs",
        "3",
        "--executors",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("measured: "), "{stdout}");
    // On Lambda a scan is cut for the workers only into tasks worth
    // starting: 64 MiB of what the planner weighs its files by — the share
    // of them the columns it reads hold, a sixteenth at least, which the one
    // column of one character it reads is under (under 1%).
    let files: u64 = std::fs::read_dir(dir.path().join("lineitem"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let at_scale = files * 10_000 / 16;
    let worth = (at_scale / (64 << 20)) as usize;
    let expected = at_scale.div_ceil(128 << 20).max(worth.min(1000) as u64) as usize;
    assert!(expected > 1 && expected < 1000, "{expected}");
    let scan = stdout
        .lines()
        .skip_while(|l| !l.starts_with("at scale"))
        .find(|l| l.contains("stage 1 (scan)"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let tasks: usize = scan
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{scan}"));
    assert_eq!(tasks, expected, "{scan}");
    for needle in [
        "without backups on 1000 lambda workers",
        "with backups    on 1000 lambda workers",
        "GB-s",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    for (flag, value, needle) in [
        ("--workers", "0", "--workers 0"),
        (
            "--scale-factor",
            "0",
            "scale factor must be a positive number",
        ),
        ("--memory", "64", "--memory 64"),
        ("--runs", "100000", "--runs 100000"),
    ] {
        let mut args = vec![
            "simulate",
            "--table",
            &table,
            "--sql",
            sql,
            "--scale-factor",
            "10",
        ];
        if flag == "--scale-factor" {
            args.truncate(5);
        }
        args.extend([flag, value]);
        let refused = squall(&args);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        assert!(
            text(&refused.stderr).contains(needle),
            "{needle}: {}",
            text(&refused.stderr)
        );
    }
}

/// Ctrl-C (SIGINT) in the middle of `squall run --output` stops the job and
/// removes what it wrote: no claim is left in the output (so the folder can
/// be used again), and nothing under the work folder; the exit code is 130.
#[test]
fn ctrl_c_cancels_a_run_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // 3,000 rows crossed with themselves three times: minutes of work.
    let mut csv = String::from("id\n");
    for i in 0..3000 {
        csv.push_str(&format!("{i}\n"));
    }
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["run", "--table"])
        .arg(format!("t={}", dir.path().join("t.csv").display()))
        .args([
            "--sql",
            "SELECT count(*) FROM t a CROSS JOIN t b CROSS JOIN t c WHERE a.id + b.id > c.id",
            "--output",
        ])
        .arg(&out)
        .arg("--work-dir")
        .arg(&work)
        .env("SQUALL_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the job has claimed its output (it runs then), interrupt it.
    let claim = out.join("_squall_claim.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !claim.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never claimed its output"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "squall run ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<_> = walk(&out).into_iter().chain(walk(&work)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The output folder takes a new job.
    let again = squall(&[
        "run",
        "--table",
        &format!("t={}", dir.path().join("t.csv").display()),
        "--sql",
        "SELECT count(*) AS n FROM t",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// `squall sql -c`: statements in order; a table by quoted path in FROM;
/// EXPLAIN prints the stage plan, EXPLAIN ANALYZE a line for each of its
/// stages as they ran, with the CPU of their operators.
#[test]
fn sql_runs_statements_and_explains_them() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let path = dir.path().join("people.csv");
    let query = "SELECT name, count(*) AS n FROM people GROUP BY name ORDER BY name";
    let done = squall(&[
        "sql",
        "--table",
        &table,
        "--shuffle-partitions",
        "2",
        "-c",
        &format!(
            "SELECT count(*) AS n FROM '{}'; EXPLAIN {query}; EXPLAIN ANALYZE {query}",
            path.display()
        ),
    ]);
    let stdout = text(&done.stdout);
    assert!(done.status.success(), "{}\n{stdout}", text(&done.stderr));
    assert!(stdout.contains("| 3 |"), "{stdout}");
    let planned = stdout.lines().filter(|l| l.starts_with("Stage ")).count();
    assert!(planned >= 2, "{stdout}");
    let ran: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("STAGE "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(ran.len(), planned, "a line for every stage: {stdout}");
    for line in &ran {
        assert!(line.contains("local"), "{line}");
    }
    let cpu: Vec<&str> = stdout.lines().filter(|l| l.contains(" CPU: ")).collect();
    assert_eq!(cpu.len(), planned, "{stdout}");
    // Operators with the rows they produced: the final aggregate's three names.
    assert!(
        cpu.iter()
            .any(|l| l.contains("AggregateExec") && l.contains(" 3 rows")),
        "{stdout}"
    );
    assert!(stdout.contains("3 rows in"), "{stdout}");

    // From standard input, and tables from a catalog file.
    std::fs::write(
        dir.path().join("catalog.toml"),
        "[tables.folks]\nurl = \"people.csv\"\nformat = \"csv\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .arg("sql")
        .arg("--catalog")
        .arg(dir.path().join("catalog.toml"))
        .args(["--format", "csv"])
        .env("SQUALL_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT name FROM folks\nWHERE id = 3;\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "name\ncy\n");

    // An error names the problem and ends the run with 2.
    let bad = squall(&["sql", "-c", "SELECT 1; SELECT * FROM nowhere; SELECT 2"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("nowhere"),
        "{}",
        text(&bad.stderr)
    );
    let bad_catalog = dir.path().join("bad.toml");
    std::fs::write(&bad_catalog, "[tables.x]\nurl = \"a\"\nsize = 3\n").unwrap();
    let bad = squall(&[
        "sql",
        "--catalog",
        bad_catalog.to_str().unwrap(),
        "-c",
        "SELECT 1",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("size"), "{}", text(&bad.stderr));
}

/// The start of a Python script that runs its arguments (`squall sql ...`)
/// in a pseudo-terminal (`pty`) and gives `expect(TEXT)`: wait for TEXT in
/// what the prompt wrote. The tests append what to type and expect.
const PTY_DRIVER: &str = r#"
import os, pty, sys, time, select
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.environ["SQUALL_LOG"] = "off"
    os.environ["HOME"] = os.environ.get("TEST_HOME", "/tmp")
    os.execv(argv[0], argv)
seen = b""
def expect(what, timeout=60):
    global seen
    deadline = time.time() + timeout
    while what.encode() not in seen:
        left = deadline - time.time()
        if left <= 0:
            sys.exit("never saw %r in %r" % (what, seen.decode(errors="replace")))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    seen = seen[seen.index(what.encode()) + len(what):]
"#;

/// Runs `squall ARGS` in a pseudo-terminal with HOME at `home`, types and
/// expects what `typed` says (Python after [`PTY_DRIVER`]), then quits with
/// `\q`; the driver and the prompt must both end well.
fn drive_prompt(typed: &str, home: &Path, args: &[&str]) {
    let driver = format!(
        "{PTY_DRIVER}{typed}os.write(fd, b\"\\\\q\\n\")\n\
         _, status = os.waitpid(pid, 0)\n\
         sys.exit(os.waitstatus_to_exitcode(status))\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&driver)
        .arg(env!("CARGO_BIN_EXE_squall"))
        .args(args)
        .env("TEST_HOME", home)
        .output()
        .expect("python3 runs the pseudo-terminal driver");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The prompt through a pseudo-terminal (Python's `pty`): a statement over
/// two lines runs when `;` ends it; `\q` quits.
#[test]
fn sql_prompt_runs_statements_typed_over_lines() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let typed = r#"expect("squall> ")
os.write(fd, b"SELECT name\n")
expect("-> ")
os.write(fd, b"FROM people WHERE id = 2;\n")
expect("bob")
expect("squall> ")
os.write(fd, b"SELECT * FROM nowhere;\n")
expect("error:")
expect("squall> ")
"#;
    drive_prompt(typed, dir.path(), &["sql", "--table", &table]);
    // The statement went into the history file.
    let history = std::fs::read_to_string(dir.path().join(".squall_history")).unwrap();
    assert!(history.contains("FROM people WHERE id = 2;"), "{history}");
}

/// Ctrl-C at the prompt while a statement runs stops that statement (its
/// tasks and its files under the work folder), not the shell: the prompt
/// comes back and takes the next statement.
#[test]
fn sql_prompt_ctrl_c_stops_the_statement_and_keeps_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id\n");
    for i in 0..3000 {
        csv.push_str(&format!("{i}\n"));
    }
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let typed = r#"expect("squall> ")
os.write(fd, b"SELECT count(*) FROM t a CROSS JOIN t b CROSS JOIN t c WHERE a.id + b.id > c.id;\n")
# The statement takes minutes; interrupt it two seconds in.
time.sleep(2)
while select.select([fd], [], [], 0)[0]:
    seen += os.read(fd, 4096)
if b"squall> " in seen.split(b"c.id;")[-1] or b"error" in seen:
    sys.exit("the statement ended before it was interrupted: %r" % seen)
interrupted = time.time()
os.write(fd, b"\x03")
expect("interrupted")
expect("error:")
expect("squall> ")
print("stopped in %.1f s" % (time.time() - interrupted))
if time.time() - interrupted > 30:
    sys.exit("the statement took over 30 s to stop")
os.write(fd, b"SELECT 40 + 2 AS answer;\n")
expect("42")
expect("squall> ")
"#;
    let table = format!("t={}", dir.path().join("t.csv").display());
    let work_dir = work.to_str().unwrap();
    drive_prompt(
        typed,
        dir.path(),
        &["sql", "--table", &table, "--work-dir", work_dir],
    );
    let left = walk(&work);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--overwrite` replaces a committed output: refused without it; with it
/// the folder reads as the new result and the old files are gone; a run
/// that fails leaves the result it would have replaced as it was.
#[test]
fn overwrite_replaces_a_committed_output_and_a_failed_run_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = people(dir.path());
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    let write = |sql: &str, overwrite: bool| {
        let mut args = vec!["run", "--table", &table, "--sql", sql, "--output", out_arg];
        if overwrite {
            args.push("--overwrite");
        }
        squall(&args)
    };
    let read = || {
        let done = squall(&[
            "run",
            "--table",
            &format!("r={out_arg}"),
            "--sql",
            "SELECT * FROM r ORDER BY 1",
            "--format",
            "csv",
        ]);
        assert!(done.status.success(), "{}", text(&done.stderr));
        text(&done.stdout)
    };
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    assert!(
        write("SELECT name FROM people WHERE id = 1", false)
            .status
            .success()
    );
    let first = files();
    assert_eq!(read(), "name\nada\n");
    let refused = write("SELECT name FROM people WHERE id = 2", false);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let replaced = write("SELECT name FROM people WHERE id = 2", true);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert_eq!(read(), "name\nbob\n");
    let second = files();
    assert!(
        first
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .all(|f| !second.contains(f)),
        "{first:?} -> {second:?}"
    );
    // A run that fails while it runs (a name is no number): the result stays.
    let failed = write("SELECT CAST(name AS INT) AS n FROM people", true);
    assert!(!failed.status.success());
    assert_eq!(read(), "name\nbob\n");
    assert_eq!(files(), second);
}
