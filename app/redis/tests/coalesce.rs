//! GETs coalesced into MGETs, on a real redis-server: every caller gets its own key's value
//! (or nil), concurrent callers share MGETs, and a disabled coalescer sends plain GETs.

use app_redis::{GetCoalescer, MAX_BATCH, RedisConn, RedisTarget, Timeouts};
use app_testkit::LocalRedis;
use std::time::Duration;

fn conn(redis: &LocalRedis) -> RedisConn {
    let target = RedisTarget::parse(&redis.url()).expect("target");
    let t = Timeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
    };
    RedisConn::open(&target, t).expect("open")
}

/// `cmdstat_<name>` calls from INFO commandstats.
async fn calls(c: &mut RedisConn, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

async fn seed(c: &mut RedisConn, n: usize) {
    for i in (0..n).step_by(2) {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query_async(c)
            .await
            .expect("SET");
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(c)
        .await
        .expect("RESETSTAT");
}

/// GETs k0..k{n-1} from concurrent tasks; each must get what [`seed`] wrote (even keys) or
/// nil (odd keys).
async fn get_all_and_check(gets: &GetCoalescer, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let gets = gets.clone();
            tokio::spawn(async move { (i, gets.get(&format!("k{i}")).await) })
        })
        .collect();
    for t in tasks {
        let (i, r) = t.await.expect("task");
        let want = (i % 2 == 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(r.expect("GET"), want, "key k{i}");
    }
}

/// The current-thread runtime makes the interleaving deterministic: the first caller's GET
/// goes out alone, and every other caller queues behind it before its answer is read.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_gets_share_mgets_and_each_gets_its_own_value() {
    let redis = LocalRedis::start().expect("redis-server (apt package redis-server)");
    let mut admin = conn(&redis);
    let n = 3 * MAX_BATCH + 5;
    seed(&mut admin, n).await;
    let gets = GetCoalescer::new(conn(&redis), true);
    assert!(gets.coalescing());
    get_all_and_check(&gets, n).await;
    let (mget, get) = (
        calls(&mut admin, "mget").await,
        calls(&mut admin, "get").await,
    );
    // The first GET alone, then 196 callers at most 64 keys per MGET: 4 batches.
    assert_eq!((get, mget), (1, 4));
}

#[tokio::test(flavor = "current_thread")]
async fn disabled_coalescer_sends_plain_gets() {
    let redis = LocalRedis::start().expect("redis-server (apt package redis-server)");
    let mut admin = conn(&redis);
    seed(&mut admin, 20).await;
    let gets = GetCoalescer::new(conn(&redis), false);
    assert!(!gets.coalescing());
    get_all_and_check(&gets, 20).await;
    assert_eq!(calls(&mut admin, "mget").await, 0);
    assert_eq!(calls(&mut admin, "get").await, 20);
}

/// A Redis that went away fails every waiting caller with an error: none hangs, none gets a
/// value.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_batch_fails_each_caller() {
    let redis = LocalRedis::start().expect("redis-server (apt package redis-server)");
    let gets = GetCoalescer::new(conn(&redis), true);
    drop(redis);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let gets = gets.clone();
            tokio::spawn(async move { gets.get(&format!("k{i}")).await })
        })
        .collect();
    for t in tasks {
        assert!(
            t.await.expect("task").is_err(),
            "a GET on a stopped Redis succeeded"
        );
    }
}

/// The GET in flight is abandoned by its caller's timeout while Redis is frozen (SIGSTOP):
/// the GETs that queued behind it still go out, and each gets its own value once Redis
/// runs again (none is stranded waiting for a flight that no longer exists).
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_get_in_flight_does_not_strand_the_waiting_ones() {
    let redis = LocalRedis::start().expect("redis-server (apt package redis-server)");
    let mut admin = conn(&redis);
    seed(&mut admin, 10).await;
    let gets = GetCoalescer::new(conn(&redis), true);
    // Connected before the freeze, so it is a GET that waits, not the connection.
    assert_eq!(gets.get("k0").await.expect("GET"), Some(b"v0".to_vec()));
    app_testkit::process::send_signal(redis.pid(), libc::SIGSTOP);
    let leader = {
        let gets = gets.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(100), gets.get("k0")).await
        })
    };
    let waiters: Vec<_> = (2..10)
        .step_by(2)
        .map(|i| {
            let gets = gets.clone();
            tokio::spawn(async move { (i, gets.get(&format!("k{i}")).await) })
        })
        .collect();
    assert!(
        leader.await.expect("task").is_err(),
        "the GET in flight answered although Redis is stopped"
    );
    app_testkit::process::send_signal(redis.pid(), libc::SIGCONT);
    for w in waiters {
        let (i, r) = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a GET queued behind the cancelled one was never sent")
            .expect("task");
        assert_eq!(r.expect("GET"), Some(format!("v{i}").into_bytes()));
    }
}
