//! Schedules over real HTTP: a one-second cron that fires and runs TPC-H Q6
//! right, disabling, the overlap policy, runs missed while no server ran
//! (dropped or run once), and the errors of the schedule routes.

use std::time::{Duration, Instant};

use squall_service::JobStore;
use squall_service::api::{JobList, JobView, ScheduleView};
use squall_tests::server::{Hanging, Server, TOKEN, check_answer, tpch_job};
use squall_tests::{local_engine, tpch_data};

async fn runs(server: &Server, id: &str) -> Vec<JobView> {
    let (status, body) = server
        .get(&format!("/v1/schedules/{id}/runs"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value::<JobList>(body).unwrap().jobs
}

async fn schedule(server: &Server, id: &str) -> ScheduleView {
    let (status, body) = server
        .get(&format!("/v1/schedules/{id}"), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn create(server: &Server, body: serde_json::Value) -> ScheduleView {
    let (status, body) = server.post("/v1/schedules", &body).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_cron_fires_and_its_jobs_answer_right() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let server = Server::start_with(engine.clone(), dir.path(), |c| seconds_cron(c, 2)).await;
    // The template carries labels and a cost limit to every run.
    let mut labelled = tpch_job(&data, 6);
    labelled["labels"] = serde_json::json!({"team": "nightly"});
    labelled["options"] = serde_json::json!({"cost_limit_usd": 5.0});
    let created = create(
        &server,
        serde_json::json!({
            "name": "q6 every second",
            "cron": "* * * * * *",
            "time_zone": "Europe/Berlin",
            "job": labelled,
        }),
    )
    .await;
    assert!(created.enabled);
    let next = created
        .next_run_at_ms
        .expect("an enabled schedule has a next run");
    let now = squall_service::now_ms();
    assert!(next > now - 50 && next <= now + 1000, "{next} vs {now}");
    assert!(!created.description.is_empty());

    // At least two runs succeed, each a job that names its schedule.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let jobs = runs(&server, &created.id).await;
        let succeeded: Vec<_> = jobs
            .iter()
            .filter(|j| j.state == squall_service::JobState::Succeeded)
            .cloned()
            .collect();
        if succeeded.len() >= 2 {
            break succeeded;
        }
        assert!(Instant::now() < deadline, "runs: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Runs list newest first by default, oldest first when asked.
    let newest: Vec<i64> = runs(&server, &created.id)
        .await
        .iter()
        .map(|j| j.submitted_at_ms)
        .collect();
    assert!(newest.windows(2).all(|w| w[0] >= w[1]), "{newest:?}");
    let (status, body) = server
        .get(
            &format!("/v1/schedules/{}/runs?order=oldest", created.id),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let oldest: Vec<i64> = serde_json::from_value::<JobList>(body)
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.submitted_at_ms)
        .collect();
    assert!(oldest.windows(2).all(|w| w[0] <= w[1]), "{oldest:?}");
    assert!(
        oldest.len() >= 2 && oldest.first() < newest.first(),
        "{oldest:?} {newest:?}"
    );
    for job in &done {
        check_answer(&engine, job, 6).await;
        assert_eq!(job.labels.get("team").map(String::as_str), Some("nightly"));
        assert!(
            job.cost.as_ref().is_some_and(|c| c.requests.get > 0),
            "{job:?}"
        );
    }
    let (_, labelled) = server.get("/v1/jobs?label=team:nightly", Some(TOKEN)).await;
    assert!(
        labelled["jobs"].as_array().unwrap().len() >= 2,
        "{labelled}"
    );
    let (_, other) = server.get("/v1/jobs?label=team:other", Some(TOKEN)).await;
    assert!(other["jobs"].as_array().unwrap().is_empty(), "{other}");
    // Runs are a second apart (submission times of consecutive runs, newest first).
    let gap = done[0].submitted_at_ms - done[1].submitted_at_ms;
    assert!(gap >= 900, "runs {gap} ms apart");
    let (_, all) = server.get("/v1/jobs", Some(TOKEN)).await;
    assert!(all["jobs"].as_array().unwrap().len() >= 2);

    // Disabled: no next run, no new jobs.
    let (status, body) = server
        .patch(
            &format!("/v1/schedules/{}", created.id),
            &serde_json::json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next_run_at_ms"], serde_json::Value::Null, "{body}");
    let count = runs(&server, &created.id).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&server, &created.id).await.len(), count);
    // Enabled again: it runs again.
    let (status, _) = server
        .patch(
            &format!("/v1/schedules/{}", created.id),
            &serde_json::json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs(&server, &created.id).await.len() == count {
        assert!(Instant::now() < deadline, "never ran after enabling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = server
        .delete(&format!("/v1/schedules/{}", created.id))
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.get("/v1/schedules", Some(TOKEN)).await;
    assert_eq!(status, 200);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_are_skipped_and_missed_runs_follow_their_policy() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = local_engine(2, &dir.path().join("work"));
    let hanging = Hanging::engine(&engine);
    let first = Server::start_with(hanging.clone(), dir.path(), |c| seconds_cron(c, 4)).await;
    // Q3's later stages hang: its first run never ends, so later runs overlap.
    let busy = create(
        &first,
        serde_json::json!({"cron": "* * * * * *", "job": tpch_job(&data, 3)}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = schedule(&first, &busy.id).await;
        if view.skipped_runs >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        runs(&first, &busy.id).await.len(),
        1,
        "one job, the rest skipped"
    );
    let (status, _) = first
        .patch(
            &format!("/v1/schedules/{}", busy.id),
            &serde_json::json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200);

    // Two hourly schedules, one per missed-run policy, at a minute half an
    // hour away: no run of theirs falls due while the test runs.
    let minute = (chrono_minute() + 30) % 60;
    let hourly = format!("{minute} * * * *");
    let mut ids = Vec::new();
    for missed in ["skip", "run_once"] {
        let view = create(
            &first,
            // Disabled until the first server is gone, so it never fires them
            // (a test running across the hour would otherwise see a real run).
            serde_json::json!({"cron": hourly, "missed": missed, "enabled": false,
                               "job": tpch_job(&data, 6)}),
        )
        .await;
        ids.push(view.id);
    }
    first.kill();
    // While no server runs, three hours of runs fall due.
    let store = JobStore::open(&dir.path().join("squall.db")).unwrap();
    let three_hours_ago = squall_service::now_ms() - 3 * 3600 * 1000;
    for id in &ids {
        let mut s = store.schedule(id).unwrap().unwrap();
        s.enabled = true;
        s.next_fire_at_ms = Some(three_hours_ago);
        assert!(store.update_schedule(&s).unwrap());
    }
    let second = Server::start_with(engine.clone(), dir.path(), |c| seconds_cron(c, 4)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        let jobs = runs(&second, &ids[1]).await;
        if jobs.iter().any(|j| j.state.is_final()) {
            break jobs;
        }
        assert!(Instant::now() < deadline, "{jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(caught_up.len(), 1, "run once for all missed runs");
    check_answer(&engine, &caught_up[0], 6).await;
    assert!(
        runs(&second, &ids[0]).await.is_empty(),
        "missed runs dropped"
    );
    let now = squall_service::now_ms();
    for id in &ids {
        let view = schedule(&second, id).await;
        assert!(view.next_run_at_ms.unwrap() > now, "{view:?}");
        assert!(
            view.next_run_at_ms.unwrap() <= now + 3600 * 1000,
            "{view:?}"
        );
    }
    second.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_problem() {
    let data = tpch_data("0.01").await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(local_engine(2, &dir.path().join("work")), dir.path(), |c| {
        seconds_cron(c, 1)
    })
    .await;
    let cases = [
        (
            serde_json::json!({"cron": "61 * * * *", "job": tpch_job(&data, 6)}),
            "bad cron",
            "'61 * * * *' is invalid",
        ),
        (
            serde_json::json!({"cron": "0 2 * * *", "time_zone": "Mars/Olympus", "job": tpch_job(&data, 6)}),
            "bad cron",
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            serde_json::json!({"cron": "0 2 * * *", "job": {"sql": "SELEC 1"}}),
            "bad SQL",
            "SQL",
        ),
        (
            serde_json::json!({"cron": "0 2 * * *", "job": {"sql": "SELECT * FROM nowhere"}}),
            "bad query",
            "nowhere",
        ),
        (
            serde_json::json!({"cron": "0 2 * * *", "job": tpch_job(&data, 6), "colour": "red"}),
            "invalid body",
            "unknown field `colour`",
        ),
        (
            serde_json::json!({"cron": "0 2 * * *", "job": tpch_job(&data, 6), "overlap": "queue"}),
            "invalid body",
            "unknown variant `queue`",
        ),
    ];
    for (body, title, detail) in cases {
        let (status, problem) = server.post("/v1/schedules", &body).await;
        assert_eq!(status, 400, "{body} → {problem}");
        assert_eq!(problem["title"], title, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{problem}"
        );
    }
    let (_, list) = server.get("/v1/schedules", Some(TOKEN)).await;
    assert_eq!(list["schedules"], serde_json::json!([]), "nothing stored");
    // Unknown ids.
    assert_eq!(server.get("/v1/schedules/nope", Some(TOKEN)).await.0, 404);
    assert_eq!(
        server.get("/v1/schedules/nope/runs", Some(TOKEN)).await.0,
        404
    );
    assert_eq!(server.delete("/v1/schedules/nope").await.0, 404);
    let (status, _) = server
        .patch("/v1/schedules/nope", &serde_json::json!({"enabled": false}))
        .await;
    assert_eq!(status, 404);
    // A bad change leaves the schedule as it was.
    let view = create(
        &server,
        serde_json::json!({"cron": "0 2 * * *", "job": tpch_job(&data, 6)}),
    )
    .await;
    let (status, problem) = server
        .patch(
            &format!("/v1/schedules/{}", view.id),
            &serde_json::json!({"cron": "0 25 * * *"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(schedule(&server, &view.id).await.cron, "0 2 * * *");
    // No token → 401.
    assert_eq!(server.get("/v1/schedules", None).await.0, 401);
    server.kill();
}

/// A server config whose schedules may run every second, `max_running` jobs at once.
fn seconds_cron(config: &mut squall_service::ServiceConfig, max_running: usize) {
    config.max_running = max_running;
    config.limits.min_cron_interval = Duration::from_secs(1);
}

/// The current minute of the hour (UTC).
fn chrono_minute() -> i64 {
    squall_service::now_ms() / 60_000 % 60
}
