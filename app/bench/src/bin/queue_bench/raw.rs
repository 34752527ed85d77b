//! The baselines of `queue-bench`, measured in the same run as the queue: the brokers'
//! own loops without job logic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;

use super::{Measured, Meter};

/// Creates `stream` with the consumer group `g` that the raw loops read with.
async fn create_group(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<()> {
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
}

/// The raw bound: one producer XADDs in pipelined batches of 100 while one consumer reads
/// with XREADGROUP COUNT 100 and acknowledges each batch with one XACK.
pub async fn raw_bound(url: &str, jobs: usize, limit: Duration) -> anyhow::Result<Measured> {
    const BATCH: usize = 100;
    let client = redis::Client::open(url)?;
    let mut prod = super::bench_conn(&client).await?;
    let mut cons = super::bench_conn(&client).await?;
    let stream = "raw:stream";
    create_group(&mut prod, stream).await?;
    let meter = Meter::start(&client).await?;
    let producer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < jobs {
            let n = BATCH.min(jobs - sent);
            let mut p = redis::pipe();
            for i in 0..n {
                p.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("job")
                    .arg(sent + i)
                    .ignore();
            }
            p.query_async::<()>(&mut prod).await?;
            sent += n;
        }
        Ok::<_, redis::RedisError>(())
    });
    let mut acked = 0usize;
    while acked < jobs {
        if meter.elapsed() > limit {
            bail!("raw run did not finish within {limit:?}");
        }
        let r: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut cons)
            .await?;
        let ids: Vec<String> = r
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(|e| e.id)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let n: usize = redis::cmd("XACK")
                .arg(stream)
                .arg("g")
                .arg(&ids)
                .query_async(&mut cons)
                .await?;
            acked += n;
        }
    }
    let m = meter.stop(jobs).await?;
    producer.await??;
    Ok(m)
}

/// The raw per-entry bound: the queue's shape without job logic. `producers` concurrent
/// single XADDs; `workers * concurrency` consumers, each XREADGROUP COUNT 1 then XACK.
/// Measured once per worker count of the run, so each queue row is set against a loop
/// with as many entries in flight as it has.
pub async fn raw_per_entry(
    url: &str,
    producers: usize,
    consumers: usize,
    jobs: usize,
    limit: Duration,
) -> anyhow::Result<Measured> {
    let client = redis::Client::open(url)?;
    let mut conn = super::bench_conn(&client).await?;
    let stream = "raw1:stream";
    create_group(&mut conn, stream).await?;
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A blocking read holds its connection: one connection per consumer, opened before the
    // clock starts, as the queue's worker pools are started before theirs.
    let mut conns = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        conns.push(super::bench_conn(&client).await?);
    }
    let mut meter = Meter::start(&client).await?;
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(format!("c{c}"))
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">")
                    .query_async(&mut conn)
                    .await?;
                for e in r.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    let n: usize = redis::cmd("XACK")
                        .arg(stream)
                        .arg("g")
                        .arg(&e.id)
                        .query_async(&mut conn)
                        .await?;
                    acked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok::<_, redis::RedisError>(())
        }));
    }
    let mut adds = futures::stream::iter(0..jobs)
        .map(|i| {
            let mut c = conn.clone();
            async move {
                redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("job")
                    .arg(i)
                    .query_async::<String>(&mut c)
                    .await
            }
        })
        .buffer_unordered(producers);
    while let Some(r) = adds.next().await {
        r?;
        meter.saw_done(acked.load(std::sync::atomic::Ordering::Relaxed));
    }
    meter.enqueued(acked.load(std::sync::atomic::Ordering::Relaxed));
    while acked.load(std::sync::atomic::Ordering::Relaxed) < jobs {
        meter.saw_done(acked.load(std::sync::atomic::Ordering::Relaxed));
        if meter.elapsed() > limit {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            bail!("raw per-entry run did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let m = meter.stop(jobs).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(m)
}

/// The raw RabbitMQ bound: `producers` concurrent persistent publishes with confirms on one
/// channel into a durable queue; one consumer (prefetch = `prefetch`) acknowledges each
/// message. The broker's cost for what the queue does per job, without job logic.
/// (`redis_url` only meters the idle Redis beside it, so every row has the column.)
pub async fn raw_rabbit(
    url: &str,
    redis_url: &str,
    producers: usize,
    prefetch: u16,
    jobs: usize,
    limit: Duration,
) -> anyhow::Result<Measured> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let name = format!("raw.{}", rand::random::<u32>());
    pch.queue_declare(
        name.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let cch = conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            name.clone().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let meter = Meter::start(&redis::Client::open(redis_url)?).await?;
    let consume = tokio::spawn(async move {
        let mut acked = 0usize;
        while acked < jobs {
            match consumer.next().await {
                Some(Ok(d)) => {
                    d.acker.ack(BasicAckOptions::default()).await?;
                    acked += 1;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok::<_, lapin::Error>(acked)
    });
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    let mut pubs = futures::stream::iter(0..jobs)
        .map(|i| {
            let (ch, props, name) = (pch.clone(), props.clone(), name.clone());
            async move {
                let body = i.to_string();
                let c = ch
                    .basic_publish(
                        "".into(),
                        name.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        props,
                    )
                    .await?
                    .await?;
                Ok::<_, lapin::Error>(c.is_ack())
            }
        })
        .buffer_unordered(producers);
    while let Some(r) = pubs.next().await {
        if !r? {
            bail!("the broker nacked a raw publish");
        }
    }
    drop(pubs);
    let acked = tokio::time::timeout(limit.saturating_sub(meter.elapsed()), consume)
        .await
        .context("raw rabbitmq run did not finish in time")???;
    let m = meter.stop(jobs).await?;
    if acked < jobs {
        bail!("raw rabbitmq consumer stopped after {acked} of {jobs}");
    }
    pch.queue_delete(name.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(m)
}
