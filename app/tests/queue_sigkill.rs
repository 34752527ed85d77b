//! SIGKILL a real `app worker` process in the middle of jobs: every job still completes,
//! exactly once in effect, after another worker process reclaims the killed one's entries.
//! Then SIGTERM stops the second worker gracefully with nothing left pending.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use app::queue::{JobState, Queue, QueueSettings};
use app::tasks::{TaskRequest, TaskService, TaskSettings};
use redis::AsyncCommands;
use serde_json::json;
use support::ChildGuard;

const JOBS: usize = 300;

fn spawn_worker(redis_url: &str, name: &str, log: &std::path::Path) -> ChildGuard {
    let log = std::fs::File::create(log).expect("worker log file");
    let child = Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_LOG", "app=info")
        .env("APP_REDIS__URL", redis_url)
        .env("APP_QUEUE__CLAIM_IDLE_MS", "1000")
        .env("APP_QUEUE__BLOCK_MS", "200")
        .env("APP_QUEUE__DEFAULT_CONCURRENCY", "8")
        .env("APP_QUEUE__SHUTDOWN_GRACE_MS", "20000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn app worker");
    ChildGuard::new(name, child)
}

async fn count_states(q: &Queue, ids: &[String]) -> (usize, usize) {
    let mut conn = q.connection();
    let mut p = redis::pipe();
    for id in ids {
        p.hget(q.keys().job(id), "state");
    }
    let states: Vec<Option<String>> = p.query_async(&mut conn).await.unwrap();
    let done = states
        .iter()
        .filter(|s| s.as_deref() == Some("succeeded"))
        .count();
    (done, states.len() - done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_no_job_and_doubles_no_effect() {
    let r = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::connect(&r.url(), QueueSettings::default())
        .await
        .unwrap();
    let tasks = TaskService::new(q.clone(), TaskSettings::default());
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let req: TaskRequest = serde_json::from_value(json!({
            "kind": "increment",
            "input": {"counter": "kill-test", "by": 1, "sleep_ms": 40},
        }))
        .unwrap();
        let (id, _) = tasks.submit(req, Some(format!("job-{i}"))).await.unwrap();
        ids.push(id);
    }

    let mut first = spawn_worker(&r.url(), "worker-1", &dir.path().join("w1.log"));
    // Let it finish some jobs, then kill it while others run.
    let some_done = support::wait_until_async(
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async { count_states(&q, &ids).await.0 >= 40 },
    )
    .await;
    assert!(
        some_done,
        "the first worker made no progress; see {:?}",
        dir.path().join("w1.log")
    );
    first.signal(libc::SIGKILL);
    assert!(
        first.wait_exit(Duration::from_secs(30)).is_some(),
        "worker-1 did not die"
    );
    let (done_at_kill, _) = count_states(&q, &ids).await;
    assert!(done_at_kill < JOBS, "the kill must land before the end");
    let pending_at_kill = q.stats("tasks").await.unwrap().pending;
    assert!(pending_at_kill > 0, "the killed worker held jobs in flight");

    let mut second = spawn_worker(&r.url(), "worker-2", &dir.path().join("w2.log"));
    let all_done = support::wait_until_async(
        Duration::from_secs(180),
        Duration::from_millis(100),
        || async { count_states(&q, &ids).await == (JOBS, 0) },
    )
    .await;
    assert!(
        all_done,
        "states: {:?}; see {:?}",
        count_states(&q, &ids).await,
        dir.path().join("w2.log")
    );

    // Exactly once in effect: one increment per job, whatever ran twice.
    let mut conn = q.connection();
    let counter: i64 = conn
        .get(app::tasks::counter_key(&q, "kill-test"))
        .await
        .unwrap();
    assert_eq!(counter, JOBS as i64);
    let mut reclaimed = 0;
    for id in &ids {
        let j = q.get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Succeeded);
        if j.history.iter().any(|h| h.outcome == "reclaimed") {
            reclaimed += 1;
            assert!(j.attempts >= 2);
        }
    }
    assert!(
        reclaimed as u64 >= pending_at_kill.min(1),
        "jobs of the killed worker were reclaimed"
    );
    assert!(reclaimed > 0);

    // SIGTERM: graceful stop, exit 0, nothing left pending or unfinished.
    second.signal(libc::SIGTERM);
    let status = second
        .wait_exit(Duration::from_secs(60))
        .expect("worker-2 stops on SIGTERM");
    assert!(status.success(), "worker-2 exit status {status}");
    let st = q.stats("tasks").await.unwrap();
    assert_eq!((st.length, st.pending, st.dead), (0, 0, 0));
}
